"""Board-specific selection on emulated boards: the simulated backend stands in for the board's
accelerator (labelled so everywhere), explicit choices stay strict, CPU-only boards run for real."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgerun.backends.base import LoadOptions
from edgerun.backends.onnxruntime_backend import OnnxRuntimeBackend
from edgerun.backends.simulated import SimulatedBackend
from edgerun.cli import main
from edgerun.config import Settings
from edgerun.errors import BackendUnavailableError, ModelLoadError
from edgerun.hal import HostFS, detect
from edgerun.predictor import Predictor, open_session

from .helpers import SAMPLES, device_tree


def _settings(board: str, backend: str | None = None) -> Settings:
    return Settings(host_root=device_tree(board), backend=backend, threads=1)


def test_emulated_orin_runs_mobilenet_as_simulated_tensorrt() -> None:
    package, selection, session = open_session("mobilenet_v2", settings=_settings("jetson-orin-nano"))
    with session, OnnxRuntimeBackend().load(selection.artifact.path, LoadOptions(threads=1)) as reference:
        assert selection.backend.name == "simulated" and session.backend_name == "tensorrt (simulated)"
        assert session.simulated and session.runs_on == "onnxruntime"
        tensor = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
        assert np.array_equal(
            session.infer({"input": tensor})["logits"], reference.infer({"input": tensor})["logits"]
        )
    assert "stands in for tensorrt on emulated jetson-orin-nano" in selection.report["simulated"]


def test_predictor_on_the_coral_board_is_labelled_simulated_edgetpu() -> None:
    with Predictor.open("mobilenet_v2", settings=_settings("rpi5-coral-usb")) as predictor:
        result = predictor.predict(SAMPLES / "chelsea.png")
    assert result.backend == "edgetpu (simulated)"
    assert result.classes[0].label == "Egyptian cat"


def test_cpu_only_board_runs_its_preferred_runtime_for_real() -> None:
    _, selection, session = open_session("mobilenet_v2", settings=_settings("rpi4"))
    with session:
        assert selection.backend.name == "litert" and session.backend_name == "litert"
    assert selection.report["litert"].startswith("selected")


def test_explicit_backend_never_falls_back() -> None:
    with pytest.raises(
        BackendUnavailableError, match="no backend can run model mobilenet_v2: tensorrt: TensorRT"
    ):
        open_session("mobilenet_v2", settings=_settings("jetson-orin-nano", backend="tensorrt"))
    with pytest.raises(BackendUnavailableError, match="rknn: .*rknn-toolkit-lite2 not installed"):
        open_session("mobilenet_v2", settings=_settings("rk3588", backend="rknn"))


def test_environment_backend_is_strict_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGERUN_HOST_ROOT", str(device_tree("imx8mp")))
    monkeypatch.setenv("EDGERUN_BACKEND", "edgetpu")
    with pytest.raises(BackendUnavailableError, match="edgetpu: libedgetpu.so.1 not found"):
        open_session("mobilenet_v2_int8")


def test_cli_predict_on_an_emulated_board(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            [
                "predict",
                str(SAMPLES / "chelsea.png"),
                "--root",
                str(device_tree("rk3588")),
                "--json",
                "--top-k",
                "1",
            ]
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert result["backend"] == "rknn (simulated)" and result["classes"][0]["label"] == "Egyptian cat"


def test_simulated_is_refused_on_a_live_host_and_for_other_formats(tmp_path: Path) -> None:
    live = detect(HostFS("/"))
    assert "only on an emulated board" in SimulatedBackend().probe(live).reason
    assert "has no accelerator" in SimulatedBackend().probe(detect(HostFS(device_tree("rpi4")))).reason
    with pytest.raises(ModelLoadError, match="runs .onnx or .tflite"):
        SimulatedBackend().load(tmp_path / "m.rknn", LoadOptions())
