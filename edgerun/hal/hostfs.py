"""HostFS: the only way edgerun reads /proc, /sys, /dev and /etc, rooted anywhere."""

from __future__ import annotations

import os
from pathlib import Path


class HostFS:
    """Read-only view of a host's system files under ``root`` ("/" on a real device).

    Tests and emulated boards pass a captured device tree as the root.
    """

    def __init__(self, root: str | os.PathLike[str] = "/") -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"HostFS({str(self.root)!r})"

    @property
    def is_live(self) -> bool:
        """True when this view is the running host itself, not a captured tree."""
        return self.root.resolve() == Path("/")

    def path(self, host_path: str) -> Path:
        """The real path of an absolute host path such as ``/proc/cpuinfo``."""
        return self.root / host_path.lstrip("/")

    def exists(self, host_path: str) -> bool:
        return self.path(host_path).exists()

    def read_text(self, host_path: str) -> str | None:
        """File contents with device-tree NULs stripped, or None when unreadable."""
        try:
            raw = self.path(host_path).read_bytes()
        except OSError:
            return None
        return raw.replace(b"\x00", b"").decode("utf-8", errors="replace").strip()

    def listdir(self, host_path: str) -> list[str]:
        """Sorted entry names of a directory; empty when it does not exist."""
        try:
            return sorted(os.listdir(self.path(host_path)))
        except OSError:
            return []
