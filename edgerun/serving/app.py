"""The app factory: create_app(config) -> FastAPI with V2 + image routes, /metrics, limits and lifespan."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Response
from fastapi.openapi.utils import get_openapi

from .. import __version__
from . import wire
from .config import LifecycleHooks, ServeConfig
from .docs import install_docs
from .errors import install_error_handlers
from .image import image_router
from .middleware import ServiceMiddleware, document_refusals
from .service import Service
from .streams import install_streams
from .telemetry import install_telemetry
from .v2 import DirectInfer, v2_router
from .web import web_router


def _lifespan(service: Service) -> Any:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Start-up: the server answers at once (live; ready = 503) while models load and warm up;
        # Service.load_startup calls hooks.on_ready when every start-up model is ready.
        loading = asyncio.create_task(service.load_startup())
        grpc = await start_grpc(app, service)
        try:
            yield
        finally:
            if grpc is not None:
                await grpc.stop(service.config.graceful_timeout_s)
            # Shutdown: uvicorn has stopped accepting and drained in-flight requests.
            service.begin_shutdown()
            await asyncio.gather(loading, return_exceptions=True)
            await service.close()

    return lifespan


async def start_grpc(app: FastAPI, service: Service) -> Any:
    """The KServe V2 gRPC front end when the config asks for one; its port in app.state.grpc_port."""
    if service.config.grpc_port is None:
        return None
    from .grpc_v2 import GrpcFrontEnd

    front_end = GrpcFrontEnd(service)
    app.state.grpc_port = await front_end.start(service.config.host, service.config.grpc_port)
    return front_end


def _openapi(app: FastAPI) -> Any:
    """The generated schema plus the V2 request body models (parsed by hand, so not auto-added)."""

    def build() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, routes=app.routes,
                                 description=app.description)
            request = wire.InferRequest.model_json_schema(ref_template="#/components/schemas/{model}")
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update(request.pop("$defs", {}))
            components["InferRequest"] = request
            document_refusals(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    return build


def _metrics_route(app: FastAPI, service: Service) -> None:
    @app.get("/metrics", name="metrics", response_class=Response,
             responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}})
    async def metrics() -> Response:
        body, content_type = service.metrics.render()
        return Response(body, media_type=content_type)


def create_app(config: ServeConfig, hooks: LifecycleHooks | None = None) -> FastAPI:
    """A FastAPI app serving ``config.models``; models load in the background once it starts."""
    service = Service(config, hooks)
    app = FastAPI(title="edgerun", version=__version__, lifespan=_lifespan(service),
                  docs_url=None, redoc_url=None,  # served by install_docs, without a CDN
                  description="KServe V2 inference protocol (with Triton's binary tensor, "
                              "classification, configuration, statistics and repository extensions) "
                              "and an image upload endpoint.")
    app.state.service = service
    install_error_handlers(app)
    install_docs(app)
    v2 = v2_router(service)
    app.include_router(v2)
    app.include_router(image_router(service))
    app.include_router(web_router(service))
    install_streams(app, service)
    install_telemetry(app, service)
    _metrics_route(app, service)
    app.add_middleware(DirectInfer, service=service, routes=v2.routes)  # inside ServiceMiddleware
    app.add_middleware(ServiceMiddleware, service=service)
    app.openapi = _openapi(app)  # type: ignore[method-assign]
    return app
