"""``edgerun backends``: each backend, available or the exact reason not, this board's preference first."""

from __future__ import annotations

import argparse
from typing import Any

from .common import print_json, settings_from


def cmd_backends(args: argparse.Namespace) -> int:
    from ..backends.registry import Registry
    from ..hal import HostFS, detect
    from ..hal.boards import backend_preference

    platform = detect(HostFS(settings_from(args).host_root))
    registry = Registry()
    rows = []
    for name in registry.order(backend_preference(platform)):
        backend = registry.get(name)
        availability = backend.probe(platform)
        rows.append({"name": name, "formats": list(backend.formats), "available": availability.ok,
                     "reason": availability.reason})
    if args.json:
        print_json({"platform": platform.to_dict(), "backends": rows})
        return 0
    print(f"platform: {platform.summary()}")
    for row in rows:
        state = "available" if row["available"] else "unavailable"
        print(f"  {row['name']:<12} {state:<12} {row['reason']}")
    return 0


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    backends = commands.add_parser("backends", parents=[common], help="list backends and availability")
    backends.set_defaults(handler=cmd_backends)
