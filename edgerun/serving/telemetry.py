"""GET /v1/telemetry and /v1/telemetry/events (SSE, 1 per second), and wiring the telemetry sampler
into an app: started and stopped with it, its collector in /metrics, model executions recorded."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import StreamingResponse

from ..errors import EdgerunError
from ..telemetry.prometheus import TelemetryCollector
from ..telemetry.sampler import TelemetrySampler
from ..telemetry.summary import telemetry_json
from .service import Service
from .wire import ErrorBody

EVENT_PERIOD_S = 1.0
_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in ((400, "bad query parameter"), (401, "missing or wrong API key"),
                         (404, "telemetry is disabled in the service config"))
}
DEFAULTS = {"enabled": True, "power_period_s": 0.1, "thermal_period_s": 1.0}
_NO_BUFFERING = {"Cache-Control": "no-cache, no-store", "X-Accel-Buffering": "no"}


class TelemetryDisabledError(EdgerunError):
    """Telemetry was turned off in the service config."""

    http_status = 404


def telemetry_settings(service: Service, **overrides: Any) -> dict[str, Any]:
    """enabled / power_period_s / thermal_period_s: the service config's ``telemetry`` section
    where it has one, else the defaults; explicit arguments win."""
    section = getattr(service.config, "telemetry", None)
    settings = {key: getattr(section, key, default) for key, default in DEFAULTS.items()}
    settings.update({key: value for key, value in overrides.items() if value is not None})
    return settings


def _wrap_lifespan(app: FastAPI, sampler: TelemetrySampler) -> None:
    """Run the sampler for as long as the app's own lifespan."""
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(running: FastAPI) -> AsyncIterator[Any]:
        sampler.start()
        try:
            async with inner(running) as state:
                yield state
        finally:
            await asyncio.to_thread(sampler.stop)

    app.router.lifespan_context = lifespan


def install_telemetry(app: FastAPI, service: Service, enabled: bool | None = None,
                      power_period_s: float | None = None,
                      thermal_period_s: float | None = None) -> TelemetrySampler | None:
    """Add the telemetry routes; with telemetry enabled, also the sampler, its metrics and the
    execution recorder. Returns the sampler (None when disabled)."""
    settings = telemetry_settings(service, enabled=enabled, power_period_s=power_period_s,
                                  thermal_period_s=thermal_period_s)
    sampler = None
    if settings["enabled"]:
        sampler = TelemetrySampler(service.config.settings.host_root, settings["power_period_s"],
                                   settings["thermal_period_s"])
        service.metrics.executions = sampler.recorder
        service.metrics.registry.register(TelemetryCollector(sampler))
        _wrap_lifespan(app, sampler)
    app.state.telemetry = sampler
    app.include_router(telemetry_router(service, sampler))
    return sampler


def _need(sampler: TelemetrySampler | None) -> TelemetrySampler:
    if sampler is None:
        raise TelemetryDisabledError("telemetry is disabled in the service config (telemetry.enabled)")
    return sampler


async def _events(sampler: TelemetrySampler, service: Service, request: Request) -> AsyncIterator[bytes]:
    seq = 0
    while not service.stopping and not await request.is_disconnected():
        body = await asyncio.to_thread(telemetry_json, sampler)
        seq += 1
        yield f"id: {seq}\nevent: telemetry\ndata: {json.dumps(body, default=float)}\n\n".encode()
        await asyncio.sleep(EVENT_PERIOD_S)


def telemetry_router(service: Service, sampler: TelemetrySampler | None) -> APIRouter:
    router = APIRouter(tags=["telemetry"])

    @router.get("/v1/telemetry", name="telemetry", responses=_ERRORS)
    async def telemetry(history: bool = False) -> dict[str, Any]:
        """Power per sensor and rail, energy, temperatures, throttling, CPU frequency and load,
        per-model rate, latency and energy per inference over the last minute, and why anything
        is missing. ``?history=true`` adds the last minutes at the thermal period."""
        return await asyncio.to_thread(telemetry_json, _need(sampler), history)

    @router.get("/v1/telemetry/events", name="telemetry_events", response_class=StreamingResponse,
                responses={200: {"content": {"text/event-stream": {}},
                                 "description": "one `telemetry` event per second"}, **_ERRORS})
    async def events(request: Request) -> StreamingResponse:
        """Server-sent events: one ``telemetry`` event (the body of GET /v1/telemetry) per second."""
        return StreamingResponse(_events(_need(sampler), service, request), headers=_NO_BUFFERING,
                                 media_type="text/event-stream")

    return router
