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


def cmd_predict(args: argparse.Namespace) -> int:
    from ..predictor import Predictor, effective_settings

    settings = settings_from(args)
    with Predictor.open(args.model, backend=args.backend, settings=settings,
                        repository=repository_from(settings),
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
    predict.add_argument("--model", default=None, help="model name or path (default: mobilenet_v2)")
    add_backend_arguments(predict)
    predict.add_argument("--top-k", type=positive_int, default=None, help="classes to show (classification)")
    predict.add_argument("--threads", type=positive_int, default=None, help="CPU threads for the runtime")
    predict.set_defaults(handler=cmd_predict)
