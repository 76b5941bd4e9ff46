"""``edgerun models``: list the model packages found (built-in and EDGERUN_MODEL_PATH)."""

from __future__ import annotations

import argparse
from typing import Any

from .common import print_json, repository_from, settings_from, table


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


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    models = commands.add_parser("models", parents=[common], help="list model packages")
    models.set_defaults(handler=cmd_models)
