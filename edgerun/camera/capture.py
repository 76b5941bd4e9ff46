"""Open a parsed source as a Capture (OpenCV/FFmpeg, V4L2, GStreamer CSI, picamera2, image files)."""

from __future__ import annotations

import glob
import importlib.util
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ..errors import DependencyMissingError, InvalidInputError
from .uri import IMAGE_SUFFIXES, SourceSpec, jetson_csi_pipeline, libcamera_pipeline

if TYPE_CHECKING:
    from ..hal import Platform

log = logging.getLogger(__name__)

FFMPEG_OPTIONS_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
FFMPEG_DEFAULT_OPTIONS = "rtsp_transport;tcp"   # RTSP over TCP: no lost UDP packets, passes NAT
MAX_IMAGES = 100_000


class SourceError(InvalidInputError):
    """A well-formed source that cannot be opened or read (unreachable, not a video, no such device)."""

    http_status = 422


def default_decode_threads() -> int:
    """Half the cores: decoding overlaps inference in the pipeline, so it should not take them all."""
    return max(1, (os.cpu_count() or 2) // 2)


@dataclass(frozen=True)
class OpenOptions:
    """How long opening and reading may block, FFmpeg's decoder threads, and where the HAL reads the
    board (for csi:// and V4L2 nodes); ``platform``, when the caller detected it, is used as is."""

    open_timeout_s: float = 5.0
    read_timeout_s: float = 5.0
    host_root: Path = Path("/")
    decode_threads: int = field(default_factory=default_decode_threads)
    platform: Platform | None = None

    def detected(self) -> Platform:
        """The platform: the one passed in, else detected from ``host_root`` now."""
        from ..hal import HostFS, detect

        return self.platform if self.platform is not None else detect(HostFS(self.host_root))


class Capture(Protocol):
    """One opened source. ``read`` returns the next BGR uint8 frame, or None at the end or on failure."""

    description: str
    finite: bool          # a file or folder: None from read() means the end, not a failure
    fps: float | None     # nominal frame rate, when the source says

    def read(self) -> np.ndarray | None: ...

    def release(self) -> None: ...


def cv2_module() -> Any:
    """OpenCV, imported on first use; FFmpeg captures default to RTSP over TCP."""
    try:
        import cv2
    except ImportError as exc:
        raise DependencyMissingError("video sources need OpenCV; install it with: "
                                     "pip install 'edgerun[camera]'") from exc
    os.environ.setdefault(FFMPEG_OPTIONS_ENV, FFMPEG_DEFAULT_OPTIONS)
    return cv2


class OpenCVCapture:
    """A cv2.VideoCapture whose first frame was read at open (so a bad source fails early)."""

    def __init__(self, cap: Any, description: str, finite: bool) -> None:
        self._cap = cap
        self.description = description
        self.finite = finite
        fps = float(cap.get(cv2_module().CAP_PROP_FPS) or 0.0)
        self.fps = fps if 0.0 < fps < 1000.0 else None
        ok, frame = cap.read()
        self._first: np.ndarray | None = frame if ok and frame is not None else None
        if self._first is None:
            cap.release()
            raise SourceError(f"{description}: opened, but no frame could be decoded "
                              "(not a video, an unsupported codec, or no signal)")

    def read(self) -> np.ndarray | None:
        if self._first is not None:
            frame, self._first = self._first, None
            return frame
        ok, frame = self._cap.read()
        return frame if ok and frame is not None else None

    def release(self) -> None:
        self._cap.release()


class ImageFiles:
    """A sorted list of image files read one per frame; unreadable files are skipped with a warning."""

    def __init__(self, paths: list[str], description: str, fps: float | None = None) -> None:
        self._paths = paths
        self._next = 0
        self.description = description
        self.finite = True
        self.fps = fps
        if not any(self._peek_readable()):
            raise SourceError(f"{description}: none of the {len(paths)} file(s) is a readable image")

    def _peek_readable(self) -> list[bool]:
        return [cv2_module().haveImageReader(p) for p in self._paths[:16]]

    def read(self) -> np.ndarray | None:
        cv2 = cv2_module()
        while self._next < len(self._paths):
            path = self._paths[self._next]
            self._next += 1
            image = cv2.imread(path, cv2.IMREAD_COLOR)
            if image is not None:
                return image
            log.warning("%s: skipping %s (not a readable image)", self.description, path)
        return None

    def release(self) -> None:
        self._next = len(self._paths)


class Picamera2Capture:
    """A Raspberry Pi camera through picamera2 (libcamera). Not verified on hardware."""

    def __init__(self, camera_num: int, width: int, height: int, fps: int) -> None:
        from picamera2 import Picamera2  # Raspberry Pi OS: python3-picamera2 (system site-packages)

        self.description = f"csi://{camera_num} (picamera2)"
        self.finite = False
        self.fps: float | None = float(fps)
        self._camera = Picamera2(camera_num=camera_num)
        try:
            # "RGB888" is laid out [B, G, R] in memory: the order OpenCV and the annotator use.
            config = self._camera.create_video_configuration(
                main={"size": (width, height), "format": "RGB888"}, controls={"FrameRate": fps})
            self._camera.configure(config)
            self._camera.start()
        except Exception as exc:
            self._camera.close()
            raise SourceError(f"{self.description}: cannot start the camera: {exc}") from exc

    def read(self) -> np.ndarray | None:
        try:
            return np.ascontiguousarray(self._camera.capture_array("main")[:, :, :3])
        except Exception as exc:  # camera unplugged or libcamera error: the pump reconnects
            log.warning("%s: capture failed: %s", self.description, exc)
            return None

    def release(self) -> None:
        try:
            self._camera.stop()
        finally:
            self._camera.close()


def _ffmpeg_params(options: OpenOptions) -> list[int]:
    """Open parameters for FFmpeg captures (cap.set() cannot change these after opening)."""
    cv2 = cv2_module()
    params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(options.open_timeout_s * 1000),
              cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(options.read_timeout_s * 1000)]
    if hasattr(cv2, "CAP_PROP_N_THREADS"):  # OpenCV >= 4.6
        params += [cv2.CAP_PROP_N_THREADS, options.decode_threads]
    return params


