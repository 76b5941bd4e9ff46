"""USB and PCI device enumeration from sysfs (vendor/product ids, device nodes, bound drivers)."""

from __future__ import annotations

from dataclasses import dataclass

from .hostfs import HostFS


@dataclass(frozen=True)
class UsbDevice:
    """One USB device as sysfs shows it under /sys/bus/usb/devices."""

    sysfs: str
    vendor: str
    product: str
    busnum: int
    devnum: int
    name: str = ""
    speed_mbps: str = ""

    @property
    def usb_id(self) -> str:
        return f"{self.vendor}:{self.product}"

    @property
    def node(self) -> str:
        return f"/dev/bus/usb/{self.busnum:03d}/{self.devnum:03d}"


@dataclass(frozen=True)
class PciDevice:
    """One PCI function as sysfs shows it under /sys/bus/pci/devices."""

    slot: str
    vendor: str
    device: str
    pci_class: str
    driver: str | None

    @property
    def pci_id(self) -> str:
        return f"{self.vendor}:{self.device}"


def _hex_id(text: str | None) -> str:
    return (text or "").strip().lower().removeprefix("0x")


def _int(text: str | None) -> int:
    try:
        return int((text or "").strip())
    except ValueError:
        return 0


def usb_devices(fs: HostFS) -> list[UsbDevice]:
    """Every USB device (interfaces such as ``1-1:1.0`` are skipped), in sysfs order."""
    found = []
    for entry in fs.listdir("/sys/bus/usb/devices"):
        base = f"/sys/bus/usb/devices/{entry}"
        vendor = _hex_id(fs.read_text(f"{base}/idVendor"))
        if ":" in entry or not vendor:
            continue
        found.append(
            UsbDevice(
                sysfs=base,
                vendor=vendor,
                product=_hex_id(fs.read_text(f"{base}/idProduct")),
                busnum=_int(fs.read_text(f"{base}/busnum")),
                devnum=_int(fs.read_text(f"{base}/devnum")),
                name=fs.read_text(f"{base}/product") or "",
                speed_mbps=fs.read_text(f"{base}/speed") or "",
            )
        )
    return found


def pci_devices(fs: HostFS) -> list[PciDevice]:
    """Every PCI function with its bound driver (None when no driver claimed it)."""
    found = []
    for slot in fs.listdir("/sys/bus/pci/devices"):
        base = f"/sys/bus/pci/devices/{slot}"
        driver_link = f"{base}/driver"
        driver = fs.realpath(driver_link).rsplit("/", 1)[-1] if fs.exists(driver_link) else None
        found.append(
            PciDevice(
                slot=slot,
                vendor=_hex_id(fs.read_text(f"{base}/vendor")),
                device=_hex_id(fs.read_text(f"{base}/device")),
                pci_class=_hex_id(fs.read_text(f"{base}/class")),
                driver=driver,
            )
        )
    return found
