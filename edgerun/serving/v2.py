"""KServe V2 / Open Inference Protocol routes plus Triton's config, statistics and repository extensions."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from .. import __version__
from ..errors import InvalidInputError
from . import dataplane, wire
from .body import read_infer_body
from .codec import HEADER_LENGTH, Buffer, DecodedRequest, decode_request, encode_response
from .dataplane import InferResult, model_config, model_metadata
from .errors import handled_error
from .execution import ModelRunner
from .service import Service

EXTENSIONS = ["binary_tensor_data", "classification", "model_configuration", "model_repository",
              "statistics"]
JSON_IN_THREAD_BYTES = 256 * 1024   # decode bigger JSON bodies off the event loop
JSON_HEADERS = [(b"content-type", b"application/json")]
BINARY_HEADERS = [(b"content-type", b"application/octet-stream")]


class _Encoded(Response):
    """A response whose headers are built from constants (no per-request header processing)."""

    def __init__(self, body: bytes, header_length: int | None) -> None:
        self.status_code = 200
        self.body = body
        self.background = None
        extra = JSON_HEADERS if header_length is None else [
            *BINARY_HEADERS, (b"inference-header-content-length", str(header_length).encode())]
        self.raw_headers = [(b"content-length", str(len(body)).encode()), *extra]


class DirectRoute(APIRoute):
    """A route documented like the others but called without FastAPI's per-request dependency
    solving and response validation: the endpoint gets the Request and the path values."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint = self.endpoint

        async def handle(request: Request) -> Response:
            response: Response = await endpoint(request, **request.path_params)
            return response

        return handle


def infer_target(path: str) -> tuple[str, str | None] | None:
    """(model, version) when ``path`` is /v2/models/{m}[/versions/{v}]/infer, else None."""
    parts = path.split("/")
    if len(parts) not in (5, 7) or parts[:3] != ["", "v2", "models"] or parts[-1] != "infer" \
            or not all(parts[3:-1]):
        return None
    if len(parts) == 5:
        return parts[3], None
    return (parts[3], parts[5]) if parts[4] == "versions" else None


class DirectInfer:
    """ASGI middleware (inside ServiceMiddleware, so keys, limits, metrics and the access log still
    apply): V2 infer requests go straight to :func:`run_inference`, skipping route matching and
    Starlette's/FastAPI's per-request wrappers, which the profile showed as about a fifth of the
    event loop's time per request. Everything else passes through."""

    def __init__(self, app: ASGIApp, service: Service, routes: list[BaseRoute]) -> None:
        self.app = app
        self.service = service
        self._routes = {getattr(r, "name", ""): r for r in routes}

    def _match(self, scope: Scope) -> tuple[str, str | None, BaseRoute] | None:
        """(model, version, route) of POST /v2/models/{m}[/versions/{v}]/infer, else None."""
        if scope["type"] != "http" or scope["method"] != "POST" or scope.get("root_path"):
            return None
        target = infer_target(scope["path"])
        if target is None:
            return None
        name, version = target
        return name, version, self._routes["model_infer" if version is None else "model_infer_version"]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        target = self._match(scope)
        if target is None:
            await self.app(scope, receive, send)
            return
        name, version, route = target
        scope["route"] = route
        scope["path_params"] = {"model_name": name} if version is None else {
            "model_name": name, "model_version": version}
        request = Request(scope, receive, send)
        try:
            runner = self.service.runner(name, version)
            response: Response = await run_inference(self.service, request, runner)
        except Exception as exc:
            handled = await handled_error(request, exc)
            if handled is None:
                raise
            response = handled
        await response(scope, receive, send)


def encode_http(result: InferResult) -> Response:
    """A data-plane result as a V2 HTTP response (JSON, or JSON then binary outputs)."""
    return _Encoded(*encode_response(result.header(), result.outputs))


async def _decode(body: Buffer, header_length: str | None, runner: ModelRunner) -> DecodedRequest:
    specs = runner.session.input_specs
    if header_length is None and len(body) > JSON_IN_THREAD_BYTES:
        return await anyio.to_thread.run_sync(decode_request, body, header_length, specs)
    return decode_request(body, header_length, specs)


async def run_inference(service: Service, request: Request, runner: ModelRunner) -> Response:
    """HTTP in and out around the data plane: read and decode the body, then dataplane.infer."""
    started = time.perf_counter_ns()
    header_length = request.headers.get(HEADER_LENGTH)
    try:
        body = await read_infer_body(request, service.config.max_body_bytes, header_length)
        decoded = await _decode(body, header_length, runner)
    except Exception:
        dataplane.request_failed(runner, started)
        raise
    return await dataplane.infer(runner, decoded, service.config.request_timeout_s, started, encode_http)


def _infer_doc() -> dict[str, Any]:
    """OpenAPI of the infer routes: JSON or binary-extension bodies both ways (parsed by hand)."""
    binary = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
    header_length = {"schema": {"type": "integer", "minimum": 0}, "description": "binary tensor "
                     "extension: bytes of JSON at the start of the body (raw tensor bytes follow)"}
    header_parameter = {"name": "Inference-Header-Content-Length", "in": "header", **header_length}
    result = {"model": wire.InferResponse, "content": binary,
              "headers": {"Inference-Header-Content-Length": header_length},
              "description": "inference result: JSON, or JSON then binary outputs when the "
                             "Inference-Header-Content-Length response header is present"}
    body = {"required": True, "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/InferRequest"}}, **binary}}
    return {"responses": {200: result, **wire.ERROR_RESPONSES},
            "openapi_extra": {"parameters": [header_parameter], "requestBody": body}}


