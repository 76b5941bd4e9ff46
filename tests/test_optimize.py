"""`edgerun optimize`: int8/fp16 packages through onnxruntime, the accuracy report, refusals, targets."""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

from edgerun import Predictor
from edgerun.cli import main
from edgerun.errors import InvalidInputError
from edgerun.optimize import images as imgset
from edgerun.optimize import targets
from edgerun.optimize.compare import compare_outputs, detections_match, iou
from edgerun.optimize.latency import LatencyPlan
from edgerun.optimize.onnx_tools import Int8Settings, quantize_int8
from edgerun.optimize.report import SCHEMA, format_table
from edgerun.optimize.runner import OptimizeRequest, optimize
from edgerun.optimize.sensitivity import fake_quantize, noise_share, outliers, weight_sensitivity
from edgerun.repository import load_package, sha256_of

from .helpers import MODELS, SAMPLES

CALIBRATION = SAMPLES / "calibration"
SAMPLE_GLOB = str(SAMPLES / "*.[pj][np]g")  # the four shipped samples: held out
FAST = LatencyPlan(runs=0)
FEW = 5  # calibration images per test run
FIRST_DEPTHWISE = "/features/features.1/conv/conv.0/conv.0.0/Conv"  # MobileNetV2's int8-fragile layer


def _request(output: Path, **changes: object) -> OptimizeRequest:
    values: dict[str, object] = {
        "model": "mobilenet_v2",
        "precision": "int8",
        "calibration": str(CALIBRATION),
        "evaluation": SAMPLE_GLOB,
        "output": output,
        "max_calibration": FEW,
        "min_agreement": 0.5,
        "latency": FAST,
    }
    values.update(changes)
    return OptimizeRequest(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def int8_run(tmp_path_factory: pytest.TempPathFactory):
    output = tmp_path_factory.mktemp("int8") / "mobilenet_v2_int8"
    report = optimize(_request(output, latency=LatencyPlan(runs=3, warmup=1, threads=1)))
    return report, output


def _top(predictor: Predictor, image: Path, k: int) -> list[int]:
    result = predictor.predict(image, top_k=k)
    return [c.index for c in result.classes]  # type: ignore[union-attr]


def test_int8_package_is_written_with_manifest_labels_and_checksum(int8_run) -> None:
    report, output = int8_run
    assert report.status == "written" and report.output["path"] == str(output)
    package = load_package(output)
    source = load_package(MODELS / "mobilenet_v2")
    (artifact,) = package.artifacts
    assert (artifact.format, artifact.precision, artifact.layout) == ("onnx", "int8", "NCHW")
    assert artifact.sha256 == sha256_of(artifact.path)
    assert package.labels == source.labels and package.preprocess == source.preprocess
    assert package.postprocess == source.postprocess and (output / "NOTICE").is_file()
    manifest = json.loads((output / "manifest.json").read_text())
    assert manifest["optimization"]["source_sha256"] == source.artifacts[0].sha256
    assert report.size["ratio"] < 0.3


def test_int8_model_is_static_qdq_per_channel_with_float_outputs(int8_run) -> None:
    _, output = int8_run
    model = onnx.load(str(output / "mobilenet_v2_int8.onnx"))
    ops = {node.op_type for node in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    weights = {t.name: t for t in model.graph.initializer}
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    dq = next(n for n in model.graph.node if conv.input[1] in n.output)
    assert weights[dq.input[0]].data_type == onnx.TensorProto.INT8
    assert len(onnx.numpy_helper.to_array(weights[dq.input[1]])) == 32  # one scale per output channel
    producer = next(n for n in model.graph.node if "logits" in n.output)
    assert producer.op_type == "Gemm"  # logits are not re-quantised


def test_int8_model_loads_in_onnxruntime_and_agrees_with_fp32(int8_run) -> None:
    _, output = int8_run
    with (
        Predictor.open(str(output), backend="onnxruntime") as int8,
        Predictor.open("mobilenet_v2", backend="onnxruntime") as fp32,
    ):
        assert int8.session.backend_name == "onnxruntime"
        assert int8.session.input_specs[0].dtype == np.float32
        for name in ("chelsea.png", "coffee.png"):  # confident fp32 predictions
            assert _top(int8, SAMPLES / name, 1) == _top(fp32, SAMPLES / name, 1)
        for name in ("chelsea.png", "coffee.png", "astronaut.png", "rocket.jpg"):
            assert _top(fp32, SAMPLES / name, 1)[0] in _top(int8, SAMPLES / name, 5)


def test_report_numbers_and_table(int8_run) -> None:
    report, _ = int8_run
    data = report.to_dict()
    assert data["schema"] == SCHEMA and data["calibration"]["images"] == FEW
    evaluation = data["evaluation"]
    assert evaluation["images"] == 4 and evaluation["held_out"] is True
    assert evaluation["top1_agreement"] == 1 - len(evaluation["disagreements"]) / 4
    assert 0 < evaluation["mean_abs_diff"] <= evaluation["max_abs_diff"]
    assert evaluation["reference_top1_in_top5"] == 1.0
    latency = data["latency"]
    assert latency["status"] == "ok" and latency["backend"] == "onnxruntime"
    assert latency["before"]["count"] == 3 and latency["after"]["p50_ms"] > 0
    table = format_table(report)
    assert "top-1 agreement" in table and "0.2" in table and "wrote" in table


def test_labelled_evaluation_folders_give_accuracy_of_both(tmp_path: Path, int8_run) -> None:
    _, output = int8_run
    labelled = tmp_path / "eval"
    for label, name in (("Egyptian cat", "chelsea.png"), ("espresso", "coffee.png")):
        (labelled / label).mkdir(parents=True)
        shutil.copy(SAMPLES / name, labelled / label / name)
    with Predictor.open(str(output), backend="onnxruntime") as predictor:
        loaded = imgset.load_images(imgset.find_images(labelled), lambda a: predictor.preprocess(a)[0])
        loaded.labels = imgset.folder_labels(loaded, str(labelled), predictor.package.labels)
    assert loaded.labels == [285, 967]
    report = optimize(
        _request(tmp_path / "out", precision="fp16", calibration=None, evaluation=str(labelled))
    )
    assert report.evaluation["labelled"] is True
    assert report.evaluation["reference_accuracy"] == 1.0 == report.evaluation["candidate_accuracy"]
    assert "top-1 accuracy" in format_table(report)
    (labelled / "not a class").mkdir()
    shutil.copy(SAMPLES / "rocket.jpg", labelled / "not a class" / "rocket.jpg")
    with pytest.raises(InvalidInputError, match="neither class names nor class indices"):
        optimize(_request(tmp_path / "out2", precision="fp16", calibration=None, evaluation=str(labelled)))


def test_refuses_a_model_below_the_agreement_threshold(tmp_path: Path) -> None:
    black = tmp_path / "calib"
    black.mkdir()
    Image.new("RGB", (64, 64)).save(black / "black.png")  # ranges collapse: a useless calibration
    output = tmp_path / "out"
    report = optimize(_request(output, calibration=str(black), min_agreement=0.9))
    assert report.refused and "below the --min-agreement 90.0%" in report.reason
    assert not output.exists() and not list(tmp_path.glob(".out.*"))


def _broken_calibration_folder(folder: Path) -> Path:
    folder.mkdir()
    for name in sorted(CALIBRATION.iterdir())[:2]:
        shutil.copy(name, folder / name.name)
    (folder / "truncated.png").write_bytes((SAMPLES / "chelsea.png").read_bytes()[:200])
    (folder / "garbage.jpg").write_bytes(b"not a jpeg at all")
    (folder / "README.txt").write_text("calibration notes")
    return folder


def test_cli_skips_and_counts_corrupt_calibration_images(tmp_path: Path, capsys) -> None:
    folder = _broken_calibration_folder(tmp_path / "calib")
    code = main(
        [
            "optimize",
            "mobilenet_v2",
            "--int8",
            "--calibration",
            str(folder),
            "--eval",
            SAMPLE_GLOB,
            "--output",
            str(tmp_path / "out"),
            "--latency-runs",
            "0",
            "--min-agreement",
            "0",
            "--calibration-method",
            "minmax",
            "--json",
        ]
    )
    assert code == 0
    calibration = json.loads(capsys.readouterr().out)["calibration"]
    assert calibration["skipped"] == 2 and calibration["ignored_non_images"] == 1
    assert {Path(s["file"]).name for s in calibration["skipped_files"]} == {"truncated.png", "garbage.jpg"}


@pytest.mark.parametrize("content", [None, "notes.txt"])
def test_calibration_folder_without_images_is_refused(tmp_path: Path, content: str | None, capsys) -> None:
    folder = tmp_path / "empty"
    folder.mkdir()
    if content:
        (folder / content).write_text("no pictures here")
    code = main(
        [
            "optimize",
            "mobilenet_v2",
            "--int8",
            "--calibration",
            str(folder),
            "--latency-runs",
            "0",
            "--output",
            str(tmp_path / "out"),
        ]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("edgerun: error: calibration set") and "has no usable images" in err
    assert ".png" in err and not (tmp_path / "out").exists()


def test_int8_needs_calibration_and_a_precision() -> None:
    with pytest.raises(InvalidInputError, match="--calibration"):
        OptimizeRequest(model="mobilenet_v2", precision="int8")
    with pytest.raises(InvalidInputError, match="--int8 .* or --fp16"):
        OptimizeRequest(model="mobilenet_v2")


def test_already_quantised_models_are_refused(tmp_path: Path, int8_run) -> None:
    _, output = int8_run
    with pytest.raises(InvalidInputError, match="already quantised"):
        optimize(_request(tmp_path / "again", model=str(output)))
    disguised = tmp_path / "disguised"  # manifest says fp32, the file says otherwise
    shutil.copytree(output, disguised)
    manifest = json.loads((disguised / "manifest.json").read_text())
    manifest["artifacts"][0]["precision"] = "fp32"
    (disguised / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(
        InvalidInputError, match=r"already quantised \(it has DequantizeLinear, QuantizeLinear"
    ):
        optimize(_request(tmp_path / "again2", model=str(disguised)))
    with pytest.raises(InvalidInputError, match="int8: it is already quantised"):
        optimize(_request(tmp_path / "again3", model="mobilenet_v2_int8", target="litert"))


def test_fp16_package(tmp_path: Path) -> None:
    output = tmp_path / "fp16"
    report = optimize(_request(output, precision="fp16", calibration=None))
    assert report.status == "written" and 0.45 < report.size["ratio"] < 0.55
    assert report.evaluation["top1_agreement"] == 1.0 and report.evaluation["max_abs_diff"] < 0.5
    with Predictor.open(str(output), backend="onnxruntime") as predictor:
        assert predictor.predict(SAMPLES / "chelsea.png").classes[0].label == "Egyptian cat"  # type: ignore[union-attr]
    model = onnx.load(str(output / "mobilenet_v2_fp16.onnx"))
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)
    with pytest.raises(InvalidInputError, match="already 16-bit floats"):
        disguised = tmp_path / "disguised"
        shutil.copytree(output, disguised)
        manifest = json.loads((disguised / "manifest.json").read_text())
        manifest["artifacts"][0]["precision"] = "fp32"
        (disguised / "manifest.json").write_text(json.dumps(manifest))
        optimize(_request(tmp_path / "again", model=str(disguised), precision="fp16", calibration=None))


def test_detector_agreement_is_measured_on_boxes(tmp_path: Path) -> None:
    report = optimize(_request(tmp_path / "bf", model="blazeface", precision="fp16", calibration=None))
    evaluation = report.evaluation
    assert evaluation["top1_agreement"] is None and evaluation["detection_agreement"] == 1.0
    assert "detections agree" in format_table(report)


def _onnxruntime_keeps_calibration_ranges() -> bool:
    import inspect

    from onnxruntime.quantization import quantize_static

    return "calibration_cache_path" in inspect.signature(quantize_static).parameters


@pytest.mark.skipif(not _onnxruntime_keeps_calibration_ranges(),
                    reason="onnxruntime < 1.32 (Python 3.10 stops at 1.23.2) cannot save the calibration "
                           "ranges; edgerun then refuses --target tensorrt int8 with that reason")
def test_tensorrt_target_writes_calibration_cache_and_command(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))
    output = tmp_path / "trt"
    report = optimize(_request(output, target="tensorrt", trt_version="8.6.1"))
    (build,) = report.targets
    assert build["status"] == "pending" and "trtexec not found" in build["detail"]
    assert "JetPack" in build["install"]
    assert build["command"][:3] == [
        "trtexec",
        "--onnx=mobilenet_v2.onnx",
        "--saveEngine=mobilenet_v2_int8.engine",
    ]
    assert (
        "--calib=calibration.cache" in build["command"] and "--shapes=input:1x3x224x224" in build["command"]
    )
    assert f"--layerPrecisions={FIRST_DEPTHWISE}:fp16" in build["command"]
    assert "--precisionConstraints=prefer" in build["command"]
    lines = (output / "calibration.cache").read_text().splitlines()
    assert lines[0] == "TRT-8601-EntropyCalibration2"
    scales = dict(line.split(": ") for line in lines[1:])
    assert "input" in scales and "logits" in scales
    input_scale = struct.unpack(">f", bytes.fromhex(scales["input"]))[0]
    assert input_scale == pytest.approx(2.64 / 127, rel=0.05)  # ImageNet-normalised pixels reach ~2.64
    package = load_package(output)
    assert [(a.format, a.precision) for a in package.artifacts] == [("onnx", "fp32")]
    manifest = json.loads((output / "manifest.json").read_text())
    assert manifest["optimization"]["pending_artifacts"][0]["format"] == "tensorrt"
    assert (output / "build_tensorrt.sh").read_text().rstrip().endswith("--shapes=input:1x3x224x224")


def test_trt_version_codes() -> None:
    assert targets.trt_version_code("8.6.1") == 8601
    assert targets.trt_version_code("8.5.2.2") == 8502
    assert targets.trt_version_code("10.3.0") == 100300
    cache = targets.tensorrt_calibration_cache({"x": (-1.27, 0.5), "dead": (0.0, 0.0)}, "10.3")
    assert cache == "TRT-100300-EntropyCalibration2\nx: 3c23d70a\n"  # 0.01 as big-endian float32


def _fake_tool(folder: Path, name: str, body: str) -> None:
    folder.mkdir(exist_ok=True)
    tool = folder / name
    tool.write_text("#!/bin/sh\n" + body)
    tool.chmod(0o755)


def test_edgetpu_target_runs_the_compiler_when_present(tmp_path: Path, monkeypatch) -> None:
    bin_dir = tmp_path / "bin"  # a stand-in with edgetpu_compiler's interface: --out_dir DIR MODEL
    _fake_tool(
        bin_dir,
        "edgetpu_compiler",
        'for last; do :; done\ncp "$last" "$(basename "$last" .tflite)_edgetpu.tflite"\n',
    )
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin")
    output = tmp_path / "tpu"
    report = optimize(OptimizeRequest(model="mobilenet_v2_int8", target="edgetpu", output=output))
    (build,) = report.targets
    assert build["status"] == "built", build["detail"]
    package = load_package(output)
    assert [a.format for a in package.artifacts] == ["edgetpu", "tflite"]  # the backend takes the first
    assert package.artifacts[0].sha256 == sha256_of(output / "mobilenet_v2_int8_edgetpu.tflite")


def test_edgetpu_target_without_compiler_or_int8_tflite(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))
    report = optimize(OptimizeRequest(model="mobilenet_v2_int8", target="edgetpu", output=tmp_path / "t"))
    assert report.targets[0]["status"] == "pending"
    assert "edgetpu-compiler from Coral's apt repository" in report.targets[0]["detail"]
    assert report.evaluation["status"] == "skipped"
    with pytest.raises(InvalidInputError, match="compiles an int8-quantised .tflite"):
        optimize(OptimizeRequest(model="mobilenet_v2", target="edgetpu", output=tmp_path / "u"))


def test_rknn_plan_writes_script_and_nhwc_dataset(tmp_path: Path) -> None:
    sample = np.zeros((1, 224, 224, 3), np.float32)
    ctx = targets.TargetContext(
        tmp_path,
        "mobilenet_v2",
        "int8",
        onnx_file="mobilenet_v2.onnx",
        calibration_nhwc=[sample, sample + 1],
        input_shapes={"input": (1, 3, 224, 224)},
        soc="rk3566",
    )
    build = targets.plan_rknn(ctx)
    assert build.produces == "mobilenet_v2_rk3566_int8.rknn" and build.manifest_entry["layout"] == "NHWC"
    script = (tmp_path / "convert_rknn.py").read_text()
    compile(script, "convert_rknn.py", "exec")
    assert 'target_platform="rk3566"' in script and "input_size_list=[[1, 3, 224, 224]]" in script
    listed = (tmp_path / "dataset.txt").read_text().split()
    assert listed == ["rknn_dataset/0000.npy", "rknn_dataset/0001.npy"]
    assert np.load(tmp_path / listed[1]).shape == (1, 224, 224, 3)
    with pytest.raises(InvalidInputError, match="--soc 'rk9999'"):
        targets.plan_rknn(targets.TargetContext(tmp_path, "m", "int8", onnx_file="m.onnx", soc="rk9999"))


def test_existing_output_folder_needs_force(tmp_path: Path, int8_run) -> None:
    _, output = int8_run
    with pytest.raises(InvalidInputError, match="already exists and is not empty"):
        optimize(_request(output, precision="fp16", calibration=None))


def test_int8_settings_are_checked(tmp_path: Path) -> None:
    settings = Int8Settings(keep_float=("NoSuchOp",))
    assert "1 kept float" in settings.describe()
    with pytest.raises(InvalidInputError, match="--keep-float NoSuchOp: no node or op type"):
        quantize_int8(MODELS / "mobilenet_v2" / "mobilenet_v2.onnx", tmp_path / "q.onnx", [], settings)
    with pytest.raises(InvalidInputError, match="percentile must be"):
        Int8Settings(percentile=50)
    with pytest.raises(InvalidInputError, match="calibration method 'median'"):
        Int8Settings(method="median")


def _inputs(spec: str | Path, count: int = 0) -> list[dict[str, np.ndarray]]:
    """mobilenet_v2 inputs made from images by its own pre-processing (at most ``count``)."""
    with Predictor.open("mobilenet_v2", backend="onnxruntime") as predictor:
        preprocess = lambda image: predictor.preprocess(image)[0]  # noqa: E731
        return imgset.load_images(imgset.find_images(spec), preprocess, count).inputs


def _weight_dequantizer(model: onnx.ModelProto, node_name: str) -> tuple[onnx.TensorProto, np.ndarray]:
    """(quantised weight initializer, its scales) feeding ``node_name``'s weight input."""
    node = next(n for n in model.graph.node if n.name == node_name)
    dq = next(n for n in model.graph.node if node.input[1] in n.output)
    weights = {t.name: t for t in model.graph.initializer}
    return weights[dq.input[0]], onnx.numpy_helper.to_array(weights[dq.input[1]])


def test_weight_sensitivity_singles_out_mobilenet_first_depthwise() -> None:
    model = onnx.load(str(MODELS / "mobilenet_v2" / "mobilenet_v2.onnx"))
    sensitivities = weight_sensitivity(model, _inputs(CALIBRATION, 4))
    assert len(sensitivities) == 53  # 52 Conv + the classifier Gemm
    worst = min(sensitivities, key=lambda s: s.snr_db)
    assert worst.node == FIRST_DEPTHWISE
    assert noise_share(sensitivities)[FIRST_DEPTHWISE] > 0.3
    assert [s.node for s in outliers(sensitivities)] == [FIRST_DEPTHWISE]
    original = onnx.load(str(MODELS / "mobilenet_v2" / "mobilenet_v2.onnx"))
    assert all(  # the analysis leaves the weights as they were
        np.array_equal(onnx.numpy_helper.to_array(a), onnx.numpy_helper.to_array(b))
        for a, b in zip(model.graph.initializer, original.graph.initializer, strict=True)
    )


def test_fake_quantize_rounds_like_onnxruntime(int8_run) -> None:
    _, output = int8_run
    quantized = onnx.load(str(output / "mobilenet_v2_int8.onnx"))
    source = onnx.load(str(MODELS / "mobilenet_v2" / "mobilenet_v2.onnx"))
    node = "/features/features.2/conv/conv.0/conv.0.0/Conv"
    weight, scales = _weight_dequantizer(quantized, node)
    assert weight.data_type == onnx.TensorProto.INT8
    weight_name = next(n for n in source.graph.node if n.name == node).input[1]
    original = next(t for t in source.graph.initializer if t.name == weight_name)
    dequantized = onnx.numpy_helper.to_array(weight) * scales[:, None, None, None]
    assert np.allclose(fake_quantize(onnx.numpy_helper.to_array(original), 0), dequantized, atol=1e-7)
    per_tensor = fake_quantize(onnx.numpy_helper.to_array(original), None)  # --no-per-channel
    steps = per_tensor / (np.abs(onnx.numpy_helper.to_array(original)).max() / 127)
    assert np.allclose(steps, np.round(steps), atol=1e-4) and np.abs(steps).max() == pytest.approx(127)


def test_sensitive_layer_keeps_16bit_weights_and_is_reported(int8_run) -> None:
    report, output = int8_run
    conversion = report.conversion
    assert conversion["protect"] is True and conversion["protected_layers"] == [FIRST_DEPTHWISE]
    assert "1 layer(s) with 16-bit weights, 1 by sensitivity" in conversion["method"]
    assert conversion["weight_sensitivity_worst"][0]["node"] == FIRST_DEPTHWISE
    assert f"16-bit weights: {FIRST_DEPTHWISE}: int8 weights there alone give" in format_table(report)
    model = onnx.load(str(output / "mobilenet_v2_int8.onnx"))
    weight, scales = _weight_dequantizer(model, FIRST_DEPTHWISE)
    assert weight.data_type == onnx.TensorProto.INT16 and scales.shape == (32,)
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 21


def _weight_dequantizers_after_load(model: Path, shape: tuple[int, ...]) -> list[tuple[int, int]]:
    """(element type, number of scales) of each weight DequantizeLinear of ``shape`` once onnxruntime
    has applied its basic graph passes (where WeightBiasQuantization runs) to ``model``."""
    import onnxruntime as ort

    optimized = model.with_suffix(".basic.onnx")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(optimized)
    ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    graph = onnx.load(str(optimized)).graph
    initializers = {t.name: t for t in graph.initializer}
    found = []
    for node in graph.node:
        weight = initializers.get(node.input[0]) if node.op_type == "DequantizeLinear" else None
        if weight is not None and tuple(weight.dims) == shape:
            scales = onnx.numpy_helper.to_array(initializers[node.input[1]])
            found.append((weight.data_type, scales.size))
    return found


def test_keep_float_conv_is_not_requantised_per_tensor_by_onnxruntime(tmp_path: Path) -> None:
    """A float Conv between int8 activations is re-quantised by onnxruntime when a session loads.

    Its WeightBiasQuantization pass makes the weights per-tensor int8, which for this layer is far
    from what the QDQ graph means. So a kept Conv gets 16-bit per-channel weights (still 16-bit
    after onnxruntime's passes); an op without weights is left out of the quantiser's groups."""
    settings = Int8Settings(keep_float=(FIRST_DEPTHWISE, "Add"), protect=False)
    source = MODELS / "mobilenet_v2" / "mobilenet_v2.onnx"
    plan = quantize_int8(source, tmp_path / "q.onnx", _inputs(CALIBRATION, FEW), settings)
    assert plan.precise == [FIRST_DEPTHWISE] and plan.protected == [] and len(plan.excluded) == 10
    model = onnx.load(str(tmp_path / "q.onnx"))
    assert _weight_dequantizer(model, FIRST_DEPTHWISE)[0].data_type == onnx.TensorProto.INT16
    depthwise = (32, 1, 3, 3)
    assert _weight_dequantizers_after_load(tmp_path / "q.onnx", depthwise) == [(onnx.TensorProto.INT16, 32)]
    # what float weights and bias there turn into: the per-tensor int8 this option avoids
    float_weights = onnx.load(str(tmp_path / "q.onnx"))
    node = next(n for n in float_weights.graph.node if n.name == FIRST_DEPTHWISE)
    source_model = onnx.load(str(source))
    source_node = next(n for n in source_model.graph.node if n.name == FIRST_DEPTHWISE)
    replaced = set(node.input[1:3])
    for dq in [n for n in float_weights.graph.node if set(n.output) & replaced]:
        float_weights.graph.node.remove(dq)
    kept = {t.name: t for t in source_model.graph.initializer}
    float_weights.graph.initializer.extend(kept[name] for name in source_node.input[1:3])
    node.input[1:3] = source_node.input[1:3]
    onnx.save(float_weights, str(tmp_path / "float_weights.onnx"))
    after_load = _weight_dequantizers_after_load(tmp_path / "float_weights.onnx", depthwise)
    assert after_load == [(onnx.TensorProto.INT8, 1)]


def test_compare_and_box_matching() -> None:
    ref = [[np.array([[0.0, 3.0, 1.0]])], [np.array([[2.0, 0.0, 1.0]])]]
    cand = [[np.array([[0.0, 2.5, 1.0]])], [np.array([[0.0, 2.0, 1.0]])]]
    agreement = compare_outputs(ref, cand, classifier=True, labels=[1, 0])
    assert agreement.top1_agreement == 0.5 and agreement.disagreements == (1,)
    assert agreement.max_abs_diff == 2.0 and agreement.mean_abs_diff == pytest.approx(4.5 / 6)
    assert (agreement.reference_accuracy, agreement.candidate_accuracy) == (1.0, 0.5)
    assert iou((0, 0, 2, 2), (1, 0, 3, 2)) == pytest.approx(1 / 3)
    assert detections_match([(0, 0, 10, 10)], [(1, 1, 10, 10)])
    assert not detections_match([(0, 0, 10, 10)], [(0, 0, 10, 10), (20, 20, 30, 30)])
    assert not detections_match([(0, 0, 10, 10)], [(8, 8, 20, 20)])
