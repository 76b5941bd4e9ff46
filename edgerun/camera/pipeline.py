"""Pipelined inference: capture, inference and annotation on their own threads, with stage timings and FPS."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..predictor import ClassificationResult, Result
from ..processing.detect import keep_detections
from .annotate import draw_result, encode_jpeg
from .capture import Capture, cv2_module
from .pump import ENDED, RUNNING, Frame, FramePump, RateMeter, Slot
from .sinks import Sink

log = logging.getLogger(__name__)

Infer = Callable[[np.ndarray], Result]   # RGB uint8 frame -> a Predictor result
DEGRADED = "degraded"
EWMA_ALPHA = 0.1


def filtered(infer: Infer, labels: Collection[str] | None = None, min_score: float = 0.0) -> Infer:
    """``infer`` keeping only detections (or top classes) with one of ``labels`` and >= ``min_score``."""
    if not labels and min_score <= 0.0:
        return infer
    wanted = set(labels or ())

    def run(rgb: np.ndarray) -> Result:
        result = infer(rgb)
        if isinstance(result, ClassificationResult):
            classes = [c for c in result.classes
                       if c.score >= min_score and (not wanted or c.label in wanted)]
            return dataclasses.replace(result, classes=classes)
        return dataclasses.replace(result, detections=keep_detections(result.detections, wanted, min_score))

    return run


def to_rgb(bgr: np.ndarray) -> np.ndarray:
    """A contiguous RGB copy of a BGR frame (OpenCV's SIMD conversion: several times faster than a
    numpy copy of a reversed view, and the pre-processing then uses it without copying again)."""
    return cv2_module().cvtColor(bgr, cv2_module().COLOR_BGR2RGB)


@dataclass
class StageTimes:
    """Exponentially weighted mean milliseconds per stage (recent frames count most)."""

    means: dict[str, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, timings_ms: dict[str, float]) -> None:
        with self.lock:
            for stage, ms in timings_ms.items():
                old = self.means.get(stage)
                self.means[stage] = ms if old is None else old + EWMA_ALPHA * (ms - old)

    def snapshot(self) -> dict[str, float]:
        with self.lock:
            return {stage: round(ms, 3) for stage, ms in self.means.items()}


@dataclass(frozen=True)
class Processed:
    frame: Frame
    result: Result
    timings_ms: dict[str, float]


@dataclass(frozen=True)
class PipelineOptions:
    """``max_fps`` caps inference; ``max_frames`` stops after that many; ``lossless`` processes every
    frame of a file (no drops); ``jpeg_quality`` is for the MJPEG feed."""

    max_fps: float | None = None
    max_frames: int | None = None
    lossless: bool = False
    jpeg_quality: int = 80


class StreamPipeline:
    """Frames from a FramePump -> ``infer`` -> annotation, sinks and callbacks, each stage on a thread."""

    def __init__(self, pump: FramePump, infer: Infer, options: PipelineOptions | None = None, *,
                 sinks: Sequence[Sink] = (), on_event: Callable[[dict[str, Any]], None] | None = None,
                 on_jpeg: Callable[[bytes, int], None] | None = None,
                 wants_jpeg: Callable[[], bool] = lambda: False, stream_id: str | None = None) -> None:
        self.pump = pump
        self.name = pump.name
        self.stream_id = stream_id or pump.name  # the "stream" field of each event
        self.options = options or PipelineOptions()
        self._infer = infer
        self._sinks = list(sinks)
        self._on_event, self._on_jpeg, self._wants_jpeg = on_event, on_jpeg, wants_jpeg
        self._annotate_slot: Slot[Processed] = Slot(self.options.lossless)
        self._stop = threading.Event()
        self.done = threading.Event()
        self.times = StageTimes()
        self.rate = RateMeter()
        self.processed = 0
        self.infer_failures = 0
        self.infer_error = ""
        self.last_event: dict[str, Any] | None = None
        self._threads: list[threading.Thread] = []

    def start(self, capture: Capture | None = None) -> None:
        self._threads = [threading.Thread(target=self._infer_loop, name=f"{self.name}-infer", daemon=True),
                         threading.Thread(target=self._annotate_loop, name=f"{self.name}-annotate",
                                          daemon=True)]
        for thread in self._threads:
            thread.start()
        self.pump.start(capture)

    # ---- inference ---------------------------------------------------------------------------
    def _next_frame(self, last_start: float) -> Frame | None:
        if self.options.max_fps:
            self._stop.wait(max(0.0, last_start + 1.0 / self.options.max_fps - time.monotonic()))
        return self.pump.next(timeout=0.25)

    def _infer_loop(self) -> None:
        last_start = 0.0
        try:
            while not self._stop.is_set() and not self._reached_max():
                frame = self._next_frame(last_start)
                if frame is None:
                    if not self.pump.alive and self.pump.slot.closed:
                        break  # the source ended (or the pump was stopped) and every frame was taken
                    continue
                last_start = time.monotonic()
                processed = self._run_model(frame)
                if processed is not None:
                    while not self._annotate_slot.put(processed) and not self._stop.is_set():
                        pass
        finally:
            self._annotate_slot.close()

    def _reached_max(self) -> bool:
        return self.options.max_frames is not None and self.processed >= self.options.max_frames

    def _run_model(self, frame: Frame) -> Processed | None:
        started = time.monotonic()
        try:
            result = self._infer(to_rgb(frame.image))
        except Exception as exc:  # model unloaded, timeout, runtime error: keep the stream, report it
            self.infer_failures += 1
            if str(exc) != self.infer_error:
                log.warning("%s: inference failed: %s", self.name, exc)
            self.infer_error = str(exc)
            return None
        self.infer_error = ""
        self.processed += 1
        timings = {"capture": frame.read_ms, "wait": (started - frame.monotonic) * 1000}
        timings.update({k: v for k, v in result.timings_ms.items() if k != "decode"})
        return Processed(frame, result, timings)

    # ---- annotation and output ----------------------------------------------------------------
    def _annotate_loop(self) -> None:
        try:
            while True:
                item = self._annotate_slot.take(timeout=0.25)
                if item is None:
                    if self._annotate_slot.closed:
                        break
                    continue
                self._emit(item)
        except Exception:
            log.exception("%s: annotation failed", self.name)
            self.infer_error = "internal error in the annotation thread (see the log)"
        finally:
            self.done.set()

    def _emit(self, item: Processed) -> None:
        timings = dict(item.timings_ms)
        jpeg_wanted = self._on_jpeg is not None and self._wants_jpeg()
        image = None
        if jpeg_wanted or any(sink.wants_image for sink in self._sinks):
            started = time.perf_counter()
            image = draw_result(item.frame.image, item.result, self.rate.rate())
            timings["annotate"] = (time.perf_counter() - started) * 1000
        jpeg = None
        if jpeg_wanted and image is not None:
            started = time.perf_counter()
            jpeg = encode_jpeg(image, self.options.jpeg_quality)
            timings["encode"] = (time.perf_counter() - started) * 1000
        event = self._event(item, timings)
        for sink in self._sinks:
            sink.write(event, image)
        self.rate.tick()
        self.times.add({**timings, "latency": event["latency_ms"]})
        self.last_event = event
        if jpeg is not None and self._on_jpeg is not None:
            self._on_jpeg(jpeg, item.frame.seq)
        if self._on_event is not None:
            self._on_event(event)

    def _event(self, item: Processed, timings: dict[str, float]) -> dict[str, Any]:
        payload = item.result.to_dict()
        payload.pop("timings_ms", None)
        return {"stream": self.stream_id, "seq": item.frame.seq, "captured_at": round(item.frame.wall, 3),
                "latency_ms": round((time.monotonic() - item.frame.monotonic) * 1000, 3),
                **payload, "timings_ms": {k: round(v, 3) for k, v in timings.items()}}

    # ---- control and state --------------------------------------------------------------------
    def wait(self, timeout: float | None = None) -> bool:
        """Block until every frame was processed (source ended or max_frames reached)."""
        return self.done.wait(timeout)

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop all threads, release the capture and close the sinks. True if every thread ended."""
        self._stop.set()
        pump_ok = self.pump.stop(timeout)
        self._annotate_slot.close()
        for thread in self._threads:
            thread.join(timeout)
        for sink in self._sinks:
            sink.close()
        self._sinks = []
        return pump_ok and not any(t.is_alive() for t in self._threads)

    @property
    def state(self) -> str:
        state = self.pump.state
        if state == RUNNING and self.infer_error:
            return DEGRADED
        if state == ENDED and not self.done.is_set():
            return RUNNING  # the last frames are still being processed
        return state

    @property
    def error(self) -> str:
        return self.pump.error or self.infer_error

    def snapshot(self) -> dict[str, Any]:
        """State, rates, counters, mean stage timings and the last result (JSON-ready)."""
        return {
            "state": self.state, "error": self.error,
            "fps": {"capture": round(self.pump.rate.rate(), 2), "processed": round(self.rate.rate(), 2)},
            "frames": {"captured": self.pump.frames, "processed": self.processed,
                       "dropped": self.pump.dropped + self._annotate_slot.dropped,
                       "failed": self.infer_failures},
            "reconnects": self.pump.reconnects,
            "stages_ms": self.times.snapshot(),
            "last_result": self.last_event,
        }
