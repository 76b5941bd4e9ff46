"""NXP i.MX boards: the i.MX 8M Plus VeriSilicon NPU (VX delegate) and the i.MX 93 Ethos-U65."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .facts import Accelerator, BoardFacts
from .hostfs import HostFS

# SoC -> (accelerator id, name, device node, delegate library key in KNOWN_LIBRARIES)
_NPUS = {
    "imx8mp": ("vx-npu", "i.MX 8M Plus NPU (VeriSilicon VIP8000)", "/dev/galcore", "vx_delegate"),
    "imx93": ("ethos-u", "i.MX 93 Arm Ethos-U65 microNPU", "/dev/ethosu0", "ethosu_delegate"),
}


def imx_soc(compatible: Sequence[str]) -> str | None:
    return next((c.split(",", 1)[1] for c in reversed(compatible) if c.startswith("fsl,imx")), None)


def _npu(fs: HostFS, soc: str, libraries: Mapping[str, str]) -> Accelerator | None:
    if soc not in _NPUS:
        return None
    accel_id, name, node, library = _NPUS[soc]
    if not fs.exists(node) and library not in libraries:
        return None
    detail = {"soc": soc, "delegate": libraries.get(library, "missing")}
    if library not in libraries:
        detail["problem"] = f"NPU present but its TFLite delegate library ({library}) is not installed"
    return Accelerator(
        id=accel_id, kind=accel_id, name=name, node=node, access=fs.access(node), detail=detail
    )


def detect_imx(
    fs: HostFS, model: str, compatible: Sequence[str], libraries: Mapping[str, str]
) -> BoardFacts | None:
    """An NXP i.MX board (board id = its SoC) and its NPU, or None. The Coral Dev Board is handled apart."""
    soc = imx_soc(compatible)
    if soc is None:
        return None
    npu = _npu(fs, soc, libraries)
    return BoardFacts(soc, {"soc": soc, "vendor": "NXP"}, (npu,) if npu else ())
