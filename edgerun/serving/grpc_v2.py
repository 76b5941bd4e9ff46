"""KServe V2 gRPC front end (GRPCInferenceService) over the same data plane as the HTTP routes.

Opt-in with ``--grpc-port`` (``grpc_port`` in the config file). The protocol classes are the ones
tritonclient ships (``tritonclient.grpc.service_pb2``: Triton's superset of KServe's
grpc_predict_v2.proto, which is what tritonclient.grpc and ``perf_analyzer -i grpc`` speak), so
the front end needs ``pip install 'edgerun[grpc]'``; both imports happen only when it starts.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

from .. import __version__
from ..errors import EdgerunError, InvalidInputError
from ..types import to_v2_datatype
from . import dataplane
from .codec import DecodedRequest, binary_data, element_count, tensor_from_binary, tensor_from_json
from .dataplane import InferResult
from .execution import ModelRunner
from .service import Service
from .wire import InferRequest, RequestInput, RequestOutput

log = logging.getLogger(__name__)

EXTENSIONS = ["binary_tensor_data", "classification", "model_configuration", "statistics"]
STATUS_BY_HTTP = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 404: "NOT_FOUND",
                  413: "RESOURCE_EXHAUSTED", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}
CONTENTS_FIELD = {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents",
                  "INT32": "int_contents", "INT64": "int64_contents", "UINT8": "uint_contents",
                  "UINT16": "uint_contents", "UINT32": "uint_contents", "UINT64": "uint64_contents",
                  "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents"}


def _protocol() -> tuple[Any, Any, Any]:
    """(grpc.aio, service_pb2, service_pb2_grpc), imported on first use."""
    try:
        import grpc
        from tritonclient.grpc import service_pb2, service_pb2_grpc
    except ImportError as exc:
        raise InvalidInputError("the gRPC front end needs grpcio and tritonclient's protocol classes: "
                                "pip install 'edgerun[grpc]'") from exc
    return grpc, service_pb2, service_pb2_grpc


def parameters_dict(parameters: Any) -> dict[str, Any]:
    """A protobuf map<string, InferParameter> as plain values."""
    return {key: getattr(value, value.WhichOneof("parameter_choice"))
            for key, value in parameters.items() if value.WhichOneof("parameter_choice")}


def _from_contents(tensor: Any, shape: list[int]) -> np.ndarray:
    field = CONTENTS_FIELD.get(tensor.datatype)
    if field is None:
        raise InvalidInputError(f"input {tensor.name!r}: {tensor.datatype} data must travel in "
                                "raw_input_contents")
    values = list(getattr(tensor.contents, field))
    if tensor.datatype != "BYTES":
        item = RequestInput.model_construct(name=tensor.name, shape=shape, datatype=tensor.datatype,
                                            parameters=None, data=values)
        return tensor_from_json(item)
    if len(values) != element_count(shape):
        raise InvalidInputError(f"input {tensor.name!r}: shape {shape} needs {element_count(shape)} "
                                f"elements, bytes_contents has {len(values)}")
    return np.array(values, dtype=object).reshape(shape)


def decode_grpc(request: Any) -> DecodedRequest:
    """A ModelInferRequest as the data plane's DecodedRequest (raw contents decode in place)."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidInputError(f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs")
    inputs: dict[str, np.ndarray] = {}
    items = []
    for index, tensor in enumerate(request.inputs):
        if tensor.name in inputs:
            raise InvalidInputError(f"input {tensor.name!r} appears twice")
        parameters = parameters_dict(tensor.parameters)
        if "shared_memory_region" in parameters:
            raise InvalidInputError(f"input {tensor.name!r}: the shared memory extension is not supported")
        shape = [int(d) for d in tensor.shape]
        if any(d < 0 for d in shape):
            raise InvalidInputError(f"input {tensor.name!r}: shape {shape} has a negative dim")
        inputs[tensor.name] = (tensor_from_binary(tensor.name, tensor.datatype, shape, memoryview(raw[index]))
                               if raw else _from_contents(tensor, shape))
        items.append(RequestInput.model_construct(name=tensor.name, shape=shape, datatype=tensor.datatype,
                                                  parameters=parameters, data=None))
    if not items:
        raise InvalidInputError("the request has no inputs")
    outputs = [RequestOutput.model_construct(name=o.name, parameters=parameters_dict(o.parameters))
               for o in request.outputs] or None
    body = InferRequest.model_construct(id=request.id or None, parameters=parameters_dict(request.parameters),
                                        inputs=items, outputs=outputs)
    return DecodedRequest(body, inputs)


def encoder(service_pb2: Any) -> Callable[[InferResult], Any]:
    """Data-plane results as ModelInferResponse, every output in raw_output_contents."""

    def encode(result: InferResult) -> Any:
        response = service_pb2.ModelInferResponse(model_name=result.model_name,
                                                  model_version=result.model_version, id=result.id or "")
        for out in result.outputs:
            response.outputs.add(name=out.name, datatype=to_v2_datatype(out.array.dtype),
                                 shape=[int(d) for d in out.array.shape])
            response.raw_output_contents.append(bytes(binary_data(out.array)))
        return response

    return encode


