"""Video streams in the service: /v1/streams (start, list, inspect, stop), MJPEG and SSE feeds, metrics."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from pydantic import BaseModel, ConfigDict, Field

from ..camera.capture import Capture, OpenOptions, open_capture
from ..camera.pipeline import DEGRADED, Infer, PipelineOptions, StreamPipeline, filtered
from ..camera.pump import ENDED, RUNNING, STOPPED, Backoff, FramePump
from ..camera.sinks import Sink, output_sink
from ..camera.uri import SourceSpec, parse_source
from ..errors import EdgerunError, InvalidInputError
from ..predictor import Result
from ..repository import DEFAULT_DETECTOR
from .config import StreamConfig, StreamOptions
from .errors import ModelNotReadyError
from .service import Service
from .wire import ErrorBody

log = logging.getLogger(__name__)

BOUNDARY = "edgerunframe"
IDLE_S = 1.0            # feeds wake up this often to notice a disconnect or a shutdown
KEEPALIVE_S = 10.0      # SSE comment when no event came for this long
EVENT_QUEUE = 64        # SSE events buffered per subscriber (oldest dropped beyond)
STOP_TIMEOUT_S = 15.0


class StreamLimitError(EdgerunError):
    """The configured number of streams is already running."""

    http_status = 429


class StreamNotFoundError(EdgerunError):
    http_status = 404


class StreamCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    source: str = Field(min_length=1, max_length=2048, description="rtsp://, http(s)://, v4l2://, "
                        "csi://N, file:// or a path, an image folder or glob")
    model: str = Field(default=DEFAULT_DETECTOR, min_length=1, max_length=256)
    options: StreamOptions = Field(default_factory=StreamOptions)


class Feed:
    """Items from a pipeline thread to asyncio subscribers, each with its own bounded queue."""

    def __init__(self, loop: asyncio.AbstractEventLoop, depth: int) -> None:
        self._loop = loop
        self._depth = depth
        self._queues: set[asyncio.Queue[Any]] = set()

    @property
    def active(self) -> bool:
        return bool(self._queues)

    def publish(self, item: Any) -> None:
        """Thread-safe; the oldest item of a full queue is dropped (slow viewers skip, never lag)."""
        with contextlib.suppress(RuntimeError):  # a closed loop: the app is gone
            self._loop.call_soon_threadsafe(self._fan_out, item)

    def _fan_out(self, item: Any) -> None:
        for queue in self._queues:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(item)

    @contextmanager
    def subscribe(self) -> Iterator[asyncio.Queue[Any]]:
        queue: asyncio.Queue[Any] = asyncio.Queue(self._depth)
        self._queues.add(queue)
        try:
            yield queue
        finally:
            self._queues.discard(queue)

    def close(self) -> None:
        self.publish(None)


class Stream:
    """One running stream: the pipeline and its MJPEG and event feeds."""

    def __init__(self, stream_id: str, request: StreamCreate, spec: SourceSpec,
                 loop: asyncio.AbstractEventLoop, infer: Infer, host_options: OpenOptions,
                 sinks: Sequence[Sink] = ()) -> None:
        self.id, self.request, self.spec = stream_id, request, spec
        self.created_at = time.time()
        self.frames = Feed(loop, 1)
        self.events = Feed(loop, EVENT_QUEUE)
        self.last_jpeg: tuple[bytes, int] | None = None
        options = request.options
        finite = not spec.live
        pump = FramePump(lambda: open_capture(spec, host_options), f"stream-{stream_id}",
                         pace=finite and options.realtime, lossless=finite and not options.realtime,
                         loop=options.loop, backoff=Backoff(0.5, 30.0))
        kept = filtered(infer, options.labels, options.min_score)
        self.pipeline = StreamPipeline(
            pump, kept, PipelineOptions(max_fps=options.max_fps, jpeg_quality=options.jpeg_quality,
                                         lossless=finite and not options.realtime), stream_id=stream_id,
            sinks=sinks,
            on_event=self.events.publish, on_jpeg=self._jpeg, wants_jpeg=lambda: self.frames.active)

    def _jpeg(self, jpeg: bytes, seq: int) -> None:
        self.last_jpeg = (jpeg, seq)
        self.frames.publish((jpeg, seq))

    def snapshot(self) -> dict[str, Any]:
        return {"id": self.id, "source": self.spec.redacted(), "kind": self.spec.kind,
                "model": self.request.model, "created_at": round(self.created_at, 3),
                **self.pipeline.snapshot()}

    def stop(self) -> bool:
        stopped = self.pipeline.stop(STOP_TIMEOUT_S)
        self.frames.close()
        self.events.close()
        return stopped


class StreamManager:
    """Starts and stops streams, at most ``config.max_streams`` at once; inference goes through the
    service's model workers (shared with HTTP requests, so a non-thread-safe session stays safe)."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.streams: dict[str, Stream] = {}
        self.closing = False
        self._opening = 0
        self._ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def limit(self) -> int:
        return self.service.config.max_streams

    def get(self, stream_id: str) -> Stream:
        stream = self.streams.get(stream_id)
        if stream is None:
            known = ", ".join(self.streams) or "none"
            raise StreamNotFoundError(f"no stream {stream_id!r}; streams: {known}")
        return stream

    def _infer(self, model: str, timeout_s: float) -> Infer:
        loop = self._loop
        assert loop is not None

        def infer(rgb: Any) -> Result:
            runner = self.service.runner(model)
            predictor = runner.predictor
            assert predictor is not None
            future = asyncio.run_coroutine_threadsafe(runner.call(lambda: predictor.predict(rgb), timeout_s),
                                                      loop)
            return future.result(timeout_s + 1.0)[0]

        return infer

    def _check(self, request: StreamCreate) -> SourceSpec:
        if self.closing or self.service.stopping:
            raise ModelNotReadyError("the service is shutting down")
        if len(self.streams) + self._opening >= self.limit:
            raise StreamLimitError(f"stream limit reached: {len(self.streams)} running, max_streams is "
                                   f"{self.limit}; stop one with DELETE /v1/streams/{{id}}")
        runner = self.service.runner(request.model)  # 404 unknown / not loaded, 503 loading
        if runner.predictor is None:
            raise InvalidInputError(f"model {request.model} has no image pipeline (task "
                                    f"{runner.package.task!r}); streams need a classifier or a detector")
        return parse_source(request.source)

    async def create(self, request: StreamCreate, validate: bool = True, output: str | None = None) -> Stream:
        """Start a stream. ``validate`` opens the source and decodes a frame first (4xx if that fails);
        otherwise the stream keeps retrying with backoff until the source appears. ``output`` (the
        operator's config only, never a request) also writes annotated frames to a file or folder."""
        self._loop = asyncio.get_running_loop()
        spec = self._check(request)
        platform = await asyncio.to_thread(lambda: self.service.platform)  # detected once per service
        options = OpenOptions(request.options.open_timeout_s, request.options.read_timeout_s,
                              self.service.config.settings.host_root, platform=platform)
        self._opening += 1
        try:
            capture: Capture | None = None
            if validate:
                capture = await asyncio.to_thread(open_capture, spec, options)
            stream_id = f"s{next(self._ids)}"
            sinks = [output_sink(Path(output), request.options.max_fps)] if output else []
            stream = Stream(stream_id, request, spec, self._loop,
                            self._infer(request.model, self.service.config.request_timeout_s), options, sinks)
            stream.pipeline.start(capture)
            self.streams[stream_id] = stream
        finally:
            self._opening -= 1
        log.info("stream %s started: %s with model %s", stream_id, spec.redacted(), request.model)
        return stream

    async def delete(self, stream_id: str) -> None:
        stream = self.get(stream_id)
        del self.streams[stream_id]
        if not await asyncio.to_thread(stream.stop):
            log.error("stream %s: a thread did not stop within %.0f s", stream_id, STOP_TIMEOUT_S)
        log.info("stream %s stopped", stream_id)

    async def close(self) -> None:
        """Stop every stream (at shutdown, before the models are released)."""
        self.closing = True
        await asyncio.gather(*(self.delete(i) for i in list(self.streams)), return_exceptions=True)

    def problems(self) -> list[str]:
        """Streams that are not delivering: reconnecting, failing inference, or stuck starting."""
        return [f"stream {s.id} ({s.spec.redacted()}): {s.pipeline.state}"
                + (f": {s.pipeline.error}" if s.pipeline.error else "")
                for s in self.streams.values() if s.pipeline.state not in (RUNNING, ENDED, STOPPED)]

    async def start_configured(self) -> None:
        """Start the config file's streams once the models are ready (sources retried until they appear)."""
        while not self.service.started and not self.service.stopping:
            await asyncio.sleep(0.1)
        for index, configured in enumerate(self.service.config.streams):
            try:
                await self.create(StreamCreate.model_validate(configured.request_body()), validate=False,
                                  output=configured.output)
            except Exception as exc:
                log.error("config stream %d (%s) not started: %s", index, configured.source, exc)


