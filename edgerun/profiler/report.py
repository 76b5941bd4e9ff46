"""Profile reports: versioned JSON document, per-query CSV, and the readable summary table.

JSON schema ``edgerun.profile/1`` (keys; times in ms unless the key says otherwise):
  schema, edgerun_version, created_utc
  host: root, emulated, platform (Platform.to_dict())
  model: name, task, path
  config: scenario, runs, duration_s, warmup, batch, qps, latency_bound_ms, threads, idle_s,
          subtract_idle, power_interval_s, seed, options (the --option values given, or null)
  power_sensors: found [{name, kind, rails, total, note, simulated}], search {family: finding}
  idle_baseline: seconds, watts {sensor: W}
  runs[]: backend, status (ok | unavailable | failed), reason, device, options {effective backend
          options, defaults resolved}, artifact {file, format, precision,
          selection}, cold_start {load_ms, first_inference_ms},
          latency_ms {count, min_ms, mean_ms, std_ms, max_ms, percentiles_ms {p50, p90, p95, p99}},
          scenario {name, queries, samples, samples_per_query, duration_s, throughput_per_s
                    [, latency_bound_ms, missed_latency_bound]},
          mlperf_min_queries {p90: {min_queries, met}, ...},
          memory {rss_before_load_mb, rss_after_load_mb, rss_start_mb, rss_end_mb, growth_mb,
                  peak_during_run_mb, peak_process_mb},
          cpu {cpu_seconds, wall_seconds, utilisation_percent_of_one_cpu, cpus},
          power {status, reason, sensor, mean_w, energy_j, energy_per_inference_mj, rails_mean_w,
                 sampling_rate_hz, samples, window_s, idle_w [, above_idle_w,
                 energy_per_inference_above_idle_mj], interval_s, sensors[]}  -- no numbers unless ok
          thermal {temperatures_c {name: {start_c, max_c, end_c}}, throttled_before,
                   throttled_after, warnings[]},
          top1_agreement {status, reference, agree, images, rate, disagree[] | reason}
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .. import __version__
from .energy import power_line
from .runner import BackendRun, ProfileReport
from .thermals import thermal_line

SCHEMA = "edgerun.profile/1"


def report_dict(report: ProfileReport) -> dict[str, Any]:
    """The JSON-ready document (schema ``edgerun.profile/1``)."""
    host = report.host
    return {
        "schema": SCHEMA,
        "edgerun_version": __version__,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "host": {"root": str(host.fs.root), "emulated": not host.fs.is_live,
                 "platform": host.platform.to_dict()},
        "model": {"name": report.model.name, "task": report.model.task, "path": str(report.model.root)},
        "config": report.config.to_dict(),
        "power_sensors": {"found": [s.describe() for s in host.power_sensors],
                          "search": dict(host.power_findings)},
        "idle_baseline": {"seconds": report.config.idle_s if report.idle else 0.0, "watts": report.idle_w},
        "runs": [run.to_dict() for run in report.runs],
    }


def write_json(report: ProfileReport, destination: str | Path) -> None:
    """Write the JSON document to a file, or to stdout when ``destination`` is "-"."""
    text = json.dumps(report_dict(report), indent=2, default=str)
    if str(destination) == "-":
        sys.stdout.write(text + "\n")
    else:
        Path(destination).write_text(text + "\n", encoding="utf-8")


CSV_COLUMNS = ("backend", "scenario", "query", "samples", "scheduled_s", "start_s", "end_s", "latency_ms")


def write_csv(report: ProfileReport, destination: str | Path) -> int:
    """One row per measured query of every backend; returns the number of rows."""
    rows = 0
    with Path(destination).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for run in report.runs:
            trace = run.trace
            if trace is None:
                continue
            times = zip(trace.scheduled_ns, trace.start_ns, trace.end_ns, strict=True)
            for index, (due, start, end) in enumerate(times):
                seconds = [f"{(t - report.origin_ns) / 1e9:.6f}" for t in (due, start, end)]
                writer.writerow([run.backend, trace.scenario, index, trace.samples_per_query, *seconds,
                                 f"{(end - due) / 1e6:.4f}"])
                rows += 1
    return rows


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return lines


def _agreement_text(agreement: dict[str, Any]) -> str:
    if agreement.get("status") == "ok":
        return f"{agreement['agree']}/{agreement['images']}"
    return "n/a"


def _power_cells(power: dict[str, Any], subtract_idle: bool) -> tuple[str, str]:
    if power.get("status") != "ok":
        return ("failed", "failed") if power.get("status") == "failed" else ("n/a", "n/a")
    per_inference = power.get("energy_per_inference_above_idle_mj") if subtract_idle else None
    if per_inference is None:
        per_inference = power["energy_per_inference_mj"]
    mark = "*" if power["sensor"].get("simulated") else ""
    return f"{power['mean_w']:.2f}{mark}", f"{per_inference:.2f}{mark}"


def comparison_table(report: ProfileReport) -> list[str]:
    """backend, status, p50, p99, throughput, W, mJ/inference, top-1 agreement."""
    rows = []
    for run in report.runs:
        if run.status != "ok" or run.latency is None:
            rows.append([run.backend, run.status, "-", "-", "-", "-", "-", "-"])
            continue
        watts, millijoules = _power_cells(run.power, report.config.subtract_idle)
        rows.append([run.backend, "ok", f"{run.latency.p('p50'):.3f}", f"{run.latency.p('p99'):.3f}",
                     f"{run.scenario['throughput_per_s']:.1f}", watts, millijoules,
                     _agreement_text(run.agreement)])
    energy = "mJ/inf above idle" if report.config.subtract_idle else "mJ/inf"
    lines = _table(("backend", "status", "p50 ms", "p99 ms", "inf/s", "W", energy, "top-1 vs fp32"), rows)
    if any(r.power.get("status") == "ok" and r.power["sensor"].get("simulated") for r in report.runs):
        lines.append("* SIMULATED power: read from an emulated device tree, not a live sensor")
    return lines


def _latency_line(run: BackendRun) -> str:
    lat = run.latency
    assert lat is not None
    cells = [f"min {lat.min_ms:.3f}", f"mean {lat.mean_ms:.3f}", f"std {lat.std_ms:.3f}"]
    cells += [f"{name} {value:.3f}" for name, value in lat.percentiles_ms.items()]
    return "  ".join([*cells, f"max {lat.max_ms:.3f}"])


def _mlperf_line(run: BackendRun) -> str:
    parts = [f"{name} needs {check['min_queries']}: {'met' if check['met'] else 'NOT met'}"
             for name, check in run.mlperf_min_queries.items()]
    return f"{run.scenario['queries']} queries; " + ", ".join(parts)


def _memory_line(memory: dict[str, Any]) -> str:
    growth = memory.get("growth_mb")
    sign = "+" if (growth or 0) >= 0 else ""
    return (f"RSS {memory.get('rss_start_mb')} -> {memory.get('rss_end_mb')} MB during the run "
            f"({sign}{growth} MB), peak in run {memory.get('peak_during_run_mb')} MB; "
            f"load took RSS {memory.get('rss_before_load_mb')} -> {memory.get('rss_after_load_mb')} MB; "
            f"process peak {memory.get('peak_process_mb')} MB")


def _cold_start_line(cold: dict[str, float] | None) -> str:
    if not cold:
        return "-"
    return (f"load {cold['load_ms']:.1f} ms (select, checksum, runtime load), "
            f"first inference {cold['first_inference_ms']:.2f} ms")


def _scenario_line(run: BackendRun) -> str:
    scenario = run.scenario
    text = (f"{scenario['name']}: {scenario['queries']} queries x {scenario['samples_per_query']} sample(s) "
            f"in {scenario['duration_s']:.3f} s = {scenario['throughput_per_s']:.1f} inferences/s")
    if "missed_latency_bound" in scenario:
        text += (f"; {scenario['missed_latency_bound']} of {scenario['queries']} queries over the "
                 f"{scenario['latency_bound_ms']:g} ms bound")
    return text


def run_summary(run: BackendRun, report: ProfileReport, power_said: bool = False) -> list[str]:
    """The readable per-backend block (``power_said``: the no-sensor reason was printed above)."""
    if run.status != "ok":
        return [f"{run.backend}: {run.status} ({run.reason})"]
    cpu = run.cpu
    artifact = run.artifact or {}
    rows = [
        ("backend", f"{run.backend} ({artifact.get('file')}, {artifact.get('precision')})"),
        ("device", f"{run.device or '-'}; options: {_options_text(run.options)}"),
        ("scenario", _scenario_line(run)),
        ("cold start", _cold_start_line(run.cold_start)),
        ("latency ms", _latency_line(run)),
        ("MLPerf", _mlperf_line(run)),
        ("memory", _memory_line(run.memory)),
        ("cpu", f"{cpu['cpu_seconds']:.2f} s CPU in {cpu['wall_seconds']:.2f} s = "
                f"{cpu['utilisation_percent_of_one_cpu']:.0f}% of one CPU ({cpu['cpus']} CPUs)"),
        ("power", "unavailable (see above)" if power_said and run.power.get("status") == "unavailable"
                  else power_line(run.power, report.config.subtract_idle).removeprefix("power: ")),
        ("thermal", thermal_line(run.thermal).removeprefix("thermal: ")),
        ("top-1", _agreement_line(run.agreement)),
    ]
    rows += [("WARNING", warning) for warning in run.thermal.get("warnings", [])]
    return [f"  {key:<11} {value}" for key, value in rows]


def _options_text(options: dict[str, Any]) -> str:
    def text(value: Any) -> str:
        if isinstance(value, list | tuple):
            return ",".join(str(v) for v in value)
        if isinstance(value, dict):
            return ",".join(f"{k}={v}" for k, v in value.items())
        return str(value)

    shown = [f"{k}={text(v)}" for k, v in options.items() if v not in (None, {}, [])]
    return ", ".join(shown) or "defaults"


def _agreement_line(agreement: dict[str, Any]) -> str:
    if agreement.get("status") == "ok":
        text = (f"{agreement['agree']}/{agreement['images']} sample images agree with "
                f"{agreement['reference']}")
        return text + (f" (differ: {', '.join(agreement['disagree'])})" if agreement["disagree"] else "")
    return f"n/a ({agreement.get('reason')})"


def format_summary(report: ProfileReport) -> str:
    """The text printed at the end of `edgerun profile`."""
    host = report.host
    where = "" if host.fs.is_live else f" [emulated tree {host.fs.root}]"
    lines = [f"edgerun profile: model {report.model.name} ({report.model.task}) on "
             f"{host.platform.summary()}{where}"]
    power_said = len(report.runs) > 1 and host.power_unavailable() is not None
    if len(report.runs) > 1:
        lines += ["", *comparison_table(report), ""]
        lines += [f"  {r.backend}: {r.status}: {r.reason}" for r in report.runs if r.status != "ok"]
    if power_said:
        lines += ["", f"power: unavailable ({host.power_unavailable()})"]
    for run in (r for r in report.runs if r.status == "ok" or len(report.runs) == 1):
        lines += ["", *run_summary(run, report, power_said)]
    if not report.runs or all(r.status != "ok" for r in report.runs):
        lines += ["", "no backend ran"]
    return "\n".join(lines)
