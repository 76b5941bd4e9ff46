"""`edgerun optimize` from request to report: calibrate, convert, compare with fp32, measure, write."""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..backends.base import LoadOptions, Session, Tensors
from ..config import Settings
from ..errors import InvalidInputError
from ..predictor import DetectionResult, Predictor, open_session
from ..processing import image as img
from ..repository import BUILTIN_MODELS, Artifact, ModelPackage, ModelRepository, verify_artifact
from . import images as imgset
from . import onnx_tools, package, targets
from .compare import Box, compare_outputs, with_detections
from .latency import LatencyPlan, measure
from .report import OptimizeReport

log = logging.getLogger(__name__)

PRECISIONS = ("int8", "fp16")
DEFAULT_MIN_AGREEMENT = 0.8


@dataclass(frozen=True)
class OptimizeRequest:
    """One `edgerun optimize` invocation."""

    model: str
    precision: str | None = None  # int8 | fp16 (edgetpu: the package's int8 tflite)
    calibration: str | None = None  # folder or glob
    evaluation: str | None = None  # held-out folder or glob (ImageNet-style sub-folders = labels)
    target: str | None = None
    output: Path | None = None
    int8: onnx_tools.Int8Settings = field(default_factory=onnx_tools.Int8Settings)
    min_agreement: float = DEFAULT_MIN_AGREEMENT
    max_calibration: int = 300
    latency: LatencyPlan = field(default_factory=LatencyPlan)
    soc: str = "rk3588"
    trt_version: str = "10.3.0"
    force: bool = False

    def __post_init__(self) -> None:
        if self.precision not in (None, *PRECISIONS):
            raise InvalidInputError(f"precision {self.precision!r} is not one of {', '.join(PRECISIONS)}")
        if self.target not in (None, *targets.TARGETS):
            raise InvalidInputError(f"target {self.target!r} is not one of {', '.join(targets.TARGETS)}")
        if self.precision is None and self.target != "edgetpu":
            raise InvalidInputError("say what to make: --int8 (with --calibration) or --fp16")
        if self.precision == "int8" and self.target != "edgetpu" and not self.calibration:
            raise InvalidInputError(
                "--int8 needs --calibration DIR_OR_GLOB: images like the ones the model "
                "will see (a few dozen to a few hundred)"
            )
        if not 0.0 <= self.min_agreement <= 1.0:
            raise InvalidInputError(f"--min-agreement must be within 0..1, got {self.min_agreement}")

    def name_suffix(self) -> str:
        return "_".join(p for p in (self.precision or "int8", self.target) if p)


@dataclass
class Work:
    """State shared by the steps of one run."""

    request: OptimizeRequest
    settings: Settings
    package: ModelPackage
    source: Artifact
    scratch: Path
    report: OptimizeReport
    predictor: Predictor | None = None
    calibration: imgset.ImageSet | None = None
    evaluation: imgset.ImageSet | None = None
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    candidate: Path | None = None


def _source_artifact(package: ModelPackage, request: OptimizeRequest) -> Artifact:
    if request.target == "edgetpu":
        artifact = package.artifact_for(("tflite",))
        if artifact is None or artifact.precision != "int8":
            targets.plan_edgetpu(
                targets.TargetContext(
                    Path("."),
                    package.name,
                    "int8",
                    tflite_file=artifact.path.name if artifact else None,
                    tflite_precision=artifact.precision if artifact else None,
                )
            )
        assert artifact is not None
        return artifact
    fmt = "tflite" if request.target == "litert" else "onnx"
    artifact = package.artifact_for((fmt,))
    if artifact is None:
        raise InvalidInputError(
            f"model {package.name} has no .{fmt} artifact to convert (it has: {', '.join(package.formats)})"
        )
    if artifact.precision != "fp32":
        raise InvalidInputError(
            f"model {package.name}'s {artifact.path.name} is {artifact.precision}: it is "
            "already quantised or reduced; start from the fp32 model"
        )
    return artifact


def _open_reference(work: Work) -> None:
    package = work.package
    if package.preprocess is None or package.task not in ("classification", "detection"):
        raise InvalidInputError(
            f"model {package.name} has no image pre-processing in its manifest (task {package.task!r}); "
            "calibration and the accuracy check run images through the model's own pre-processing, "
            "so give a model package folder with a manifest.json 'preprocess' section"
        )
    work.predictor = Predictor.open(
        package.root,
        backend=_backend(work),
        settings=work.settings,
        repository=ModelRepository((BUILTIN_MODELS,)),
        options=LoadOptions(threads=work.request.latency.threads),
    )


