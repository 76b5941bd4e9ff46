"""What every command shares: settings, backend options and the model repository from arguments,
JSON output and tables."""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..config import Settings
from ..errors import InvalidInputError
from ..repository import ModelRepository
from .argtypes import key_value

if TYPE_CHECKING:
    from ..backends.base import LoadOptions


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


def add_backend_arguments(parser: argparse.ArgumentParser, backend_help: str | None = None) -> None:
    """--backend NAME, --device DEV and repeatable --option KEY=VALUE (see `edgerun backends NAME`)."""
    parser.add_argument("--backend", default=None, metavar="NAME",
                        help=backend_help or "use this backend (see `edgerun backends`)")
    parser.add_argument("--device", default=None, metavar="DEV",
                        help="the backend's device, e.g. usb:1 (edgetpu), gpu:0 (tensorrt), GPU (openvino)")
    parser.add_argument("--option", action="append", type=key_value, default=[], metavar="KEY=VALUE",
                        help="a backend option (repeatable); `edgerun backends NAME` lists them")


def backend_option_values(args: argparse.Namespace) -> dict[str, str]:
    """--option KEY=VALUE pairs and --device as one mapping; a key given twice is an error."""
    pairs: list[tuple[str, str]] = list(getattr(args, "option", None) or [])
    if getattr(args, "device", None) is not None:
        pairs.append(("device", args.device))
    seen = [key for key, _ in pairs]
    twice = sorted({key for key in seen if seen.count(key) > 1})
    if twice:
        raise InvalidInputError(f"option {', '.join(twice)} given more than once (--device sets 'device')")
    return dict(pairs)


def load_options_from(args: argparse.Namespace, settings: Settings) -> LoadOptions:
    """LoadOptions for the command: --threads, plus the chosen backend's typed options from
    --device/--option, validated against it (they need --backend or EDGERUN_BACKEND)."""
    from ..backends.base import LoadOptions
    from ..backends.options import parse_options

    values = backend_option_values(args)
    if not values:
        return LoadOptions(threads=settings.threads)
    backend = getattr(args, "backend", None) or settings.backend
    if backend is None or backend == "all":
        raise InvalidInputError("--device and --option need one --backend NAME: each backend has its own "
                                "options (edgerun backends NAME lists them)")
    return LoadOptions(threads=settings.threads, options=parse_options(backend, values))


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain-text table with a header row, columns padded to their widest cell."""
    cells = [[str(c) for c in headers], *[[("-" if c is None else str(c)) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def indent(text: str, prefix: str = "  ") -> str:
    return "\n".join(prefix + line for line in text.splitlines())
