"""Board profiles: which backends a board prefers (accelerator first) and how it feeds a camera."""

from __future__ import annotations

from dataclasses import dataclass

from .platform import Platform

# Accelerator kind -> the backend that drives it.
ACCELERATOR_BACKENDS = {
    "nvidia-gpu": "tensorrt",
    "edgetpu": "edgetpu",
    "rknpu": "rknn",
    "hailo": "hailo",
    "vx-npu": "armnpu",
    "ethos-u": "armnpu",
}
SIMULATED = "simulated"


@dataclass(frozen=True)
class BoardProfile:
    """What edgerun assumes about a board family beyond what detection reads."""

    family: str
    cpu_backends: tuple[str, ...]
    camera: str


_CSI_JETSON = (
    "csi://0 -> nvarguscamerasrc sensor-id=0 ! video/x-raw(memory:NVMM) ! nvvidconv ! "
    "video/x-raw,format=BGRx ! videoconvert ! appsink drop=true max-buffers=1"
)
_PICAMERA = (
    "picamera2 (libcamera; system Python) or libcamerasrc ! videoconvert ! appsink; USB: /dev/video0 (V4L2)"
)
_V4L2 = "v4l2:///dev/video0 (V4L2, UVC USB camera)"

# Matched by board-id prefix, first match wins; the last entry matches everything.
PROFILES: tuple[tuple[str, BoardProfile], ...] = (
    ("jetson", BoardProfile("jetson", ("onnxruntime", "litert"), _CSI_JETSON)),
    ("rpi", BoardProfile("raspberrypi", ("litert", "ncnn", "onnxruntime"), _PICAMERA)),
    (
        "coral-devboard",
        BoardProfile(
            "coral-devboard", ("litert", "onnxruntime"), "v4l2:///dev/video0 (Coral Camera on MIPI-CSI, V4L2)"
        ),
    ),
    (
        "rockchip",
        BoardProfile(
            "rockchip",
            ("ncnn", "litert", "onnxruntime"),
            "v4l2:///dev/video0 (MIPI-CSI through rkisp, or UVC USB)",
        ),
    ),
    (
        "imx",
        BoardProfile("nxp-imx", ("litert", "onnxruntime"), "v4l2:///dev/video0 (MIPI-CSI through ISI/ISP)"),
    ),
    ("generic-x86_64", BoardProfile("x86_64", ("onnxruntime", "openvino", "litert"), _V4L2)),
    ("", BoardProfile("generic", ("onnxruntime", "litert", "ncnn"), _V4L2)),
)


def profile_for(platform: Platform) -> BoardProfile:
    return next(profile for prefix, profile in PROFILES if platform.board.startswith(prefix))


def accelerator_backends(platform: Platform) -> list[str]:
    """The backends for the accelerators present, in detection order, each once."""
    names = [
        ACCELERATOR_BACKENDS[a.kind] for a in platform.accelerator_details if a.kind in ACCELERATOR_BACKENDS
    ]
    return list(dict.fromkeys(names))


def backend_preference(platform: Platform) -> list[str]:
    """Accelerator backends first, then the board's CPU runtimes.

    On an emulated platform (a captured device tree) the simulated backend goes first: it stands
    in for the board's accelerator backend and runs the model on this machine's CPU.
    """
    accelerated = accelerator_backends(platform)
    simulated = [SIMULATED] if platform.emulated and accelerated else []
    return list(dict.fromkeys([*simulated, *accelerated, *profile_for(platform).cpu_backends]))


def simulated_target(platform: Platform) -> str | None:
    """The accelerator backend the simulated backend stands in for on this platform, or None."""
    accelerated = accelerator_backends(platform)
    return accelerated[0] if platform.emulated and accelerated else None