def _preprocess(work: Work) -> imgset.Preprocess:
    assert work.predictor is not None
    predictor = work.predictor
    return lambda image: predictor.preprocess(image)[0]


def _load_calibration(work: Work) -> None:
    request = work.request
    if request.precision != "int8" or request.target == "edgetpu":
        return
    assert request.calibration is not None
    files = imgset.find_images(request.calibration)
    work.calibration = imgset.load_images(files, _preprocess(work), request.max_calibration)
    imgset.require_images(work.calibration, "calibration")
    work.report.calibration = work.calibration.summary()


def _load_evaluation(work: Work) -> None:
    request = work.request
    spec = request.evaluation or request.calibration
    if spec is None:
        raise InvalidInputError("give --eval DIR_OR_GLOB: held-out images to compare the result with fp32")
    files = imgset.find_images(spec)
    evaluation = imgset.load_images(files, _preprocess(work))
    imgset.require_images(evaluation, "evaluation")
    if request.evaluation and work.package.task == "classification":
        evaluation.labels = imgset.folder_labels(evaluation, request.evaluation, work.package.labels)
    work.evaluation = evaluation
    held_out = request.evaluation is not None and not (
        work.calibration is not None
        and imgset.content_digests(evaluation.paths) & imgset.content_digests(work.calibration.paths)
    )
    work.report.evaluation = {**evaluation.summary(), "held_out": held_out}


def _as_input(session: Session, tensors: Tensors) -> Tensors:
    """Float inputs in the session's own dtype: quantised with its scale/zero point for integer inputs."""
    adapted = {}
    for spec in session.input_specs:
        value = tensors[spec.name] if spec.name in tensors else next(iter(tensors.values()))
        if spec.quantization is not None and spec.dtype.kind in "iu":
            value = img.quantize(value, spec.quantization, spec.dtype)
        adapted[spec.name] = value.astype(spec.dtype, copy=False)
    return adapted


def _outputs(session: Session, inputs: Sequence[Tensors]) -> list[list[np.ndarray]]:
    """Every output of every input as float32 (integer outputs dequantised)."""
    results = []
    for tensors in inputs:
        produced = session.infer(_as_input(session, tensors))
        row = []
        for spec in session.output_specs:
            value = produced[spec.name]
            if spec.quantization is not None and value.dtype.kind in "iu":
                value = img.dequantize(value, spec.quantization)
            row.append(np.asarray(value, np.float32))
        results.append(row)
    return results


def _convert(work: Work) -> None:
    request, source = work.request, work.source.path
    work.candidate = work.scratch / f"{work.package.name}_{request.precision}.onnx"
    if request.precision == "fp16":
        onnx_tools.convert_fp16(source, work.candidate)
        work.report.conversion.update(
            method="fp16 weights and compute, float32 inputs/outputs", tool="onnxruntime.transformers.float16"
        )
        return
    assert work.calibration is not None
    ranges_json = work.scratch / "ranges.json"
    inputs = work.calibration.inputs
    plan = onnx_tools.quantize_int8(source, work.candidate, inputs, request.int8, ranges_json)
    work.ranges = onnx_tools.read_ranges(ranges_json) if ranges_json.is_file() else {}
    work.report.conversion.update(
        method=request.int8.describe() + plan.describe(),
        tool="onnxruntime.quantization",
        per_channel=request.int8.per_channel,
        calibration_method=request.int8.method,
        percentile=request.int8.percentile,
        keep_float=list(request.int8.keep_float),
        protect=request.int8.protect,
        **plan.to_dict(),
    )


def _boxes(predictor: Predictor, paths: Sequence[Path]) -> list[list[Box]]:
    """Detections of each image through the whole pipeline (decode, pre-process, infer, decode boxes)."""
    boxes = []
    for path in paths:
        result = predictor.predict(path)
        assert isinstance(result, DetectionResult)
        boxes.append([d.box for d in result.detections])
    return boxes


def _backend(work: Work) -> str:
    return "litert" if work.source.format == "tflite" else "onnxruntime"