def _network(spec: SourceSpec, options: OpenOptions) -> Capture:
    cv2 = cv2_module()
    shown = spec.redacted()
    cap = cv2.VideoCapture(spec.target, cv2.CAP_FFMPEG, _ffmpeg_params(options))
    if not cap.isOpened():
        cap.release()
        raise SourceError(f"cannot open {shown} within {options.open_timeout_s:g} s: unreachable, "
                          "refused, not found on the server, or not a video stream")
    return OpenCVCapture(cap, shown, finite=False)


def _file(spec: SourceSpec, options: OpenOptions) -> Capture:
    path = Path(spec.target)
    if not path.is_file():
        raise SourceError(f"no such video file: {spec.target}")
    cv2 = cv2_module()
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, _ffmpeg_params(options))
    if not cap.isOpened():
        cap.release()
        raise SourceError(f"{spec.target} is not a video FFmpeg can read")
    return OpenCVCapture(cap, spec.target, finite=True)


def _images(spec: SourceSpec, options: OpenOptions) -> Capture:
    pattern = spec.target
    if Path(pattern).is_dir():
        pattern = str(Path(pattern) / "*")
    paths = sorted(p for p in glob.glob(pattern)
                   if Path(p).suffix.lower() in IMAGE_SUFFIXES and Path(p).is_file())[:MAX_IMAGES]
    if not paths:
        raise SourceError(f"{spec.target}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return ImageFiles(paths, spec.target)


def _v4l2(spec: SourceSpec, options: OpenOptions) -> Capture:
    from ..hal import HostFS
    from ..hal.video import video_node_problem

    problem = video_node_problem(HostFS(options.host_root), spec.target)
    if problem is not None:
        raise SourceError(problem)
    cv2 = cv2_module()
    cap = cv2.VideoCapture(spec.target, cv2.CAP_V4L2)
    if not cap.isOpened():
        cap.release()
        raise SourceError(f"cannot open {spec.target} with V4L2 (busy, no permission - group "
                          "'video' - or not a capture node)")
    for key, prop in (("width", cv2.CAP_PROP_FRAME_WIDTH), ("height", cv2.CAP_PROP_FRAME_HEIGHT),
                      ("fps", cv2.CAP_PROP_FPS)):
        if key in spec.options:
            cap.set(prop, spec.options[key])
    cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # honoured by V4L2: keep the driver queue short
    return OpenCVCapture(cap, f"v4l2://{spec.target}", finite=False)


def has_gstreamer() -> bool:
    """True when this OpenCV was built with GStreamer (JetPack's is; the PyPI wheels are not)."""
    info = cv2_module().getBuildInformation()
    return re.search(r"GStreamer:\s+YES", info) is not None


def _gstreamer(pipeline: str, description: str) -> Capture:
    if not has_gstreamer():
        raise SourceError(f"{description} needs OpenCV built with GStreamer (on Jetson: JetPack's "
                          "python3-opencv in a venv made with --system-site-packages; the opencv-python "
                          f"wheels have no GStreamer); pipeline: {pipeline}")
    cv2 = cv2_module()
    cap = cv2.VideoCapture(pipeline, cv2.CAP_GSTREAMER)
    if not cap.isOpened():
        cap.release()
        raise SourceError(f"{description}: GStreamer could not start: {pipeline}")
    return OpenCVCapture(cap, description, finite=False)


def _csi(spec: SourceSpec, options: OpenOptions) -> Capture:
    from ..hal.boards import profile_for

    sensor = int(spec.target)
    size = (spec.options.get("width", 1280), spec.options.get("height", 720), spec.options.get("fps", 30))
    platform = options.detected()
    family = profile_for(platform).family
    description = f"csi://{sensor} on {platform.board}"
    if family == "jetson":
        return _gstreamer(jetson_csi_pipeline(sensor, *size, flip=spec.options.get("flip", 0)), description)
    if family == "raspberrypi":
        if importlib.util.find_spec("picamera2") is not None:
            return Picamera2Capture(sensor, *size)
        if sensor != 0:
            raise SourceError(f"{description}: camera {sensor} needs picamera2 (python3-picamera2)")
        return _gstreamer(libcamera_pipeline(*size), description)
    raise SourceError(f"{description}: csi:// is for Jetson (nvarguscamerasrc) and Raspberry Pi "
                      "(libcamera) boards; use v4l2:///dev/videoN for a camera exposed through V4L2")


_OPENERS = {"rtsp": _network, "http": _network, "file": _file, "images": _images, "v4l2": _v4l2,
            "csi": _csi}


def open_capture(spec: SourceSpec, options: OpenOptions | None = None) -> Capture:
    """Open ``spec`` and decode its first frame; SourceError says why not. Blocks up to the open timeout."""
    return _OPENERS[spec.kind](spec, options or OpenOptions())
