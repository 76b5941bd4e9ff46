"""``edgerun predict``: run a model on one image and print the result."""

from __future__ import annotations

import argparse
from typing import Any

from .argtypes import positive_int
from .common import add_backend_arguments, load_options_from, print_json, repository_from, settings_from


def _print_result(result: Any) -> None:
    from ..predictor import ClassificationResult

    print(f"model {result.model} on backend {result.backend}")
    if isinstance(result, ClassificationResult):
        for rank, c in enumerate(result.classes, 1):
            print(f"  {rank}. {c.label:<30} {c.score:.4f}  (class {c.index})")
    else:
        width, height = result.image_size
        print(f"  {len(result.detections)} detection(s) in {width}x{height} image")
        for d in result.detections:
            x0, y0, x1, y1 = d.box
            print(f"  {d.label} {d.score:.3f}  box x {x0:.0f}-{x1:.0f}, y {y0:.0f}-{y1:.0f}")
    stages = ", ".join(f"{k} {v:.1f}" for k, v in result.timings_ms.items())
    print(f"timings (ms): {stages}")


TASKS = {"classify": "classification", "detect": "detection"}


def _model_for(args: argparse.Namespace, repository: Any) -> str:
    """--model, else the task's built-in model; a clear error when that one is not installed."""
    from ..errors import ModelNotFoundError
    from ..repository import DEFAULT_CLASSIFIER, DEFAULT_OBJECT_DETECTOR

    if args.model is not None:
        return str(args.model)
    if args.task != "detect":
        return DEFAULT_CLASSIFIER
    if DEFAULT_OBJECT_DETECTOR not in repository.names():
        raise ModelNotFoundError(
            f"--task detect needs the general object detector {DEFAULT_OBJECT_DETECTOR!r}, which is not "
            "installed (edgerun ships no COCO detector: no redistributable weights); pass --model with a "
            "detector file such as an Ultralytics yolov8n.onnx, or a package from `edgerun models import`")
    return DEFAULT_OBJECT_DETECTOR


def cmd_predict(args: argparse.Namespace) -> int:
    from ..predictor import Predictor, effective_settings

    settings = settings_from(args)
    repository = repository_from(settings)
    task = TASKS[args.task] if args.task else "auto"
    with Predictor.open(_model_for(args, repository), backend=args.backend, settings=settings,
                        repository=repository, task=task,
                        options=load_options_from(args, settings)) as predictor:
        result = predictor.predict(args.image, top_k=args.top_k)
        effective = effective_settings(predictor.session)
    if args.json:
        print_json({**result.to_dict(), "device": effective["device"], "options": effective["options"]})
    else:
        _print_result(result)
    return 0


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    predict = commands.add_parser("predict", parents=[common], help="run a model on one image")
    predict.add_argument("image", help="image file (PNG, JPEG, ...)")
    predict.add_argument("--model", default=None,
                         help="model name, package folder or model file (default: the --task's built-in)")
    predict.add_argument("--task", choices=sorted(TASKS), default=None,
                         help="classify (default model mobilenet_v2) or detect (a COCO detector); for a bare "
                              "model file without metadata it picks the pipeline")
    add_backend_arguments(predict)
    predict.add_argument("--top-k", type=positive_int, default=None, help="classes to show (classification)")
    predict.add_argument("--threads", type=positive_int, default=None, help="CPU threads for the runtime")
    predict.set_defaults(handler=cmd_predict)
