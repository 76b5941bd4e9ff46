"""The edgerun command line: output on good input, one clear line and exit 1 on bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgerun.cli import main

from .helpers import REPO, SAMPLES, copy_package, flip_last_byte


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgerun", *args], capture_output=True, text=True,
                          cwd=REPO, env={**os.environ, **(env or {})}, timeout=120)


def test_predict_default_model_prints_egyptian_cat() -> None:
    done = run_cli("predict", str(SAMPLES / "chelsea.png"))
    assert done.returncode == 0, done.stderr
    first = done.stdout.splitlines()[1]
    assert "Egyptian cat" in first and "0.71" in first


@pytest.mark.parametrize("backend", ["onnxruntime", "litert"])
def test_predict_json_on_each_backend(backend: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", str(SAMPLES / "chelsea.png"), "--backend", backend, "--json",
                 "--top-k", "3", "--threads", "1"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["backend"] == backend and len(result["classes"]) == 3
    assert result["classes"][0]["label"] == "Egyptian cat"


def test_predict_detection_prints_box(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", str(SAMPLES / "astronaut.png"), "--model", "blazeface"]) == 0
    out = capsys.readouterr().out
    assert "1 detection(s) in 512x512 image" in out and "face 0.9" in out


def test_models_and_backends_listings(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "--json"]) == 0
    names = {m["name"] for m in json.loads(capsys.readouterr().out)}
    assert {"mobilenet_v2", "blazeface"} <= names
    assert main(["backends"]) == 0
    out = capsys.readouterr().out
    assert "onnxruntime  available" in out and "litert       available" in out
    assert out.splitlines()[1].split() == ["backend", "state", "reason"]


def test_tables_have_headers(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["model", "task", "formats", "description"]
    assert set(lines[1]) == {"-", " "} and lines[2].startswith("blazeface ")


def _truncated_png(tmp_path: Path) -> Path:
    data = (SAMPLES / "chelsea.png").read_bytes()
    path = tmp_path / "truncated.png"
    path.write_bytes(data[: len(data) // 3])
    return path


def _text_file(tmp_path: Path) -> Path:
    path = tmp_path / "notes.png"
    path.write_text("not an image")
    return path


@pytest.mark.parametrize("make_args, message", [
    (lambda t: ["predict", str(_text_file(t))], "not a decodable image"),
    (lambda t: ["predict", str(_truncated_png(t))], "not a decodable image"),
    (lambda t: ["predict", str(t / "nowhere.png")], "cannot read image file"),
    (lambda t: ["predict", str(SAMPLES / "chelsea.png"), "--model", "nosuchmodel"],
     "no model named or at 'nosuchmodel'; known models:"),
    (lambda t: ["predict", str(SAMPLES / "chelsea.png"), "--backend", "quantum"],
     "unknown backend 'quantum'; known backends: armnpu, edgetpu, fake, litert, ncnn, onnxruntime"),
    (lambda t: ["predict", str(SAMPLES / "chelsea.png"), "--backend", "litert", "--option", "vulkan=true"],
     "litert options: unknown option 'vulkan' (an option of ncnn). valid litert options: threads "
     "(int >= 1 or none, default none); xnnpack (bool, default true)"),
    (lambda t: ["predict", str(SAMPLES / "chelsea.png"), "--backend", "onnxruntime",
                "--option", "threads=two"],
     "onnxruntime options: threads='two': input should be a valid integer"),
    (lambda t: ["predict", str(SAMPLES / "chelsea.png"), "--backend", "onnxruntime", "--device", "usb:0"],
     "onnxruntime options: unknown option 'device' (an option of edgetpu, openvino, tensorrt)"),
    (lambda t: ["profile", "--backend", "all", "--option", "threads=1"],
     "--device and --option need one --backend NAME"),
    (lambda t: ["run", "--source", str(SAMPLES), "--option", "threads=1"],
     "--device and --option need one --backend NAME"),
    (lambda t: ["serve", "--model", "mobilenet_v2", "--backend", "onnxruntime", "--option", "threads=0"],
     "onnxruntime options: threads='0': input should be greater than or equal to 1"),
])
def test_bad_input_gives_one_line_and_exit_1(tmp_path: Path, make_args, message: str) -> None:
    done = run_cli(*make_args(tmp_path))
    assert done.returncode == 1
    assert message in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_checksum_mismatch_through_model_path(tmp_path: Path) -> None:
    folder = copy_package("mobilenet_v2", tmp_path)
    flip_last_byte(folder / "mobilenet_v2.onnx")
    done = run_cli("predict", str(SAMPLES / "chelsea.png"), env={"EDGERUN_MODEL_PATH": str(tmp_path)})
    assert done.returncode == 1 and "checksum mismatch for mobilenet_v2.onnx" in done.stderr
    assert "Traceback" not in done.stderr


def test_edgerun_backend_environment_variable_forces_the_backend() -> None:
    done = run_cli("predict", str(SAMPLES / "chelsea.png"), "--json",
                   env={"EDGERUN_BACKEND": "litert"})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["backend"] == "litert"


def test_importing_edgerun_loads_no_runtime_or_image_library() -> None:
    code = ("import sys, edgerun, edgerun.cli; "
            "print(sorted(m for m in ('onnxruntime', 'ai_edge_litert', 'tflite_runtime', 'PIL', "
            "'fastapi', 'cv2') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_missing_optional_package_names_the_extra(tmp_path: Path) -> None:
    # A directory that shadows fastapi with a package whose import fails like an absent one.
    shadow = tmp_path / "fastapi"
    shadow.mkdir()
    (shadow / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'fastapi'\", name='fastapi')\n")
    done = run_cli("serve", "--port", "0", env={"PYTHONPATH": str(tmp_path)})
    assert done.returncode == 1
    assert "pip install 'edgerun[serve]'" in done.stderr
    assert "Traceback" not in done.stderr
