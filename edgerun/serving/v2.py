"""KServe V2 / Open Inference Protocol routes plus Triton's config, statistics and repository extensions."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio.to_thread
import numpy as np
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from .. import __version__
from ..backends.base import Tensors
from ..errors import InvalidInputError
from ..types import to_v2_datatype
from . import wire
from .batching import batch_rows
from .body import read_body
from .codec import (
    HEADER_LENGTH,
    DecodedRequest,
    OutputTensor,
    classification,
    decode_request,
    encode_response,
)
from .config import triton_settings
from .execution import VERSION, ModelRunner
from .service import Service

EXTENSIONS = ["binary_tensor_data", "classification", "model_configuration", "model_repository",
              "statistics"]
JSON_IN_THREAD_BYTES = 256 * 1024   # decode bigger JSON bodies off the event loop
CPU_BACKENDS = ("onnxruntime", "litert")
UNSUPPORTED_PARAMETERS = ("sequence_id", "sequence_start", "sequence_end")


def _describe(runner: ModelRunner) -> str:
    return "; ".join(s.describe() for s in runner.session.input_specs)


def check_inputs(inputs: Tensors, runner: ModelRunner) -> None:
    """400 unless names, datatypes, shapes and batch size fit the model."""
    specs = {s.name: s for s in runner.session.input_specs}
    unknown = sorted(set(inputs) - set(specs))
    missing = sorted(set(specs) - set(inputs))
    if unknown or missing:
        problem = f"unknown input(s) {unknown}" if unknown else f"missing input(s) {missing}"
        raise InvalidInputError(f"{problem}; model {runner.name} takes: {_describe(runner)}")
    for name, spec in specs.items():
        array = inputs[name]
        if array.dtype != spec.dtype:
            raise InvalidInputError(f"input {name!r} must be {to_v2_datatype(spec.dtype)}, "
                                    f"got {to_v2_datatype(array.dtype)} ({spec.describe()})")
        if not spec.accepts_shape(array.shape):
            raise InvalidInputError(f"input {name!r} has shape {list(array.shape)}; model expects "
                                    f"{spec.describe()}")
    if runner.max_batch_size:
        rows = batch_rows(inputs)
        if not 1 <= rows <= runner.max_batch_size:
            raise InvalidInputError(f"batch size {rows} is outside 1..{runner.max_batch_size} "
                                    f"(max_batch_size of model {runner.name})")


def _flag(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidInputError(f"{what} must be true or false, got {value!r}")
    return value


def _plan_outputs(decoded: DecodedRequest, runner: ModelRunner) -> list[tuple[str, bool, int]]:
    """(name, binary, classification count) of each output to return, in request order."""
    parameters = decoded.request.parameters or {}
    default_binary = decoded.raw_binary or _flag(parameters.get("binary_data_output", False),
                                                 "binary_data_output")
    names = [s.name for s in runner.session.output_specs]
    if decoded.request.outputs is None:
        return [(name, default_binary, 0) for name in names]
    plan = []
    for out in decoded.request.outputs:
        if out.name not in names:
            raise InvalidInputError(f"unknown output {out.name!r}; model {runner.name} has {names}")
        p = out.parameters or {}
        if "shared_memory_region" in p:
            raise InvalidInputError("the shared memory extension is not supported")
        count = p.get("classification", 0)
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise InvalidInputError(f"output {out.name!r}: classification must be an integer >= 0")
        plan.append((out.name, _flag(p.get("binary_data", default_binary), "binary_data"), count))
    return plan


def _check_parameters(decoded: DecodedRequest) -> None:
    parameters = decoded.request.parameters or {}
    for found in (name for name in UNSUPPORTED_PARAMETERS if parameters.get(name)):
        raise InvalidInputError(f"parameter {found!r} needs Triton's sequence extension, "
                                "which edgerun does not implement")


def _timeout_s(decoded: DecodedRequest, limit: float) -> float:
    """The server limit, or the request's shorter "timeout" parameter (microseconds)."""
    value = (decoded.request.parameters or {}).get("timeout")
    if value is None:
        return limit
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise InvalidInputError("parameter 'timeout' must be a positive integer (microseconds)")
    return min(limit, value / 1e6)


