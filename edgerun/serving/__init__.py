"""Inference service: KServe V2 REST (+ Triton extensions), image upload, metrics; built by create_app.

Importing this package is cheap: FastAPI, uvicorn and the runtimes are imported only by
:func:`create_app` and :func:`serve` (and the modules they live in).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .config import LifecycleHooks, ModelConfig, ServeConfig, load_config

if TYPE_CHECKING:
    from .app import create_app
    from .runner import serve

__all__ = ["LifecycleHooks", "ModelConfig", "ServeConfig", "create_app", "load_config", "serve"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from .app import create_app

        return create_app
    if name == "serve":
        from .runner import serve

        return serve
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
