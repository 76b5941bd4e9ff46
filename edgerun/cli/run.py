"""`edgerun run`: a model on a camera, stream or video; annotated output, JSON lines, or served live."""

from __future__ import annotations

import argparse
import dataclasses
import json
import signal
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError
from ..repository import DEFAULT_DETECTOR
from .argtypes import positive_float, positive_int
from .common import add_backend_arguments


def label_list(text: str) -> list[str]:
    """'person, car' -> ['person', 'car']; an empty list is refused."""
    labels = [part.strip() for part in text.split(",") if part.strip()]
    if not labels:
        raise argparse.ArgumentTypeError("give one or more labels separated by commas")
    return labels


def unit_interval(text: str) -> float:
    """A score between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must lie between 0 and 1, got {text}")
    return value


def _sinks(args: argparse.Namespace, fps: float | None) -> list[Any]:
    from ..camera.sinks import JsonLinesSink, output_sink

    sinks: list[Any] = []
    if args.json_lines is not None:
        sinks.append(JsonLinesSink(args.json_lines))
    if args.output is not None:
        sinks.append(output_sink(args.output, fps))
    return sinks


def _check_outputs(args: argparse.Namespace) -> None:
    """--output and --json-lines are writable, checked before the model loads and the source opens."""
    from ..camera.sinks import VIDEO_CODECS
    from ..outputs import check_output_file, check_output_folder

    if args.json_lines is not None:
        check_output_file(args.json_lines, "--json-lines")
    if args.output is not None and args.output.suffix.lower() in VIDEO_CODECS:
        check_output_file(args.output, "--output")
    elif args.output is not None and not args.output.suffix:
        check_output_folder(args.output, "--output")


def _summary(pipeline: Any, seconds: float) -> dict[str, Any]:
    snap = pipeline.snapshot()
    frames = snap["frames"]
    return {"state": snap["state"], "error": snap["error"], "seconds": round(seconds, 3),
            "frames": frames, "fps": round(frames["processed"] / seconds, 2) if seconds > 0 else 0.0,
            "stages_ms": snap["stages_ms"], "reconnects": snap["reconnects"]}


def _print_summary(summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    frames = summary["frames"]
    print(f"{frames['processed']} frame(s) processed in {summary['seconds']:.2f} s "
          f"({summary['fps']:.1f} fps); {frames['captured']} captured, {frames['dropped']} dropped")
    print("mean ms: " + ", ".join(f"{k} {v:.1f}" for k, v in summary["stages_ms"].items()))
    if summary["error"]:
        print(f"last error: {summary['error']}")


def _stop_on_sigterm() -> None:
    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def run_local(args: argparse.Namespace) -> int:
    import time

    from ..camera.capture import OpenOptions, open_capture
    from ..camera.pipeline import PipelineOptions, StreamPipeline, filtered
    from ..camera.pump import FramePump
    from ..camera.uri import parse_source
    from ..hal import HostFS, detect
    from ..predictor import Predictor
    from .common import load_options_from, repository_from, settings_from

    spec = parse_source(args.source)
    settings = settings_from(args)
    _check_outputs(args)
    platform = detect(HostFS(settings.host_root))  # once: the model load and every (re)open share it
    options = OpenOptions(args.open_timeout, args.open_timeout, settings.host_root, platform=platform)
    lossless = not spec.live and not args.realtime
    with Predictor.open(args.model or DEFAULT_DETECTOR, backend=args.backend, settings=settings,
                        repository=repository_from(settings), task="auto", platform=platform,
                        options=load_options_from(args, settings)) as predictor:
        capture = open_capture(spec, options)
        sinks = _sinks(args, capture.fps)
        pump = FramePump(lambda: open_capture(spec, options), "run", lossless=lossless,
                         pace=args.realtime and not spec.live, loop=args.loop)
        infer = filtered(predictor.predict, args.labels, args.min_score)
        pipeline = StreamPipeline(pump, infer, sinks=sinks, options=PipelineOptions(
            max_fps=args.max_fps, max_frames=args.max_frames, lossless=lossless))
        started = time.monotonic()
        _stop_on_sigterm()
        try:
            pipeline.start(capture)
            while not pipeline.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            pipeline.stop()
        _print_summary(_summary(pipeline, time.monotonic() - started), args.json)
    return 0


def run_served(args: argparse.Namespace) -> int:
    from ..serving.config import ServeConfig, checked
    from .common import backend_option_values, load_options_from, settings_from
    from .serve import run_service

    if args.output is not None or args.json_lines is not None or args.max_frames is not None:
        raise InvalidInputError("--serve shows the stream at http://HOST:PORT/ and /v1/streams; "
                                "--output, --json-lines and --max-frames are for runs without --serve")
    options: dict[str, Any] = {"loop": args.loop, "realtime": True, "open_timeout_s": args.open_timeout,
                               "labels": args.labels, "min_score": args.min_score}
    if args.max_fps:
        options["max_fps"] = args.max_fps
    model = args.model or DEFAULT_DETECTOR
    load_options_from(args, settings_from(args))  # bad options fail here, before the service starts
    values = backend_option_values(args)
    device = values.pop("device", None)
    config = checked(lambda: ServeConfig(
        server={"host": args.host, "port": args.port},
        models=({"name": model, "backend": args.backend, "threads": args.threads,
                 "device": device, "options": values},),
        streams=({"source": args.source, "model": model, "options": options},)), "command line")
    if args.root is not None:
        settings = dataclasses.replace(config.settings, host_root=args.root)
        config = dataclasses.replace(config, settings=settings)
    return run_service(config, args.verbose)


def cmd_run(args: argparse.Namespace) -> int:
    return run_served(args) if args.serve else run_local(args)


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "run", parents=[common], help="run a model on a camera, stream, video or image folder",
        description="Capture, inference and annotation run on their own threads. Live sources hand "
                    "inference the newest frame (dropping, never lagging) and reconnect with backoff; "
                    "files are processed frame by frame unless --realtime.")
    parser.add_argument("--source", required=True, metavar="URI",
                        help="v4l2:///dev/video0 or 0, csi://0, rtsp://..., http(s)://... (MJPEG), "
                             "file://video.mp4 or a path, an image folder or a glob")
    parser.add_argument("--model", default=None, help=f"model name or path (default: {DEFAULT_DETECTOR})")
    add_backend_arguments(parser)
    parser.add_argument("--threads", type=positive_int, default=None, help="CPU threads for the runtime")
    parser.add_argument("--output", type=Path, default=None, metavar="out.mp4|DIR",
                        help="annotated video (.mp4/.avi/.mkv) or a folder of JPEG frames")
    parser.add_argument("--json-lines", type=Path, default=None, metavar="FILE",
                        help="one JSON object per processed frame")
    parser.add_argument("--max-frames", type=positive_int, default=None, help="stop after N frames")
    parser.add_argument("--max-fps", type=positive_float, default=None, help="cap inferences per second")
    parser.add_argument("--realtime", action="store_true",
                        help="files: read at the file's frame rate and drop frames like a camera")
    parser.add_argument("--loop", action="store_true", help="files and folders: start again at the end")
    parser.add_argument("--open-timeout", type=positive_float, default=5.0, metavar="SECONDS",
                        help="open and read timeout for network sources (default 5)")
    parser.add_argument("--labels", type=label_list, default=None, metavar="A,B",
                        help="keep only detections (or classes) with these labels, e.g. person,car")
    parser.add_argument("--min-score", type=unit_interval, default=0.0, metavar="S",
                        help="keep only detections scoring at least S (0..1)")
    parser.add_argument("--serve", action="store_true",
                        help="serve the stream live (web page at /, MJPEG, SSE) instead of writing files")
    parser.add_argument("--host", default="127.0.0.1", help="with --serve: address to bind")
    parser.add_argument("--port", type=int, default=8000, help="with --serve: port (0 picks a free one)")
    parser.set_defaults(handler=cmd_run, model=None)
