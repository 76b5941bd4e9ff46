"""Command line: parse arguments, call the library, print; errors become one line and a non-zero exit."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .argtypes import positive_int
from .backends.base import LoadOptions
from .backends.registry import Registry
from .config import Settings
from .errors import EdgerunError
from .hal import HostFS, detect
from .hal.boards import backend_preference
from .predictor import ClassificationResult, Predictor, Result
from .repository import ModelRepository

EXIT_ERROR = 1

# Optional top-level modules -> the pip extra that installs them (for a one-line error, not a traceback).
EXTRA_FOR_MODULE = {
    "fastapi": "serve", "starlette": "serve", "uvicorn": "serve", "multipart": "serve",
    "python_multipart": "serve", "prometheus_client": "serve", "PIL": "vision", "cv2": "camera",
    "onnxruntime": "onnx", "ai_edge_litert": "litert", "onnx": "optimize", "matplotlib": "plot",
}

# Subcommands that live beside their subsystem. Each module defines
# register(commands, common) -> None and must stay cheap to import (no runtime or web imports).
COMMAND_MODULES: tuple[str, ...] = (
    "edgerun.hal.cli",
    "edgerun.profiler.cli",
    "edgerun.serving.cli",
    "edgerun.camera.cli",
    "edgerun.optimize.cli",
)


def _settings(args: argparse.Namespace) -> Settings:
    settings = Settings.from_env()
    if args.root is not None:
        settings = dataclasses.replace(settings, host_root=args.root)
    if getattr(args, "threads", None):
        settings = dataclasses.replace(settings, threads=args.threads)
    return settings


def _repository(settings: Settings) -> ModelRepository:
    return ModelRepository.from_settings(settings)


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def _print_result(result: Result) -> None:
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
    settings = _settings(args)
    with Predictor.open(args.model, backend=args.backend, settings=settings,
                        repository=_repository(settings),
                        options=LoadOptions(threads=settings.threads)) as predictor:
        result = predictor.predict(args.image, top_k=args.top_k)
    _print_json(result.to_dict()) if args.json else _print_result(result)
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    packages = _repository(_settings(args)).packages()
    rows = [{"name": p.name, "task": p.task, "formats": list(p.formats),
             "path": str(p.root), "description": p.description} for p in packages]
    if args.json:
        _print_json(rows)
    for row in [] if args.json else rows:
        print(f"{row['name']:<20} {row['task']:<15} {','.join(row['formats']):<12} {row['description']}")
    return 0


def cmd_backends(args: argparse.Namespace) -> int:
    settings = _settings(args)
    platform = detect(HostFS(settings.host_root))
    registry = Registry()
    rows = []
    for name in registry.order(backend_preference(platform)):  # this board's preference first
        backend = registry.get(name)
        availability = backend.probe(platform)
        rows.append({"name": name, "formats": list(backend.formats), "available": availability.ok,
                     "reason": availability.reason})
    if args.json:
        _print_json({"platform": platform.to_dict(), "backends": rows})
        return 0
    print(f"platform: {platform.summary()}")
    for row in rows:
        state = "available" if row["available"] else "unavailable"
        print(f"  {row['name']:<12} {state:<12} {row['reason']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--root", type=Path, default=None,
                        help="read /proc, /sys, /dev, /etc under this directory (a captured device tree)")
    common.add_argument("--json", action="store_true", help="print JSON instead of text")
    common.add_argument("-v", "--verbose", action="store_true", help="log backend selection")
    parser = argparse.ArgumentParser(prog="edgerun", description="Edge-device inference runtime.")
    commands = parser.add_subparsers(dest="command", required=True)

    predict = commands.add_parser("predict", parents=[common], help="run a model on one image")
    predict.add_argument("image", help="image file (PNG, JPEG, ...)")
    predict.add_argument("--model", default=None, help="model name or path (default: mobilenet_v2)")
    predict.add_argument("--backend", default=None, help="force a backend (see `edgerun backends`)")
    predict.add_argument("--top-k", type=positive_int, default=None, help="classes to show (classification)")
    predict.add_argument("--threads", type=positive_int, default=None, help="CPU threads for the runtime")
    predict.set_defaults(handler=cmd_predict)

    models = commands.add_parser("models", parents=[common], help="list model packages")
    models.set_defaults(handler=cmd_models)
    backends = commands.add_parser("backends", parents=[common], help="list backends and availability")
    backends.set_defaults(handler=cmd_backends)
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(commands, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.handler(args))
    except EdgerunError as exc:
        print(f"edgerun: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except ModuleNotFoundError as exc:
        extra = EXTRA_FOR_MODULE.get((exc.name or "").split(".")[0])
        if extra is None:
            raise
        print(f"edgerun: error: {args.command} needs the Python package {exc.name!r}, which is not "
              f"installed; install it with: pip install 'edgerun[{extra}]'", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
