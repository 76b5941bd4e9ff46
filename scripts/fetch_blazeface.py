#!/usr/bin/env python3
"""Fetch MediaPipe's BlazeFace (short range) detector and package it for edgerun.

What it does
------------
1. ``pip download mediapipe==0.10.21 --no-deps`` (cp311 manylinux x86_64 wheel,
   about 35 MB) into a temporary directory.  Newer mediapipe releases no longer
   ship the .tflite files, so the version is pinned.
2. Extracts ``mediapipe/modules/face_detection/face_detection_short_range.tflite``
   and the wheel's ``LICENSE`` (Apache-2.0) into ``edgerun/models/blazeface/`` as
   ``blazeface.tflite`` and ``LICENSE``, and writes ``NOTICE``, ``labels.txt``
   (the single class ``face``) and ``manifest.json``.
3. Converts the .tflite to ``blazeface.onnx`` with tflite2onnx (the converter
   turns the input into NCHW ``[1,3,128,128]``) and checks that onnxruntime on
   the ONNX file and ai_edge_litert on the .tflite file agree on the sample
   images in ``samples/``.  The ONNX file is only kept (and listed in the
   manifest) when the outputs agree within ``--atol``.

Set-up (never install into the system Python; the venv lives outside the repo)
-------------------------------------------------------------------------------
    python3.11 -m venv /tmp/t2o-venv
    /tmp/t2o-venv/bin/pip install tflite2onnx==0.4.1 onnxruntime ai-edge-litert pillow numpy
    /tmp/t2o-venv/bin/python scripts/fetch_blazeface.py

Run it from anywhere; paths are resolved relative to the repository root.
``samples/`` must already hold the sample images (scripts/export_mobilenet_v2.py
copies them from the scikit-image wheel).  Without tflite2onnx / onnxruntime /
ai_edge_litert the script still packages the .tflite model but skips the ONNX
conversion and says so.  Re-running the script regenerates every file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT_DIR = REPO / "edgerun" / "models" / "blazeface"
SAMPLES = REPO / "samples"

MEDIAPIPE_VERSION = "0.10.21"
MEMBER = "mediapipe/modules/face_detection/face_detection_short_range.tflite"
INPUT_SIZE = 128


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download_wheel(dest: Path, wheel: str | None) -> Path:
    if wheel:
        return Path(wheel)
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
        "--python-version", "3.11", "--platform", "manylinux_2_28_x86_64",
        "--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_17_x86_64",
        "-d", str(dest), f"mediapipe=={MEDIAPIPE_VERSION}",
    ]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    wheels = sorted(dest.glob(f"mediapipe-{MEDIAPIPE_VERSION}-*.whl"))
    if not wheels:
        raise SystemExit("mediapipe wheel not found after pip download")
    return wheels[0]


def extract(wheel: Path, out_dir: Path) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        licenses = [n for n in names if n.endswith(".dist-info/LICENSE")]
        if not licenses:
            raise SystemExit("no dist-info/LICENSE in the mediapipe wheel")
        (out_dir / "blazeface.tflite").write_bytes(zf.read(MEMBER))
        (out_dir / "LICENSE").write_bytes(zf.read(licenses[0]))
    return {"wheel": wheel.name, "wheel_sha256": sha256_of(wheel), "license_member": licenses[0]}


# --------------------------------------------------------------------------- preprocessing
def letterbox(path: Path, size: int = INPUT_SIZE):
    """Keep the aspect ratio, scale the longer side to ``size``, centre the image
    on a black (pixel value 0) canvas, then map to [-1, 1] with (x/255-0.5)/0.5.
    Returns an NHWC float32 array [1, size, size, 3]."""
    import numpy as np
    from PIL import Image

    img = Image.open(path).convert("RGB")
    w, h = img.size
    scale = min(size / w, size / h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    resized = img.resize((nw, nh), Image.BILINEAR)
    canvas = Image.new("RGB", (size, size), (0, 0, 0))
    canvas.paste(resized, ((size - nw) // 2, (size - nh) // 2))
    x = np.asarray(canvas, dtype=np.float32) / 255.0
    x = (x - 0.5) / 0.5
    return x[None]


# --------------------------------------------------------------------------- runtimes
def describe_tflite(path: Path):
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path))
    it.allocate_tensors()
    io = {"inputs": [], "outputs": []}
    for kind, details in (("inputs", it.get_input_details()), ("outputs", it.get_output_details())):
        for d in details:
            io[kind].append({
                "name": d["name"], "shape": [int(s) for s in d["shape"]],
                "dtype": d["dtype"].__name__, "quantization": [float(d["quantization"][0]), int(d["quantization"][1])],
            })
    return it, io


def run_tflite(it, x):
    inp = it.get_input_details()[0]
    it.set_tensor(inp["index"], x)
    it.invoke()
    return {d["name"]: it.get_tensor(d["index"]).copy() for d in it.get_output_details()}


def describe_onnx(path: Path):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    io = {
        "inputs": [{"name": i.name, "shape": i.shape, "dtype": i.type} for i in sess.get_inputs()],
        "outputs": [{"name": o.name, "shape": o.shape, "dtype": o.type} for o in sess.get_outputs()],
    }
    return sess, io


def run_onnx(sess, x_nhwc):
    import numpy as np

    inp = sess.get_inputs()[0]
    x = x_nhwc
    if list(inp.shape[1:]) == [3, INPUT_SIZE, INPUT_SIZE]:
        x = np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2))
    outs = sess.run(None, {inp.name: x})
    return {o.name: v for o, v in zip(sess.get_outputs(), outs)}


def canonicalize_onnx(path: Path) -> None:
    """tflite2onnx emits initializers and value_info in set/dict order, so the bytes
    change from run to run.  Sort both by name (the graph semantics do not depend on
    their order) so that re-running the script reproduces the same file."""
    import onnx

    model = onnx.load(str(path))
    g = model.graph
    inits = sorted(g.initializer, key=lambda t: t.name)
    infos = sorted(g.value_info, key=lambda v: v.name)
    del g.initializer[:]
    g.initializer.extend(inits)
    del g.value_info[:]
    g.value_info.extend(infos)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def convert_and_verify(out_dir: Path, atol: float) -> dict | None:
    try:
        import numpy as np
        import onnxruntime  # noqa: F401
        import tflite2onnx
        from ai_edge_litert.interpreter import Interpreter  # noqa: F401
    except ImportError as exc:
        print(f"!! ONNX conversion skipped ({exc}); see the set-up notes in this script's docstring")
        return None

    tfl = out_dir / "blazeface.tflite"
    onx = out_dir / "blazeface.onnx"
    if onx.exists():
        onx.unlink()
    t0 = time.time()
    # tflite2onnx warns once per float16 weight tensor ("Data type float16 not
    # supported/tested yet"); the check below is what decides whether the
    # result is usable, so keep its log quiet.
    logging.getLogger("tflite2onnx").setLevel(logging.ERROR)
    tflite2onnx.convert(str(tfl), str(onx))
    canonicalize_onnx(onx)
    print(f"tflite2onnx {tflite2onnx.__version__}: {onx.name} written in {time.time() - t0:.1f}s")

    it, tfl_io = describe_tflite(tfl)
    sess, onnx_io = describe_onnx(onx)
    print("tflite I/O:", json.dumps(tfl_io))
    print("onnx   I/O:", json.dumps(onnx_io))

    images = sorted(p for p in SAMPLES.glob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if not images:
        raise SystemExit(f"no sample images in {SAMPLES}; run scripts/export_mobilenet_v2.py first")
    worst = {"regressors": 0.0, "classificators": 0.0}
    per_image = {}
    for p in images:
        x = letterbox(p)
        a = run_tflite(it, x)
        b = run_onnx(sess, x)
        diffs = {k: float(np.max(np.abs(a[k] - b[k]))) for k in worst}
        for k in worst:
            worst[k] = max(worst[k], diffs[k])
        logits = np.clip(a["classificators"].astype(np.float64), -100.0, 100.0)
        score = 1.0 / (1.0 + np.exp(-logits))
        per_image[p.name] = {**diffs, "max_face_score_tflite": float(score.max()),
                             "anchors_over_0.5": int((score > 0.5).sum())}
        print(f"  {p.name:14s} max|diff| regressors={diffs['regressors']:.2e} "
              f"classificators={diffs['classificators']:.2e}  max face score={score.max():.3f} "
              f"(anchors>0.5: {(score > 0.5).sum()})")
    ok = max(worst.values()) <= atol
    print(f"max abs diff over all samples: {worst} -> {'OK' if ok else 'MISMATCH'} (atol {atol})")
    if not ok:
        onx.unlink()
        print("!! ONNX output disagrees with the tflite model; blazeface.onnx NOT shipped")
        return None
    return {"tflite_io": tfl_io, "onnx_io": onnx_io, "max_abs_diff": worst, "per_image": per_image,
            "tflite2onnx": tflite2onnx.__version__}


# --------------------------------------------------------------------------- metadata
def write_notice(out_dir: Path, origin: dict, onnx_ok: bool) -> None:
    lines = [
        "BlazeFace short-range face detector",
        "===================================",
        "",
        f"blazeface.tflite is the unmodified file {MEMBER}",
        f"from the PyPI wheel {origin['wheel']} (MediaPipe {MEDIAPIPE_VERSION}, Google LLC),",
        "licensed under the Apache License, Version 2.0. A copy of the licence, taken from",
        f"the same wheel ({origin['license_member']}), is in the file LICENSE next to this one.",
        "",
        f"  original file name : face_detection_short_range.tflite",
        f"  sha256             : {sha256_of(out_dir / 'blazeface.tflite')}",
        f"  wheel sha256       : {origin['wheel_sha256']}",
        "",
    ]
    if onnx_ok:
        lines += [
            "blazeface.onnx is a derivative work: edgerun's scripts/fetch_blazeface.py converted",
            "blazeface.tflite with tflite2onnx 0.4.1 (float16 weights were widened to float32 and",
            "the input layout changed to NCHW). It is distributed under the same Apache-2.0 licence.",
            f"  sha256             : {sha256_of(out_dir / 'blazeface.onnx')}",
            "",
        ]
    lines += [
        "labels.txt and manifest.json were written by edgerun's scripts/fetch_blazeface.py.",
        "",
    ]
    (out_dir / "NOTICE").write_text("\n".join(lines))


def write_manifest(out_dir: Path, onnx_ok: bool) -> dict:
    (out_dir / "labels.txt").write_text("face\n")
    artifacts = [
        {"format": "tflite", "file": "blazeface.tflite", "sha256": sha256_of(out_dir / "blazeface.tflite"),
         "layout": "NHWC", "precision": "fp32"},
    ]
    if onnx_ok:
        artifacts.append({"format": "onnx", "file": "blazeface.onnx", "sha256": sha256_of(out_dir / "blazeface.onnx"),
                          "layout": "NCHW", "precision": "fp32"})
    manifest = {
        "schema": 1,
        "name": "blazeface",
        "task": "detection",
        "description": "MediaPipe BlazeFace short-range face detector (128x128, 896 anchors, fp16 weights / fp32 compute)",
        "labels": "labels.txt",
        "license": "NOTICE",
        "preprocess": {
            "color": "RGB",
            "resize": "letterbox",
            "input_size": [INPUT_SIZE, INPUT_SIZE],
            "mean": [0.5, 0.5, 0.5],
            "std": [0.5, 0.5, 0.5],
        },
        "postprocess": {
            "kind": "blazeface",
            "score_threshold": 0.5,
            "iou_threshold": 0.3,
            "strides": [8, 16, 16, 16],
            "anchor_offset": 0.5,
        },
        "artifacts": artifacts,
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--wheel", help="use an already downloaded mediapipe wheel instead of pip download")
    ap.add_argument("--out-dir", default=str(OUT_DIR))
    ap.add_argument("--no-onnx", action="store_true", help="skip the tflite2onnx conversion")
    ap.add_argument("--atol", type=float, default=1e-3, help="max abs diff allowed between ONNX and tflite outputs")
    args = ap.parse_args()
    out_dir = Path(args.out_dir)

    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="edgerun-mediapipe-") as tmp:
        wheel = download_wheel(Path(tmp), args.wheel)
        origin = extract(wheel, out_dir)
    print(f"extracted blazeface.tflite + LICENSE from {origin['wheel']} in {time.time() - t0:.1f}s")

    stale = out_dir / "blazeface.onnx"
    if args.no_onnx and stale.exists():
        stale.unlink()
    report = None if args.no_onnx else convert_and_verify(out_dir, args.atol)
    onnx_ok = report is not None
    write_notice(out_dir, origin, onnx_ok)
    manifest = write_manifest(out_dir, onnx_ok)
    for a in manifest["artifacts"]:
        p = out_dir / a["file"]
        print(f"{p.relative_to(REPO) if p.is_relative_to(REPO) else p}: {p.stat().st_size} bytes sha256 {a['sha256']}")
    print(f"done in {time.time() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
