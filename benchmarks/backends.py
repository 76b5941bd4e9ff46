"""Compare the default classifier on every backend available here: latency p50/p99, top-1 agreement.

Usage: python benchmarks/backends.py [--runs 200] [--warmup 20] [--threads 1] [--images 40]

Every available backend (the CPU runtimes here; accelerator backends where their hardware is
present) loads MobileNetV2 from its own artifact (onnx, tflite, ncnn .param/.bin, onnx via
OpenVINO), plus the int8 TFLite package on LiteRT. Latency is ``session.infer`` on one
pre-processed image, the backends called round-robin so machine noise hits all of them alike.
Agreement is the share of images whose top-1 class equals the fp32 onnxruntime reference, over
the sample images and flipped/cropped variants of them; max |dp| is the largest difference in
the top-1 class probability. Prints one table.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgerun.backends.base import LoadOptions
from edgerun.backends.registry import Registry
from edgerun.hal import HostFS, detect
from edgerun.predictor import Predictor
from edgerun.processing.classify import softmax
from edgerun.processing.image import decode_image

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
CANDIDATES = (
    ("onnxruntime", "mobilenet_v2"),
    ("openvino", "mobilenet_v2"),
    ("ncnn", "mobilenet_v2"),
    ("litert", "mobilenet_v2"),
    ("tensorrt", "mobilenet_v2"),
    ("edgetpu", "mobilenet_v2"),
    ("armnpu", "mobilenet_v2_int8"),
    ("rknn", "mobilenet_v2"),
    ("litert", "mobilenet_v2_int8"),
)


@dataclass
class Row:
    label: str
    predictor: Predictor
    latencies: list[float]
    probabilities: np.ndarray | None = None


def test_images(count: int) -> list[np.ndarray]:
    """Sample images and deterministic variants (mirror, crops) of them, as RGB arrays."""
    bases = [decode_image(p.read_bytes()) for p in sorted(SAMPLES.iterdir()) if p.suffix in (".png", ".jpg")]
    images = []
    for i in range(count):
        image = bases[i % len(bases)]
        variant = i // len(bases)
        height, width = image.shape[:2]
        inset = (variant // 2) * 0.05
        top, left = int(height * inset), int(width * inset)
        crop = image[top : height - top, left : width - left]
        images.append(np.ascontiguousarray(crop[:, ::-1] if variant % 2 else crop))
    return images


def open_rows(registry: Registry, threads: int) -> list[Row]:
    platform = detect(HostFS("/"))
    rows = []
    for backend, model in CANDIDATES:
        if not registry.get(backend).probe(platform).ok:
            continue
        predictor = Predictor.open(
            model, backend=backend, options=LoadOptions(threads=threads), platform=platform
        )
        if (
            predictor.selection is None
            or predictor.selection.artifact.format not in registry.get(backend).formats
        ):
            predictor.close()
            continue
        rows.append(Row(f"{backend} ({predictor.selection.artifact.path.name})", predictor, []))
    return rows


def time_round_robin(rows: list[Row], image: np.ndarray, runs: int, warmup: int) -> None:
    calls: list[tuple[Row, Callable[[], object]]] = []
    for row in rows:
        inputs, _ = row.predictor.preprocess(image)
        calls.append((row, lambda s=row.predictor.session, x=inputs: s.infer(x)))
    for i in range(warmup + runs):
        for row, call in calls:
            start = time.perf_counter()
            call()
            if i >= warmup:
                row.latencies.append((time.perf_counter() - start) * 1000.0)


def class_probabilities(row: Row, images: list[np.ndarray]) -> np.ndarray:
    probabilities = []
    for image in images:
        inputs, _ = row.predictor.preprocess(image)
        outputs = row.predictor.session.infer(inputs)
        logits = row.predictor._real_outputs(outputs)[0].reshape(-1)
        probabilities.append(softmax(logits))
    return np.stack(probabilities)


def print_table(rows: list[Row], reference: np.ndarray, images: int) -> None:
    top1 = reference.argmax(axis=1)
    print(f"MobileNetV2 classifier, {images} images, session.infer latency (ms), top-1 vs fp32 onnxruntime")
    print(f"{'backend (artifact)':<44} {'p50':>8} {'p99':>8} {'top-1 agree':>12} {'max |dp|':>9}")
    for row in rows:
        assert row.probabilities is not None
        agree = float((row.probabilities.argmax(axis=1) == top1).mean())
        delta = float(
            np.abs(
                row.probabilities[np.arange(len(top1)), top1] - reference[np.arange(len(top1)), top1]
            ).max()
        )
        p50, p99 = np.percentile(row.latencies, [50, 99])
        print(f"{row.label:<44} {p50:8.2f} {p99:8.2f} {agree:11.1%} {delta:9.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--images", type=int, default=40)
    args = parser.parse_args()
    rows = open_rows(Registry(), args.threads)
    images = test_images(args.images)
    try:
        time_round_robin(rows, images[0], args.runs, args.warmup)
        for row in rows:
            row.probabilities = class_probabilities(row, images)
        reference = next(r.probabilities for r in rows if r.label.startswith("onnxruntime"))
        print_table(rows, reference, len(images))
    finally:
        for row in rows:
            row.predictor.close()


if __name__ == "__main__":
    main()
