"""Per-target builds: the exact compiler command, its inputs and the manifest entry for its output.

edgetpu_compiler, trtexec, rknn-toolkit2 and ai-edge-quantizer are run when this host has them;
otherwise the step is written as ``build_<target>.sh`` beside the inputs, to run on a host that does.
"""

from __future__ import annotations

import json
import logging
import shlex
import shutil
import struct
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidInputError
from ..optional import has_module
from ..repository import sha256_of

log = logging.getLogger(__name__)

TARGETS = ("tensorrt", "edgetpu", "rknn", "litert")
RKNN_SOCS = ("rk3588", "rk3576", "rk3568", "rk3566", "rk3562")
BUILD_TIMEOUT_S = 3600
INSTALL = {
    "tensorrt": "trtexec ships with TensorRT, not with the PyPI wheels: on Jetson it is part of JetPack "
    "(/usr/src/tensorrt/bin/trtexec, Debian package libnvinfer-bin); on x86_64 use NVIDIA's "
    "TensorRT deb/tar packages. Build on the device that will run the engine",
    "edgetpu": "edgetpu_compiler: Debian package edgetpu-compiler from Coral's apt repository "
    "(x86_64 Debian/Ubuntu only; it does not run on ARM or on the Coral board)",
    "rknn": "pip install rknn-toolkit2 (Rockchip's converter for x86_64/aarch64 Linux PCs; it pulls in "
    "torch; the board itself only needs rknn-toolkit-lite2)",
    "litert": "pip install ai-edge-quantizer",
}


@dataclass
class TargetContext:
    """What a target build starts from, inside the output package folder ``folder``."""

    folder: Path
    stem: str  # base name for produced files
    precision: str  # int8 or fp16
    onnx_file: str | None = None  # fp32 ONNX in ``folder``
    tflite_file: str | None = None  # the package's .tflite in ``folder``
    tflite_precision: str | None = None
    calibration_nhwc: Sequence[np.ndarray] = ()  # pre-processed inputs, NHWC
    ranges: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    input_shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)  # static, batch 1
    soc: str = "rk3588"
    trt_version: str = "10.3.0"
    precise_layers: Sequence[str] = ()  # ONNX nodes the int8 conversion kept at 16-bit weights


@dataclass
class TargetBuild:
    """One conversion step: run here (built / failed) or written down for elsewhere (pending)."""

    target: str
    tool: str
    install: str
    command: list[str]
    produces: str
    manifest_entry: dict[str, Any]
    inputs: list[str]
    notes: list[str] = field(default_factory=list)
    status: str = "pending"
    detail: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def script(self) -> str:
        return "\n".join(
            [
                "#!/bin/sh",
                f"# edgerun optimize --target {self.target}: run in this folder.",
                f"# Needs: {self.install}.",
                f"# Then add to manifest.json 'artifacts' (sha256 of {self.produces}):",
                *(f"#   {line}" for line in _entry_text(self.manifest_entry).splitlines()),
                *(f"# {note}" for note in self.notes),
                "set -e",
                'cd "$(dirname "$0")"',
                shlex.join(self.command),
                "",
            ]
        )


def _entry_text(entry: Mapping[str, Any]) -> str:
    return json.dumps(dict(entry))


def trt_version_code(version: str) -> int:
    """TensorRT's NV_TENSORRT_VERSION as its calibration caches write it: 8.6.1 -> 8601, 10.3.0 -> 100300."""
    try:
        parts = [int(p) for p in version.split(".")[:3]] + [0, 0]
    except ValueError:
        raise InvalidInputError(
            f"--trt-version {version!r}: expected MAJOR.MINOR[.PATCH], e.g. 10.3.0"
        ) from None
    major, minor, patch = parts[:3]
    return major * (10000 if major >= 10 else 1000) + minor * 100 + patch


