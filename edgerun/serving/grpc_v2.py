"""KServe V2 gRPC front end (GRPCInferenceService) over the same data plane as the HTTP routes.

Opt-in with ``--grpc-port`` (``grpc_port`` in the config file). The protocol classes are the ones
tritonclient ships (``tritonclient.grpc.service_pb2``: Triton's superset of KServe's
grpc_predict_v2.proto, which is what tritonclient.grpc and ``perf_analyzer -i grpc`` speak), so
the front end needs ``pip install 'edgerun[grpc]'``; both imports happen only when it starts.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

from .. import __version__
from ..errors import EdgerunError, InvalidInputError
from ..types import to_v2_datatype
from . import dataplane, grpc_h2
from .codec import DecodedRequest, binary_data, element_count, tensor_from_binary, tensor_from_json
from .dataplane import InferResult
from .execution import ModelRunner, within
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


def _protocol() -> tuple[Any, Any]:
    """(grpc, service_pb2), imported on first use."""
    try:
        import grpc
        import hpack  # noqa: F401 (grpc_h2 decodes header blocks with it)
        from tritonclient.grpc import service_pb2
    except ImportError as exc:
        raise InvalidInputError("the gRPC front end needs grpcio, hpack and tritonclient's protocol classes: "
                                "pip install 'edgerun[grpc]'") from exc
    return grpc, service_pb2


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


SERVICE = "inference.GRPCInferenceService"
MAX_STREAMS = 100  # calls in flight per gRPC connection
RAW_INPUT_CONTENTS = 7  # the field number of ModelInferRequest.raw_input_contents
MAX_SPLIT_FIELDS = 1024  # top-level fields the Python scan walks; past that protobuf parses it all


def _varint(data: memoryview, offset: int) -> tuple[int, int]:
    """(value, next offset) of the protobuf varint at ``offset``."""
    value = shift = 0
    while offset < len(data) and shift < 64:
        byte = data[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, offset
        shift += 7
    raise InvalidInputError("malformed ModelInferRequest: a varint runs past the message")


def split_raw_contents(message: bytes | memoryview) -> tuple[bytes, list[memoryview]] | None:
    """(the serialized ModelInferRequest without its raw_input_contents, views of those contents
    in ``message``). Parsing only the rest keeps protobuf from copying the tensor bytes twice
    (once when parsing, once more on every access to a bytes field). None for a message of more
    than MAX_SPLIT_FIELDS top-level fields (a Python loop over millions of tiny fields would cost
    seconds; protobuf's own parser takes those)."""
    view = memoryview(message)
    rest: list[memoryview] = []
    raw: list[memoryview] = []
    offset = 0
    while offset < len(view):
        if len(rest) + len(raw) >= MAX_SPLIT_FIELDS:
            return None
        start = offset
        key, offset = _varint(view, offset)
        wire = key & 7
        if wire == 2:  # length-delimited: every field of ModelInferRequest
            length, offset = _varint(view, offset)
            value_at, offset = offset, offset + length
        elif wire == 0:
            offset = _varint(view, offset)[1]
        elif wire in (1, 5):
            offset += 8 if wire == 1 else 4
        else:
            raise InvalidInputError(f"malformed ModelInferRequest: wire type {wire}")
        if offset > len(view):
            raise InvalidInputError("malformed ModelInferRequest: a field runs past the message")
        if key == RAW_INPUT_CONTENTS << 3 | 2:
            raw.append(view[value_at:offset])
        else:
            rest.append(view[start:offset])
    return b"".join(rest), raw


def decode_grpc(request: Any, raw: list[memoryview] | None = None) -> DecodedRequest:
    """A ModelInferRequest as the data plane's DecodedRequest; ``raw`` are its raw_input_contents
    when they were split off (see :func:`split_raw_contents`). Raw contents decode in place."""
    if raw is None:
        raw = [memoryview(item) for item in request.raw_input_contents]
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
        inputs[tensor.name] = (tensor_from_binary(tensor.name, tensor.datatype, shape, raw[index])
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
    """GRPCInferenceService from the service's models, over edgerun's own HTTP/2 transport
    (grpc_h2.py) with the connection budgets of the config's ``limits``."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.port = 0
        self._server: Any = None
        self._registry: grpc_h2.Registry | None = None

    async def start(self, host: str, port: int) -> int:
        grpc, service_pb2 = _protocol()
        servicer = _servicer_class(grpc, service_pb2)(self.service)
        limits = self.service.config.limits
        h2_limits = grpc_h2.H2Limits(max_connections=limits.max_connections, max_streams=MAX_STREAMS,
                                     max_message_bytes=limits.max_body_bytes,
                                     max_header_bytes=limits.max_header_bytes,
                                     stall_timeout_s=limits.header_timeout_s)
        self._server, self._registry = await grpc_h2.serve(
            host, port, h2_limits, dispatcher(service_pb2, servicer),
            backlog=min(limits.max_connections, 4096))
        self.port = int(self._server.sockets[0].getsockname()[1])
        log.info("KServe V2 gRPC on %s:%d", host, self.port)
        return self.port

    async def stop(self, grace_s: float) -> None:
        if self._server is not None and self._registry is not None:
            self._server.close()
            await self._registry.drain(grace_s)


class _Aborted(Exception):
    def __init__(self, code: int, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class CallContext:
    """The part of grpc's ServicerContext the servicer uses: the metadata, and abort."""

    def __init__(self, metadata: list[tuple[str, str]]) -> None:
        self._metadata = tuple(metadata)

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    async def abort(self, code: Any, details: str) -> None:
        raise _Aborted(int(code.value[0]), details)


def dispatcher(pb: Any, servicer: Any) -> grpc_h2.Dispatch:
    """The transport's dispatch function: each unary method the servicer implements, by :path;
    ModelInfer gets the request's bytes. Others are UNIMPLEMENTED."""
    from google.protobuf.message import DecodeError

    methods: dict[str, tuple[Callable[[Any], Any] | None, Callable[..., Awaitable[Any]]]] = {}
    for method in pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods:
        if method.client_streaming or method.server_streaming or method.name not in type(servicer).__dict__:
            continue
        parse = None if method.name == "ModelInfer" else getattr(pb, method.input_type.name).FromString
        methods[f"/{SERVICE}/{method.name}"] = (parse, getattr(servicer, method.name))

    async def dispatch(call: grpc_h2.GrpcCall) -> grpc_h2.GrpcReply:
        found = methods.get(call.method)
        if found is None:
            return grpc_h2.GrpcReply(grpc_h2.GRPC_UNIMPLEMENTED,
                                     details=f"method {call.method} is not implemented")
        parse, handler = found
        try:
            work = handler(call.message if parse is None else parse(call.message), CallContext(call.metadata))
            response = await (within(work, call.deadline_s) if call.deadline_s is not None else work)
        except _Aborted as exc:
            return grpc_h2.GrpcReply(exc.code, details=exc.details)
        except DecodeError as exc:
            details = f"malformed request message: {exc}"
            return grpc_h2.GrpcReply(grpc_h2.GRPC_INVALID_ARGUMENT, details=details)
        except asyncio.TimeoutError:
            return grpc_h2.GrpcReply(grpc_h2.GRPC_DEADLINE_EXCEEDED, details="the call's grpc-timeout passed")
        return grpc_h2.GrpcReply(message=response.SerializeToString())

    return dispatch


def _servicer_class(grpc: Any, pb: Any) -> type:
    """The servicer, built against the lazily imported protocol modules."""
    from google.protobuf.message import DecodeError

    class Servicer:
        """GRPCInferenceService's unary methods, under their proto names (the dispatcher finds them
        by name), answered from the service's models."""

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

        async def ModelInfer(self, message: memoryview, context: Any) -> Any:  # noqa: N802
            """The serialized request (the dispatcher does not parse this one): its tensors are
            left where they are, protobuf parses the rest."""
            started = time.perf_counter_ns()
            raw: list[memoryview] | None = None
            try:
                split = split_raw_contents(message)
                if split is None:
                    request = pb.ModelInferRequest.FromString(message)
                else:
                    rest, raw = split
                    request = pb.ModelInferRequest.FromString(rest)
            except (InvalidInputError, DecodeError) as exc:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed ModelInferRequest: {exc}")

            async def call() -> Any:
                runner = self._runner(request.model_name, request.model_version)
                try:
                    decoded = decode_grpc(request, raw)
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
