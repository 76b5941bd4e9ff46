"""NVIDIA discrete GPUs: driver version from /proc/driver/nvidia, models per GPU, /dev/nvidiaN nodes."""

from __future__ import annotations

import re

from .buses import pci_devices
from .facts import Accelerator
from .hostfs import HostFS

NVIDIA_VENDOR = "10de"
_DRIVER = re.compile(r"Kernel Module\s+(?:for\s+\S+\s+)?(\d+(?:\.\d+)+)")


def driver_version(fs: HostFS) -> str | None:
    """ "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.14 ..." -> "550.54.14"."""
    match = _DRIVER.search(fs.read_text("/proc/driver/nvidia/version") or "")
    return match[1] if match else None


def _information(fs: HostFS, bus: str) -> dict[str, str]:
    fields = {}
    for line in (fs.read_text(f"/proc/driver/nvidia/gpus/{bus}/information") or "").splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


def _gpu(fs: HostFS, index: int, name: str, detail: dict[str, str]) -> Accelerator:
    node = f"/dev/nvidia{index}"
    access = fs.access(node)
    if access == "ok" and fs.access("/dev/nvidiactl") != "ok":
        node, access = "/dev/nvidiactl", fs.access("/dev/nvidiactl")
    if access == "missing":
        detail["problem"] = "device node missing (in a container: run with --gpus all)"
    return Accelerator(
        id=f"nvidia-gpu:{index}", kind="nvidia-gpu", name=name, node=node, access=access, detail=detail
    )


def detect_dgpus(fs: HostFS) -> list[Accelerator]:
    """Every NVIDIA display/3D controller on PCI, with the driver's view of it when loaded."""
    driver = driver_version(fs)
    gpus = [d for d in pci_devices(fs) if d.vendor == NVIDIA_VENDOR and d.pci_class.startswith("03")]
    found = []
    for index, device in enumerate(gpus):
        info = _information(fs, device.slot) if driver else {}
        detail = {"pci_slot": device.slot, "pci_id": device.pci_id, "driver": driver or "not loaded"}
        if not driver:
            detail["problem"] = "NVIDIA kernel driver not loaded"
        found.append(_gpu(fs, index, info.get("Model", f"NVIDIA GPU {device.pci_id}"), detail))
    return found