def tensorrt_calibration_cache(ranges: Mapping[str, tuple[float, float]], version: str) -> str:
    """A TensorRT INT8 calibration cache: per tensor, scale = max|range| / 127 as big-endian float32 hex."""
    lines = [f"TRT-{trt_version_code(version)}-EntropyCalibration2"]
    for name in sorted(ranges):
        amax = max(abs(ranges[name][0]), abs(ranges[name][1]))
        if amax > 0:
            lines.append(f"{name}: {struct.pack('>f', amax / 127.0).hex()}")
    return "\n".join(lines) + "\n"


def _shape_text(shape: Sequence[int]) -> str:
    return "x".join(str(d) for d in shape)


def plan_tensorrt(ctx: TargetContext) -> TargetBuild:
    """trtexec from the fp32 ONNX; int8 reads a calibration cache made from edgerun's calibration."""
    if ctx.onnx_file is None:
        raise InvalidInputError(
            "--target tensorrt builds from an ONNX model; this package has no .onnx artifact"
        )
    engine = f"{ctx.stem}_{ctx.precision}.engine"
    shapes = ",".join(f"{name}:{_shape_text(shape)}" for name, shape in ctx.input_shapes.items())
    command = ["trtexec", f"--onnx={ctx.onnx_file}", f"--saveEngine={engine}", "--fp16"]
    notes = [
        "The engine only loads on the TensorRT version and GPU that built it.",
        "List the entry before the onnx artifact: the tensorrt backend takes the first match.",
    ]
    inputs = [ctx.onnx_file]
    if ctx.precision == "int8":
        if not ctx.ranges:
            raise InvalidInputError(
                "the TensorRT calibration cache needs onnxruntime's tensor ranges "
                "(quantize_static calibration_cache_path): pip install 'onnxruntime>=1.32'"
            )
        (ctx.folder / "calibration.cache").write_text(
            tensorrt_calibration_cache(ctx.ranges, ctx.trt_version), encoding="utf-8"
        )
        command += ["--int8", "--calib=calibration.cache"]
        inputs.append("calibration.cache")
        if ctx.precise_layers:
            layers = ",".join(f"{name}:fp16" for name in ctx.precise_layers)
            command += [f"--layerPrecisions={layers}", "--precisionConstraints=prefer"]
            notes.append(
                f"{len(ctx.precise_layers)} layer(s) that the int8 analysis kept at 16-bit weights run in "
                "fp16 (--layerPrecisions; TensorRT's ONNX parser names layers after the ONNX nodes). "
                "Not verified on hardware."
            )
        notes.append(
            f"calibration.cache holds scales for {len(ctx.ranges)} tensors, written for TensorRT "
            f"{ctx.trt_version} (--trt-version); "
            "TensorRT ignores a cache from another version. Layers without a scale fall back to fp16."
        )
        notes.append(
            "Without a prebuilt engine: edgerun predict IMAGE --model PACKAGE --backend tensorrt "
            "--option precision=int8 --option calibration_cache=PACKAGE/calibration.cache"
        )
    if shapes:
        command.append(f"--shapes={shapes}")
    entry = {
        "format": "tensorrt",
        "file": engine,
        "sha256": "<sha256 of the engine>",
        "layout": "NCHW",
        "precision": ctx.precision,
    }
    return TargetBuild("tensorrt", "trtexec", INSTALL["tensorrt"], command, engine, entry, inputs, notes)


