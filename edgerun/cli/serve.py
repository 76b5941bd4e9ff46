"""`edgerun serve`: parse options into a ServeConfig and run the service (web imports stay inside)."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InvalidInputError
from .argtypes import port_number
from .common import add_backend_arguments, backend_option_values

if TYPE_CHECKING:
    from ..serving.config import ModelConfig, ServeConfig

ACCESS_LOGGER = "edgerun.serving.access"


def _configure_logging(verbose: int) -> None:
    """Service logs at INFO on stderr whatever -v says (-vv: DEBUG, as everywhere); access log
    records as bare JSON lines."""
    from ..serving.logfilter import install_repeat_filter
    from . import log_level

    install_repeat_filter()

    for name in ("edgerun", "uvicorn"):
        logging.getLogger(name).setLevel(min(logging.INFO, log_level(verbose)))
    access = logging.getLogger(ACCESS_LOGGER)
    if not access.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        access.addHandler(handler)
        access.propagate = False


def build_config(args: argparse.Namespace) -> ServeConfig:
    """The configuration file (--config, $EDGERUN_CONFIG or /etc/edgerun/config.yaml under --root)
    with its environment overrides, then the command-line options on top."""
    from ..serving.config import load_config, model_config_from, replace_config

    config = load_config(args.config, root=args.root or "/")
    changes: dict[str, Any] = {}
    server = {key: value for key, value in (("host", args.host), ("port", args.port),
                                                      ("grpc_port", args.grpc_port)) if value is not None}
    if server:
        changes["server"] = {**dataclasses.asdict(config.server), **server}  # validated as a ServerConfig
    if args.model:
        configured = {m.name: m for m in config.models}
        models = [model_config_from(text, "--model") for text in args.model]
        models = [configured.get(m.name, m) if m.path is None else m for m in models]
        changes["models"] = tuple(_with_backend_flags(m, args) for m in models)
    elif args.backend or backend_option_values(args):
        raise InvalidInputError("--backend, --device and --option apply to the models given with --model; "
                                "set them per model in the config file otherwise")
    if args.root is not None:
        changes["settings"] = dataclasses.replace(config.settings, host_root=args.root)
    return replace_config(config, "command line", **changes)


def _with_backend_flags(model: ModelConfig, args: argparse.Namespace) -> ModelConfig:
    """A command-line model with --backend/--device/--option applied, validated now (before binding)."""
    from ..backends.options import parse_options

    values = backend_option_values(args)
    if not args.backend and not values:
        return model
    backend = args.backend or model.backend
    if values:
        if backend is None:
            raise InvalidInputError("--device and --option need --backend NAME: each backend has its own "
                                    "options (edgerun backends NAME lists them)")
        parse_options(backend, {**model.options, **values})  # an unknown key or a wrong type fails here
    device = values.pop("device", model.device)
    return dataclasses.replace(model, backend=backend, device=device, options={**model.options, **values})


def run_service(config: ServeConfig, verbose: int) -> int:
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
    add_backend_arguments(parser, "backend for the models given with --model")
    parser.add_argument("--host", default=None, help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=port_number, default=None,
                        help="port (default 8000; 0 picks a free one)")
    parser.add_argument("--grpc-port", type=port_number, default=None,
                        help="also serve KServe V2 over gRPC on this port (needs edgerun[grpc]; default off)")
    parser.add_argument("--config", type=Path, default=None, metavar="FILE",
                        help="YAML, TOML or JSON configuration (default: $EDGERUN_CONFIG, else "
                             "/etc/edgerun/config.yaml when present); see `edgerun config schema`")
    parser.set_defaults(handler=cmd_serve)