class GrpcFrontEnd:
    """A grpc.aio server answering GRPCInferenceService from the service's models."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.port = 0
        self._server: Any = None

    async def start(self, host: str, port: int) -> int:
        grpc, service_pb2, service_pb2_grpc = _protocol()
        self._server = grpc.aio.server(options=[
            ("grpc.max_receive_message_length", self.service.config.max_body_bytes),
            ("grpc.max_send_message_length", -1)])
        servicer = _servicer_class(grpc, service_pb2, service_pb2_grpc)(self.service)
        service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, self._server)
        self.port = self._server.add_insecure_port(f"{host}:{port}")
        if not self.port:
            raise OSError(f"gRPC front end could not bind {host}:{port}")
        await self._server.start()
        log.info("KServe V2 gRPC on %s:%d", host, self.port)
        return self.port

    async def stop(self, grace_s: float) -> None:
        if self._server is not None:
            await self._server.stop(grace_s)


def _servicer_class(grpc: Any, pb: Any, pb_grpc: Any) -> type:
    """The servicer, built against the lazily imported protocol modules."""

    class Servicer(pb_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc, name-defined]
        def __init__(self, service: Service) -> None:
            self.service = service
            key = service.config.api_key
            self._key = key.encode() if key else None
            self._encode = encoder(pb)

        async def _guard(self, context: Any, call: Callable[[], Awaitable[Any]]) -> Any:
            """Run ``call`` after the API key check; edgerun errors become gRPC status codes."""
            try:
                self._check_key(context)
                return await call()
            except EdgerunError as exc:
                code = getattr(grpc.StatusCode, STATUS_BY_HTTP.get(exc.http_status, "INTERNAL"))
                await context.abort(code, str(exc))

        def _check_key(self, context: Any) -> None:
            if self._key is None:
                return
            metadata = dict(context.invocation_metadata() or ())
            scheme, _, token = str(metadata.get("authorization", "")).partition(" ")
            offered = token.strip() if scheme.lower() == "bearer" else str(metadata.get("x-api-key", ""))
            if not hmac.compare_digest(offered.encode(), self._key):
                from .errors import UnauthorizedError

                raise UnauthorizedError("missing or wrong API key: send metadata 'authorization: "
                                        "Bearer <key>' or 'x-api-key: <key>'")

        def _runner(self, name: str, version: str) -> ModelRunner:
            return self.service.runner(name, version or None)

        async def ServerLive(self, request: Any, context: Any) -> Any:  # noqa: N802 (proto names)
            return pb.ServerLiveResponse(live=True)

        async def ServerReady(self, request: Any, context: Any) -> Any:  # noqa: N802
            return pb.ServerReadyResponse(ready=self.service.ready())

        async def ModelReady(self, request: Any, context: Any) -> Any:  # noqa: N802
            async def call() -> Any:
                ready = self.service.model_ready(request.name)
                if ready:
                    self._runner(request.name, request.version)
                return pb.ModelReadyResponse(ready=ready)
            return await self._guard(context, call)

        async def ServerMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
            return pb.ServerMetadataResponse(name="edgerun", version=__version__, extensions=EXTENSIONS)

        async def ModelMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
            async def call() -> Any:
                meta = dataplane.model_metadata(self._runner(request.name, request.version))
                return _parse(pb.ModelMetadataResponse(), meta)
            return await self._guard(context, call)

        async def ModelConfig(self, request: Any, context: Any) -> Any:  # noqa: N802
            async def call() -> Any:
                config = dataplane.model_config(self._runner(request.name, request.version))
                return pb.ModelConfigResponse(config=_parse(_model_config_class()(), config))
            return await self._guard(context, call)

        async def ModelStatistics(self, request: Any, context: Any) -> Any:  # noqa: N802
            async def call() -> Any:
                names = [request.name] if request.name else self.service.served()
                stats = [self._runner(name, request.version).stats.to_dict() for name in names]
                return _parse(pb.ModelStatisticsResponse(), {"model_stats": stats})
            return await self._guard(context, call)

        async def ModelInfer(self, request: Any, context: Any) -> Any:  # noqa: N802
            async def call() -> Any:
                started = time.perf_counter_ns()
                runner = self._runner(request.model_name, request.model_version)
                try:
                    decoded = decode_grpc(request)
                except Exception:
                    dataplane.request_failed(runner, started)
                    raise
                return await dataplane.infer(runner, decoded, self.service.config.request_timeout_s,
                                             started, self._encode)
            return await self._guard(context, call)

    return Servicer


def _model_config_class() -> Any:
    from tritonclient.grpc import model_config_pb2

    return model_config_pb2.ModelConfig


def _parse(message: Any, values: dict[str, Any]) -> Any:
    """Fill a protobuf message from Triton's JSON form of it."""
    from google.protobuf import json_format

    return json_format.ParseDict(values, message, ignore_unknown_fields=True)
