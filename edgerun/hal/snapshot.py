"""``edgerun devices --snapshot DIR``: copy the allow-listed files the HAL reads into a new device tree."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from .hostfs import SNAPSHOT_MANIFEST, HostFS
from .libraries import find_libraries

# Files the HAL (and the power/thermal readers) look at; nothing else leaves the host.
ALLOWED_FILES: tuple[str, ...] = (
    "/proc/cpuinfo",
    "/proc/version",
    "/etc/os-release",
    "/etc/nv_tegra_release",
    "/etc/mendel_version",
    "/proc/device-tree/model",
    "/proc/device-tree/compatible",
    "/proc/device-tree/npu@*/compatible",
    "/proc/device-tree/npu@*/status",
    "/sys/firmware/devicetree/base/model",
    "/sys/firmware/devicetree/base/compatible",
    "/proc/driver/nvidia/version",
    "/proc/driver/nvidia/gpus/*/information",
    "/sys/bus/usb/devices/*/idVendor",
    "/sys/bus/usb/devices/*/idProduct",
    "/sys/bus/usb/devices/*/busnum",
    "/sys/bus/usb/devices/*/devnum",
    "/sys/bus/usb/devices/*/product",
    "/sys/bus/usb/devices/*/speed",
    "/sys/bus/pci/devices/*/vendor",
    "/sys/bus/pci/devices/*/device",
    "/sys/bus/pci/devices/*/class",
    "/sys/class/apex/*/*temp*",
    "/sys/class/apex/*/temp_poll_interval",
    "/sys/kernel/debug/rknpu/version",
    "/sys/kernel/debug/rknpu/load",
    "/proc/rknpu/version",
    "/sys/class/devfreq/*.npu/cur_freq",
    "/sys/class/devfreq/*.npu/load",
    "/sys/bus/i2c/devices/*/name",
    "/sys/bus/i2c/devices/*/hwmon/hwmon*/*",
    "/sys/bus/i2c/devices/*/iio:device*/*",
    "/sys/class/hwmon/hwmon*/name",
    "/sys/class/hwmon/hwmon*/*_input",
    "/sys/class/hwmon/hwmon*/*_label",
    "/sys/class/powercap/intel-rapl:*/name",
    "/sys/class/powercap/intel-rapl:*/energy_uj",
    "/sys/class/powercap/intel-rapl:*/max_energy_range_uj",
    "/sys/class/thermal/thermal_zone*/type",
    "/sys/class/thermal/thermal_zone*/temp",
    "/sys/class/thermal/thermal_zone*/trip_point_*",
    "/sys/class/video4linux/video*/name",
    "/sys/class/video4linux/video*/index",
    "/sys/class/video4linux/video*/dev",
    "/sys/devices/gpu.0/load",
    "/sys/devices/platform/bus@0/*.gpu/load",
    "/sys/devices/platform/*.gpu/load",
    "/sys/class/hwmon/hwmon*/oc*_event_cnt",
    "/sys/class/hwmon/hwmon*/oc*_throt_en",
    "/sys/devices/platform/*/*:firmware/get_throttled",
    "/sys/devices/system/cpu/cpu*/cpufreq/scaling_cur_freq",
    "/proc/stat",
)
# Device nodes: written as empty placeholders, with this host's access verdict in the manifest.
ALLOWED_NODES: tuple[str, ...] = (
    "/dev/apex_*",
    "/dev/nvidia[0-9]*",
    "/dev/nvidiactl",
    "/dev/nvhost-ctrl-gpu",
    "/dev/nvgpu/igpu0/ctrl",
    "/dev/nvmap",
    "/dev/galcore",
    "/dev/ethosu*",
    "/dev/dri/renderD*",
    "/dev/hailo*",
    "/dev/rknpu",
    "/dev/bus/usb/*/*",
    "/dev/video*",
)
# Bound-driver links kept as links (the HAL reads the driver's name from them).
DRIVER_LINKS = {"/sys/bus/pci/devices/*/driver": "pci", "/sys/class/drm/renderD*/device/driver": "platform"}
MARKER_DIRS = ("/sys/module/rknpu",)
CAPTURED_COMMANDS = (("vcgencmd", "pmic_read_adc"), ("vcgencmd", "get_throttled"))
_REDACT = (
    (re.compile(rb"^(Serial\s*:\s*)\S+", re.MULTILINE), rb"\g<1>0000000000000000"),
    (re.compile(rb"^(GPU UUID:\s*)\S+", re.MULTILINE), rb"\g<1>GPU-redacted"),
)

CommandRunner = Callable[[Sequence[str]], "str | None"]


def _write(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)


def _keep_dir(folder: Path) -> None:
    """Create a sysfs directory with the (empty) ``uevent`` file real driver and module directories
    have, so that the tree survives version control, which drops empty directories."""
    _write(folder / "uevent", b"")


def _redact(data: bytes) -> bytes:
    for pattern, replacement in _REDACT:
        data = pattern.sub(replacement, data)
    return data


def _copy_files(fs: HostFS, dest: Path) -> list[str]:
    unreadable = []
    for pattern in ALLOWED_FILES:
        for host_path in fs.glob(pattern):
            if fs.is_dir(host_path):
                continue
            data = fs.read_bytes(host_path)
            if data is None:
                unreadable.append(host_path)
            else:
                _write(dest / host_path.lstrip("/"), _redact(data))
    return unreadable


def _copy_links_and_nodes(fs: HostFS, dest: Path) -> dict[str, str]:
    for pattern, bus in DRIVER_LINKS.items():
        for link in fs.glob(pattern):
            driver = fs.realpath(link).rsplit("/", 1)[-1]
            _keep_dir(dest / f"sys/bus/{bus}/drivers/{driver}")
            target = dest / link.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(f"/sys/bus/{bus}/drivers/{driver}", target)
    for marker in MARKER_DIRS:
        if fs.is_dir(marker):
            _keep_dir(dest / marker.lstrip("/"))
    access = {}
    for pattern in ALLOWED_NODES:
        for node in fs.glob(pattern):
            _write(dest / node.lstrip("/"), b"")
            access[node] = fs.access(node)
    return access


def _copy_libraries(fs: HostFS, dest: Path) -> None:
    for path in find_libraries(fs).values():
        _write(dest / path.lstrip("/"), b"placeholder: stands for the real library\n")


def take_snapshot(fs: HostFS, dest: Path, runner: CommandRunner | None = None) -> dict[str, object]:
    """Copy the allow-listed files of ``fs`` into ``dest`` (new or empty); return the manifest."""
    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"{dest} is not empty; give a new directory")
    dest.mkdir(parents=True, exist_ok=True)
    unreadable = _copy_files(fs, dest)
    access = _copy_links_and_nodes(fs, dest)
    _copy_libraries(fs, dest)
    commands = {
        " ".join(argv): out for argv in CAPTURED_COMMANDS if runner and (out := runner(argv)) is not None
    }
    manifest = {
        "schema": 1,
        "source": f"edgerun devices --snapshot of {fs.root}",
        "captured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "access": access,
        "commands": commands,
        "unreadable": unreadable,
        "redacted": ["Serial in /proc/cpuinfo", "GPU UUID in /proc/driver/nvidia"],
    }
    _write(dest / SNAPSHOT_MANIFEST.lstrip("/"), json.dumps(manifest, indent=2).encode() + b"\n")
    return manifest
