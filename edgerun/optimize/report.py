"""The optimisation report: one JSON document (schema ``edgerun.optimize/1``) and its readable table.

JSON keys: schema, edgerun_version, created_utc, status (written | refused), reason,
  model {name, path, artifact, format, precision}, output {path, name, artifacts[]} | null,
  conversion {precision, method, tool, ...settings}, calibration {source, images, skipped,
  skipped_files[{file, reason}], ignored_non_images, labelled} | null,
  evaluation {source, held_out, images, skipped, labelled, min_agreement, passed, measured_with,
  top1_agreement, top5_overlap, reference_top1_in_top5, max_abs_diff, mean_abs_diff,
  reference_accuracy, candidate_accuracy, disagreements[file]} | {status, reason},
  size {before_bytes, after_bytes, ratio}, latency {status, backend, threads, runs, before{p50_ms,..},
  after{..}, p50_ratio} | {status, reason}, targets[{target, status, tool, install, command,
  produces, manifest_entry, inputs, notes, detail}]
"""

from __future__ import annotations

import datetime as _dt
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__

SCHEMA = "edgerun.optimize/1"


@dataclass
class OptimizeReport:
    """Everything one `edgerun optimize` run did and measured."""

    model: dict[str, Any]
    conversion: dict[str, Any]
    status: str = "written"
    reason: str | None = None
    output: dict[str, Any] | None = None
    calibration: dict[str, Any] | None = None
    evaluation: dict[str, Any] = field(default_factory=dict)
    size: dict[str, Any] = field(default_factory=dict)
    latency: dict[str, Any] = field(default_factory=dict)
    targets: list[dict[str, Any]] = field(default_factory=list)

    @property
    def refused(self) -> bool:
        return self.status == "refused"

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "edgerun_version": __version__,
            "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "status": self.status,
            "reason": self.reason,
            "model": self.model,
            "output": self.output,
            "conversion": self.conversion,
            "calibration": self.calibration,
            "evaluation": self.evaluation,
            "size": self.size,
            "latency": self.latency,
            "targets": self.targets,
        }


def write_json(report: OptimizeReport, destination: str | Path) -> None:
    text = json.dumps(report.to_dict(), indent=2, default=str) + "\n"
    if str(destination) == "-":
        sys.stdout.write(text)
    else:
        Path(destination).write_text(text, encoding="utf-8")


def _mb(count: int | None) -> str:
    return "-" if count is None else f"{count / 1e6:.2f} MB"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _size_row(size: dict[str, Any]) -> list[str]:
    ratio = size.get("ratio")
    return [
        "size",
        _mb(size.get("before_bytes")),
        _mb(size.get("after_bytes")),
        "-" if ratio is None else f"{ratio:.3f}x",
    ]


def _latency_rows(latency: dict[str, Any]) -> list[list[str]]:
    if latency.get("status") != "ok":
        return [["latency", "-", "-", f"n/a ({latency.get('reason', 'not measured')})"]]
    before, after = latency["before"], latency["after"]
    return [
        [
            "latency p50",
            f"{before['p50_ms']:.2f} ms",
            f"{after['p50_ms']:.2f} ms",
            f"{latency['p50_ratio']:.3f}x",
        ],
        [
            "latency p90",
            f"{before['p90_ms']:.2f} ms",
            f"{after['p90_ms']:.2f} ms",
            f"{after['p90_ms'] / before['p90_ms']:.3f}x",
        ],
    ]


def _accuracy_rows(evaluation: dict[str, Any]) -> list[list[str]]:
    if "images" not in evaluation or evaluation.get("status") in ("unavailable", "skipped"):
        return [["accuracy", "-", "-", f"n/a ({evaluation.get('reason', 'not measured')})"]]
    rows = []
    if evaluation.get("reference_accuracy") is not None:
        rows.append(
            [
                "top-1 accuracy",
                _pct(evaluation["reference_accuracy"]),
                _pct(evaluation["candidate_accuracy"]),
                "",
            ]
        )
    if evaluation.get("detection_agreement") is not None:
        rows.append(["detections agree", "", "", _pct(evaluation["detection_agreement"])])
    if evaluation.get("top1_agreement") is not None:
        rows.append(["top-1 agreement", "", "", _pct(evaluation["top1_agreement"])])
        rows.append(["top-5 overlap", "", "", _pct(evaluation.get("top5_overlap"))])
    rows.append(["max |diff|", "", "", f"{evaluation['max_abs_diff']:.4g}"])
    rows.append(["mean |diff|", "", "", f"{evaluation['mean_abs_diff']:.4g}"])
    return rows


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]


def _set_line(label: str, data: dict[str, Any] | None) -> str | None:
    if not data or "source" not in data:
        return None
    text = f"{label}: {data['images']} image(s) from {data['source']}"
    if data.get("skipped"):
        first = data["skipped_files"][0]
        text += f"; {data['skipped']} skipped as undecodable (e.g. {Path(first['file']).name})"
    if data.get("ignored_non_images"):
        text += f"; {data['ignored_non_images']} non-image file(s) ignored"
    if label == "evaluation" and not data.get("held_out", True):
        text += "; NOT held out (same images as calibration: optimistic)"
    return text


def _target_lines(targets: list[dict[str, Any]]) -> list[str]:
    lines = []
    for build in targets:
        lines.append(
            f"target {build['target']}: {build['status']}"
            + (f" - {build['detail']}" if build.get("detail") else "")
        )
        lines.append("  command: " + " ".join(build["command"]))
        if build["status"] != "built":
            lines.append("  then add to manifest.json artifacts: " + json.dumps(build["manifest_entry"]))
    return lines


def _protected_lines(conversion: dict[str, Any]) -> list[str]:
    """One line per layer kept at 16-bit weights by the sensitivity analysis, with its measurement."""
    measured = {s["node"]: s for s in conversion.get("weight_sensitivity_worst", [])}
    lines = []
    for node in conversion.get("protected_layers", []):
        found = measured.get(node)
        detail = (
            f": int8 weights there alone give {found['snr_db']:.1f} dB output SNR, "
            f"{100 * found['noise_share']:.0f}% of all layers' rounding noise"
            if found
            else ""
        )
        lines.append(f"16-bit weights: {node}{detail} (--no-protect: int8)")
    return lines


def format_table(report: OptimizeReport) -> str:
    """The text `edgerun optimize` prints."""
    model, conversion = report.model, report.conversion
    after = conversion.get("precision", "?")
    lines = [
        f"edgerun optimize: {model['name']} ({model.get('artifact')}, {model.get('precision')}) -> "
        f"{after}: {conversion.get('method', '')}"
    ]
    lines += [
        t
        for t in (_set_line("calibration", report.calibration), _set_line("evaluation", report.evaluation))
        if t
    ]
    lines += _protected_lines(conversion)
    rows = [["", model.get("precision", "before"), after, "ratio / value"], _size_row(report.size)]
    rows += _latency_rows(report.latency) + _accuracy_rows(report.evaluation)
    lines += ["", *_table(rows), ""]
    if report.latency.get("status") == "ok":
        lat = report.latency
        lines.append(
            f"latency: {lat['backend']}, {lat['threads'] or 'default'} thread(s), {lat['runs']} runs "
            f"each after {lat['warmup']} warm-up, measured by {lat['measured_by']}"
        )
    lines += _target_lines(report.targets)
    if report.refused:
        lines.append("refused: no model written")
    elif report.output:
        lines.append(f"wrote {report.output['path']}")
    return "\n".join(lines)
