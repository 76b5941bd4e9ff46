"""`edgerun serve`: parse options into a ServeConfig and run the service (web imports stay inside)."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path
from typing import Any

from ..serving.config import ServeConfig, load_config, model_config_from, validate_serve

ACCESS_LOGGER = "edgerun.serving.access"


def _configure_logging(verbose: bool) -> None:
    """Service logs at INFO on stderr; access log records as bare JSON lines."""
    for name in ("edgerun", "uvicorn"):
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.INFO)
    access = logging.getLogger(ACCESS_LOGGER)
    if not access.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        access.addHandler(handler)
        access.propagate = False


def build_config(args: argparse.Namespace) -> ServeConfig:
    """Config file first, then command-line options on top."""
    config = load_config(args.config)
    changes: dict[str, Any] = {}
    if args.host is not None:
        changes["host"] = args.host
    if args.port is not None:
        changes["port"] = args.port
    if args.grpc_port is not None:
        changes["grpc_port"] = args.grpc_port
    if args.model:
        configured = {m.name: m for m in config.models}
        models = [model_config_from(text, "--model") for text in args.model]
        changes["models"] = tuple(configured.get(m.name, m) if m.path is None else m for m in models)
    if args.root is not None:
        changes["settings"] = dataclasses.replace(config.settings, host_root=args.root)
    return validate_serve(dataclasses.replace(config, **changes))


def run_service(config: ServeConfig, verbose: bool) -> int:
    """Check the models, then run the service in the foreground, notifying systemd when it asks."""
    from ..sdnotify import Watchdog
    from ..serving.runner import serve, systemd_hooks
    from ..serving.service import check_models

    check_models(config)
    _configure_logging(verbose)
    watchdog = Watchdog()
    try:
        return serve(config, systemd_hooks(config, watchdog))
    finally:
        watchdog.stop()


def cmd_serve(args: argparse.Namespace) -> int:
    return run_service(build_config(args), args.verbose)


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "serve", parents=[common], help="run the inference service (KServe V2 REST + image upload)",
        description="Serve models over HTTP: KServe V2 (tritonclient and perf_analyzer work "
                    "unchanged), POST /v1/models/{m}/predict for images, /metrics. With no --model "
                    "and no config file it serves mobilenet_v2 and blazeface.")
    parser.add_argument("--model", action="append", metavar="NAME|PATH",
                        help="model to serve (repeatable): a package name or a package folder/model file")
    parser.add_argument("--host", default=None, help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port (default 8000; 0 picks a free one)")
    parser.add_argument("--grpc-port", type=int, default=None,
                        help="also serve KServe V2 over gRPC on this port (needs edgerun[grpc]; default off)")
    parser.add_argument("--config", type=Path, default=None,
                        help="JSON or TOML file: host, port, api_key, limits, per-model settings")
    parser.set_defaults(handler=cmd_serve)
