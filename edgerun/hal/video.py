"""Cameras: V4L2 nodes from sysfs (name, kind), formats and frame sizes by ioctl on the live host.

sysfs (/sys/class/video4linux/videoN/{name,index}) says what each /dev/videoN is; it works on a
captured device tree too. Formats and sizes need the device itself (VIDIOC_ENUM_FMT and
VIDIOC_ENUM_FRAMESIZES), so they are read only when the HostFS is the live host.
"""

from __future__ import annotations

import fcntl
import os
import re
import struct
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from .hostfs import ACCESS_OK, HostFS

VIDEO_NODE_PREFIX = "/dev/video"
V4L2_SYSFS = "/sys/class/video4linux"
DEVICE_NODE = re.compile(r"/dev/[A-Za-z0-9_./-]+")

# <linux/videodev2.h>: _IOR('V', 0, v4l2_capability[104]), _IOWR('V', 2, v4l2_fmtdesc[64]),
# _IOWR('V', 74, v4l2_frmsizeenum[44]).
VIDIOC_QUERYCAP = 0x80685600
VIDIOC_ENUM_FMT = 0xC0405602
VIDIOC_ENUM_FRAMESIZES = 0xC02C564A
CAP_VIDEO_CAPTURE, CAP_META_CAPTURE, CAP_VIDEO_M2M = 0x1, 0x00800000, 0x8000
CAP_DEVICE_CAPS = 0x80000000
BUF_TYPE_VIDEO_CAPTURE = 1
FRMSIZE_TYPE_DISCRETE = 1
MAX_FORMATS, MAX_SIZES = 32, 64

# CSI receivers: Jetson's VI ("vi-output, imx219 9-0010"), the Raspberry Pi's unicam / RP1 CFE.
_CSI_NAME = re.compile(r"^(vi-output|unicam|rp1-cfe)", re.IGNORECASE)
# Memory-to-memory and ISP nodes (codecs, scalers) are not cameras.
_NOT_CAMERA = re.compile(r"codec|isp|pispbe|hevc|jpeg|scaler|rga|hantro|vpu|-dec|-enc|bcm2835-", re.I)

Ioctl = Callable[[int, bytearray], None]  # (request, buffer): fills buffer or raises OSError


@dataclass(frozen=True)
class Camera:
    """One camera device node and what is known about it."""

    node: str                    # /dev/video0
    name: str                    # the driver's name for it (sysfs)
    kind: str                    # usb, csi or platform
    access: str                  # ok, denied, missing (as hostfs.access reports it)
    sensor: str | None = None    # CSI: the sensor, e.g. imx219
    formats: dict[str, list[str]] = field(default_factory=dict)  # fourcc -> ["640x480", ...] (live only)
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def source_uri(self) -> str:
        """The `edgerun run --source` value: csi://N for a Jetson CSI sensor (Argus numbers them as
        the VI numbers its nodes), else the V4L2 node."""
        if self.kind == "csi" and self.sensor:
            return f"csi://{self.node.removeprefix(VIDEO_NODE_PREFIX)}"
        return f"v4l2://{self.node}"


def video_node(index: int) -> str:
    """The V4L2 device node of camera ``index``: /dev/videoN."""
    return f"{VIDEO_NODE_PREFIX}{index}"


def is_video_node(text: str) -> bool:
    return text.startswith(VIDEO_NODE_PREFIX)


def is_device_path(text: str) -> bool:
    """A plain /dev/... path (no '..'), as a v4l2:// source may name."""
    return DEVICE_NODE.fullmatch(text) is not None and ".." not in text


def _kind(fs: HostFS, entry: str, name: str) -> str:
    if _CSI_NAME.match(name):
        return "csi"
    device = fs.realpath(f"{V4L2_SYSFS}/{entry}/device")
    return "usb" if "/usb" in device else "platform"


def _sensor(name: str) -> str | None:
    """'vi-output, imx219 9-0010' -> 'imx219'."""
    match = re.match(r"vi-output,\s*(\S+)", name)
    return match[1] if match else None


def _is_capture_node(fs: HostFS, entry: str, name: str) -> bool:
    """sysfs heuristics: UVC puts its metadata node at index 1; ISP/codec nodes are not cameras."""
    index = fs.read_text(f"{V4L2_SYSFS}/{entry}/index")
    return (index in (None, "", "0")) and not _NOT_CAMERA.search(name)