def plan_edgetpu(ctx: TargetContext) -> TargetBuild:
    """edgetpu_compiler on the package's fully int8 .tflite."""
    if ctx.tflite_file is None or ctx.tflite_precision != "int8":
        raise InvalidInputError(
            "--target edgetpu compiles an int8-quantised .tflite, and this package has none "
            f"(tflite: {ctx.tflite_file or 'none'}, {ctx.tflite_precision or '-'}). "
            "edgerun cannot turn ONNX into TFLite here: quantise the source model to an int8 .tflite "
            "with LiteRT's tools (litert-torch PT2E, as scripts/export_mobilenet_v2.py does, or "
            "ai-edge-quantizer via --target litert), add it to the package, then run --target edgetpu "
            "on that package"
        )
    produced = Path(ctx.tflite_file).stem + "_edgetpu.tflite"
    command = ["edgetpu_compiler", "--show_operations", "--out_dir", ".", ctx.tflite_file]
    entry = {
        "format": "edgetpu",
        "file": produced,
        "sha256": "<sha256 of the compiled model>",
        "layout": "NHWC",
        "precision": "int8",
    }
    notes = ["Operations the Edge TPU cannot run stay on the CPU: see the compiler's .log."]
    return TargetBuild(
        "edgetpu", "edgetpu_compiler", INSTALL["edgetpu"], command, produced, entry, [ctx.tflite_file], notes
    )


def _write_npy_dataset(ctx: TargetContext, folder: str) -> str:
    (ctx.folder / folder).mkdir(exist_ok=True)
    names = []
    for index, tensor in enumerate(ctx.calibration_nhwc):
        name = f"{folder}/{index:04d}.npy"
        np.save(ctx.folder / name, np.asarray(tensor, np.float32))
        names.append(name)
    (ctx.folder / "dataset.txt").write_text("\n".join(names) + "\n", encoding="utf-8")
    return "dataset.txt"


RKNN_SCRIPT = '''"""Convert {onnx} to {rknn} with Rockchip's rknn-toolkit2 (written by edgerun optimize)."""
import sys
from rknn.api import RKNN


def check(code, step):
    if code != 0:
        sys.exit(f"rknn-toolkit2 {{step}} failed with code {{code}}")


rknn = RKNN(verbose=False)
# mean 0 / std 1: inputs arrive already normalised by edgerun's pre-processing (the dataset too).
check(rknn.config(mean_values=[[0, 0, 0]], std_values=[[1, 1, 1]], target_platform="{soc}"), "config")
check(rknn.load_onnx(model="{onnx}", inputs={inputs!r}, input_size_list={sizes!r}), "load_onnx")
check(rknn.build(do_quantization={quantize}, dataset={dataset!r}), "build")
check(rknn.export_rknn("{rknn}"), "export_rknn")
rknn.release()
'''


def plan_rknn(ctx: TargetContext) -> TargetBuild:
    """rknn-toolkit2 from the fp32 ONNX; int8 calibrates on .npy inputs from edgerun's pre-processing."""
    if ctx.onnx_file is None:
        raise InvalidInputError("--target rknn converts an ONNX model; this package has no .onnx artifact")
    if ctx.soc not in RKNN_SOCS:
        raise InvalidInputError(f"--soc {ctx.soc!r} is not one of {', '.join(RKNN_SOCS)}")
    produced = f"{ctx.stem}_{ctx.soc}_{ctx.precision}.rknn"
    quantize = ctx.precision == "int8"
    dataset = _write_npy_dataset(ctx, "rknn_dataset") if quantize else None
    script = RKNN_SCRIPT.format(
        onnx=ctx.onnx_file,
        rknn=produced,
        soc=ctx.soc,
        quantize=quantize,
        dataset=dataset,
        inputs=list(ctx.input_shapes),
        sizes=[list(s) for s in ctx.input_shapes.values()],
    )
    (ctx.folder / "convert_rknn.py").write_text(script, encoding="utf-8")
    entry = {
        "format": "rknn",
        "file": produced,
        "sha256": "<sha256 of the .rknn>",
        "layout": "NHWC",
        "precision": ctx.precision,
    }
    notes = [
        f"Built for {ctx.soc} only (RKNN models are per SoC; --soc picks it).",
        "dataset.txt lists the calibration inputs as NHWC float32 .npy files, already normalised.",
    ]
    inputs = [ctx.onnx_file, "convert_rknn.py"] + ([dataset, "rknn_dataset/"] if dataset else [])
    return TargetBuild(
        "rknn",
        "rknn-toolkit2",
        INSTALL["rknn"],
        ["python3", "convert_rknn.py"],
        produced,
        entry,
        inputs,
        notes,
    )


