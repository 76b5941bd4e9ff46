"""The web page at / (plain HTML/JS, no build step) and GET /v1/system, the device summary it shows."""

from __future__ import annotations

import asyncio
from functools import lru_cache
from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from .. import __version__
from ..backends.registry import Registry
from ..hal import HostFS, Platform
from ..hal.boards import backend_preference, profile_for
from ..hal.video import list_cameras
from .service import READY, Service

PAGE = Path(__file__).with_name("static") / "index.html"


@lru_cache(maxsize=1)
def _page() -> str:
    return PAGE.read_text(encoding="utf-8")


def device_summary(platform: Platform, registry: Registry, fs: HostFS) -> dict[str, Any]:
    """Platform, the cameras found (and the board's usual one), every backend's availability
    (probes backends and reads sysfs: call off the loop)."""
    backends = []
    for name in registry.order(backend_preference(platform)):
        backend = registry.get(name)
        availability = backend.probe(platform)
        backends.append({"name": name, "available": availability.ok, "reason": availability.reason,
                         "formats": list(backend.formats)})
    info = platform.to_dict()
    info.pop("cpu_flags", None)
    info.pop("libraries", None)
    cameras = [{"node": c.node, "name": c.name, "kind": c.kind, "source": c.source_uri()}
               for c in list_cameras(fs)]
    return {"platform": info, "summary": platform.summary(), "camera": profile_for(platform).camera,
            "cameras": cameras, "backends": backends}


def _models(service: Service) -> list[dict[str, Any]]:
    rows = []
    for row in service.index():
        entry = {"name": row["name"], "state": row["state"], "task": None, "backend": None}
        if row["state"] == READY:
            runner = service.runner(row["name"])
            entry.update(task=runner.package.task, backend=runner.backend)
        rows.append(entry)
    return rows


def web_router(service: Service) -> APIRouter:
    router = APIRouter(tags=["web"])
    device: dict[str, Any] = {}

    @router.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(_page(), headers={"Cache-Control": "no-cache"})

    @router.get("/v1/system", name="system")
    async def system() -> dict[str, Any]:
        """Version, platform, backends (available or why not), models and their state."""
        if not device:  # detection reads files and probes backends once per app
            device.update(await asyncio.to_thread(
                lambda: device_summary(service.platform, service.registry,
                                       HostFS(service.config.settings.host_root))))
        return {"version": __version__, "ready": service.ready(), **device,
                "models": _models(service)}

    return router
