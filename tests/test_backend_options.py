"""Typed backend options: one parser for every backend, errors that list the valid options, each
option reaching its runtime, and the effective settings shown by predict --json and profile."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgerun.backends.base import LoadOptions
from edgerun.backends.litert_backend import LiteRTBackend
from edgerun.backends.onnxruntime_backend import OnnxRuntimeBackend
from edgerun.backends.options import describe_options, options_class_of, parse_options
from edgerun.backends.registry import Registry
from edgerun.cli import main
from edgerun.errors import BackendUnavailableError, InvalidInputError
from edgerun.repository import ModelRepository

from .helpers import SAMPLES

MOBILENET = ModelRepository().get("mobilenet_v2")


@pytest.mark.parametrize("name", Registry().names())
def test_every_backend_declares_documented_options(name: str) -> None:
    options_class = options_class_of(Registry().get(name))
    assert options_class.backend == name
    rows = describe_options(options_class)
    assert rows and all(row["help"] and row["type"] and row["default"] for row in rows)
    assert options_class() == parse_options(name, {})  # the defaults are valid


@pytest.mark.parametrize("text, value", [("yes", True), ("on", True), ("1", True), ("off", False),
                                         ("no", False), ("false", False)])
def test_xnnpack_means_the_same_on_litert_and_armnpu(text: str, value: bool) -> None:
    assert parse_options("litert", {"xnnpack": text}).xnnpack is value
    assert parse_options("armnpu", {"xnnpack": text}).xnnpack is value


def test_all_problems_in_one_error_with_the_valid_options() -> None:
    with pytest.raises(InvalidInputError) as caught:
        parse_options("rknn", {"core_mask": "0_2", "threads": "2"})
    message = str(caught.value)
    assert message.startswith("rknn options: core_mask='0_2': input should be 'auto', '0', '1', '2'")
    assert "unknown option 'threads' (an option of armnpu, edgetpu, litert, ncnn, onnxruntime, openvino, " \
           "simulated)" in message
    assert message.endswith("valid rknn options: core_mask (auto|0|1|2|0_1|0_1_2|all, default auto)")


def test_text_values_become_typed_values() -> None:
    typed = parse_options("onnxruntime", {"threads": "2", "providers": "CPUExecutionProvider",
                                          "graph_optimization": "basic"})
    assert (typed.threads, typed.providers) == (2, ("CPUExecutionProvider",))
    assert typed.graph_optimization == "basic"
    assert parse_options("edgetpu", {"device": "none"}).device is None
    assert parse_options("armnpu", {"delegate_options": "backends=CpuAcc,logging-severity=info"}) \
        .delegate_options == {"backends": "CpuAcc", "logging-severity": "info"}
    with pytest.raises(InvalidInputError, match="delegate_options='backends': input should be a valid dict"):
        parse_options("armnpu", {"delegate_options": "backends"})


def test_options_of_one_backend_do_not_load_on_another() -> None:
    path = MOBILENET.artifact_for(["onnx"]).path
    with pytest.raises(InvalidInputError, match="options for backend 'litert' cannot load on 'onnxruntime'"):
        OnnxRuntimeBackend().load(path, LoadOptions(options=parse_options("litert", {})))


def test_onnxruntime_options_reach_the_session() -> None:
    path = MOBILENET.artifact_for(["onnx"]).path
    typed = parse_options("onnxruntime", {"graph_optimization": "disable", "threads": "1"})
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    with OnnxRuntimeBackend().load(path, LoadOptions(options=typed)) as plain, \
            OnnxRuntimeBackend().load(path, LoadOptions(threads=1)) as optimised:
        assert plain.effective_options == {"threads": 1, "providers": ["CPUExecutionProvider"],
                                           "graph_optimization": "disable"}
        assert optimised.effective_options["graph_optimization"] == "all"
        np.testing.assert_allclose(plain.infer({"input": x})["logits"],
                                   optimised.infer({"input": x})["logits"], atol=1e-3)
    with pytest.raises(BackendUnavailableError, match="not in this build"):
        OnnxRuntimeBackend().load(path, LoadOptions(options=parse_options(
            "onnxruntime", {"providers": "NoSuchExecutionProvider"})))


def test_litert_without_xnnpack_gives_the_same_answer() -> None:
    path = MOBILENET.artifact_for(["tflite"]).path
    x = np.random.default_rng(0).standard_normal((1, 224, 224, 3)).astype(np.float32)
    without = LoadOptions(threads=1, options=parse_options("litert", {"xnnpack": "false"}))
    with LiteRTBackend().load(path, without) as slow, LiteRTBackend().load(path, LoadOptions()) as fast:
        assert slow.effective_options == {"threads": 1, "xnnpack": False} and slow.device == "cpu"
        name = slow.input_specs[0].name
        np.testing.assert_allclose(slow.infer({name: x})[slow.output_specs[0].name],
                                   fast.infer({name: x})[fast.output_specs[0].name], atol=1e-4)


def test_predict_json_carries_device_and_effective_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", str(SAMPLES / "chelsea.png"), "--json", "--backend", "litert",
                 "--option", "xnnpack=no", "--option", "threads=1"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["backend"], result["device"]) == ("litert", "cpu")
    assert result["options"] == {"threads": 1, "xnnpack": False}
    assert result["classes"][0]["label"] == "Egyptian cat"


def test_backends_name_prints_its_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["backends", "edgetpu"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["option", "type", "default", "help"]
    assert any(line.split()[:5] == ["device", "str", "or", "none", "none"] for line in lines)
    assert main(["backends", "openvino", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["options"]}
    assert rows["performance_hint"]["type"] == "LATENCY|THROUGHPUT|CUMULATIVE_THROUGHPUT"
    assert rows["performance_hint"]["default"] == "LATENCY"


def test_version_flag(capsys: pytest.CaptureFixture[str]) -> None:
    from edgerun import __version__

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"edgerun {__version__}"


def test_profile_report_carries_device_and_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profile", "--backend", "fake", "--option", "delay_ms=1", "--runs", "3", "--warmup", "0",
                 "--idle", "0", "--no-progress", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    run = report["runs"][0]
    assert run["backend"] == "fake" and run["device"] == "nowhere (fake)"
    assert run["options"]["delay_ms"] == 1.0 and report["config"]["options"]["delay_ms"] == 1.0
    assert main(["profile", "--backend", "fake", "--runs", "3", "--warmup", "0", "--idle", "0",
                 "--no-progress"]) == 0
    assert "  device      nowhere (fake); options: inputs=" in capsys.readouterr().out


def test_serve_flags_apply_to_the_models_on_the_command_line() -> None:
    from edgerun.cli import build_parser
    from edgerun.cli.serve import build_config

    args = build_parser().parse_args(["serve", "--model", "mobilenet_v2", "--model", "blazeface",
                                      "--backend", "litert", "--option", "xnnpack=off",
                                      "--option", "threads=2"])
    models = build_config(args).models
    assert [(m.name, m.backend, dict(m.options)) for m in models] == [
        ("mobilenet_v2", "litert", {"xnnpack": "off", "threads": "2"}),
        ("blazeface", "litert", {"xnnpack": "off", "threads": "2"})]
    lonely = build_parser().parse_args(["serve", "--backend", "litert", "--option", "threads=2"])
    with pytest.raises(InvalidInputError, match="apply to the models given with --model"):
        build_config(lonely)


def test_hardware_docs_show_every_backend_option() -> None:
    from edgerun.backends.options import options_markdown

    from .helpers import REPO

    page = (REPO / "docs" / "hardware.md").read_text(encoding="utf-8")
    shown = page.split("<!-- backend-options:start -->\n", 1)[1].split("<!-- backend-options:end -->", 1)[0]
    assert shown == options_markdown(), (
        "docs/hardware.md's backend options differ from the code; paste the output of python -c "
        "'from edgerun.backends.options import options_markdown; print(options_markdown(), end=\"\")'")
