"""Cameras from the HAL: V4L2 nodes in sysfs (two device trees carry one), the ioctl replies they
are parsed from, and camera code that checks nodes through HostFS (so --root applies)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from edgerun.camera.capture import OpenOptions, SourceError, open_capture
from edgerun.camera.uri import parse_source
from edgerun.cli import main
from edgerun.hal import HostFS
from edgerun.hal.snapshot import take_snapshot
from edgerun.hal.video import (
    VIDIOC_ENUM_FMT,
    VIDIOC_ENUM_FRAMESIZES,
    VIDIOC_QUERYCAP,
    list_cameras,
)

from .helpers import copy_device_tree, device_tree

YUYV, MJPG = (int.from_bytes(code, "little") for code in (b"YUYV", b"MJPG"))


class Driver:
    """Answers V4L2 ioctls from a table, byte for byte as <linux/videodev2.h> lays them out."""

    def __init__(self, device_caps: int, sizes: dict[int, list[tuple[int, int]]]) -> None:
        self.device_caps, self.sizes = device_caps, sizes

    def __call__(self, request: int, buffer: bytearray) -> None:
        if request == VIDIOC_QUERYCAP:
            struct.pack_into("<II", buffer, 84, 0x80000000 | self.device_caps, self.device_caps)
            return
        index = struct.unpack_from("<I", buffer, 0)[0]
        if request == VIDIOC_ENUM_FMT and index < len(self.sizes):
            struct.pack_into("<I", buffer, 44, list(self.sizes)[index])
            return
        code = struct.unpack_from("<I", buffer, 4)[0]
        if request == VIDIOC_ENUM_FRAMESIZES and index < len(self.sizes.get(code, [])):
            struct.pack_into("<III", buffer, 8, 1, *self.sizes[code][index])
            return
        raise OSError(22, "Invalid argument")


def test_usb_webcam_on_the_x86_tree_without_its_metadata_node() -> None:
    cameras = list_cameras(HostFS(device_tree("x86-desktop")))
    assert [(c.node, c.name, c.kind, c.access) for c in cameras] == [
        ("/dev/video0", "HD Pro Webcam C920", "usb", "ok")]
    assert cameras[0].source_uri() == "v4l2:///dev/video0" and cameras[0].formats == {}


def test_csi_sensor_on_the_jetson_tree() -> None:
    (camera,) = list_cameras(HostFS(device_tree("jetson-orin-nano")))
    assert (camera.kind, camera.sensor, camera.source_uri()) == ("csi", "imx219", "csi://0")


def test_formats_and_sizes_come_from_the_driver() -> None:
    driver = Driver(0x1 | 0x04000000, {YUYV: [(640, 480), (1280, 720)], MJPG: [(1920, 1080)]})
    (camera,) = list_cameras(HostFS(device_tree("x86-desktop")), ioctl=driver)
    assert camera.formats == {"YUYV": ["640x480", "1280x720"], "MJPG": ["1920x1080"]}
    codec = Driver(0x8000, {})  # a memory-to-memory device is not a camera
    assert list_cameras(HostFS(device_tree("x86-desktop")), ioctl=codec) == []


def test_devices_lists_cameras_instead_of_a_hint(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["devices", "--root", str(device_tree("jetson-orin-nano")), "--json"]) == 0
    cameras = json.loads(capsys.readouterr().out)["cameras"]
    assert [(c["node"], c["sensor"], c["source"]) for c in cameras] == [("/dev/video0", "imx219", "csi://0")]
    assert main(["devices", "--root", str(device_tree("x86-desktop"))]) == 0
    out = capsys.readouterr().out
    assert "  /dev/video0  HD Pro Webcam C920  usb   ok      v4l2:///dev/video0" in out


def test_snapshot_keeps_the_video_nodes(tmp_path: Path) -> None:
    take_snapshot(HostFS(device_tree("jetson-orin-nano")), tmp_path / "snap")
    assert (tmp_path / "snap/sys/class/video4linux/video0/name").read_text().strip() == \
        "vi-output, imx219 9-0010"
    assert (tmp_path / "snap/dev/video0").is_file()


def test_v4l2_sources_are_checked_through_the_hal(tmp_path: Path) -> None:
    spec = parse_source("v4l2:///dev/video0")
    with pytest.raises(SourceError, match="no video device /dev/video0"):
        open_capture(spec, OpenOptions(host_root=device_tree("rpi5")))
    denied = copy_device_tree("x86-desktop", tmp_path, access={"/dev/video0": "denied"})
    with pytest.raises(SourceError, match="permission denied on /dev/video0: add the user to group 'video'"):
        open_capture(spec, OpenOptions(host_root=denied))


def test_the_web_page_summary_lists_the_cameras() -> None:
    from edgerun.backends.registry import Registry
    from edgerun.hal import detect
    from edgerun.serving.web import device_summary

    fs = HostFS(device_tree("x86-desktop"))
    summary = device_summary(detect(fs), Registry(), fs)
    assert summary["cameras"] == [{"node": "/dev/video0", "name": "HD Pro Webcam C920", "kind": "usb",
                                   "source": "v4l2:///dev/video0"}]