LITERT_SCRIPT = '''"""Quantise {src} to {out} with ai-edge-quantizer (written by edgerun optimize)."""
import numpy as np
from ai_edge_litert.interpreter import Interpreter
from ai_edge_quantizer import quantizer, recipe

signatures = Interpreter(model_path="{src}").get_signature_list()
key = next(iter(signatures))
input_name = signatures[key]["inputs"][0]
samples = np.load("litert_calibration.npz")
data = {{key: [{{input_name: samples[name]}} for name in sorted(samples.files)]}}
model = quantizer.Quantizer("{src}")
model.load_quantization_recipe(recipe.static_wi8_ai8())
model.quantize(model.calibrate(data)).export_model("{out}", overwrite=True)
'''


def plan_litert(ctx: TargetContext) -> TargetBuild:
    """ai-edge-quantizer static int8 (weights and activations) on the package's fp32 .tflite."""
    if ctx.precision != "int8":
        raise InvalidInputError("--target litert does int8 (ai-edge-quantizer static_wi8_ai8); use --int8")
    if ctx.tflite_file is None or ctx.tflite_precision != "fp32":
        raise InvalidInputError(
            "--target litert quantises an fp32 .tflite and this package has none "
            f"(tflite: {ctx.tflite_file or 'none'}); edgerun cannot convert ONNX to TFLite here"
        )
    produced = f"{ctx.stem}_int8.tflite"
    samples = {f"s{i:04d}": np.asarray(t, np.float32) for i, t in enumerate(ctx.calibration_nhwc)}
    np.savez_compressed(ctx.folder / "litert_calibration.npz", **samples)  # type: ignore[arg-type]
    (ctx.folder / "quantize_litert.py").write_text(
        LITERT_SCRIPT.format(src=ctx.tflite_file, out=produced), encoding="utf-8"
    )
    entry = {
        "format": "tflite",
        "file": produced,
        "sha256": "<sha256 of the int8 .tflite>",
        "layout": "NHWC",
        "precision": "int8",
    }
    notes = ["Replaces the fp32 tflite entry (one tflite artifact per package)."]
    return TargetBuild(
        "litert",
        "ai-edge-quantizer",
        INSTALL["litert"],
        ["python3", "quantize_litert.py"],
        produced,
        entry,
        [ctx.tflite_file, "quantize_litert.py", "litert_calibration.npz"],
        notes,
    )


PLANS = {"tensorrt": plan_tensorrt, "edgetpu": plan_edgetpu, "rknn": plan_rknn, "litert": plan_litert}


def tool_available(build: TargetBuild) -> bool:
    if build.command[0] == "python3":
        return has_module({"rknn": "rknn.api", "litert": "ai_edge_quantizer"}[build.target])
    return shutil.which(build.command[0]) is not None


def run_or_defer(build: TargetBuild, folder: Path) -> TargetBuild:
    """Run the step when its tool is here (status built/failed); else write build_<target>.sh (pending)."""
    script = folder / f"build_{build.target}.sh"
    script.write_text(build.script(), encoding="utf-8")
    script.chmod(0o755)
    if not tool_available(build):
        build.detail = f"{build.tool} not found on this host: {build.install}; then run {script.name}"
        return build
    argv = [sys.executable, *build.command[1:]] if build.command[0] == "python3" else build.command
    try:
        done = subprocess.run(
            argv, cwd=folder, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.SubprocessError) as exc:
        build.status, build.detail = "failed", f"{build.tool} could not run: {exc}"
        return build
    produced = folder / build.produces
    if done.returncode != 0 or not produced.is_file():
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        build.status = "failed"
        build.detail = f"{build.tool} exited with {done.returncode}: {' | '.join(tail) or 'no output'}"
        return build
    build.status = "built"
    build.manifest_entry = {**build.manifest_entry, "sha256": sha256_of(produced)}
    return build