def _outputs(plan: list[tuple[str, bool, int]], results: Tensors, runner: ModelRunner) -> list[OutputTensor]:
    tensors = []
    for name, binary, count in plan:
        array = np.asarray(results[name])
        if count and array.dtype.kind not in "iuf":
            raise InvalidInputError(f"output {name!r}: classification needs a numeric output")
        if count:
            array = classification(array, count, runner.package.labels)
        tensors.append(OutputTensor(name, array, binary))
    return tensors


async def _decode(request: Request, body: bytes, runner: ModelRunner) -> DecodedRequest:
    header_length = request.headers.get(HEADER_LENGTH)
    specs = runner.session.input_specs
    if header_length is None and len(body) > JSON_IN_THREAD_BYTES:
        return await anyio.to_thread.run_sync(decode_request, body, header_length, specs)
    return decode_request(body, header_length, specs)


def _response(body: bytes, header_length: int | None) -> Response:
    if header_length is None:
        return Response(body, media_type="application/json")
    return Response(body, media_type="application/octet-stream",
                    headers={"Inference-Header-Content-Length": str(header_length)})


async def run_inference(service: Service, request: Request, runner: ModelRunner) -> Response:
    """Decode, validate, execute, encode; statistics and stage metrics on the way."""
    started = time.perf_counter_ns()
    try:
        decoded = await _decode(request, await read_body(request, service.config.max_body_bytes), runner)
        _check_parameters(decoded)
        check_inputs(decoded.inputs, runner)
        plan = _plan_outputs(decoded, runner)
        timeout = _timeout_s(decoded, service.config.request_timeout_s)
        decoded_at = time.perf_counter_ns()
        results, timing = await runner.infer(decoded.inputs, timeout)
        inferred_at = time.perf_counter_ns()
        header: dict[str, object] = {"model_name": runner.name, "model_version": VERSION}
        if decoded.request.id is not None:
            header["id"] = decoded.request.id
        body, header_length = encode_response(header, _outputs(plan, results, runner))
    except Exception:
        runner.stats.request_done(False, time.perf_counter_ns() - started)
        raise
    done = time.perf_counter_ns()
    runner.stats.request_done(True, done - started, timing.queue_ns, decoded_at - started, timing.infer_ns,
                              done - inferred_at)
    stages = service.metrics.stage_seconds
    stages.labels(runner.name, "decode").observe((decoded_at - started) / 1e9)
    stages.labels(runner.name, "encode").observe((done - inferred_at) / 1e9)
    return _response(body, header_length)


def model_metadata(runner: ModelRunner) -> dict[str, Any]:
    return {"name": runner.name, "versions": [VERSION], "platform": runner.platform,
            "inputs": runner.tensor_metadata(runner.session.input_specs),
            "outputs": runner.tensor_metadata(runner.session.output_specs)}


def _triton_type(datatype: str) -> str:
    return "TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}"


def model_config(runner: ModelRunner) -> dict[str, Any]:
    """Triton's model configuration JSON (what perf_analyzer and tritonclient read)."""
    batch = runner.max_batch_size

    def tensors(specs: tuple[Any, ...]) -> list[dict[str, Any]]:
        rows = runner.tensor_metadata(specs)
        return [{"name": r["name"], "data_type": _triton_type(str(r["datatype"])),
                 "dims": list(r["shape"])[1:] if batch else r["shape"]} for r in rows]

    config: dict[str, Any] = {
        "name": runner.name, "platform": runner.platform, "backend": runner.backend,
        "max_batch_size": batch, "version_policy": {"latest": {"num_versions": 1}},
        "input": tensors(runner.session.input_specs), "output": tensors(runner.session.output_specs),
        "instance_group": [{"name": f"{runner.name}_0", "count": runner.workers,
                            "kind": "KIND_CPU" if runner.backend in CPU_BACKENDS else "KIND_MODEL"}],
    }
    if runner.config.dynamic_batching:
        config["dynamic_batching"] = {"max_queue_delay_microseconds": runner.config.max_queue_delay_us,
                                      "preferred_batch_size": []}
    config.update(triton_settings(runner.config, runner.backend, runner.load_options,
                                  runner.backend in CPU_BACKENDS))
    return config


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
    _add_model_route(router, "/infer", infer, "model_infer", ["POST"], **_infer_doc())
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
