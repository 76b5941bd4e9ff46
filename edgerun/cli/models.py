"""``edgerun models``: list the model packages; ``edgerun models import FILE``: make a package of a file."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError
from .common import print_json, repository_from, settings_from, table

TASKS = {"classify": "classification", "detect": "detection"}


def cmd_models(args: argparse.Namespace) -> int:
    packages = repository_from(settings_from(args)).packages()
    rows = [{"name": p.name, "task": p.task, "formats": list(p.formats),
             "path": str(p.root), "description": p.description} for p in packages]
    if args.json:
        print_json(rows)
        return 0
    print(table(("model", "task", "formats", "description"),
                [(r["name"], r["task"], ",".join(r["formats"]), r["description"]) for r in rows]))
    return 0


def _labels(args: argparse.Namespace, found: tuple[str, ...]) -> tuple[str, ...]:
    from ..modelmeta import parse_labels

    if args.labels is None:
        return found
    try:
        return parse_labels(args.labels.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InvalidInputError(f"cannot read labels file {args.labels}: {exc.strerror or exc}") from exc


def manifest_for(predictor: Any, name: str, file_name: str, sha256: str, has_labels: bool) -> dict[str, Any]:
    """The manifest of a package holding one model file, from an opened Predictor."""
    pre = predictor.pre
    preprocess: dict[str, Any] = {
        "color": pre.color, "resize": pre.resize, "input_size": list(pre.input_size),
        "mean": list(pre.mean), "std": list(pre.std), "pad_value": pre.pad_value}
    if pre.resize_to is not None:
        preprocess["resize_to"] = pre.resize_to
    postprocess = dict(predictor.package.postprocess)
    if predictor.decoder is not None:
        postprocess["kind"] = predictor.decoder.kind
    fmt = predictor.selection.artifact.format if predictor.selection else Path(file_name).suffix[1:]
    precision = "int8" if predictor.session.input_specs[0].dtype.kind in "iu" else "fp32"
    manifest: dict[str, Any] = {
        "schema": 1, "name": name, "task": predictor.task,
        "description": predictor.package.description or f"imported from {file_name}",
        "preprocess": preprocess, "postprocess": postprocess,
        "artifacts": [{"format": fmt, "file": file_name, "sha256": sha256, "layout": predictor.layout,
                       "precision": precision}],
    }
    if has_labels:
        manifest["labels"] = "labels.txt"
    return manifest


def cmd_import(args: argparse.Namespace) -> int:
    from ..predictor import Predictor
    from ..repository import sha256_of

    source: Path = args.file
    if not source.is_file():
        raise InvalidInputError(f"{source}: no such model file")
    name = args.name or source.stem
    target = args.output / name
    if target.exists() and any(target.iterdir()):
        raise InvalidInputError(f"{target} exists and is not empty; choose another --name or -o")
    settings = settings_from(args)
    task = TASKS[args.task] if args.task else "auto"
    repository = repository_from(settings)
    with Predictor.open(source, settings=settings, repository=repository, task=task) as predictor:
        labels = _labels(args, predictor.package.labels)
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target / source.name)
        if labels:
            (target / "labels.txt").write_text("\n".join(labels) + "\n", encoding="utf-8")
        manifest = manifest_for(predictor, name, source.name, sha256_of(target / source.name), bool(labels))
    (target / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    if args.json:
        print_json({"path": str(target), "manifest": manifest})
    else:
        kind = manifest["postprocess"].get("kind", "")
        print(f"wrote {target}: task {manifest['task']} {kind}, {len(labels)} label(s), "
              f"input {manifest['preprocess']['input_size']}")
    return 0


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    models = commands.add_parser("models", parents=[common], help="list model packages, import a model file")
    models.set_defaults(handler=cmd_models)
    actions = models.add_subparsers(dest="models_action", metavar="{import}")
    imported = actions.add_parser(
        "import", parents=[common], help="write a package (manifest, checksum, labels) for a model file",
        description="Reads the file's own metadata (Ultralytics exports, TFLite label files), loads it once "
                    "to check it and to find its input and decoder, and writes DIR/NAME/.")
    imported.add_argument("file", type=Path, help="model file (.onnx, .tflite, ...)")
    imported.add_argument("--labels", type=Path, default=None,
                          help="labels file: one per line, or 'ID label'")
    imported.add_argument("--task", choices=sorted(TASKS), default=None,
                          help="pipeline (default: the file's metadata, else decided from its outputs)")
    imported.add_argument("--name", default=None, help="package name (default: the file name's stem)")
    imported.add_argument("-o", "--output", type=Path, default=Path("."), metavar="DIR",
                          help="folder to create the package in (default: the current one)")
    imported.set_defaults(handler=cmd_import)
