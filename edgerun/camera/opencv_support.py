"""Which OpenCV (cv2) this process loads, from where, and whether it can open the board's CSI camera."""

from __future__ import annotations

import importlib.metadata
import re
from types import ModuleType
from typing import Any

_GSTREAMER = re.compile(r"GStreamer:\s+YES")


def gstreamer_needed(family: str, has_picamera2: bool) -> bool:
    """csi:// goes through GStreamer on Jetson (nvarguscamerasrc) and on a Pi without picamera2
    (libcamerasrc)."""
    return family == "jetson" or (family == "raspberrypi" and not has_picamera2)


def _distribution(module: ModuleType) -> str | None:
    """The pip distribution that installed cv2 (e.g. opencv-python-headless 4.11.0.86), or None (apt)."""
    names = importlib.metadata.packages_distributions().get(module.__name__, [])
    for name in names:
        try:
            return f"{name} {importlib.metadata.version(name)}"
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def opencv_report(cv2: ModuleType | None, family: str, has_picamera2: bool) -> dict[str, Any]:
    """What `edgerun devices` says about OpenCV: version, file, pip distribution, GStreamer, warning."""
    needed = gstreamer_needed(family, has_picamera2)
    if cv2 is None:
        report: dict[str, Any] = {"module": None, "gstreamer": None, "warning": None}
        if needed:
            report["warning"] = (
                "csi:// needs OpenCV built with GStreamer and no cv2 is importable: "
                + _remedy(family)
            )
        return report
    gstreamer = _GSTREAMER.search(cv2.getBuildInformation()) is not None
    source = _distribution(cv2)
    report = {
        "module": cv2.__file__,
        "version": cv2.__version__,
        "distribution": source or "not pip (system package or a local build)",
        "gstreamer": gstreamer,
        "warning": None,
    }
    if needed and not gstreamer:
        report["warning"] = (
            f"csi:// on this {family} board needs OpenCV with GStreamer, but cv2 {cv2.__version__} from "
            f"{cv2.__file__} ({source or 'not pip'}) has none: " + _remedy(family)
        )
    return report


def _remedy(family: str) -> str:
    if family == "jetson":
        return ("pip uninstall opencv-python-headless (and opencv-python), then use JetPack's or Ubuntu's "
                "python3-opencv from a venv made with --system-site-packages (pip install 'edgerun[jetson]')")
    return ("install python3-picamera2 (Raspberry Pi OS) and make the venv with --system-site-packages, "
            "or an OpenCV built with GStreamer")


def load_cv2() -> ModuleType | None:
    """Import cv2 if it is installed (devices reporting only; capture code imports it itself)."""
    try:
        import cv2
    except ImportError:
        return None
    return cv2