def list_cameras(fs: HostFS, ioctl: Ioctl | None = None) -> list[Camera]:
    """Every camera node the host exposes, with formats when ``fs`` is the live host (or when an
    ``ioctl`` stand-in answers for the driver)."""
    cameras = []
    for entry in fs.listdir(V4L2_SYSFS):
        if not entry.startswith("video"):
            continue
        name = fs.read_text(f"{V4L2_SYSFS}/{entry}/name") or entry
        if not _is_capture_node(fs, entry, name):
            continue
        node = f"/dev/{entry}"
        camera = Camera(node, name, _kind(fs, entry, name), fs.access(node), _sensor(name))
        if ioctl is not None:
            camera = _with_formats(camera, ioctl)
        elif fs.is_live and camera.access == ACCESS_OK:
            camera = _live_formats(camera)
        cameras.append(camera)
    return [c for c in cameras if c.note != "not a capture device"]


def _with_formats(camera: Camera, ioctl: Ioctl) -> Camera:
    try:
        caps = query_caps(ioctl)
        if not caps & CAP_VIDEO_CAPTURE or caps & CAP_VIDEO_M2M:
            return Camera(**{**camera.to_dict(), "note": "not a capture device"})
        formats = {fourcc: frame_sizes(ioctl, code) for fourcc, code in enum_formats(ioctl)}
    except OSError as exc:
        return Camera(**{**camera.to_dict(), "note": f"formats unreadable: {exc.strerror or exc}"})
    return Camera(**{**camera.to_dict(), "formats": formats})


def _live_formats(camera: Camera) -> Camera:
    """Open the node (non-blocking: no streaming starts) and ask the driver."""
    try:
        fd = os.open(camera.node, os.O_RDWR | os.O_NONBLOCK)
    except OSError as exc:
        return Camera(**{**camera.to_dict(), "note": f"cannot open: {exc.strerror or exc}"})
    try:
        return _with_formats(camera, lambda request, buffer: fcntl.ioctl(fd, request, buffer))
    finally:
        os.close(fd)


def query_caps(ioctl: Ioctl) -> int:
    """The node's own capabilities (device_caps when the driver sets DEVICE_CAPS)."""
    buffer = bytearray(104)
    ioctl(VIDIOC_QUERYCAP, buffer)
    capabilities, device_caps = struct.unpack_from("<II", buffer, 84)
    return device_caps if capabilities & CAP_DEVICE_CAPS else capabilities


def fourcc(code: int) -> str:
    return code.to_bytes(4, "little").decode("ascii", "replace").strip()


def enum_formats(ioctl: Ioctl) -> list[tuple[str, int]]:
    """(fourcc, code) of each capture pixel format, until the driver says EINVAL."""
    found = []
    for index in range(MAX_FORMATS):
        buffer = bytearray(struct.pack("<II", index, BUF_TYPE_VIDEO_CAPTURE) + bytes(56))
        try:
            ioctl(VIDIOC_ENUM_FMT, buffer)
        except OSError:
            break
        code = struct.unpack_from("<I", buffer, 44)[0]
        found.append((fourcc(code), code))
    return found


def frame_sizes(ioctl: Ioctl, pixel_format: int) -> list[str]:
    """"WxH" per discrete size, or one "WminxHmin-WmaxxHmax" range for stepwise drivers."""
    sizes = []
    for index in range(MAX_SIZES):
        buffer = bytearray(struct.pack("<III", index, pixel_format, 0) + bytes(32))
        try:
            ioctl(VIDIOC_ENUM_FRAMESIZES, buffer)
        except OSError:
            break
        kind = struct.unpack_from("<I", buffer, 8)[0]
        values = struct.unpack_from("<6I", buffer, 12)
        if kind != FRMSIZE_TYPE_DISCRETE:
            sizes.append(f"{values[0]}x{values[3]}-{values[1]}x{values[4]}")
            break
        sizes.append(f"{values[0]}x{values[1]}")
    return sizes


def video_node_problem(fs: HostFS, node: str) -> str | None:
    """Why a V4L2 node cannot be opened, from ``fs`` (the tree --root names, or the live host)."""
    access = fs.access(node)
    if access == ACCESS_OK:
        return None
    if access == "denied":
        return f"permission denied on {node}: add the user to group 'video'"
    return f"no video device {node} (is the camera plugged in and mapped?)"
