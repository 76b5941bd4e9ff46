"""Hardware abstraction layer: the only code that reads /proc, /sys, /dev and /etc."""

from .hostfs import HostFS
from .platform import Platform, detect

__all__ = ["HostFS", "Platform", "detect"]
