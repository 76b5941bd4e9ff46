"""Rockchip RK356x/RK3576/RK3588 boards and their RKNPU (device tree, driver version, DRM render node)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from .facts import Accelerator, BoardFacts
from .hostfs import ACCESS_MISSING, HostFS

NPU_CORES = {"rk3588": 3, "rk3576": 2, "rk3568": 1, "rk3566": 1, "rk3562": 1}
_VERSION = re.compile(r"v?(\d+\.\d+\.\d+)")


def rockchip_soc(compatible: Sequence[str]) -> str | None:
    """ "rockchip,rk3588" (the last matching entry of the compatible list) -> "rk3588"."""
    for entry in reversed(compatible):
        match = re.fullmatch(r"rockchip,(rk\d{4}[a-z]?)", entry)
        if match:
            return match[1]
    return None


def _npu_in_device_tree(fs: HostFS) -> bool:
    for node in fs.glob("/proc/device-tree/npu@*"):
        if any("rknpu" in c for c in fs.read_strings(f"{node}/compatible")):
            return (fs.read_text(f"{node}/status") or "okay") in ("okay", "ok")
    return False


def _driver_version(fs: HostFS) -> str | None:
    for source in ("/sys/kernel/debug/rknpu/version", "/proc/rknpu/version", "/sys/module/rknpu/version"):
        match = _VERSION.search(fs.read_text(source) or "")
        if match:
            return match[1]
    return None


def _render_node(fs: HostFS) -> str | None:
    for render in fs.glob("/sys/class/drm/renderD*"):
        if fs.realpath(f"{render}/device/driver").rsplit("/", 1)[-1].lower() == "rknpu":
            return "/dev/dri/" + render.rsplit("/", 1)[-1]
    return "/dev/rknpu" if fs.exists("/dev/rknpu") else None


def _npu(fs: HostFS, soc: str) -> Accelerator | None:
    driver = _driver_version(fs)
    loaded = driver is not None or fs.exists("/sys/module/rknpu")
    if not (loaded or _npu_in_device_tree(fs)):
        return None
    node = _render_node(fs)
    detail = {"soc": soc, "npu_cores": str(NPU_CORES.get(soc, 1)), "driver": driver or "unknown"}
    if not loaded:
        detail["problem"] = (
            "NPU in the device tree but the rknpu driver is not loaded (vendor BSP kernel needed)"
        )
    return Accelerator(
        id="rknpu",
        kind="rknpu",
        name=f"Rockchip {soc.upper()} NPU",
        node=node,
        access=fs.access(node) if node else ACCESS_MISSING,
        detail=detail,
    )


def detect_rockchip(fs: HostFS, model: str, compatible: Sequence[str]) -> BoardFacts | None:
    """A Rockchip board (board id = its SoC) with its NPU, or None."""
    soc = rockchip_soc(compatible)
    if soc is None:
        return None
    npu = _npu(fs, soc)
    return BoardFacts(f"rockchip-{soc}", {"soc": soc, "vendor": "Rockchip"}, (npu,) if npu else ())
