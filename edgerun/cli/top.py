"""`edgerun top`: a live terminal view of the board (rails, temperatures, throttling, CPU/GPU load) and,
when a local `edgerun serve` answers, its per-model rate, latency and energy per inference."""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InvalidInputError
from .argtypes import positive_float
from .common import print_json

if TYPE_CHECKING:
    from ..telemetry.sampler import TelemetrySampler

DEFAULT_URL = "http://127.0.0.1:8000"
API_KEY_ENV = "EDGERUN_API_KEY"


def fetch_service(url: str, api_key: str | None, timeout_s: float = 0.5) -> dict[str, Any]:
    """GET {url}/v1/telemetry: {"url", "models", ...} or {"url", "error"} when it does not answer."""
    request = urllib.request.Request(url.rstrip("/") + "/v1/telemetry")
    if api_key:
        request.add_header("X-API-Key", api_key)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310 (http only)
            body = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return {"url": url, "error": f"HTTP {exc.code}: {exc.read().decode(errors='replace')[:120]}"}
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return {"url": url, "error": f"no edgerun serve answering ({reason})"}
    return {"url": url, "models": body.get("models", [])}


def board_view(root: Path | None) -> dict[str, Any]:
    """The board line: detected platform (cheap file reads through the HAL)."""
    from ..hal import HostFS, detect

    platform = detect(HostFS(root or "/"))
    return {"board": platform.board, "model": platform.model, "cpus": platform.cpu_count,
            "emulated": platform.emulated}


def collect(sampler: TelemetrySampler, board: dict[str, Any],
            service: dict[str, Any] | None) -> dict[str, Any]:
    """One snapshot of everything the view shows (also the --json output)."""
    from ..telemetry.summary import missing

    state = sampler.state()
    sensors = [{key: row[key] for key in ("name", "total", "note", "simulated", "error", "watts",
                                          "rail_watts", "energy_j")} for row in sampler.sensors()]
    return {"board": board, "power": sensors, **state, "missing": missing(sampler), "service": service}


def _gigahertz(hz: float) -> str:
    return f"{hz / 1e9:.2f} GHz"


def _cpu_lines(view: dict[str, Any]) -> list[str]:
    cpu = view["cpu_percent"]
    line = f"CPU   {'—' if cpu is None else f'{cpu:5.1f} %'}"
    freqs = view["cpu_frequency_hz"]
    if freqs:
        line += "   " + "  ".join(f"{cpu_name} {_gigahertz(hz)}" for cpu_name, hz in freqs.items())
    loads = view["accelerator_percent"]
    accel = "  ".join(f"{name} {percent:5.1f} %" for name, percent in loads.items()) or "—"
    return [line, f"GPU   {accel}"]


def _power_lines(view: dict[str, Any]) -> list[str]:
    if not view["power"]:
        return [f"POWER — {view['missing'].get('power', 'no sensor')}"]
    lines = []
    for sensor in view["power"]:
        if sensor["error"]:
            lines.append(f"POWER {sensor['name']}: stopped ({sensor['error']})")
            continue
        watts = "—" if sensor["watts"] is None else f"{sensor['watts']:.2f} W"
        flag = " [emulated]" if sensor["simulated"] else ""
        lines.append(f"POWER {sensor['name']}{flag}  {watts}  (total = {sensor['total']})  "
                     f"energy {sensor['energy_j']:.1f} J")
        lines += [f"      {rail:<18} {w:7.2f} W" for rail, w in sensor["rail_watts"].items()]
    return lines


def _thermal_lines(view: dict[str, Any]) -> list[str]:
    temps = view["temperatures_c"]
    text = "  ".join(f"{zone} {c:.1f} °C" for zone, c in temps.items()) or "—"
    active = sorted(reason for reason, on in view["throttled"].items() if on)
    if active:
        throttle = "THROTTLED: " + ", ".join(active)
    else:
        throttle = "none" if view["throttled"] else view["missing"].get("throttling", "—")
    return [f"TEMP  {text}", f"THROTTLE {throttle}"]


def _number(value: float | None, scale: float = 1.0, digits: int = 1) -> str:
    return "—" if value is None else f"{value * scale:.{digits}f}"


