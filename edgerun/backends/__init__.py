"""Runtime backends behind one Backend/Session interface, and the registry that picks one."""

from .base import Availability, Backend, BaseSession, LoadOptions, Session, Tensors
from .registry import BUILTIN_BACKENDS, DEFAULT_ORDER, ENTRY_POINT_GROUP, Registry, Selection

__all__ = [
    "BUILTIN_BACKENDS",
    "DEFAULT_ORDER",
    "ENTRY_POINT_GROUP",
    "Availability",
    "Backend",
    "BaseSession",
    "LoadOptions",
    "Registry",
    "Selection",
    "Session",
    "Tensors",
]
