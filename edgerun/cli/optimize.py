"""`edgerun optimize`: parse options, run the optimisation, print the report (a table, or JSON)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .argtypes import count, fraction, positive_int

TARGET_CHOICES = ("tensorrt", "edgetpu", "rknn", "litert")
METHOD_CHOICES = ("percentile", "minmax", "entropy")


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add the `optimize` subcommand (--json prints the report as JSON instead of the table)."""
    parser = commands.add_parser(
        "optimize",
        parents=[common],
        help="int8/fp16 conversion with an accuracy report, per-target compiler steps",
        description="Make an optimised model package: int8 (static, calibrated) or fp16, compared "
        "with the fp32 model on held-out images; or the compiler step for a target.",
    )
    parser.add_argument("model", help="model name or package folder")
    precision = parser.add_mutually_exclusive_group()
    precision.add_argument("--int8", action="store_const", const="int8", dest="precision")
    precision.add_argument("--fp16", action="store_const", const="fp16", dest="precision")
    _add_int8_options(parser)
    _add_target_and_output_options(parser)
    parser.set_defaults(handler=cmd_optimize)


def _add_int8_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--calibration", metavar="DIR_OR_GLOB", help="calibration images (--int8)")
    parser.add_argument(
        "--eval",
        dest="evaluation",
        metavar="DIR_OR_GLOB",
        help="held-out images for the comparison (sub-folders named after classes: labelled)",
    )
    parser.add_argument(
        "--per-channel",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="int8 weights per output channel (default) or per tensor",
    )
    parser.add_argument("--calibration-method", choices=METHOD_CHOICES, default="percentile")
    parser.add_argument("--percentile", type=float, default=99.99, help="for --calibration-method percentile")
    parser.add_argument(
        "--keep-float",
        action="append",
        default=[],
        metavar="NODE_OR_OP",
        help="leave this node (or every node of this op type) unquantised; a Conv/Gemm keeps 16-bit "
        "weights instead (onnxruntime would re-quantise float ones); repeatable",
    )
    parser.add_argument(
        "--protect",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="keep 16-bit weights for a layer whose int8 rounding alone makes a quarter or more of all "
        "layers' output noise on the calibration images (default: on)",
    )
    parser.add_argument("--max-calibration", type=count, default=300, help="images used at most (300)")
    parser.add_argument(
        "--min-agreement",
        type=fraction,
        default=None,
        help="refuse to write a model whose top-1 agreement is below this (0.8)",
    )


def _add_target_and_output_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", choices=TARGET_CHOICES, default=None)
    parser.add_argument("--soc", default="rk3588", help="RKNN target SoC (rk3588)")
    parser.add_argument("--trt-version", default="10.3.0", help="TensorRT version the cache is for (10.3.0)")
    parser.add_argument("--output", type=Path, default=None, help="package folder to write")
    parser.add_argument("--force", action="store_true", help="replace an existing output folder")
    parser.add_argument("--latency-runs", type=count, default=50, help="profiler runs per model (0: skip)")
    parser.add_argument("--threads", type=positive_int, default=None, help="CPU threads for the runtime")


def _request(args: argparse.Namespace, threads: int | None):  # -> OptimizeRequest
    from ..optimize.latency import LatencyPlan
    from ..optimize.onnx_tools import Int8Settings
    from ..optimize.runner import DEFAULT_MIN_AGREEMENT, OptimizeRequest

    return OptimizeRequest(
        model=args.model,
        precision=args.precision,
        calibration=args.calibration,
        evaluation=args.evaluation,
        target=args.target,
        output=args.output,
        int8=Int8Settings(
            per_channel=args.per_channel,
            method=args.calibration_method,
            percentile=args.percentile,
            keep_float=tuple(args.keep_float),
            protect=args.protect,
        ),
        min_agreement=DEFAULT_MIN_AGREEMENT if args.min_agreement is None else args.min_agreement,
        max_calibration=args.max_calibration,
        latency=LatencyPlan(runs=args.latency_runs, threads=threads),
        soc=args.soc,
        trt_version=args.trt_version,
        force=args.force,
    )


def cmd_optimize(args: argparse.Namespace) -> int:
    from ..optimize.report import format_table, write_json
    from ..optimize.runner import optimize
    from .common import settings_from

    settings = settings_from(args)
    report = optimize(_request(args, settings.threads), settings)
    if args.json:
        write_json(report, "-")
    else:
        print(format_table(report))
    if report.refused:
        print(f"edgerun: error: {report.reason}", file=sys.stderr)
        return 1
    return 0
