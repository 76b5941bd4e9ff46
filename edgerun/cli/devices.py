"""``edgerun devices``: platform, accelerators, power sensors, backend availability, model placement."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .backends import backends_table
from .common import indent, table

log = logging.getLogger(__name__)


def _power_report(fs: Any) -> dict[str, Any]:
    """Power sensors through edgerun.hal.power when that module is present (captured commands on a tree)."""
    try:
        from ..hal import power
    except ImportError as exc:
        return {"sensors": [], "unavailable": f"power module not available ({exc})"}
    commands = fs.manifest.get("commands") if fs.is_emulated else None
    runner = power.captured_runner(commands) if isinstance(commands, dict) else power.host_runner(fs)
    sensors, findings = power.survey_power_sensors(fs, runner)
    report: dict[str, Any] = {"sensors": [s.describe() for s in sensors], "findings": findings}
    if not sensors:
        report["unavailable"] = power.unavailable_reason(findings)
    return report


def _models_report(
    registry: Any, platform: Any, settings: Any, prefer: Sequence[str]
) -> list[dict[str, Any]]:
    from ..errors import EdgerunError
    from ..repository import ModelRepository

    rows = []
    for package in ModelRepository.from_settings(settings).packages():
        try:
            selection = registry.select(package, platform, settings.backend, prefer=prefer)
        except EdgerunError as exc:
            rows.append({"model": package.name, "backend": None, "artifact": None, "why": str(exc)})
            continue
        rows.append(
            {
                "model": package.name,
                "backend": selection.backend.name,
                "artifact": selection.artifact.path.name,
                "why": selection.explain(),
            }
        )
    return rows


def _opencv_report(family: str) -> dict[str, Any]:
    import importlib.util

    from ..camera.opencv_support import load_cv2, opencv_report

    return opencv_report(load_cv2(), family, importlib.util.find_spec("picamera2") is not None)


def devices_report(settings: Any) -> dict[str, Any]:
    """Everything `edgerun devices` prints, as one JSON-ready dict."""
    from ..backends.registry import Registry
    from ..hal.boards import backend_preference, profile_for
    from ..hal.hostfs import HostFS
    from ..hal.platform import detect
    from ..hal.video import list_cameras
    from .backends import backend_rows

    fs = HostFS(settings.host_root)
    platform = detect(fs)
    registry = Registry()
    prefer = backend_preference(platform)
    profile = profile_for(platform)
    return {
        "platform": platform.to_dict(),
        "board_profile": {"family": profile.family, "camera": profile.camera, "backend_preference": prefer},
        "power": _power_report(fs),
        "cameras": [camera.to_dict() | {"source": camera.source_uri()} for camera in list_cameras(fs)],
        "opencv": _opencv_report(profile.family),
        "backends": backend_rows(registry, platform, prefer),
        "models": _models_report(registry, platform, settings, prefer),
    }


def _text_lines(report: dict[str, Any]) -> list[str]:
    platform = report["platform"]
    emulated = "  [emulated device tree]" if platform["emulated"] else ""
    lines = [
        f"platform: {platform['board']} ({platform['model'] or platform['arch']}), "
        f"{platform['cpu_count']} CPUs{emulated}"
    ]
    lines += [f"  {key}: {value}" for key, value in platform["facts"].items()]
    lines.append("accelerators:" + ("" if platform["accelerator_details"] else " none"))
    for accel in platform["accelerator_details"]:
        node = f" at {accel['node']}" if accel["node"] else ""
        detail = ", ".join(f"{k}={v}" for k, v in accel["detail"].items())
        lines.append(
            f"  {accel['id']:<14} {accel['name']}{node} [{accel['access']}]"
            + (f" ({detail})" if detail else "")
        )
    power = report["power"]
    lines.append("power sensors:" + ("" if power["sensors"] else f" none ({power.get('unavailable', '')})"))
    lines += [f"  {s['name']}: rails {', '.join(s['rails'])}; total = {s['total']}" for s in power["sensors"]]
    lines += _cameras_lines(report["cameras"], report["board_profile"]["camera"])
    cv = report["opencv"]
    lines.append(f"opencv: cv2 {cv['version']} from {cv['module']} ({cv['distribution']}), GStreamer "
                 f"{'yes' if cv['gstreamer'] else 'no'}" if cv["module"] else "opencv: cv2 not installed")
    lines += [f"  warning: {cv['warning']}"] if cv["warning"] else []
    lines.append("backends (in this board's preference order):")
    lines.append(indent(backends_table(report["backends"])))
    lines.append("models:")
    models = [(r["model"], r["backend"] or "no backend", r["artifact"]) for r in report["models"]]
    lines.append(indent(table(("model", "backend", "artifact"), models)))
    return lines


def _cameras_lines(cameras: list[dict[str, Any]], hint: str) -> list[str]:
    if not cameras:
        return [f"cameras: none found (no V4L2 capture node); this board's usual camera: {hint}"]
    rows = [(c["node"], c["name"], c["kind"], c["access"], c["source"], _formats_text(c)) for c in cameras]
    return ["cameras:", indent(table(("node", "name", "kind", "access", "source", "formats"), rows))]


def _formats_text(camera: dict[str, Any]) -> str:
    if camera["formats"]:
        return "; ".join(f"{fourcc} {' '.join(sizes[:4])}{' ...' if len(sizes) > 4 else ''}"
                         for fourcc, sizes in camera["formats"].items())
    return camera["note"] or "read on the device itself (ioctl)"


def cmd_devices(args: argparse.Namespace) -> int:
    from ..config import Settings
    from ..hal.hostfs import HostFS

    settings = Settings.from_env()
    if args.root is not None:
        settings = dataclasses.replace(settings, host_root=args.root)
    if args.snapshot is not None:
        return _snapshot(HostFS(settings.host_root), args.snapshot, args.json)
    report = devices_report(settings)
    print(json.dumps(report, indent=2, default=str) if args.json else "\n".join(_text_lines(report)))
    return 0


def _snapshot(fs: Any, dest: Path, as_json: bool) -> int:
    from ..errors import InvalidInputError
    from ..hal.snapshot import take_snapshot

    runner: Callable[[Sequence[str]], str | None] | None = None
    if fs.is_live:
        try:
            from ..hal.power import host_runner

            runner = host_runner(fs)
        except ImportError:
            runner = None
    try:
        manifest = take_snapshot(fs, dest, runner)
    except FileExistsError as exc:
        raise InvalidInputError(str(exc)) from None
    summary = {
        "snapshot": str(dest),
        "device_nodes": len(manifest["access"]),  # type: ignore[arg-type]
        "unreadable": manifest["unreadable"],
    }
    print(
        json.dumps(summary, indent=2)
        if as_json
        else f"wrote device tree {dest} ({summary['device_nodes']} device nodes; use it with --root {dest})"
    )
    return 0


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add `edgerun devices`."""
    parser = commands.add_parser(
        "devices",
        parents=[common],
        help="platform, accelerators, power sensors, backends and where each model runs",
    )
    parser.add_argument(
        "--snapshot",
        type=Path,
        default=None,
        metavar="DIR",
        help="copy this host's allow-listed HAL files into a new device tree DIR",
    )
    parser.set_defaults(handler=cmd_devices)
