"""Plots of a profile (matplotlib, optional `plot` extra): latency histogram and power over time."""

from __future__ import annotations

import html
import io
import textwrap
from pathlib import Path
from typing import Any

from ..errors import DependencyMissingError, InvalidInputError
from ..optional import has_module
from .report import format_summary
from .runner import ProfileReport
from .sampling import power_series, usable

PLOT_SUFFIXES = (".png", ".html")
ENABLE_HINT = "plots need matplotlib: pip install 'edgerun[plot]'"


def check_plot_target(path: Path) -> None:
    """Fail before profiling when the plot cannot be written: wrong suffix or no matplotlib."""
    if path.suffix.lower() not in PLOT_SUFFIXES:
        raise InvalidInputError(f"--plot {path}: use a .png or .html file name")
    if not has_module("matplotlib"):
        raise DependencyMissingError(ENABLE_HINT)


def _latency_axes(axes: Any, report: ProfileReport) -> None:
    colours = {}
    for run in report.runs:
        if run.trace is None or run.latency is None:
            continue
        latencies = [x / 1e6 for x in run.trace.latencies_ns()]
        _, _, patches = axes.hist(latencies, bins=min(60, max(10, len(latencies) // 5)),
                                  histtype="step", linewidth=1.4, label=run.backend)
        colours[run.backend] = patches[0].get_edgecolor()
        for name, style in (("p50", "-"), ("p90", "--"), ("p99", ":")):
            axes.axvline(run.latency.p(name), color=colours[run.backend], linestyle=style, linewidth=1)
    axes.set_xlabel("latency (ms); lines: p50 solid, p90 dashed, p99 dotted")
    axes.set_ylabel("queries")
    axes.set_title(f"{report.model.name}: {report.config.scenario} latency")
    if colours:
        axes.legend()


def _power_axes(axes: Any, report: ProfileReport) -> None:
    plotted = False
    if report.idle is not None:
        for trace in (t for t in report.idle.power if usable(t)):
            times, watts = power_series(trace, report.origin_ns)
            axes.plot(times, watts, color="grey", label=f"idle ({trace.sensor.name})")
            plotted = True
    for run in report.runs:
        traces = [t for t in run.samples.power if usable(t)] if run.samples is not None else []
        for trace in traces[:1]:
            times, watts = power_series(trace, report.origin_ns)
            axes.plot(times, watts, label=f"{run.backend} ({trace.sensor.name})")
            axes.axvspan(times[0], times[-1], alpha=0.12)
            plotted = True
    axes.set_title("power over time (shaded: measured window)")
    axes.set_xlabel("seconds since the profile started")
    axes.set_ylabel("W")
    if plotted:
        axes.legend()
    else:
        reason = next((r.power.get("reason") for r in report.runs if r.power), None) or "no power sensor"
        axes.set_xticks([])
        axes.set_yticks([])
        axes.text(0.5, 0.5, "power: unavailable\n" + textwrap.fill(reason, 100), ha="center", va="center",
                  fontsize=8, transform=axes.transAxes)


def _figure(report: ProfileReport) -> Any:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 8), layout="constrained")
    top, bottom = figure.subplots(2, 1)
    _latency_axes(top, report)
    _power_axes(bottom, report)
    return figure


def write_plot(report: ProfileReport, path: Path) -> None:
    """PNG: the figure. HTML: one self-contained page with the summary and the figure as inline SVG."""
    check_plot_target(path)
    figure = _figure(report)
    if path.suffix.lower() == ".png":
        figure.savefig(path, format="png", dpi=110)
        return
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg")
    svg = buffer.getvalue()
    svg = svg[svg.index("<svg"):]
    title = html.escape(f"edgerun profile: {report.model.name}")
    page = (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title>"
            "<style>body{font-family:sans-serif;margin:2em}pre{background:#f4f4f4;padding:1em}</style>"
            f"</head><body><h1>{title}</h1><pre>{html.escape(format_summary(report))}</pre>\n{svg}\n"
            "</body></html>\n")
    path.write_text(page, encoding="utf-8")
