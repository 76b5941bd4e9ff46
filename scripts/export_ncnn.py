#!/usr/bin/env python3
"""Convert the embedded ONNX models to ncnn ``.param``/``.bin`` with pnnx, and add them to their packages.

For each of mobilenet_v2 and blazeface this script
1. runs ``pnnx <model>.onnx inputshape=[...] fp16=0`` (fp32 weights, so ncnn can be compared
   with onnxruntime to ~1e-3) in a scratch folder,
2. renames pnnx's blobs ``in0``/``outN`` back to the ONNX tensor names (outputs matched by the
   shapes onnxruntime produces), and writes the input shape into the Input layer
   (``0=w 1=h 2=c``) so the ncnn session can describe its input without running the model,
3. copies ``<model>.ncnn.param`` + ``<model>.ncnn.bin`` into ``edgerun/models/<model>/`` and adds
   (or replaces) the ``ncnn`` artifact in its manifest.json, with the .bin as a checksummed
   companion file.

Set-up (a throw-away venv outside the repo; pnnx pulls torch, which edgerun never needs):
    python3.11 -m venv /tmp/pnnx-venv
    /tmp/pnnx-venv/bin/pip install pnnx==20261020 onnxruntime numpy
    /tmp/pnnx-venv/bin/python scripts/export_ncnn.py
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "edgerun" / "models"
JOBS = {"mobilenet_v2": (1, 3, 224, 224), "blazeface": (1, 3, 128, 128)}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def pnnx_convert(onnx_path: Path, shape: tuple[int, ...], work: Path) -> tuple[Path, Path]:
    pnnx = Path(sys.executable).with_name("pnnx")
    local = work / onnx_path.name
    shutil.copy(onnx_path, local)
    shape_text = "[" + ",".join(str(d) for d in shape) + "]"
    subprocess.run(
        [str(pnnx), local.name, f"inputshape={shape_text}", "fp16=0"],
        cwd=work,
        check=True,
        capture_output=True,
    )
    stem = onnx_path.stem
    return work / f"{stem}.ncnn.param", work / f"{stem}.ncnn.bin"


def output_names_by_shape(onnx_path: Path, shape: tuple[int, ...]) -> dict[tuple[int, ...], str]:
    session = ort.InferenceSession(str(onnx_path))
    feed = {session.get_inputs()[0].name: np.zeros(shape, np.float32)}
    outputs = session.run(None, feed)
    return {tuple(o.shape[1:]): meta.name for o, meta in zip(outputs, session.get_outputs(), strict=True)}


def rename_blobs(param: Path, onnx_path: Path, shape: tuple[int, ...], out_shapes: dict[str, tuple]) -> None:
    session = ort.InferenceSession(str(onnx_path))
    by_shape = output_names_by_shape(onnx_path, shape)
    mapping = {"in0": session.get_inputs()[0].name}
    mapping.update({blob: by_shape[shp] for blob, shp in out_shapes.items()})
    text = param.read_text()
    for old, new in mapping.items():
        text = re.sub(rf"(?<=\s){re.escape(old)}(?=\s|$)", new, text, flags=re.MULTILINE)
    _, c, h, w = shape
    text = re.sub(r"^(Input\s+\S+\s+0\s+1\s+\S+)\s*$", rf"\1 0={w} 1={h} 2={c}", text, flags=re.MULTILINE)
    param.write_text(text)


def ncnn_output_shapes(param: Path, binary: Path, shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    import ncnn  # only for discovering pnnx's output blob shapes

    net = ncnn.Net()
    net.load_param(str(param))
    net.load_model(str(binary))
    extractor = net.create_extractor()
    extractor.input("in0", ncnn.Mat(np.zeros(shape[1:], np.float32)))
    return {name: tuple(np.array(extractor.extract(name)[1]).shape) for name in net.output_names()}


def update_manifest(package: Path, param: Path, binary: Path) -> None:
    manifest_path = package / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    artifacts = [a for a in manifest["artifacts"] if a["format"] != "ncnn"]
    artifacts.append(
        {
            "format": "ncnn",
            "file": param.name,
            "sha256": sha256(param),
            "layout": "NCHW",
            "precision": "fp32",
            "companions": [{"file": binary.name, "sha256": sha256(binary)}],
        }
    )
    manifest["artifacts"] = artifacts
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")


def main() -> None:
    for name, shape in JOBS.items():
        package = MODELS / name
        with tempfile.TemporaryDirectory() as tmp:
            param, binary = pnnx_convert(package / f"{name}.onnx", shape, Path(tmp))
            rename_blobs(param, package / f"{name}.onnx", shape, ncnn_output_shapes(param, binary, shape))
            shutil.copy(param, package / param.name)
            shutil.copy(binary, package / binary.name)
        update_manifest(package, package / param.name, package / binary.name)
        print(f"{name}: {param.name} {(package / binary.name).stat().st_size} bytes")


if __name__ == "__main__":
    main()