def _evaluate(work: Work) -> None:
    assert work.predictor is not None and work.evaluation is not None and work.candidate is not None
    evaluation, backend = work.evaluation, _backend(work)
    _, _, candidate = open_session(
        work.candidate,
        backend=backend,
        settings=work.settings,
        options=LoadOptions(threads=work.request.latency.threads),
    )
    try:
        produced = _outputs(candidate, evaluation.inputs)
        reference = _outputs(work.predictor.session, evaluation.inputs)
        agreement = compare_outputs(
            reference, produced, work.package.task == "classification", evaluation.labels
        )
        if work.package.task == "detection":
            agreement = with_detections(
                agreement,
                _boxes(work.predictor, evaluation.paths),
                _boxes(Predictor(work.package, candidate), evaluation.paths),
            )
    finally:
        candidate.close()
    result = agreement.to_dict()
    result["disagreements"] = [str(evaluation.paths[i]) for i in agreement.disagreements]
    result["measured_with"] = f"{work.candidate.name} vs {work.source.path.name}, both on {backend}"
    result["min_agreement"] = work.request.min_agreement
    top1 = agreement.agreement
    result["passed"] = top1 is None or top1 >= work.request.min_agreement
    work.report.evaluation.update(result)
    if not result["passed"]:
        work.report.status = "refused"
        work.report.reason = (
            f"{'top-1' if agreement.top1_agreement is not None else 'detection'} agreement with fp32 is "
            f"{100 * top1:.1f}% on {agreement.images} image(s), below the "  # type: ignore[operator]
            f"--min-agreement {100 * work.request.min_agreement:.1f}%; no model written. Try more or more "
            "representative calibration images"
            + ("" if backend == "litert" else ", --calibration-method, or --keep-float for sensitive layers")
        )


def _measure(work: Work) -> None:
    assert work.candidate is not None
    before, after = work.source.path.stat().st_size, work.candidate.stat().st_size
    work.report.size = {"before_bytes": before, "after_bytes": after, "ratio": after / before}
    plan = dataclasses.replace(work.request.latency, backend=_backend(work))
    work.report.latency = measure(work.source.path, work.candidate, plan, work.settings.host_root)


def _target_context(work: Work, staging: Path, copied: str) -> targets.TargetContext:
    request = work.request
    session_specs = work.predictor.session.input_specs if work.predictor else ()
    shapes = {s.name: tuple(d if d is not None else 1 for d in s.shape) for s in session_specs}
    layout = work.predictor.layout if work.predictor else "NHWC"
    nhwc = []
    for tensors in work.calibration.inputs if work.calibration else []:
        value = next(iter(tensors.values()))
        nhwc.append(value.transpose(0, 2, 3, 1) if layout == "NCHW" else value)
    is_tflite = work.source.format == "tflite"
    return targets.TargetContext(
        staging,
        work.package.name,
        request.precision or "int8",
        onnx_file=None if is_tflite else copied,
        tflite_file=copied if is_tflite else None,
        tflite_precision=work.source.precision if is_tflite else None,
        calibration_nhwc=nhwc,
        ranges=work.ranges,
        input_shapes=shapes,
        soc=request.soc,
        trt_version=request.trt_version,
        precise_layers=tuple(work.report.conversion.get("int16_weight_layers", ())),
    )


def _artifacts_for_target(work: Work, staging: Path) -> list[dict[str, Any]]:
    """Copy the source artifact, plan the target build, run it when the tool is here."""
    source = work.source
    copied = source.path.name
    (staging / copied).write_bytes(source.path.read_bytes())
    entries = [package.artifact_entry(staging, copied, source.format, source.layout, source.precision)]
    plan = targets.PLANS[work.request.target or ""](_target_context(work, staging, copied))
    build = targets.run_or_defer(plan, staging)
    work.report.targets.append(build.to_dict())
    if build.status == "built":
        if work.request.target == "litert":
            _check_built(work, staging / build.produces)
            (staging / copied).unlink()
            entries = []
        entries.insert(0, build.manifest_entry)
    return entries


def _check_built(work: Work, produced: Path) -> None:
    """A model built here by a target's tool gets the same comparison and measurement as ours."""
    work.candidate = produced
    for key in NOT_MEASURED:
        work.report.evaluation.pop(key, None)
    _evaluate(work)
    _measure(work)


