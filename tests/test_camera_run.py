"""`edgerun run`: annotated video and JSON lines from a generated clip; frames folder; bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgerun.backends.base import LoadOptions
from edgerun.camera.annotate import class_color, draw_result
from edgerun.camera.capture import cv2_module
from edgerun.cli import main
from edgerun.config import Settings
from edgerun.predictor import Predictor

from .camera_helpers import CLIP_FPS
from .helpers import SAMPLES


def _first_frame(clip: Path) -> np.ndarray:
    cv2 = cv2_module()
    capture = cv2.VideoCapture(str(clip))
    ok, frame = capture.read()
    capture.release()
    assert ok
    return frame


def test_run_writes_annotated_video_and_one_json_line_per_frame(clip: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    video, lines = tmp_path / "out.mp4", tmp_path / "frames.jsonl"
    status = main(["run", "--source", str(clip), "--backend", "onnxruntime", "--threads", "1",
                   "--output", str(video), "--json-lines", str(lines)])
    assert status == 0
    assert "30 frame(s) processed" in capsys.readouterr().out
    events = [json.loads(line) for line in lines.read_text().splitlines()]
    assert [e["seq"] for e in events] == list(range(1, 2 * CLIP_FPS + 1))  # a file: every frame, in order
    with Predictor.open("blazeface", backend="onnxruntime", options=LoadOptions(threads=1),
                        settings=Settings()) as predictor:
        expected = predictor.predict(_first_frame(clip)[:, :, ::-1])
    assert len(expected.detections) == 1
    for event in events:
        assert event["model"] == "blazeface" and len(event["detections"]) == 1
        np.testing.assert_allclose(event["detections"][0]["box"], expected.detections[0].box, atol=4)
        assert {"capture", "preprocess", "infer", "postprocess", "annotate"} <= set(event["timings_ms"])
    cv2 = cv2_module()
    written = cv2.VideoCapture(str(video))
    count = int(written.get(cv2.CAP_PROP_FRAME_COUNT))
    ok, frame = written.read()
    written.release()
    assert ok and count == 2 * CLIP_FPS and frame.shape == (256, 256, 3)
    x0, y0, x1, y1 = (round(v) for v in expected.detections[0].box)
    rows = frame[y1 - 3:y1 + 3, x0 + 5:x1 - 5].astype(int)  # around the box's bottom edge: a green row
    assert min(np.median(np.abs(row - class_color(0)).sum(axis=1)) for row in rows) < 90


def test_run_on_an_image_glob_writes_jpeg_frames(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "frames"
    status = main(["run", "--source", str(SAMPLES / "*.png"), "--model", "mobilenet_v2", "--backend",
                   "onnxruntime", "--output", str(out), "--max-frames", "2", "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert status == 0 and summary["frames"]["processed"] == 2
    assert sorted(p.name for p in out.iterdir()) == ["frame_000001.jpg", "frame_000002.jpg"]


def test_draw_result_marks_classes_and_leaves_the_input_alone() -> None:
    image = np.zeros((120, 200, 3), np.uint8)
    with Predictor.open("mobilenet_v2", backend="onnxruntime", options=LoadOptions(threads=1),
                        settings=Settings()) as predictor:
        result = predictor.predict(SAMPLES / "chelsea.png", top_k=3)
    drawn = draw_result(image, result, fps=12.5)
    assert not image.any() and drawn.any() and drawn.shape == image.shape


@pytest.mark.parametrize(("argv", "message"), [
    (["--source", "gopher://x"], "unknown scheme 'gopher'"),
    (["--source", "{missing}"], "no such video file"),
    (["--source", "{clip}", "--output", "{tmp}/out.gif"], "use a video file"),
    (["--source", "{clip}", "--model", "no_such_model"], "no_such_model"),
    (["--source", "{clip}", "--serve", "--output", "{tmp}/o.mp4"], "--serve shows the stream"),
])
def test_run_bad_input_is_one_line(argv: list[str], message: str, clip: Path, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    filled = [a.format(clip=clip, tmp=tmp_path, missing=tmp_path / "none.mp4") for a in argv]
    assert main(["run", *filled]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("edgerun: error:") and message in err and len(err.splitlines()) == 1
