"""Measure the video pipeline: decode-only, inference-only and pipelined FPS on one file, side by side.

Usage: python benchmarks/pipeline.py [--frames 300] [--size 640x480] [--model blazeface]
                                     [--threads 1] [--repeats 5] [--annotate] [--video FILE]

A clip of the astronaut sample (one face) is made with ffmpeg (H.264) when it is on PATH, else
with OpenCV (MPEG-4 part 2), unless --video names one. Each round measures, in this order:
decode only (the file source read to the end), inference only (Predictor.predict on the decoded
frames held in memory, cycling through 16 so they stay in cache: BGR -> RGB, pre-process, infer,
post-process) and the pipeline (capture thread ->
inference thread -> annotation thread, every frame processed: the file source is lossless).
It prints the three rates per round and pipelined / min(decode, inference) — the target is >= 0.9:
the stages overlap, so the pipeline runs at the speed of its slowest stage.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from edgerun.backends.base import LoadOptions
from edgerun.camera import FramePump, PipelineOptions, StreamPipeline, open_capture, parse_source
from edgerun.camera.capture import cv2_module
from edgerun.camera.pipeline import to_rgb
from edgerun.camera.sinks import FramesSink
from edgerun.predictor import Predictor

SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "astronaut.png"


def make_clip(path: Path, frames: int, width: int, height: int) -> Path:
    """A clip of the sample image letterboxed to width x height, ``frames`` frames at 30 fps."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg:
        scale = f"scale={width}:{height}:force_original_aspect_ratio=decrease,pad={width}:{height}:-1:-1"
        subprocess.run([ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-loop", "1", "-framerate", "30",
                        "-i", str(SAMPLE), "-frames:v", str(frames), "-vf", scale, "-c:v", "libx264",
                        "-preset", "veryfast", "-g", "30", "-pix_fmt", "yuv420p", str(path)],
                       check=True, timeout=300)
        return path
    cv2 = cv2_module()
    image = cv2.imread(str(SAMPLE))
    side = min(width, height)
    canvas = np.zeros((height, width, 3), np.uint8)
    x, y = (width - side) // 2, (height - side) // 2
    canvas[y:y + side, x:x + side] = cv2.resize(image, (side, side))
    path = path.with_suffix(".avi")
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (width, height))
    for i in range(frames):
        writer.write(np.roll(canvas, i % 8, axis=1))
    writer.release()
    return path


def decode_only(video: Path) -> tuple[float, list[np.ndarray]]:
    capture = open_capture(parse_source(str(video)))
    frames = []
    start = time.perf_counter()
    while (frame := capture.read()) is not None:
        frames.append(frame)
    elapsed = time.perf_counter() - start
    capture.release()
    return len(frames) / elapsed, frames


def infer_only(predictor: Predictor, frames: list[np.ndarray]) -> float:
    """The pipeline's inference stage (BGR -> RGB, pre-process, infer, post-process) on the decoded frames,
    cycling through the first 16 so that they stay in cache (the strictest, fastest baseline)."""
    ring = frames[:16]
    start = time.perf_counter()
    for i in range(len(frames)):
        predictor.predict(to_rgb(ring[i % len(ring)]))
    return len(frames) / (time.perf_counter() - start)


def pipelined(predictor: Predictor, video: Path, annotate_to: Path | None) -> tuple[float, dict[str, float]]:
    spec = parse_source(str(video))
    sinks = [FramesSink(annotate_to)] if annotate_to else []
    capture = open_capture(spec)
    pump = FramePump(lambda: open_capture(spec), "bench", lossless=True)
    pipeline = StreamPipeline(pump, predictor.predict, PipelineOptions(lossless=True), sinks=sinks)
    start = time.perf_counter()
    pipeline.start(capture)
    pipeline.wait()
    elapsed = time.perf_counter() - start
    pipeline.stop()
    return pipeline.processed / elapsed, pipeline.times.snapshot()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--size", default="640x480")
    parser.add_argument("--model", default="blazeface")
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--annotate", action="store_true", help="also draw boxes and write JPEG frames")
    parser.add_argument("--video", type=Path, default=None)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as scratch, Predictor.open(
            args.model, backend=args.backend, options=LoadOptions(threads=args.threads)) as predictor:
        video = args.video or make_clip(Path(scratch) / "clip.mp4", args.frames, width, height)
        out = Path(scratch) / "frames" if args.annotate else None
        print(f"video {video.name} ({args.size}), model {args.model} on {predictor.backend_name}, "
              f"{args.threads} thread(s){', annotated JPEG frames written' if out else ''}")
        predictor.predict(np.zeros((height, width, 3), np.uint8))  # warm-up
        ratios = []
        for round_ in range(1, args.repeats + 1):
            cpu = time.process_time()
            decode_fps, frames = decode_only(video)
            cpu_decode, cpu = (time.process_time() - cpu) * 1000 / len(frames), time.process_time()
            infer_fps = infer_only(predictor, frames)
            cpu_infer, cpu = (time.process_time() - cpu) * 1000 / len(frames), time.process_time()
            pipe_fps, stages = pipelined(predictor, video, out)
            cpu_pipe = (time.process_time() - cpu) * 1000 / len(frames)
            ratio = pipe_fps / min(decode_fps, infer_fps)
            ratios.append(ratio)
            stage_text = ", ".join(f"{k} {v:.1f}" for k, v in stages.items() if k not in ("latency", "wait"))
            print(f"round {round_}: decode {decode_fps:7.1f} fps | inference {infer_fps:6.1f} fps | "
                  f"pipelined {pipe_fps:6.1f} fps | pipelined / min = {ratio:.3f}")
            print(f"         CPU ms/frame: decode {cpu_decode:.2f} + inference {cpu_infer:.2f} = "
                  f"{cpu_decode + cpu_infer:.2f}; pipelined {cpu_pipe:.2f} | stage ms: {stage_text}")
        print(f"pipelined / min(decode, inference): median {statistics.median(ratios):.3f}, "
              f"range {min(ratios):.3f}-{max(ratios):.3f} over {len(ratios)} rounds (target >= 0.9)")


if __name__ == "__main__":
    main()