def _artifacts(work: Work, staging: Path) -> list[dict[str, Any]]:
    if work.request.target is not None:
        return _artifacts_for_target(work, staging)
    assert work.candidate is not None
    name = work.candidate.name
    (staging / name).write_bytes(work.candidate.read_bytes())
    return [
        package.artifact_entry(staging, name, "onnx", work.source.layout, work.request.precision or "int8")
    ]


def _provenance(work: Work) -> dict[str, Any]:
    report = work.report
    evaluation = {
        k: report.evaluation.get(k)
        for k in ("source", "images", "held_out", "top1_agreement", "top5_overlap", "max_abs_diff")
    }
    return {
        "optimization": {
            "source_model": work.package.name,
            "source_artifact": work.source.path.name,
            "source_sha256": work.source.sha256,
            "precision": work.request.precision,
            "target": work.request.target,
            "conversion": report.conversion,
            "calibration_images": (report.calibration or {}).get("images"),
            "evaluation": evaluation if report.evaluation.get("images") else None,
            "pending_artifacts": [t["manifest_entry"] for t in report.targets if t["status"] != "built"],
        }
    }


def _destination(work: Work) -> Path:
    return work.request.output or Path.cwd() / f"{work.package.name}_{work.request.name_suffix()}"


def _write(work: Work) -> None:
    destination = _destination(work)
    staging = package.staging_folder(destination, work.request.force, work.package.root)
    try:
        carried = package.carry_files(work.package, staging)
        artifacts = _artifacts(work, staging)
        description = (
            f"{work.package.description}; edgerun optimize -> {work.request.name_suffix()}: "
            f"{work.report.conversion.get('method', '')}"
        )
        if work.report.refused:
            package.discard(staging)
            return
        package.write_manifest(
            work.package, staging, destination.name, description.strip(), artifacts, _provenance(work)
        )
        written = package.publish(staging, destination, work.request.force, work.package.root)
    except BaseException:
        package.discard(staging)
        raise
    work.report.output = {
        "path": str(destination),
        "name": written.name,
        "carried_files": carried,
        "artifacts": artifacts,
    }


def _start(
    request: OptimizeRequest, settings: Settings, scratch: Path, repository: ModelRepository | None
) -> Work:
    model_package = (repository or ModelRepository.from_settings(settings)).get(request.model)
    source = _source_artifact(model_package, request)
    verify_artifact(source)
    if source.format == "onnx":
        problem = onnx_tools.precision_problem(
            onnx_tools.load_model(source.path), request.precision or "int8"
        )
        if problem:
            raise InvalidInputError(f"cannot make {request.precision} from {model_package.name}: {problem}")
    model = {
        "name": model_package.name,
        "path": str(model_package.root),
        "artifact": source.path.name,
        "format": source.format,
        "precision": source.precision,
        "task": model_package.task,
    }
    conversion = {"precision": request.precision or "int8", "target": request.target}
    work = Work(request, settings, model_package, source, scratch, OptimizeReport(model, conversion))
    package.check_destination(_destination(work), request.force, model_package.root)
    return work


def optimize(
    request: OptimizeRequest, settings: Settings | None = None, repository: ModelRepository | None = None
) -> OptimizeReport:
    """Run one optimisation; the report says what was written, or why nothing was (status refused)."""
    settings = settings or Settings.from_env()
    with tempfile.TemporaryDirectory(prefix="edgerun-optimize-") as scratch:
        work = _start(request, settings, Path(scratch), repository)
        if request.target == "edgetpu":
            work.report.conversion["method"] = "edgetpu_compiler on the package's int8 .tflite"
            work.report.evaluation = dict(NOT_MEASURED)
            work.report.size = {"before_bytes": work.source.path.stat().st_size, "after_bytes": None}
            _write(work)
            return work.report
        _open_reference(work)
        try:
            _run_steps(work)
        finally:
            assert work.predictor is not None
            work.predictor.close()
        return work.report


NOT_MEASURED = {
    "status": "skipped",
    "reason": "the target's compiler did not run here, and its output runs only on that target",
}


def _run_steps(work: Work) -> None:
    _load_calibration(work)
    _load_evaluation(work)
    if work.request.target == "litert":
        work.report.conversion["method"] = "ai-edge-quantizer static int8 (weights and activations)"
        work.report.evaluation.update(NOT_MEASURED)
        _write(work)
        return
    _convert(work)
    _evaluate(work)
    _measure(work)
    if not work.report.refused:
        _write(work)