class StreamCollector:
    """Prometheus collector reading the streams' state at scrape time (no stale per-stream series)."""

    def __init__(self, manager: StreamManager) -> None:
        self.manager = manager

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        up = GaugeMetricFamily("edgerun_stream_up", "1 while the stream's source delivers frames",
                               labels=["stream", "model", "kind"])
        state = GaugeMetricFamily("edgerun_stream_state", "1 for the stream's current state",
                                  labels=["stream", "state"])
        fps = GaugeMetricFamily("edgerun_stream_fps", "Frames per second", labels=["stream", "stage"])
        frames = CounterMetricFamily("edgerun_stream_frames", "Frames by outcome",
                                     labels=["stream", "outcome"])
        reconnects = CounterMetricFamily("edgerun_stream_reconnects", "Source reconnections",
                                         labels=["stream"])
        stages = GaugeMetricFamily("edgerun_stream_stage_milliseconds",
                                   "Recent mean milliseconds per pipeline stage", labels=["stream", "stage"])
        for stream in list(self.manager.streams.values()):
            snap = stream.pipeline.snapshot()
            up.add_metric([stream.id, stream.request.model, stream.spec.kind],
                          1.0 if snap["state"] in (RUNNING, DEGRADED) else 0.0)
            state.add_metric([stream.id, snap["state"]], 1.0)
            for stage, value in snap["fps"].items():
                fps.add_metric([stream.id, stage], value)
            for outcome, count in snap["frames"].items():
                frames.add_metric([stream.id, outcome], count)
            reconnects.add_metric([stream.id], snap["reconnects"])
            for stage, ms in snap["stages_ms"].items():
                stages.add_metric([stream.id, stage], ms)
        yield from (up, state, fps, frames, reconnects, stages)


