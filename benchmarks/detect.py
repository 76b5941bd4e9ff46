"""Measure detection post-processing against detector inference, side by side in one run.

Usage: python benchmarks/detect.py [--runs 200] [--threads 1] [--objects 20]

1. decode + NMS: edgerun's yolov8 decoder on a [1, 84, 8400] Ultralytics head (640x640 input,
   80 classes): ``--objects`` objects, each seen by 12 overlapping candidates above the 0.25
   threshold, the other candidates scoring below it — the per-frame work `edgerun predict` and
   `edgerun run` do after inference (threshold, class-aware NMS, mapping to source pixels).
2. detector inference: onnxruntime on a random-weight network of YOLOv8n's shape (640x640 input,
   strides 8/16/32, the same [1, 84, 8400] output; its GFLOPs are printed), built with onnx.helper.
   edgerun ships no COCO detector (no redistributable weights), so this stands in for yolov8n.onnx.
3. the embedded detector (BlazeFace, the one edgerun ships): Predictor.predict on a decoded image,
   p50 on onnxruntime and litert.

It prints the p50 of each and decode+NMS / inference; the target is < 10 %.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgerun.backends.base import LoadOptions
from edgerun.config import Settings
from edgerun.predictor import Predictor, open_session
from edgerun.processing.decoders import Decoder
from edgerun.processing.image import Geometry

SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "astronaut.png"
CLASSES, SIZE = 80, 640
GRIDS = (80, 40, 20)  # 640 / 8, 16, 32 -> 8400 candidates


def p50_ms(call: Callable[[], Any], runs: int, warmup: int = 5) -> float:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def synthetic_head(objects: int, seed: int = 7) -> np.ndarray:
    """[1, 84, 8400]: background noise under the threshold plus clusters of overlapping boxes."""
    rng = np.random.default_rng(seed)
    anchors = sum(g * g for g in GRIDS)
    head = np.zeros((1, 4 + CLASSES, anchors), dtype=np.float32)
    head[0, :2] = rng.uniform(0, SIZE, (2, anchors))
    head[0, 2:4] = rng.uniform(8, 120, (2, anchors))
    head[0, 4:] = rng.uniform(0, 0.2, (CLASSES, anchors))
    columns = rng.choice(anchors, size=(objects, 12), replace=False)
    for cluster in columns:
        centre, size, cls = rng.uniform(60, 580, 2), rng.uniform(30, 200, 2), rng.integers(CLASSES)
        head[0, 0:2, cluster] = centre + rng.normal(0, 3, (len(cluster), 2))
        head[0, 2:4, cluster] = size * rng.uniform(0.9, 1.1, (len(cluster), 2))
        head[0, 4 + cls, cluster] = rng.uniform(0.3, 0.95, len(cluster))
    return head


def _conv(nodes: list[Any], inits: list[Any], name: str, source: str, cin: int, cout: int, stride: int,
          kernel: int = 3, rng: np.random.Generator | None = None) -> str:
    from onnx import helper, numpy_helper

    rng = rng or np.random.default_rng(0)
    weight = (rng.standard_normal((cout, cin, kernel, kernel)) * np.sqrt(2.0 / (cin * kernel * kernel)))
    inits += [numpy_helper.from_array(weight.astype(np.float32), f"{name}.w"),
              numpy_helper.from_array(np.zeros(cout, np.float32), f"{name}.b")]
    pad = kernel // 2
    nodes += [helper.make_node("Conv", [source, f"{name}.w", f"{name}.b"], [f"{name}.c"],
                               strides=[stride, stride], pads=[pad] * 4),
              helper.make_node("Sigmoid", [f"{name}.c"], [f"{name}.s"]),
              helper.make_node("Mul", [f"{name}.c", f"{name}.s"], [name])]  # SiLU, as YOLOv8
    return name


def yolo_shaped_onnx(path: Path) -> tuple[Path, float]:
    """A random-weight conv net with YOLOv8n's input, strides and head; returns (path, GFLOPs)."""
    from onnx import TensorProto, helper, numpy_helper, save

    rng = np.random.default_rng(0)
    nodes: list[Any] = []
    inits: list[Any] = []
    flops = 0.0
    x, cin, size = "images", 3, SIZE
    features = []
    for stage, cout in enumerate((16, 32, 64, 128, 256)):
        size //= 2
        x = _conv(nodes, inits, f"down{stage}", x, cin, cout, 2, rng=rng)
        flops += 2 * 9 * cin * cout * size * size
        for block in range(2 if stage else 0):
            x = _conv(nodes, inits, f"s{stage}b{block}", x, cout, cout, 1, rng=rng)
            flops += 2 * 9 * cout * cout * size * size
        cin = cout
        if stage >= 2:
            features.append((x, cout, size))
    heads = []
    for level, (feature, channels, grid) in enumerate(features):
        hidden = _conv(nodes, inits, f"h{level}", feature, channels, 64, 1, rng=rng)
        out = _conv(nodes, inits, f"o{level}", hidden, 64, 4 + CLASSES, 1, kernel=1, rng=rng)
        flops += 2 * grid * grid * (9 * channels * 64 + 64 * (4 + CLASSES))
        inits.append(numpy_helper.from_array(np.array([1, 4 + CLASSES, grid * grid], np.int64), f"r{level}"))
        nodes.append(helper.make_node("Reshape", [out, f"r{level}"], [f"flat{level}"]))
        heads.append(f"flat{level}")
    nodes.append(helper.make_node("Concat", heads, ["output0"], axis=2))
    graph = helper.make_graph(
        nodes, "yolo_shaped",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 4 + CLASSES, 8400])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    save(model, str(path))
    return path, flops / 1e9


