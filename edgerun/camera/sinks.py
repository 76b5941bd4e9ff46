"""Where processed frames go: a JSON line per frame, an annotated video file, or a folder of JPEGs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..errors import InvalidInputError
from .annotate import encode_jpeg
from .capture import cv2_module

VIDEO_CODECS = {".mp4": "mp4v", ".m4v": "mp4v", ".avi": "MJPG", ".mkv": "mp4v"}
DEFAULT_VIDEO_FPS = 15.0


class Sink(Protocol):
    """Receives every processed frame's event; ``wants_image`` sinks also get the annotated frame."""

    wants_image: bool

    def write(self, event: dict[str, Any], image: np.ndarray | None) -> None: ...

    def close(self) -> None: ...


class JsonLinesSink:
    """One JSON object per processed frame, flushed line by line."""

    wants_image = False

    def __init__(self, path: Path) -> None:
        try:
            self._file = open(path, "w", encoding="utf-8")  # noqa: SIM115 - closed by close()
        except OSError as exc:
            raise InvalidInputError(f"cannot write {path}: {exc.strerror or exc}") from exc

    def write(self, event: dict[str, Any], image: np.ndarray | None) -> None:
        self._file.write(json.dumps(event, default=float) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class VideoSink:
    """Annotated frames into a video file (mp4v in .mp4/.mkv, MJPG in .avi), opened on the first frame."""

    wants_image = True

    def __init__(self, path: Path, fps: float | None) -> None:
        if path.suffix.lower() not in VIDEO_CODECS:
            raise InvalidInputError(f"--output {path}: video outputs end in "
                                    f"{', '.join(VIDEO_CODECS)}; a folder gets JPEG frames")
        if not path.parent.is_dir():
            raise InvalidInputError(f"--output {path}: folder {path.parent} does not exist")
        self.path = path
        self.fps = fps or DEFAULT_VIDEO_FPS
        self.frames = 0
        self._writer: Any = None

    def _open(self, width: int, height: int) -> Any:
        cv2 = cv2_module()
        fourcc = cv2.VideoWriter_fourcc(*VIDEO_CODECS[self.path.suffix.lower()])
        writer = cv2.VideoWriter(str(self.path), fourcc, self.fps, (width, height))
        if not writer.isOpened():
            raise InvalidInputError(f"cannot write video {self.path} (codec not available)")
        return writer

    def write(self, event: dict[str, Any], image: np.ndarray | None) -> None:
        if image is None:
            return
        if self._writer is None:
            self._writer = self._open(image.shape[1], image.shape[0])
        self._writer.write(image)
        self.frames += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()


class FramesSink:
    """Annotated frames as JPEG files named by sequence number (frame_000001.jpg, ...)."""

    wants_image = True

    def __init__(self, folder: Path) -> None:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InvalidInputError(f"cannot create {folder}: {exc.strerror or exc}") from exc
        self.folder = folder

    def write(self, event: dict[str, Any], image: np.ndarray | None) -> None:
        if image is not None:
            (self.folder / f"frame_{event['seq']:06d}.jpg").write_bytes(encode_jpeg(image, 90))

    def close(self) -> None:
        pass


def output_sink(path: Path, fps: float | None) -> Sink:
    """A video file for a known video suffix, else a folder of JPEG frames."""
    if path.suffix.lower() in VIDEO_CODECS:
        return VideoSink(path, fps)
    if path.suffix:
        raise InvalidInputError(f"--output {path}: use a video file ({', '.join(VIDEO_CODECS)}) "
                                "or a folder for JPEG frames")
    return FramesSink(path)
