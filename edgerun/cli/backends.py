"""``edgerun backends [NAME]``: each backend, available or the exact reason not, this board's
preference first; with NAME, that backend's options (name, type, default, help)."""

from __future__ import annotations

import argparse
from typing import Any

from .common import print_json, settings_from, table


def backend_rows(registry: Any, platform: Any, prefer: list[str]) -> list[dict[str, Any]]:
    """One row per backend in preference order (named-only backends last): availability and why."""
    rows = []
    for name in registry.order(prefer, explicit=True):
        backend = registry.get(name)
        availability = backend.probe(platform)
        rows.append({"name": name, "formats": list(backend.formats), "available": availability.ok,
                     "reason": availability.reason})
    return rows


def backends_table(rows: list[dict[str, Any]]) -> str:
    return table(("backend", "state", "reason"),
                 [(r["name"], "available" if r["available"] else "unavailable", r["reason"]) for r in rows])


def _options(args: argparse.Namespace) -> int:
    from ..backends.options import describe_options, options_class_of
    from ..backends.registry import Registry

    backend = Registry().get(args.name)  # an unknown name fails here, listing the known ones
    options_class = options_class_of(backend)
    rows = describe_options(options_class)
    if args.json:
        print_json({"backend": args.name, "formats": list(backend.formats), "options": rows})
        return 0
    doc = (options_class.__doc__ or "").strip().splitlines()
    print(f"backend {args.name}: {doc[0].rstrip('.') if doc else ''} (formats: {', '.join(backend.formats)})")
    if not rows:
        print("no options")
        return 0
    print(table(("option", "type", "default", "help"),
                [(r["name"], r["type"], r["default"], r["help"]) for r in rows]))
    print(f"set with --option KEY=VALUE (and --device DEV) on predict, run, profile and serve, "
          f"with --backend {args.name}")
    return 0


def cmd_backends(args: argparse.Namespace) -> int:
    if args.name is not None:
        return _options(args)
    from ..backends.registry import Registry
    from ..hal import HostFS, detect
    from ..hal.boards import backend_preference

    platform = detect(HostFS(settings_from(args).host_root))
    rows = backend_rows(Registry(), platform, backend_preference(platform))
    if args.json:
        print_json({"platform": platform.to_dict(), "backends": rows})
        return 0
    print(f"platform: {platform.summary()}")
    print(backends_table(rows))
    return 0


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    backends = commands.add_parser("backends", parents=[common],
                                   help="list backends and availability, or one backend's options")
    backends.add_argument("name", nargs="?", default=None, metavar="NAME",
                          help="show this backend's options (name, type, default, help)")
    backends.set_defaults(handler=cmd_backends)