ModelHandler = Callable[[Request, str, str | None], Awaitable[Any]]


def _add_model_route(router: APIRouter, suffix: str, handler: ModelHandler, name: str,
                     methods: list[str], **kwargs: Any) -> None:
    """Register ``/v2/models/{model_name}[/versions/{model_version}]<suffix>``."""

    async def unversioned(request: Request, model_name: str) -> Any:
        return await handler(request, model_name, None)

    async def versioned(request: Request, model_name: str, model_version: str) -> Any:
        return await handler(request, model_name, model_version)

    base = "/v2/models/{model_name}"
    router.add_api_route(base + suffix, unversioned, methods=methods, name=name, **kwargs)
    router.add_api_route(base + "/versions/{model_version}" + suffix, versioned, methods=methods,
                         name=f"{name}_version", **kwargs)


def _health_routes(router: APIRouter, service: Service) -> None:
    @router.get("/v2", response_model=wire.ServerMetadata, name="server_metadata")
    async def server_metadata() -> dict[str, Any]:
        return {"name": "edgerun", "version": __version__, "extensions": EXTENSIONS}

    @router.get("/v2/health/live", response_model=wire.LiveResponse, name="server_live")
    async def live() -> dict[str, bool]:
        return {"live": True}

    @router.get("/v2/health/ready", response_model=wire.ReadyResponse, name="server_ready",
                responses={503: {"model": wire.ReadyResponse, "description": "not ready"}})
    async def ready() -> JSONResponse:
        ok = service.ready()
        return JSONResponse({"ready": ok}, status_code=200 if ok else 503)


def _stats_route(router: APIRouter, service: Service) -> None:
    @router.get("/v2/models/stats", response_model=wire.ModelStatsResponse, name="all_model_stats")
    async def all_stats() -> dict[str, Any]:
        runners = [service.runner(name) for name in service.served()]
        return {"model_stats": [r.stats.to_dict() for r in runners]}


def _model_routes(router: APIRouter, service: Service) -> None:
    errors = wire.ERROR_RESPONSES

    async def metadata(request: Request, name: str, version: str | None) -> dict[str, Any]:
        return model_metadata(service.runner(name, version))

    async def ready(request: Request, name: str, version: str | None) -> JSONResponse:
        ok = service.model_ready(name)
        if ok:
            service.runner(name, version)  # 404 for an unknown version
        return JSONResponse({"name": name, "ready": ok}, status_code=200 if ok else 503)

    async def infer(request: Request, name: str, version: str | None) -> Response:
        return await run_inference(service, request, service.runner(name, version))

    async def config(request: Request, name: str, version: str | None) -> dict[str, Any]:
        return model_config(service.runner(name, version))

    async def stats(request: Request, name: str, version: str | None) -> dict[str, Any]:
        return {"model_stats": [service.runner(name, version).stats.to_dict()]}

    _add_model_route(router, "", metadata, "model_metadata", ["GET"],
                     response_model=wire.ModelMetadata, responses=errors)
    not_ready = {503: {"model": wire.ModelReadyResponse, "description": "known but not ready"}}
    _add_model_route(router, "/ready", ready, "model_ready", ["GET"],
                     response_model=wire.ModelReadyResponse, responses={**errors, **not_ready})
    _add_model_route(router, "/infer", infer, "model_infer", ["POST"], route_class_override=DirectRoute,
                     **_infer_doc())
    _add_model_route(router, "/config", config, "model_config", ["GET"],
                     response_model=wire.ModelConfigResponse, responses=errors)
    _add_model_route(router, "/stats", stats, "model_stats", ["GET"],
                     response_model=wire.ModelStatsResponse, responses=errors)


async def _optional_json(request: Request, model: type[Any]) -> Any:
    body = await request.body()
    if not body.strip():
        return model()
    try:
        return model.model_validate_json(body)
    except ValueError as exc:
        raise InvalidInputError(f"invalid request body: {exc}") from None


def _repository_routes(router: APIRouter, service: Service) -> None:
    errors = wire.ERROR_RESPONSES

    @router.post("/v2/repository/index", response_model=list[wire.RepositoryModel],
                 name="repository_index", responses=errors)
    async def index(request: Request) -> list[dict[str, str]]:
        body = await _optional_json(request, wire.RepositoryIndexRequest)
        return service.index(ready_only=body.ready)

    done = {200: {"description": "done (empty body)"}, **errors}

    @router.post("/v2/repository/models/{model_name}/load", name="repository_load", responses=done,
                 response_class=Response)
    async def load(request: Request, model_name: str) -> Response:
        body = await _optional_json(request, wire.RepositoryLoadRequest)
        if body.parameters:
            raise InvalidInputError("load takes no parameters: models come from the server's "
                                    "repository only (no config override, no file upload)")
        await service.load(model_name)
        return Response(status_code=200)

    @router.post("/v2/repository/models/{model_name}/unload", name="repository_unload", responses=done,
                 response_class=Response)
    async def unload(request: Request, model_name: str) -> Response:
        await _optional_json(request, wire.RepositoryLoadRequest)
        await service.unload(model_name)
        return Response(status_code=200)


def v2_router(service: Service) -> APIRouter:
    router = APIRouter()
    _health_routes(router, service)
    _stats_route(router, service)  # before /v2/models/{model_name} so "stats" is not a model name
    _model_routes(router, service)
    _repository_routes(router, service)
    return router
