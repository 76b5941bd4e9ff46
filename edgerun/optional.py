"""Optional packages: is one installed (without importing it), and a guarded import naming its pip extra."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from .errors import DependencyMissingError


def has_module(name: str) -> bool:
    """True when ``name`` can be imported, without importing it."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def require(module: str, extra: str) -> ModuleType:
    """Import ``module`` or raise DependencyMissingError naming ``pip install 'edgerun[extra]'``."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise DependencyMissingError(
            f"{module} is not installed ({exc}); install it with: pip install 'edgerun[{extra}]'"
        ) from exc
