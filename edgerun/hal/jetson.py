"""NVIDIA Jetson: module from the device-tree model, L4T/JetPack from /etc/nv_tegra_release, the iGPU."""

from __future__ import annotations

import re
from collections.abc import Sequence

from .facts import Accelerator, BoardFacts
from .hostfs import ACCESS_MISSING, ACCESS_OK, HostFS

# Model-string fragments, most specific first -> board id.
_MODULES: tuple[tuple[str, str], ...] = (
    ("AGX Thor", "jetson-agx-thor"),
    ("AGX Orin", "jetson-agx-orin"),
    ("Orin NX", "jetson-orin-nx"),
    ("Orin Nano", "jetson-orin-nano"),
    ("AGX Xavier", "jetson-agx-xavier"),
    ("Xavier NX", "jetson-xavier-nx"),
    ("TX2 NX", "jetson-tx2-nx"),
    ("TX2", "jetson-tx2"),
    ("TX1", "jetson-tx1"),
    ("Nano", "jetson-nano"),
)
# SoC -> CUDA compute capability of its integrated GPU.
CUDA_ARCH = {"tegra264": "11.0", "tegra234": "8.7", "tegra194": "7.2", "tegra186": "6.2", "tegra210": "5.3"}
# L4T release -> JetPack release.
JETPACK = {
    "32.4.3": "4.4",
    "32.4.4": "4.4.1",
    "32.5.0": "4.5",
    "32.5.1": "4.5.1",
    "32.5.2": "4.5.1",
    "32.6.1": "4.6",
    "32.7.1": "4.6.1",
    "32.7.2": "4.6.2",
    "32.7.3": "4.6.3",
    "32.7.4": "4.6.4",
    "32.7.5": "4.6.5",
    "32.7.6": "4.6.6",
    "35.1.0": "5.0.2",
    "35.2.1": "5.1",
    "35.3.1": "5.1.1",
    "35.4.1": "5.1.2",
    "35.5.0": "5.1.3",
    "35.6.0": "5.1.4",
    "36.2.0": "6.0 DP",
    "36.3.0": "6.0",
    "36.4.0": "6.1",
    "36.4.3": "6.2",
    "36.4.4": "6.2.1",
    "36.4.7": "6.2.1",
    "36.5.0": "6.2.2",
    "38.2.0": "7.0",
    "38.4.0": "7.1",
    "39.2.0": "7.2",
}
_RELEASE = re.compile(r"#\s*R(?P<major>\d+)\s*\(release\),\s*REVISION:\s*(?P<revision>[\d.]+)")
# Device nodes the CUDA driver opens on Tegra (older L4T, then the JetPack 6 nvgpu layout).
_GPU_NODES = ("/dev/nvhost-ctrl-gpu", "/dev/nvgpu/igpu0/ctrl")


def parse_l4t_release(text: str) -> str | None:
    """ "# R35 (release), REVISION: 3.1, ..." -> "35.3.1"."""
    match = _RELEASE.search(text)
    if match is None:
        return None
    revision = match["revision"].split(".")
    revision += ["0"] * (2 - len(revision))
    return ".".join([match["major"], *revision[:2]])


def jetpack_for(l4t: str) -> str:
    return JETPACK.get(l4t, f"unknown (L4T {l4t} is not in edgerun's table)")


def expected_tensorrt(l4t: str) -> str:
    """The TensorRT major.minor that the JetPack of this L4T release ships."""
    parts = tuple(int(p) for p in l4t.split(".")[:2])
    if parts[0] <= 32:
        return "8.2"
    if parts[0] < 36:
        return "8.5"
    if parts < (36, 4):
        return "8.6"
    return "10.3" if parts[0] == 36 else "10"


def _module(model: str) -> str:
    return next((board for fragment, board in _MODULES if fragment in model), "jetson")


def is_jetson(fs: HostFS, model: str, compatible: Sequence[str]) -> bool:
    return (
        "Jetson" in model
        or any(c.startswith("nvidia,tegra") for c in compatible)
        or fs.exists("/etc/nv_tegra_release")
    )


def _gpu(fs: HostFS, board: str, soc: str) -> Accelerator:
    node = next((n for n in _GPU_NODES if fs.exists(n)), _GPU_NODES[0])
    access = fs.access(node)
    if access == ACCESS_OK and fs.access("/dev/nvmap") != ACCESS_OK:
        node, access = "/dev/nvmap", fs.access("/dev/nvmap")
    detail = {"soc": soc, "cuda_compute_capability": CUDA_ARCH.get(soc, "unknown")}
    if access == ACCESS_MISSING:
        detail["problem"] = "GPU device nodes missing (in a container: run with --runtime nvidia)"
    return Accelerator(
        id="nvidia-gpu:0",
        kind="nvidia-gpu",
        name=f"{board} integrated GPU",
        node=node,
        access=access,
        detail=detail,
    )


def detect_jetson(fs: HostFS, model: str, compatible: Sequence[str]) -> BoardFacts | None:
    """The Jetson module, its L4T and JetPack releases and its integrated GPU, or None."""
    if not is_jetson(fs, model, compatible):
        return None
    board = _module(model)
    soc = next((c.split(",", 1)[1] for c in reversed(compatible) if c.startswith("nvidia,tegra")), "")
    facts = {"soc": soc, "cuda_compute_capability": CUDA_ARCH.get(soc, "unknown")}
    l4t = parse_l4t_release(fs.read_text("/etc/nv_tegra_release") or "")
    if l4t:
        facts.update(l4t=l4t, jetpack=jetpack_for(l4t), tensorrt_expected=expected_tensorrt(l4t))
    return BoardFacts(board, facts, (_gpu(fs, board, soc),))
