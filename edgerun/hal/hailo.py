"""Hailo-8/8L/10 PCIe accelerators (/dev/hailoN, driver hailo_pci / hailo1x_pci)."""

from __future__ import annotations

from .facts import Accelerator
from .hostfs import HostFS


def detect_hailos(fs: HostFS) -> list[Accelerator]:
    """Every /dev/hailoN node; the architecture needs hailortcli and is not read here."""
    return [
        Accelerator(
            id=f"hailo:{node.removeprefix('/dev/hailo')}",
            kind="hailo",
            name="Hailo accelerator",
            node=node,
            access=fs.access(node),
        )
        for node in fs.glob("/dev/hailo[0-9]*")
    ]
