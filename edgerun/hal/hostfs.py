"""HostFS: the only way edgerun reads /proc, /sys, /dev, /etc (and vendor library paths), rooted anywhere."""

from __future__ import annotations

import fnmatch
import json
import os
from pathlib import Path
from typing import Any

# A captured or hand-written device tree carries this file at its root; a live host never does.
SNAPSHOT_MANIFEST = "/edgerun-snapshot.json"
ACCESS_OK, ACCESS_DENIED, ACCESS_MISSING = "ok", "denied", "missing"
_MAX_LINK_HOPS = 40


# The service configuration edgerun reads when no other is named (under the HostFS root).
DEFAULT_CONFIG_PATH = "/etc/edgerun/config.yaml"

class HostFS:
    """Read-only view of a host's system files under ``root`` ("/" on a real device).

    Tests and emulated boards pass a captured device tree as the root. Symbolic links inside
    the tree are followed relative to the root, so absolute link targets stay inside it.
    """

    def __init__(self, root: str | os.PathLike[str] = "/") -> None:
        self.root = Path(root)
        self._manifest: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"HostFS({str(self.root)!r})"

    @property
    def is_live(self) -> bool:
        """True when this view is the running host itself, not a captured tree."""
        return self.root.resolve() == Path("/")

    @property
    def is_emulated(self) -> bool:
        """True for a captured/hand-written device tree (it carries edgerun-snapshot.json)."""
        return not self.is_live and self.path(SNAPSHOT_MANIFEST).is_file()

    @property
    def manifest(self) -> dict[str, Any]:
        """The tree's snapshot manifest (empty on a live host or a plain bind-mounted root)."""
        if self._manifest is None:
            text = self.read_text(SNAPSHOT_MANIFEST) if self.is_emulated else None
            try:
                loaded = json.loads(text) if text else {}
            except ValueError:
                loaded = {}
            self._manifest = loaded if isinstance(loaded, dict) else {}
        return self._manifest

    def path(self, host_path: str) -> Path:
        """The real path of an absolute host path such as ``/proc/cpuinfo``."""
        return self.root / host_path.lstrip("/")

    def exists(self, host_path: str) -> bool:
        return self.path(self.realpath(host_path)).exists()

    def is_dir(self, host_path: str) -> bool:
        return self.path(self.realpath(host_path)).is_dir()

    def read_bytes(self, host_path: str) -> bytes | None:
        try:
            return self.path(self.realpath(host_path)).read_bytes()
        except OSError:
            return None

    def read_text(self, host_path: str) -> str | None:
        """File contents with device-tree NULs stripped, or None when unreadable."""
        raw = self.read_bytes(host_path)
        if raw is None:
            return None
        return raw.replace(b"\x00", b"").decode("utf-8", errors="replace").strip()

    def read_strings(self, host_path: str) -> list[str]:
        """A device-tree string list (NUL-separated, e.g. ``compatible``); empty when unreadable."""
        raw = self.read_bytes(host_path) or b""
        return [s.decode("utf-8", errors="replace").strip() for s in raw.split(b"\x00") if s.strip()]

    def listdir(self, host_path: str) -> list[str]:
        """Sorted entry names of a directory; empty when it does not exist."""
        try:
            return sorted(os.listdir(self.path(self.realpath(host_path))))
        except OSError:
            return []

    def glob(self, pattern: str) -> list[str]:
        """Host paths matching a shell pattern, one ``*``/``?`` component at a time, sorted."""
        matches = ["/"]
        for part in [p for p in pattern.split("/") if p]:
            expanded = []
            for base in matches:
                prefix = base.rstrip("/")
                if any(ch in part for ch in "*?["):
                    expanded += [f"{prefix}/{n}" for n in fnmatch.filter(self.listdir(base), part)]
                elif self.exists(f"{prefix}/{part}") or self.path(f"{prefix}/{part}").is_symlink():
                    expanded.append(f"{prefix}/{part}")
            matches = expanded
        return sorted(m for m in matches if m != "/")

    def realpath(self, host_path: str) -> str:
        """The host path with every symbolic link resolved inside the root."""
        pending = [p for p in host_path.split("/") if p]
        resolved: list[str] = []
        hops = 0
        while pending:
            part = pending.pop(0)
            if part in (".", ""):
                continue
            if part == "..":
                if resolved:
                    resolved.pop()
                continue
            candidate = self.root.joinpath(*resolved, part)
            if candidate.is_symlink() and hops < _MAX_LINK_HOPS:
                hops += 1
                target = os.readlink(candidate)
                if target.startswith("/"):
                    resolved = []
                pending = [p for p in target.split("/") if p] + pending
            else:
                resolved.append(part)
        return "/" + "/".join(resolved)

    def access(self, host_path: str) -> str:
        """Whether this process may open a device node read-write: "ok", "denied" or "missing".

        A captured tree cannot hold real device nodes or their owners, so it records the
        verdict that held on the captured host in its manifest under ``access``.
        """
        if not self.exists(host_path):
            return ACCESS_MISSING
        if self.is_emulated:
            recorded = self.manifest.get("access", {})
            return str(recorded.get(host_path, ACCESS_OK)) if isinstance(recorded, dict) else ACCESS_OK
        real = self.path(self.realpath(host_path))
        return ACCESS_OK if os.access(real, os.R_OK | os.W_OK) else ACCESS_DENIED