def _mjpeg_part(jpeg: bytes, seq: int) -> bytes:
    head = (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n"
            f"X-Frame-Sequence: {seq}\r\n\r\n").encode()
    return head + jpeg + b"\r\n"


async def _mjpeg(manager: StreamManager, stream: Stream, request: Request) -> AsyncIterator[bytes]:
    with stream.frames.subscribe() as queue:
        if stream.last_jpeg is not None:
            yield _mjpeg_part(*stream.last_jpeg)
        while not _ending(manager, stream):
            try:
                item = await asyncio.wait_for(queue.get(), IDLE_S)
            except asyncio.TimeoutError:
                if await request.is_disconnected():
                    return
                continue
            if item is None:
                return
            yield _mjpeg_part(*item)


def _ending(manager: StreamManager, stream: Stream) -> bool:
    """Feeds end when the stream is deleted or the server shuts down (SIGTERM must not wait on them)."""
    return manager.closing or manager.service.stopping or stream.id not in manager.streams


def _sse(event: str, data: Mapping[str, Any], event_id: int | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, default=float)}\n\n".encode()


async def _events(manager: StreamManager, stream: Stream, request: Request) -> AsyncIterator[bytes]:
    with stream.events.subscribe() as queue:
        state = stream.pipeline.state
        yield _sse("state", {"stream": stream.id, "state": state, "error": stream.pipeline.error})
        quiet_since = time.monotonic()
        while not _ending(manager, stream):
            try:
                item = await asyncio.wait_for(queue.get(), IDLE_S)
            except asyncio.TimeoutError:
                item = ...
            if item is None or (item is ... and await request.is_disconnected()):
                return
            if stream.pipeline.state != state:
                state = stream.pipeline.state
                yield _sse("state", {"stream": stream.id, "state": state, "error": stream.pipeline.error})
            if item is not ...:
                quiet_since = time.monotonic()
                yield _sse("result", item, item["seq"])
            elif time.monotonic() - quiet_since > KEEPALIVE_S:
                quiet_since = time.monotonic()
                yield b": keepalive\n\n"


