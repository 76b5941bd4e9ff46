"""`edgerun optimize --int8` on the embedded classifier: size ratio, latency ratio, agreement with fp32.

Usage: python benchmarks/optimize.py [--rounds 3] [--runs 100] [--threads 1] [--method percentile]

Calibration: the 10 images in samples/calibration/ (scikit-image CC0/public-domain pictures,
see samples/ATTRIBUTION.md). Held-out: 52 images made from the four shipped samples
(chelsea, astronaut, coffee, rocket), none of which is in the calibration set: per sample the
full image, its mirror, centre crops of 90/80/70 % and their mirrors, the four 80 % corner
crops and a 60 % centre crop (13 each), written as PNG to a temporary folder. The run goes
through the library call the CLI makes (`edgerun.optimize.runner.optimize`), with the threshold
at 0 so that the model is always written and the numbers always printed.

Latency: edgerun's profiler (single-stream, synthetic input) on onnxruntime, fp32 then int8, in
``--rounds`` rounds; each round's p50 ratio is printed, then the median. Targets: size <= 0.3x,
top-1 agreement >= 98 %. Also printed: agreement per sample and on the images where fp32 itself
is confident (top-1 probability >= 0.5), because crops without an ImageNet object flip easily.

Precision rows (unless --no-precision-rows): the same held-out set scored for edgerun with and
without --protect and for three onnxruntime quantisations made directly with quantize_static on
the same calibration inputs: 16-bit weights with uint8 activations (W16A8), int8 weights with
uint16 activations (W8A16) and both 16-bit (W16A16). Each row gives top-1 agreement, how many
of the "near ties" flip (held-out images whose fp32 top-1 and top-2 logits are less than 0.5
apart) and the output signal-to-noise ratio in dB. They show where the agreement is lost.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

from edgerun.optimize import images as imgset
from edgerun.optimize.latency import LatencyPlan, measure
from edgerun.optimize.onnx_tools import Int8Settings, TensorReader, float_outputs, quantize_int8
from edgerun.optimize.runner import OptimizeRequest, optimize
from edgerun.optimize.sensitivity import snr_db
from edgerun.predictor import Predictor
from edgerun.processing.image import decode_image

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "samples"
CALIBRATION = SAMPLES / "calibration"
SAMPLE_FILES = ("chelsea.png", "astronaut.png", "coffee.png", "rocket.jpg")
SIZE_TARGET, AGREEMENT_TARGET = 0.3, 0.98
SOURCE = REPO / "edgerun" / "models" / "mobilenet_v2" / "mobilenet_v2.onnx"
NEAR_TIE = 0.5  # fp32 top-1 minus top-2 logit


def _crop(image: np.ndarray, fraction: float, where: str) -> np.ndarray:
    height, width = image.shape[:2]
    h, w = int(height * fraction), int(width * fraction)
    top = {"c": (height - h) // 2, "t": 0, "b": height - h}[where[0]]
    left = {"c": (width - w) // 2, "l": 0, "r": width - w}[where[-1]]
    return image[top : top + h, left : left + w]


def variants(image: np.ndarray) -> dict[str, np.ndarray]:
    """13 deterministic views of one image: full, mirror, centre crops (+ mirrors), corner crops."""
    views = {"full": image, "mirror": image[:, ::-1]}
    for fraction in (0.9, 0.8, 0.7):
        crop = _crop(image, fraction, "c")
        views[f"centre{int(fraction * 100)}"] = crop
        views[f"centre{int(fraction * 100)}_mirror"] = crop[:, ::-1]
    for corner in ("tl", "tr", "bl", "br"):
        views[f"corner80_{corner}"] = _crop(image, 0.8, corner)
    views["centre60"] = _crop(image, 0.6, "c")
    return views


def write_held_out(folder: Path) -> list[Path]:
    paths = []
    for name in SAMPLE_FILES:
        for label, view in variants(decode_image(SAMPLES / name)).items():
            path = folder / f"{Path(name).stem}_{label}.png"
            Image.fromarray(np.ascontiguousarray(view)).save(path)
            paths.append(path)
    return paths


def fp32_confidence(paths: list[Path]) -> dict[str, float]:
    with Predictor.open("mobilenet_v2", backend="onnxruntime") as predictor:
        return {str(p): predictor.predict(p, top_k=1).classes[0].score for p in paths}  # type: ignore[union-attr]


def agreement_lines(report_evaluation: dict, paths: list[Path], confidence: dict[str, float]) -> list[str]:
    wrong = set(report_evaluation["disagreements"])
    per_sample: dict[str, list[bool]] = defaultdict(list)
    for path in paths:
        per_sample[path.stem.split("_")[0]].append(str(path) not in wrong)
    confident = [str(p) not in wrong for p in paths if confidence[str(p)] >= 0.5]
    lines = ["  per sample: " + ", ".join(f"{k} {sum(v)}/{len(v)}" for k, v in per_sample.items())]
    lines.append(f"  where fp32 top-1 probability >= 0.5: {sum(confident)}/{len(confident)} agree")
    lines.append("  disagreeing: " + (", ".join(sorted(Path(p).stem for p in wrong)) or "none"))
    return lines


def _inputs(spec: str | Path) -> list[dict[str, np.ndarray]]:
    with Predictor.open("mobilenet_v2", backend="onnxruntime") as predictor:
        return imgset.load_images(imgset.find_images(spec), lambda a: predictor.preprocess(a)[0]).inputs


def _logits(model: Path, inputs: list[dict[str, np.ndarray]]) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, dict(tensors))[0] for tensors in inputs])


def _raw_onnxruntime(
    prepared: Path, destination: Path, calibration: list, weights: str, activations: str
) -> Path:
    """quantize_static straight from onnxruntime (per-channel weights) with the given types.

    uint8 activations use percentile 99.99 like edgerun; 16-bit ones use min/max ranges, since
    clipping outliers buys nothing with 65536 levels (percentile 99.99 costs W16A16 10 dB here)."""
    import onnx
    from onnxruntime import quantization as q

    sixteen_bit = activations.endswith("16")
    q.quantize_static(
        str(prepared),
        str(destination),
        TensorReader(calibration),
        quant_format=q.QuantFormat.QDQ,
        per_channel=True,
        weight_type=getattr(q.QuantType, weights),
        activation_type=getattr(q.QuantType, activations),
        calibrate_method=q.CalibrationMethod.MinMax if sixteen_bit else q.CalibrationMethod.Percentile,
        extra_options={} if sixteen_bit else {"CalibPercentile": 99.99},
    )
    model = onnx.load(str(destination))
    float_outputs(model)
    onnx.save(model, str(destination))
    return destination


def precision_rows(scratch: Path, held_out: Path) -> list[str]:
    """Agreement, near-tie flips and SNR on the held-out set for several precision choices."""
    import contextlib
    import io

    calibration, inputs = _inputs(CALIBRATION), _inputs(held_out)
    reference = _logits(SOURCE, inputs)
    ordered = np.sort(reference, axis=1)
    near_tie = ordered[:, -1] - ordered[:, -2] < NEAR_TIE
    models = {}
    for label, protect in (("edgerun int8 (default, --protect)", True), ("edgerun int8 --no-protect", False)):
        path = scratch / f"protect_{protect}.onnx"
        quantize_int8(SOURCE, path, calibration, Int8Settings(protect=protect))
        models[label] = path
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = scratch / "prepared.onnx"  # shape inference + basic optimisation, once for all rows
    quant_pre_process(str(SOURCE), str(prepared), skip_symbolic_shape=True)
    for label, weights, activations in (
        ("onnxruntime W16A8 (16-bit weights)", "QInt16", "QUInt8"),
        ("onnxruntime W8A16 (16-bit activations)", "QInt8", "QUInt16"),
        ("onnxruntime W16A16", "QInt16", "QUInt16"),
    ):
        destination = scratch / f"{weights}_{activations}.onnx"
        logging.disable(logging.WARNING)  # "opset 17 ... updated to 21" for 16-bit types
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # the calibrator's progress lines
                models[label] = _raw_onnxruntime(prepared, destination, calibration, weights, activations)
        finally:
            logging.disable(logging.NOTSET)
    lines = [
        f"precision rows ({len(inputs)} held-out images, {int(near_tie.sum())} near ties: "
        f"fp32 top-1/top-2 logit gap < {NEAR_TIE}):"
    ]
    for label, path in models.items():
        logits = _logits(path, inputs)
        agree = logits.argmax(1) == reference.argmax(1)
        lines.append(
            f"  {label:40s} top-1 agreement {100 * agree.mean():5.1f}% ({int(agree.sum())}/{len(agree)}), "
            f"near ties flipped {int((~agree & near_tie).sum())}/{int(near_tie.sum())}, "
            f"others flipped {int((~agree & ~near_tie).sum())}, output SNR "
            f"{snr_db(list(reference), list(logits)):.1f} dB"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--method", default="percentile", choices=("percentile", "minmax", "entropy"))
    parser.add_argument("--no-precision-rows", dest="precision_rows", action="store_false")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgerun-bench-optimize-") as scratch:
        held_out = Path(scratch) / "held_out"
        held_out.mkdir()
        paths = write_held_out(held_out)
        output = Path(scratch) / "mobilenet_v2_int8"
        report = optimize(
            OptimizeRequest(
                model="mobilenet_v2",
                precision="int8",
                calibration=str(CALIBRATION),
                evaluation=str(held_out),
                output=output,
                int8=Int8Settings(method=args.method),
                min_agreement=0.0,
                latency=LatencyPlan(runs=0),
            )
        )
        evaluation, size = report.evaluation, report.size
        print(f"edgerun optimize --int8 mobilenet_v2: {report.conversion['method']}")
        print(
            f"calibration: {report.calibration['images']} images ({CALIBRATION.relative_to(REPO)}); "
            f"held-out: {evaluation['images']} images from {', '.join(SAMPLE_FILES)} "
            f"(held out: {evaluation['held_out']})"
        )
        print(
            f"size: {size['before_bytes'] / 1e6:.2f} MB -> {size['after_bytes'] / 1e6:.2f} MB = "
            f"{size['ratio']:.3f}x (target <= {SIZE_TARGET}x: "
            f"{'met' if size['ratio'] <= SIZE_TARGET else 'NOT met'})"
        )
        top1 = evaluation["top1_agreement"]
        print(
            f"top-1 agreement with fp32: {100 * top1:.1f}% (target >= {100 * AGREEMENT_TARGET:.0f}%: "
            f"{'met' if top1 >= AGREEMENT_TARGET else 'NOT met'}); top-5 overlap "
            f"{100 * evaluation['top5_overlap']:.1f}%; fp32 top-1 in int8 top-5 "
            f"{100 * evaluation['reference_top1_in_top5']:.1f}%; "
            f"max |dlogit| {evaluation['max_abs_diff']:.3f}, "
            f"mean {evaluation['mean_abs_diff']:.4f}"
        )
        print(f"16-bit weight layers: {report.conversion.get('int16_weight_layers') or 'none'}")
        for line in agreement_lines(evaluation, paths, fp32_confidence(paths)):
            print(line)
        if args.precision_rows:
            for line in precision_rows(Path(scratch), held_out):
                print(line)
        source = SOURCE
        plan = LatencyPlan(runs=args.runs, warmup=10, threads=args.threads)
        ratios = []
        for round_index in range(args.rounds):
            latency = measure(source, output / "mobilenet_v2_int8.onnx", plan)
            ratios.append(latency["p50_ratio"])
            print(
                f"latency round {round_index + 1}: fp32 p50 {latency['before']['p50_ms']:.2f} ms, "
                f"int8 p50 {latency['after']['p50_ms']:.2f} ms, ratio {latency['p50_ratio']:.3f}x "
                f"({args.threads} thread(s), {args.runs} runs each, edgerun profiler)"
            )
        print(
            f"latency p50 ratio int8/fp32: median {statistics.median(ratios):.3f}x "
            f"(range {min(ratios):.3f}-{max(ratios):.3f})"
        )


if __name__ == "__main__":
    main()
