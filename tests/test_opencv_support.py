"""`edgerun devices` says which cv2 is loaded from where, and warns when the board's csi:// pipeline
needs GStreamer that this cv2 lacks (the real pip opencv-python-headless has none)."""

from __future__ import annotations

import json
import re

import pytest

from edgerun.camera.opencv_support import gstreamer_needed, opencv_report
from edgerun.cli import main

from .helpers import device_tree

cv2 = pytest.importorskip("cv2", reason="the test extra installs opencv-python-headless")
PIP_WITHOUT_GSTREAMER = re.search(r"GStreamer:\s+NO", cv2.getBuildInformation()) is not None


def _devices(board: str, capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    assert main(["devices", "--root", str(device_tree(board)), *extra]) == 0
    return capsys.readouterr().out


@pytest.mark.skipif(not PIP_WITHOUT_GSTREAMER, reason="this cv2 has GStreamer: nothing to warn about")
def test_jetson_tree_with_pip_opencv_warns_and_names_the_module(capsys: pytest.CaptureFixture[str]) -> None:
    out = _devices("jetson-orin-nano", capsys)
    assert f"opencv: cv2 {cv2.__version__} from {cv2.__file__} (opencv-python-headless " in out
    assert "GStreamer no\n  warning: csi:// on this jetson board needs OpenCV with GStreamer" in out
    assert "pip uninstall opencv-python-headless" in out and "--system-site-packages" in out
    report = json.loads(_devices("jetson-orin-nano", capsys, "--json"))["opencv"]
    assert report["module"] == cv2.__file__ and report["gstreamer"] is False
    assert report["distribution"].startswith("opencv-python-headless ")


def test_boards_whose_camera_needs_no_gstreamer_get_no_warning(capsys: pytest.CaptureFixture[str]) -> None:
    out = _devices("x86-desktop", capsys)
    assert f"opencv: cv2 {cv2.__version__} from {cv2.__file__}" in out and "warning: csi://" not in out


def test_which_boards_need_gstreamer_for_csi() -> None:
    assert gstreamer_needed("jetson", has_picamera2=True)
    assert gstreamer_needed("raspberrypi", has_picamera2=False)  # libcamerasrc fallback
    assert not gstreamer_needed("raspberrypi", has_picamera2=True)
    assert not gstreamer_needed("x86_64", has_picamera2=False)
    missing = opencv_report(None, "jetson", has_picamera2=False)
    assert missing["module"] is None and "no cv2 is importable" in missing["warning"]
    assert opencv_report(None, "rockchip", has_picamera2=False)["warning"] is None
    if PIP_WITHOUT_GSTREAMER:
        pi = opencv_report(cv2, "raspberrypi", has_picamera2=False)["warning"]
        assert pi is not None and "python3-picamera2" in pi
        assert opencv_report(cv2, "raspberrypi", has_picamera2=True)["warning"] is None
