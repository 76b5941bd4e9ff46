"""What every command shares: settings and the model repository from arguments, JSON output."""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

from ..config import Settings
from ..repository import ModelRepository


def settings_from(args: argparse.Namespace) -> Settings:
    """Settings from the environment, then the command line (--root, --threads) on top."""
    settings = Settings.from_env()
    if getattr(args, "root", None) is not None:
        settings = dataclasses.replace(settings, host_root=args.root)
    if getattr(args, "threads", None):
        settings = dataclasses.replace(settings, threads=args.threads)
    return settings


def repository_from(settings: Settings) -> ModelRepository:
    return ModelRepository.from_settings(settings)


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))
