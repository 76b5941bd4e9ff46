"""`edgerun profile`: parse options, run the Profiler, print the summary, write JSON/CSV/plot."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from ..profiler.scenarios import SCENARIOS, Progress
from .argtypes import count, non_negative_float, positive_float, positive_int
from .common import add_backend_arguments

if TYPE_CHECKING:
    from ..backends.options import BackendOptions
    from ..profiler.runner import ProfileConfig, ProfileReport

BAR_WIDTH = 28
REDRAW_S = 0.1


class ProgressBar:
    """A one-line text progress bar on a terminal stream, redrawn at most every 0.1 s."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._drawn = False

    def __call__(self, label: str, total: int | None) -> Progress:
        self._end_line()
        started = time.monotonic()
        last = [0.0]

        def update(done: int, _total: int | None) -> None:
            now = time.monotonic()
            if now - last[0] < REDRAW_S and done != total:
                return
            last[0] = now
            self._draw(label, done, total, now - started)

        return update

    def _draw(self, label: str, done: int, total: int | None, elapsed: float) -> None:
        if total:
            filled = int(BAR_WIDTH * done / total)
            bar = f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {done}/{total}"
        else:
            bar = f"{done} queries"
        self.stream.write(f"\r{label:<28} {bar} {elapsed:6.1f} s")
        self.stream.flush()
        self._drawn = True
        if total and done >= total:
            self._end_line()

    def _end_line(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False

    def close(self) -> None:
        self._end_line()


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add the `profile` subcommand (--json prints the report; -o/--output writes it to a file)."""
    parser = commands.add_parser(
        "profile", parents=[common],
        help="measure cold start, latency, throughput, memory, power and thermals",
        description="Profile a model (default: the embedded classifier) after MLPerf LoadGen's scenarios.")
    parser.add_argument("model", nargs="?", default=None, help="model name or path (default: mobilenet_v2)")
    _add_run_options(parser)
    _add_power_and_output_options(parser)
    parser.set_defaults(handler=cmd_profile)


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    add_backend_arguments(parser, "backend name, or 'all' to compare every available backend")
    parser.add_argument("--scenario", choices=SCENARIOS, default="single-stream")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--runs", type=positive_int, help="measured queries (default 200)")
    budget.add_argument("--duration", type=positive_float, help="measure for S seconds instead")
    parser.add_argument("--warmup", type=count, default=10, help="unmeasured queries after the first (10)")
    parser.add_argument("--threads", type=positive_int, default=None, help="CPU threads for the runtime")
    parser.add_argument("--batch", type=positive_int, default=None,
                        help="samples per query (offline default 8 where the model's batch is dynamic)")
    parser.add_argument("--qps", type=positive_float, default=None, help="server scenario arrival rate")
    parser.add_argument("--latency-bound-ms", type=positive_float, default=100.0,
                        help="server scenario latency bound (100 ms, LoadGen's default)")
    parser.add_argument("--reference", default=None,
                        help="model whose fp32 ONNX on onnxruntime is the top-1 reference "
                             "(default: the profiled model)")
    parser.add_argument("--samples", type=Path, default=None,
                        help="folder of images for the top-1 agreement check (default: the repo's samples/)")


def _add_power_and_output_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--idle", type=non_negative_float, default=2.0,
                        help="seconds of idle power baseline before the run (2; 0 skips)")
    parser.add_argument("--subtract-idle", action="store_true",
                        help="report energy per inference above the idle baseline")
    parser.add_argument("--power-interval", type=positive_float, default=0.1,
                        help="power sampling interval in seconds (0.1)")
    parser.add_argument("-o", "--output", type=Path, default=None, metavar="FILE",
                        help="write the JSON report to FILE (--json prints it instead of the table)")
    parser.add_argument("--csv", type=Path, default=None, metavar="FILE", help="per-query latencies as CSV")
    parser.add_argument("--plot", type=Path, default=None, metavar="FILE",
                        help="latency histogram and power over time, .png or self-contained .html")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _config(args: argparse.Namespace, threads: int | None, options: BackendOptions | None) -> ProfileConfig:
    from ..profiler.agreement import default_samples_dir
    from ..profiler.runner import ProfileConfig

    return ProfileConfig(options=options,
        scenario=args.scenario, runs=args.runs, duration_s=args.duration, warmup=args.warmup,
        batch=args.batch, qps=args.qps, latency_bound_ms=args.latency_bound_ms, threads=threads,
        idle_s=args.idle, subtract_idle=args.subtract_idle, power_interval_s=args.power_interval,
        samples_dir=args.samples or default_samples_dir(), reference=args.reference)


def cmd_profile(args: argparse.Namespace) -> int:
    from ..hal import HostFS
    from ..profiler.plot import check_plot_target
    from ..profiler.runner import Host, Profiler
    from .common import load_options_from, repository_from, settings_from

    settings = settings_from(args)
    if args.plot is not None:
        check_plot_target(args.plot)
    _check_outputs(args)
    config = _config(args, settings.threads, load_options_from(args, settings).options)
    bar = ProgressBar(sys.stderr) if sys.stderr.isatty() and not args.no_progress else None
    profiler = Profiler(config, Host.probe(HostFS(settings.host_root)), repository_from(settings),
                        progress=bar)
    try:
        report = profiler.run(args.model, args.backend or settings.backend)
    finally:
        if bar is not None:
            bar.close()
    _write_outputs(args, report)
    return 0 if any(run.status == "ok" for run in report.runs) else 1


def _check_outputs(args: argparse.Namespace) -> None:
    """Every file the run will write is writable, checked before the (long) measurement starts."""
    from ..outputs import check_output_file

    for flag, path in (("--output", args.output), ("--csv", args.csv), ("--plot", args.plot)):
        if path is not None:
            check_output_file(path, flag)


def _write_outputs(args: argparse.Namespace, report: ProfileReport) -> None:
    from ..profiler.plot import write_plot
    from ..profiler.report import format_summary, write_csv, write_json

    if args.json:
        write_json(report, "-")
    else:
        print(format_summary(report))
    written = []
    if args.output is not None:
        write_json(report, args.output)
        written.append(f"JSON {args.output}")
    if args.csv is not None:
        written.append(f"CSV {args.csv} ({write_csv(report, args.csv)} queries)")
    if args.plot is not None:
        write_plot(report, args.plot)
        written.append(f"plot {args.plot}")
    if written:
        print("wrote " + ", ".join(written), file=sys.stderr if args.json else sys.stdout)

