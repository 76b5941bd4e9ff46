"""Source URIs: parse `v4l2://`, `csi://`, `rtsp://`, `http(s)://`, `file://`, paths and globs (pure)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from ..errors import InvalidInputError
from ..hal.video import is_device_path, is_video_node, video_node

KINDS = ("v4l2", "csi", "rtsp", "http", "file", "images")
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
DEVICE_OPTIONS = frozenset({"width", "height", "fps", "flip"})
_GLOB = re.compile(r"[*?\[]")
VALID = ("v4l2:///dev/videoN or a bare index N, csi://N, rtsp://host/path, http(s)://host/path.mjpg, "
         "file://video.mp4 or a plain path, an image folder, or a glob like 'frames/*.jpg'")


@dataclass(frozen=True)
class SourceSpec:
    """A parsed source: its kind, what to open, and device options (width, height, fps, flip)."""

    kind: str
    target: str                       # device path, sensor index, URL, file path, folder or glob
    options: dict[str, int] = field(default_factory=dict)

    @property
    def live(self) -> bool:
        """Live sources drop frames when inference is slower; files and folders can be read in full."""
        return self.kind in ("v4l2", "csi", "rtsp", "http")

    @property
    def network(self) -> bool:
        return self.kind in ("rtsp", "http")

    def redacted(self) -> str:
        """The target with any password in a URL replaced by '***' (for logs and API answers)."""
        if not self.network:
            return self.target
        parts = urlsplit(self.target)
        if parts.password is None:
            return self.target
        netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))


def _device_options(query: str, uri: str) -> dict[str, int]:
    options: dict[str, int] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key not in DEVICE_OPTIONS:
            raise InvalidInputError(f"source {uri!r}: unknown option {key!r}; valid: "
                                    f"{', '.join(sorted(DEVICE_OPTIONS))}")
        if not value.isdigit() or (key != "flip" and int(value) == 0) or int(value) > 100_000:
            raise InvalidInputError(f"source {uri!r}: option {key} must be a positive integer, got {value!r}")
        options[key] = int(value)
    if options.get("flip", 0) > 7:
        raise InvalidInputError(f"source {uri!r}: flip must be 0..7 (nvvidconv flip-method)")
    return options


def _v4l2(rest: str, uri: str) -> SourceSpec:
    location, _, query = rest.partition("?")
    if location.isdigit():
        location = video_node(int(location))
    if not is_device_path(location):
        raise InvalidInputError(f"source {uri!r}: expected v4l2:///dev/videoN or v4l2://N")
    return SourceSpec("v4l2", location, _device_options(query, uri))


def _csi(rest: str, uri: str) -> SourceSpec:
    sensor, _, query = rest.partition("?")
    if not sensor.isdigit() or int(sensor) > 15:
        raise InvalidInputError(f"source {uri!r}: expected csi://N with a sensor index 0..15")
    return SourceSpec("csi", sensor, _device_options(query, uri))


def _network(uri: str) -> SourceSpec:
    parts = urlsplit(uri)
    if not parts.hostname:
        raise InvalidInputError(f"source {uri!r}: the URL has no host")
    kind = "rtsp" if parts.scheme in ("rtsp", "rtsps") else "http"
    return SourceSpec(kind, uri)


def _path(text: str, uri: str) -> SourceSpec:
    if not text:
        raise InvalidInputError(f"source {uri!r}: empty path; valid sources: {VALID}")
    if _GLOB.search(text):
        return SourceSpec("images", text)
    path = Path(text).expanduser()
    if path.is_dir() or Path(text).suffix.lower() in IMAGE_SUFFIXES:
        return SourceSpec("images", str(path))
    if is_video_node(text):
        return _v4l2(text, uri)
    return SourceSpec("file", str(path))


def parse_source(uri: str | int) -> SourceSpec:
    """Parse a source URI (jetson-utils style names; the ``file://``/``v4l2://`` prefixes may be left out)."""
    text = str(uri).strip()
    if text.isdigit():
        return _v4l2(text, text)
    scheme, sep, rest = text.partition("://")
    if not sep:
        return _path(text, text)
    scheme = scheme.lower()
    if scheme == "v4l2":
        return _v4l2(rest, text)
    if scheme == "csi":
        return _csi(rest, text)
    if scheme in ("rtsp", "rtsps", "http", "https"):
        return _network(text)
    if scheme == "file":
        return _path(rest, text)
    raise InvalidInputError(f"source {text!r}: unknown scheme {scheme!r}; valid sources: {VALID}")


def jetson_csi_pipeline(sensor: int, width: int = 1280, height: int = 720, fps: int = 30,
                        flip: int = 0) -> str:
    """GStreamer pipeline for a Jetson CSI camera through the Argus ISP (nvarguscamerasrc)."""
    return (f"nvarguscamerasrc sensor-id={sensor} ! "
            f"video/x-raw(memory:NVMM), width=(int){width}, height=(int){height}, "
            f"framerate=(fraction){fps}/1 ! nvvidconv flip-method={flip} ! "
            "video/x-raw, format=(string)BGRx ! videoconvert ! video/x-raw, format=(string)BGR ! "
            "appsink drop=true max-buffers=1 sync=false")


def libcamera_pipeline(width: int = 1280, height: int = 720, fps: int = 30) -> str:
    """GStreamer pipeline for a Raspberry Pi camera (libcamerasrc; NV12 from the ISP, converted to BGR)."""
    return (f"libcamerasrc ! video/x-raw, width=(int){width}, height=(int){height}, "
            f"framerate=(fraction){fps}/1, format=(string)NV12 ! videoconvert ! "
            "video/x-raw, format=(string)BGR ! appsink drop=true max-buffers=1 sync=false")
