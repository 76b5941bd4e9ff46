"""Settings read from EDGERUN_* environment variables, validated once and frozen."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import InvalidInputError

ENV_PREFIX = "EDGERUN_"
# Budgets for a 4 GB board: a 16 MP image is 64 MB in Pillow (RGB is stored 4 bytes a pixel).
DEFAULT_MAX_IMAGE_PIXELS = 16_777_216     # 4096 x 4096
DEFAULT_MAX_IMAGE_BYTES = 32 * 1024 * 1024
DEFAULT_MAX_BATCH_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class Settings:
    """Process-wide settings; every field has an EDGERUN_<FIELD> variable."""

    backend: str | None = None          # EDGERUN_BACKEND: force one backend by name
    model_path: tuple[Path, ...] = ()   # EDGERUN_MODEL_PATH: extra package folders, os.pathsep-separated
    host_root: Path = Path("/")         # EDGERUN_HOST_ROOT: HostFS root (a captured device tree)
    threads: int | None = None          # EDGERUN_THREADS: CPU threads per session
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS  # EDGERUN_MAX_IMAGE_PIXELS: decoded width x height
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES    # EDGERUN_MAX_IMAGE_BYTES: encoded image file size
    max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES    # EDGERUN_MAX_BATCH_BYTES: profiler input tensors

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            value = env.get(ENV_PREFIX + name, "").strip()
            return value or None

        paths = get("MODEL_PATH")
        return cls(
            backend=get("BACKEND"),
            model_path=tuple(Path(p) for p in paths.split(os.pathsep) if p) if paths else (),
            host_root=Path(get("HOST_ROOT") or "/"),
            threads=_positive_int(ENV_PREFIX + "THREADS", get("THREADS")),
            max_image_pixels=_budget(get, "MAX_IMAGE_PIXELS", DEFAULT_MAX_IMAGE_PIXELS),
            max_image_bytes=_budget(get, "MAX_IMAGE_BYTES", DEFAULT_MAX_IMAGE_BYTES),
            max_batch_bytes=_budget(get, "MAX_BATCH_BYTES", DEFAULT_MAX_BATCH_BYTES),
        )


def _budget(get: Callable[[str], str | None], name: str, default: int) -> int:
    value = _positive_int(ENV_PREFIX + name, get(name))
    return default if value is None else value


def _positive_int(name: str, text: str | None) -> int | None:
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise InvalidInputError(f"{name} must be a positive integer, got {text!r}")
    return value