_NO_BUFFERING = {"Cache-Control": "no-cache, no-store", "X-Accel-Buffering": "no"}


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    texts = {400: "bad request body or source URI", 401: "missing or wrong API key",
             404: "unknown stream, or model not loaded", 422: "the source cannot be opened or decoded",
             429: "max_streams streams are already running", 503: "model loading or service stopping"}
    return {status: {"model": ErrorBody, "description": texts[status]} for status in (401, *statuses)}


def stream_router(manager: StreamManager) -> APIRouter:
    router = APIRouter(tags=["streams"])

    @router.post("/v1/streams", status_code=201, name="create_stream",
                 responses=_errors(400, 404, 422, 429, 503))
    async def create(body: StreamCreate) -> dict[str, Any]:
        """Open the source (4xx if it cannot be opened or decoded) and start inference on it."""
        return (await manager.create(body)).snapshot()

    @router.get("/v1/streams", name="list_streams", responses=_errors())
    async def streams() -> dict[str, Any]:
        return {"max_streams": manager.limit,
                "streams": [s.snapshot() for s in list(manager.streams.values())]}

    @router.get("/v1/streams/{stream_id}", name="get_stream", responses=_errors(404))
    async def get(stream_id: str) -> dict[str, Any]:
        """State, FPS, frame counters, mean stage timings (ms) and the last result."""
        return manager.get(stream_id).snapshot()

    @router.delete("/v1/streams/{stream_id}", name="delete_stream", responses=_errors(404))
    async def delete(stream_id: str) -> dict[str, Any]:
        await manager.delete(stream_id)
        return {"id": stream_id, "state": STOPPED}

    @router.get("/v1/streams/{stream_id}/mjpeg", name="stream_mjpeg", response_class=StreamingResponse,
                responses=_errors(404))
    async def mjpeg(stream_id: str, request: Request) -> StreamingResponse:
        """Annotated frames as multipart/x-mixed-replace JPEG (what an <img> tag or FFmpeg can read)."""
        stream = manager.get(stream_id)
        return StreamingResponse(_mjpeg(manager, stream, request), headers=_NO_BUFFERING,
                                 media_type=f"multipart/x-mixed-replace; boundary={BOUNDARY}")

    @router.get("/v1/streams/{stream_id}/events", name="stream_events", response_class=StreamingResponse,
                responses=_errors(404))
    async def events(stream_id: str, request: Request) -> StreamingResponse:
        """Server-sent events: 'result' per processed frame (id = frame sequence), 'state' on changes."""
        stream = manager.get(stream_id)
        return StreamingResponse(_events(manager, stream, request), headers=_NO_BUFFERING,
                                 media_type="text/event-stream")

    @router.get("/v1/health", name="health")
    async def health() -> Response:
        """Readiness with details: 'degraded' when a stream's source or inference is failing (still 200:
        the server is up and serving); 503 only while the models are not ready."""
        ready = manager.service.ready()
        problems = manager.problems()
        status = "not ready" if not ready else "degraded" if problems else "ok"
        return JSONResponse({"ready": ready, "status": status, "problems": problems,
                             "streams": len(manager.streams)}, status_code=200 if ready else 503)

    return router


def install_streams(app: FastAPI, service: Service) -> StreamManager:
    """Add the stream routes, their metrics, and stream start-up/shutdown to ``app``'s lifespan."""
    manager = StreamManager(service)
    app.state.streams = manager
    app.include_router(stream_router(manager))
    service.metrics.registry.register(StreamCollector(manager))
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app_: FastAPI) -> AsyncIterator[Any]:
        async with inner(app_) as state:
            manager._loop = asyncio.get_running_loop()
            starting = asyncio.create_task(manager.start_configured())
            try:
                yield state
            finally:
                starting.cancel()
                await asyncio.gather(starting, return_exceptions=True)
                await manager.close()  # streams stop before the service releases the models

    app.router.lifespan_context = lifespan
    return manager


def with_streams(config: Any, *streams: Mapping[str, Any] | StreamConfig) -> Any:
    """``config`` (a ServeConfig) with more start-up streams."""
    return replace(config, streams=(*config.streams, *streams))