def decode_p50(objects: int, runs: int) -> tuple[float, int]:
    head = synthetic_head(objects)
    decoder = Decoder.from_postprocess({"kind": "yolov8"}, [], [str(i) for i in range(CLASSES)])
    geometry = Geometry(0.5, 0.5, 0.0, 80.0)  # a 1280x960 frame letterboxed into 640x640
    outputs = [("output0", head)]
    found = decoder(outputs, (SIZE, SIZE), geometry, 1280, 960)
    return p50_ms(lambda: decoder(outputs, (SIZE, SIZE), geometry, 1280, 960), runs), len(found)


def inference_p50(threads: int, runs: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as folder:
        model, gflops = yolo_shaped_onnx(Path(folder) / "yolo_shaped.onnx")
        _, _, session = open_session(model, backend="onnxruntime", options=LoadOptions(threads=threads),
                                     settings=Settings())
        try:
            image = np.random.default_rng(1).random((1, 3, SIZE, SIZE), dtype=np.float32)
            return p50_ms(lambda: session.infer({"images": image}), runs), gflops
        finally:
            session.close()


def embedded_p50(backend: str, threads: int, runs: int) -> float:
    """Predictor.predict on the decoded sample (pre-process, infer, decode, NMS; no PNG decoding)."""
    from edgerun.processing.image import decode_image

    image = decode_image(SAMPLE)
    with Predictor.open("blazeface", backend=backend, options=LoadOptions(threads=threads),
                        settings=Settings()) as predictor:
        return p50_ms(lambda: predictor.predict(image), runs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--objects", default="20,100", help="objects per frame, comma-separated")
    args = parser.parse_args()
    infer_ms, gflops = inference_p50(args.threads, max(20, args.runs // 10))
    print(f"YOLOv8n-shaped detector inference, onnxruntime, {args.threads} thread(s), {gflops:.1f} GFLOPs: "
          f"p50 {infer_ms:8.3f} ms")
    for objects in (int(n) for n in args.objects.split(",")):
        decode_ms, kept = decode_p50(objects, args.runs)
        print(f"decode + NMS, 8400 candidates, {objects:>3} objects x 12 above threshold ({kept} kept): "
              f"p50 {decode_ms:7.3f} ms = {100 * decode_ms / infer_ms:4.1f} % of inference (target < 10 %)")
    for backend in ("onnxruntime", "litert"):
        print(f"embedded detector (blazeface) end to end on {backend:<11}: "
              f"p50 {embedded_p50(backend, args.threads, args.runs):8.3f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
