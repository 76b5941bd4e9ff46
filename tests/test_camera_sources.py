"""Sources by URI, CSI pipeline choice per board, the frame pump (latest frame, lossless, backoff)."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edgerun.camera import Backoff, FramePump, OpenOptions, SourceError, open_capture, parse_source
from edgerun.camera.pump import ENDED, STOPPED, Slot
from edgerun.camera.uri import jetson_csi_pipeline, libcamera_pipeline
from edgerun.errors import InvalidInputError

from .camera_helpers import CLIP_FPS, wait_for
from .helpers import SAMPLES, device_tree


@pytest.mark.parametrize(("uri", "kind", "target"), [
    ("0", "v4l2", "/dev/video0"),
    ("v4l2:///dev/video2", "v4l2", "/dev/video2"),
    ("v4l2://1", "v4l2", "/dev/video1"),
    ("/dev/video0", "v4l2", "/dev/video0"),
    ("csi://0", "csi", "0"),
    ("rtsp://cam.local:8554/live", "rtsp", "rtsp://cam.local:8554/live"),
    ("https://cam.local/video.mjpg?x=1", "http", "https://cam.local/video.mjpg?x=1"),
    ("file:///videos/a.mp4", "file", "/videos/a.mp4"),
    ("clips/a.mkv", "file", "clips/a.mkv"),
    ("frames/*.jpg", "images", "frames/*.jpg"),
    ("file://shot.PNG", "images", "shot.PNG"),
])
def test_parse_source_kinds(uri: str, kind: str, target: str) -> None:
    spec = parse_source(uri)
    assert (spec.kind, spec.target) == (kind, target)
    assert spec.live == (kind in ("v4l2", "csi", "rtsp", "http"))


def test_parse_source_folder_and_options() -> None:
    assert parse_source(str(SAMPLES)).kind == "images"
    spec = parse_source("csi://1?width=1920&height=1080&fps=60&flip=2")
    assert spec.options == {"width": 1920, "height": 1080, "fps": 60, "flip": 2}
    assert parse_source("rtsp://admin:secret@cam/live").redacted() == "rtsp://admin:***@cam/live"


@pytest.mark.parametrize(("uri", "message"), [
    ("ftp://host/x", "unknown scheme 'ftp'"),
    ("csi://front", "sensor index"),
    ("csi://0?gain=3", "unknown option 'gain'"),
    ("csi://0?flip=9", "flip must be 0..7"),
    ("v4l2://../etc/passwd", "v4l2:///dev/videoN"),
    ("rtsp:///nohost", "no host"),
    ("file://", "empty path"),
])
def test_parse_source_rejects_with_what_is_valid(uri: str, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        parse_source(uri)


def test_csi_pipelines_name_the_vendor_elements() -> None:
    jetson = jetson_csi_pipeline(1, 1920, 1080, 30, flip=2)
    assert jetson.startswith("nvarguscamerasrc sensor-id=1 ! video/x-raw(memory:NVMM)")
    assert "framerate=(fraction)30/1" in jetson and "nvvidconv flip-method=2" in jetson
    assert jetson.endswith("appsink drop=true max-buffers=1 sync=false")
    pi = libcamera_pipeline(640, 480, 15)
    assert pi.startswith("libcamerasrc ! ") and "format=(string)NV12" in pi and "format=(string)BGR" in pi


@pytest.mark.parametrize(("board", "expect"), [
    ("jetson-orin-nano", "nvarguscamerasrc sensor-id=0"),
    ("rpi5", "libcamerasrc"),
    ("x86-desktop", "use v4l2:///dev/videoN"),
])
def test_csi_choice_follows_the_board(board: str, expect: str) -> None:
    """The board (read by the HAL from a device tree) picks the CSI path; this OpenCV wheel has no
    GStreamer and picamera2 is not installed here, so opening fails with the reason and the pipeline."""
    with pytest.raises(SourceError, match=expect) as caught:
        open_capture(parse_source("csi://0"), OpenOptions(host_root=device_tree(board)))
    if board != "x86-desktop":
        assert "GStreamer" in str(caught.value)


def test_file_source_reads_every_frame(clip: Path) -> None:
    capture = open_capture(parse_source(f"file://{clip}"))
    try:
        frames = []
        while (frame := capture.read()) is not None:
            frames.append(frame)
    finally:
        capture.release()
    assert capture.finite and capture.fps == pytest.approx(CLIP_FPS)
    assert len(frames) == 2 * CLIP_FPS and frames[0].shape == (256, 256, 3) and frames[0].dtype == np.uint8


def test_image_folder_and_glob(tmp_path: Path) -> None:
    for name in ("b.png", "a.png", "notes.txt"):
        shutil.copy(SAMPLES / ("chelsea.png" if name.endswith(".png") else "ATTRIBUTION.md"), tmp_path / name)
    folder = open_capture(parse_source(str(tmp_path)))
    shapes = [folder.read().shape, folder.read().shape]  # type: ignore[union-attr]
    assert folder.read() is None and shapes[0] == shapes[1]
    assert open_capture(parse_source(str(tmp_path / "a.*"))).read() is not None


@pytest.mark.parametrize("content", [b"this is not a video\n" * 50, b""])
def test_not_a_video_is_a_clear_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "fake.mp4"
    path.write_bytes(content)
    with pytest.raises(SourceError, match="not a video"):
        open_capture(parse_source(str(path)))
    with pytest.raises(SourceError, match="no such video file"):
        open_capture(parse_source(str(tmp_path / "missing.mp4")))
    with pytest.raises(SourceError, match="no image files"):
        open_capture(parse_source(str(tmp_path / "*.jpg")))


def test_unreachable_network_source_fails_within_the_open_timeout() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]  # nothing listens here once closed
    started = time.monotonic()
    with pytest.raises(SourceError, match="cannot open rtsp://127.0.0.1"):
        open_capture(parse_source(f"rtsp://127.0.0.1:{port}/x"), OpenOptions(open_timeout_s=2))
    assert time.monotonic() - started < 10


def test_backoff_doubles_up_to_the_cap_and_resets() -> None:
    backoff = Backoff(0.5, 4.0)
    assert [backoff.next_delay() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    backoff.reset()
    assert backoff.next_delay() == 0.5


def test_slot_keeps_the_newest_or_waits() -> None:
    latest: Slot[int] = Slot()
    for item in (1, 2, 3):
        assert latest.put(item)
    assert latest.take(0.1) == 3 and latest.dropped == 2 and latest.take(0.05) is None
    lossless: Slot[int] = Slot(lossless=True)
    assert lossless.put(1) and not lossless.put(2, timeout=0.05)  # 1 not taken yet: 2 must wait
    assert lossless.take(0.1) == 1 and lossless.put(2) and lossless.take(0.1) == 2
    lossless.close()
    assert not lossless.put(3) and lossless.take(0.05) is None


def test_pump_hands_out_the_latest_frame_to_a_slow_consumer(clip: Path) -> None:
    spec = parse_source(str(clip))
    pump = FramePump(lambda: open_capture(spec), "stream-test-latest", pace=True)
    pump.start()
    seqs = []
    try:
        while (frame := pump.next(timeout=2.0)) is not None:
            seqs.append(frame.seq)
            assert time.monotonic() - frame.monotonic < 0.2  # never a stale, queued frame
            time.sleep(0.2)  # a consumer at 5 fps on a 15 fps source
    finally:
        assert pump.stop()
    assert pump.state == ENDED and pump.frames == 2 * CLIP_FPS
    assert seqs == sorted(seqs) and len(seqs) < pump.frames and pump.dropped >= pump.frames - len(seqs) - 1


def test_pump_lossless_delivers_every_frame_in_order(clip: Path) -> None:
    spec = parse_source(str(clip))
    pump = FramePump(lambda: open_capture(spec), "stream-test-lossless", lossless=True)
    pump.start(open_capture(spec))
    seqs = []
    while (frame := pump.next(timeout=2.0)) is not None:
        seqs.append(frame.seq)
    assert pump.stop() and seqs == list(range(1, 2 * CLIP_FPS + 1)) and pump.dropped == 0


def test_pump_retries_an_absent_source_with_backoff_and_stops_cleanly() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    spec = parse_source(f"rtsp://127.0.0.1:{port}/absent")
    pump = FramePump(lambda: open_capture(spec, OpenOptions(1, 1)), "stream-test-retry",
                     backoff=Backoff(0.05, 0.2))
    pump.start()
    wait_for(lambda: pump.backoff.attempts >= 3, 15, "three reconnect attempts")
    assert "cannot open" in pump.error and pump.frames == 0
    assert pump.stop(timeout=10) and pump.state == STOPPED
    assert not [t for t in threading.enumerate() if t.name.startswith("stream-test-retry")]
