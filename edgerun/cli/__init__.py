"""Command line: one module per command; parse arguments, call the library, print; errors become one line."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from .. import __version__
from ..errors import EdgerunError

EXIT_ERROR = 1

# Optional top-level modules -> the pip extra that installs them (for a one-line error, not a traceback).
EXTRA_FOR_MODULE = {
    "fastapi": "serve", "starlette": "serve", "uvicorn": "serve", "multipart": "serve",
    "python_multipart": "serve", "prometheus_client": "serve", "PIL": "vision", "cv2": "camera",
    "onnxruntime": "onnx", "ai_edge_litert": "litert", "onnx": "optimize", "matplotlib": "plot",
    "pydantic": "serve", "yaml": "serve",
}

# One module per command, in the order `edgerun --help` lists them. Each defines
# register(commands, common) -> None and must stay cheap to import (no runtime or web imports).
COMMAND_MODULES: tuple[str, ...] = (
    "predict", "models", "backends", "devices", "profile", "serve", "run", "optimize", "config",
    "top",
)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--root", type=Path, default=None,
                        help="read /proc, /sys, /dev, /etc under this directory (a captured device tree)")
    common.add_argument("--json", action="store_true", help="print JSON to stdout instead of text")
    common.add_argument("-v", "--verbose", action="count", default=0,
                        help="log what edgerun does (backend choice, loads, the runtimes' own messages); "
                             "-vv: debug detail")
    parser = argparse.ArgumentParser(prog="edgerun", description="Edge-device inference runtime.")
    parser.add_argument("--version", action="version", version=f"edgerun {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    for module_name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{module_name}").register(commands, common)
    return parser


def log_level(verbose: int) -> int:
    """The same meaning for every command: no -v WARNING, -v INFO, -vv DEBUG."""
    return (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=log_level(args.verbose), format="%(levelname)s %(name)s: %(message)s")
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
