"""Google Coral: USB Accelerator (1a6e:089a / 18d1:9302), PCIe/M.2 modules (/dev/apex_N) and the Dev Board."""

from __future__ import annotations

import re
from collections.abc import Sequence

from .buses import pci_devices, usb_devices
from .facts import Accelerator, BoardFacts
from .hostfs import ACCESS_MISSING, HostFS

USB_BOOTLOADER_ID = "1a6e:089a"  # Global Unichip: before libedgetpu downloads the firmware
USB_RUNTIME_ID = "18d1:9302"  # Google: after the firmware is loaded
PCI_ID = "1ac1:089a"  # Global Unichip Coral Edge TPU (gasket + apex drivers)


def _usb_accelerators(fs: HostFS) -> list[Accelerator]:
    found: list[Accelerator] = []
    for device in usb_devices(fs):
        if device.usb_id not in (USB_BOOTLOADER_ID, USB_RUNTIME_ID):
            continue
        state = (
            "firmware not loaded yet (libedgetpu loads it on first use, then the device "
            f"re-enumerates as {USB_RUNTIME_ID})"
            if device.usb_id == USB_BOOTLOADER_ID
            else "firmware loaded"
        )
        detail = {"usb_id": device.usb_id, "state": state, "sysfs": device.sysfs}
        if device.speed_mbps:
            detail["speed_mbps"] = device.speed_mbps
        found.append(
            Accelerator(
                id=f"edgetpu-usb:{len(found)}",
                kind="edgetpu",
                name="Coral USB Accelerator",
                node=device.node,
                access=fs.access(device.node),
                detail=detail,
            )
        )
    return found


def _apex_temperature(fs: HostFS, apex: str) -> dict[str, str]:
    millic = fs.read_text(f"/sys/class/apex/{apex}/temp")
    return {"temp_c": f"{int(millic) / 1000:.1f}"} if millic and millic.isdigit() else {}


def _pci_accelerators(fs: HostFS, name: str) -> list[Accelerator]:
    nodes = [p.rsplit("/", 1)[-1] for p in fs.glob("/dev/apex_*")]
    classes = fs.listdir("/sys/class/apex")
    apexes = sorted(set(nodes) | set(classes), key=lambda a: int(re.sub(r"\D", "", a) or 0))
    found = [
        Accelerator(
            id=f"edgetpu-pci:{i}",
            kind="edgetpu",
            name=name,
            node=f"/dev/{apex}",
            access=fs.access(f"/dev/{apex}"),
            detail={"driver": "apex", **_apex_temperature(fs, apex)},
        )
        for i, apex in enumerate(apexes)
    ]
    unbound = [d for d in pci_devices(fs) if d.pci_id == PCI_ID and d.driver != "apex"]
    for device in unbound[: max(0, len(unbound) - len(found))]:
        found.append(
            Accelerator(
                id=f"edgetpu-pci:{len(found)}",
                kind="edgetpu",
                name=name,
                node=None,
                access=ACCESS_MISSING,
                detail={
                    "pci_slot": device.slot,
                    "driver": device.driver or "none",
                    "problem": "no apex driver bound: install gasket-dkms (gasket + apex modules)",
                },
            )
        )
    return found


def is_devboard(model: str, compatible: Sequence[str]) -> bool:
    return "phanbell" in model.lower() or any("phanbell" in c for c in compatible)


def detect_edgetpus(fs: HostFS, devboard: bool = False) -> list[Accelerator]:
    """Every Edge TPU: PCIe/M.2 (or the Dev Board's on-module TPU) first, then USB sticks."""
    name = "Coral Dev Board Edge TPU" if devboard else "Coral PCIe/M.2 Accelerator"
    return _pci_accelerators(fs, name) + _usb_accelerators(fs)


def detect_devboard(fs: HostFS, model: str, compatible: Sequence[str]) -> BoardFacts | None:
    """The Coral Dev Board (i.MX 8M Quad SoM, "Phanbell"), or None."""
    if not is_devboard(model, compatible):
        return None
    facts = {"soc": "imx8mq", "vendor": "Google Coral"}
    release = fs.read_text("/etc/mendel_version")
    if release:
        facts["mendel"] = release
    return BoardFacts("coral-devboard", facts)
