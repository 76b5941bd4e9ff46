"""`edgerun config`: check a configuration file (print the effective configuration) or print its schema."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def cmd_check(args: argparse.Namespace) -> int:
    from ..serving.config import effective_config, load_config

    config = load_config(args.file, root=args.root or "/")
    data = effective_config(config)
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        import yaml

        sys.stdout.write(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from ..serving.config import config_schema
    from ..serving.config_doc import config_reference

    if args.markdown:
        sys.stdout.write(config_reference())
    else:
        print(json.dumps(config_schema(), indent=2, ensure_ascii=False))
    return 0


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "config", help="check a configuration file or print its JSON Schema",
        description="One file configures `edgerun serve`: server, auth, limits, models, streams, "
                    "telemetry (YAML, TOML or JSON by suffix). EDGERUN_SECTION__KEY variables "
                    "override its values (e.g. EDGERUN_LIMITS__MAX_CONNECTIONS=200).")
    actions = parser.add_subparsers(dest="action", required=True)
    check = actions.add_parser(
        "check", parents=[common], help="validate a file and print the effective configuration",
        description="Validate FILE (default: $EDGERUN_CONFIG, else /etc/edgerun/config.yaml when "
                    "present, else the defaults) with the environment overrides applied, and print "
                    "the configuration the service would run with (the API key as ***).")
    check.add_argument("file", nargs="?", type=Path, default=None, metavar="FILE")
    check.set_defaults(handler=cmd_check)
    schema = actions.add_parser("schema", parents=[common], help="print the JSON Schema of the file",
                                description="The JSON Schema (draft 2020-12) of the configuration file; "
                                            "the repository keeps a copy in docs/schema/config.schema.json.")
    schema.add_argument("--markdown", action="store_true",
                        help="the settings as Markdown tables (docs/configuration.md) instead")
    schema.set_defaults(handler=cmd_schema)