def _service_lines(service: dict[str, Any] | None) -> list[str]:
    if service is None:
        return []
    if "error" in service:
        return [f"SERVE {service['url']}: {service['error']}"]
    lines = [f"SERVE {service['url']}",
             f"      {'model':<24} {'inf/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'mJ/inf':>8}"]
    for m in service["models"]:
        lines.append(f"      {m['name']:<24} {_number(m['inferences_per_s']):>8} "
                     f"{_number(m['latency_ms']['p50']):>8} {_number(m['latency_ms']['p99']):>8} "
                     f"{_number(m['energy_per_inference_j'], 1000.0):>8}")
    if not service["models"]:
        lines.append("      (no model has run yet)")
    return lines


def render(view: dict[str, Any]) -> list[str]:
    """The screen as lines (pure: the same for curses and --once)."""
    board = view["board"]
    head = f"edgerun top — {board['board']} ({board['model'] or 'unknown model'}), {board['cpus']} CPUs"
    if board["emulated"]:
        head += " [emulated device tree]"
    return [head, "", *_cpu_lines(view), *_power_lines(view), *_thermal_lines(view),
            *_service_lines(view["service"])]


def _sampler(args: argparse.Namespace) -> TelemetrySampler:
    from ..telemetry.sampler import TelemetrySampler

    return TelemetrySampler(args.root or "/", power_period_s=min(0.1, args.interval),
                            thermal_period_s=args.interval)


def run_once(args: argparse.Namespace, api_key: str | None) -> dict[str, Any]:
    sampler = _sampler(args)
    sampler.discover()
    for _ in range(2):                       # two reads: CPU load and energy need a difference
        sampler.power_tick()
        sampler.thermal_tick()
        time.sleep(0.2)
    service = None if args.no_service else fetch_service(args.url, api_key)
    return collect(sampler, board_view(args.root), service)


def run_live(args: argparse.Namespace, api_key: str | None) -> None:
    import curses

    sampler = _sampler(args)
    sampler.start()
    board = board_view(args.root)

    def loop(screen: Any) -> None:
        curses.curs_set(0)
        screen.timeout(int(args.interval * 1000))
        while True:
            service = None if args.no_service else fetch_service(args.url, api_key)
            lines = render(collect(sampler, board, service)) if sampler.hardware else ["sampling…"]
            height, width = screen.getmaxyx()
            screen.erase()
            for row, line in enumerate([*lines, "", "q: quit"][:height - 1]):
                screen.addnstr(row, 0, line, width - 1)
            screen.refresh()
            if screen.getch() in (ord("q"), ord("Q"), 27):
                return

    try:
        curses.wrapper(loop)
    finally:
        sampler.stop()


def cmd_top(args: argparse.Namespace) -> int:
    if args.root is not None and not args.root.is_dir():
        raise InvalidInputError(f"--root {args.root} is not a directory")
    logger = logging.getLogger("edgerun")
    level = logger.level
    if not args.verbose:   # what is missing is on the screen; a log line would tear the curses view
        logger.setLevel(logging.ERROR)
    try:
        _show(args, os.environ.get(API_KEY_ENV))
    finally:
        logger.setLevel(level)
    return 0


def _show(args: argparse.Namespace, api_key: str | None) -> None:
    if args.once or args.json:
        view = run_once(args, api_key)
        if args.json:
            print_json(view)
        else:
            print("\n".join(render(view)))
    else:
        run_live(args, api_key)


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "top", parents=[common], help="live view of power rails, temperatures, throttling and load",
        description="Like jtop for every board edgerun knows: power per rail, temperatures, throttle "
                    "flags, CPU frequency and load, GPU/NPU load; with a local `edgerun serve`, each "
                    "model's rate, latency and energy per inference (from GET /v1/telemetry; the API "
                    f"key comes from ${API_KEY_ENV}). q quits.")
    parser.add_argument("--url", default=DEFAULT_URL, help=f"the service to ask (default {DEFAULT_URL})")
    parser.add_argument("--no-service", action="store_true", help="do not ask a service")
    parser.add_argument("--interval", type=positive_float, default=1.0, metavar="S",
                        help="refresh period in seconds (default 1)")
    parser.add_argument("--once", action="store_true", help="print one snapshot and exit (with --json: JSON)")
    parser.set_defaults(handler=cmd_top)
