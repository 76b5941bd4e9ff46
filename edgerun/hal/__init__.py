"""Hardware abstraction layer: the only code that reads /proc, /sys, /dev and /etc."""

from .facts import Accelerator, BoardFacts
from .hostfs import HostFS
from .platform import Platform, detect

__all__ = ["Accelerator", "BoardFacts", "HostFS", "Platform", "detect"]
