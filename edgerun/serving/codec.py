"""V2 tensor codec: JSON tensor data and Triton's binary tensor data extension, both directions."""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from pydantic import ValidationError

from ..errors import InvalidInputError
from ..types import TensorSpec, check_shape, from_v2_datatype, to_v2_datatype
from .wire import InferRequest, RequestInput

HEADER_LENGTH = "inference-header-content-length"
_LENGTH = struct.Struct("<I")


@dataclass
class DecodedRequest:
    """An inference request with its input tensors decoded to numpy arrays."""

    request: InferRequest
    inputs: dict[str, np.ndarray]
    raw_binary: bool = False  # header length 0: one input, all outputs binary


@dataclass(frozen=True)
class OutputTensor:
    """One response tensor and how it travels."""

    name: str
    array: np.ndarray
    binary: bool = False
    parameters: dict[str, object] = field(default_factory=dict)


MAX_DIMS = 32  # numpy's limit on array rank


def element_count(shape: Sequence[int]) -> int:
    return math.prod(int(d) for d in shape)


def _check_rank(name: str, shape: Sequence[int], dtype: np.dtype) -> None:
    if len(shape) > MAX_DIMS:
        raise InvalidInputError(f"input {name!r}: shape has {len(shape)} dims; at most {MAX_DIMS}")
    check_shape(name, shape, dtype)


def _dtype(name: str, datatype: str) -> np.dtype:
    try:
        return from_v2_datatype(datatype)
    except InvalidInputError as exc:
        raise InvalidInputError(f"input {name!r}: {exc}") from None


def _exact_ints(data: list) -> np.ndarray | None:
    """Python ints kept exact (numpy would turn 2**63 + 1 into a float), or None if some are not ints."""
    parsed = np.asarray(data, dtype=object)
    exact = all(isinstance(x, int) and not isinstance(x, bool) for x in parsed.reshape(-1).tolist())
    return parsed if exact else None


def _in_range(name: str, datatype: str, dtype: np.dtype, values: np.ndarray) -> np.ndarray:
    info = np.iinfo(dtype)
    if values.min() < info.min or values.max() > info.max:
        raise InvalidInputError(f"input {name!r}: values outside the {datatype} range "
                                f"{info.min}..{info.max}")
    return values.astype(dtype)


def _numbers_from_json(name: str, datatype: str, dtype: np.dtype, data: list) -> np.ndarray:
    try:
        parsed = np.asarray(data)
    except (ValueError, TypeError) as exc:
        raise InvalidInputError(f"input {name!r}: data is ragged or mixed ({exc})") from None
    kind = parsed.dtype.kind
    if parsed.size == 0:
        return parsed.astype(dtype)
    if dtype.kind == "b" and kind == "b":
        return parsed
    if dtype.kind in "iu":
        exact = parsed if kind in "iu" else _exact_ints(data)  # numpy guesses float past int64
        if exact is not None:
            return _in_range(name, datatype, dtype, exact)
    if dtype.kind == "f" and kind in "iufU":
        try:
            return parsed.astype(dtype)
        except ValueError:
            pass
    wanted = {"b": "true/false", "i": "integers", "u": "integers",
              "f": "numbers (or the strings NaN, Infinity, -Infinity)"}[dtype.kind]
    raise InvalidInputError(f"input {name!r}: {datatype} data must be {wanted}")


def _bytes_from_json(name: str, data: list) -> np.ndarray:
    try:
        parsed = np.asarray(data, dtype=object)
    except ValueError as exc:
        raise InvalidInputError(f"input {name!r}: data is ragged ({exc})") from None
    flat = parsed.reshape(-1)
    if not all(isinstance(item, str) for item in flat):
        raise InvalidInputError(f"input {name!r}: BYTES data must be strings")
    return np.array([item.encode("utf-8") for item in flat], dtype=object)


def tensor_from_json(item: RequestInput) -> np.ndarray:
    """The numpy array of one JSON input; nested or flat data, checked against shape and datatype."""
    dtype = _dtype(item.name, item.datatype)
    _check_rank(item.name, item.shape, dtype)
    if not isinstance(item.data, list):
        raise InvalidInputError(f"input {item.name!r}: 'data' must be a list (or send binary_data_size)")
    if item.datatype == "BYTES":
        array = _bytes_from_json(item.name, item.data)
    else:
        array = _numbers_from_json(item.name, item.datatype, dtype, item.data)
    count = element_count(item.shape)
    if array.size != count:
        raise InvalidInputError(f"input {item.name!r}: shape {item.shape} needs {count} elements, "
                                f"data has {array.size}")
    return array.reshape(item.shape)


def decode_bytes_elements(name: str, raw: memoryview, count: int) -> np.ndarray:
    """BYTES binary form: each element is a 4-byte little-endian length then the bytes."""
    elements, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise InvalidInputError(f"input {name!r}: BYTES element length cut off at byte {offset}")
        (length,) = _LENGTH.unpack_from(raw, offset)
        if offset + 4 + length > len(raw):
            raise InvalidInputError(f"input {name!r}: BYTES element of {length} bytes is truncated")
        elements.append(bytes(raw[offset + 4:offset + 4 + length]))
        offset += 4 + length
    if len(elements) != count:
        raise InvalidInputError(f"input {name!r}: shape needs {count} BYTES elements, got {len(elements)}")
    return np.array(elements, dtype=object)


def tensor_from_binary(name: str, datatype: str, shape: Sequence[int], raw: memoryview) -> np.ndarray:
    """The numpy array of one binary input (little-endian, row-major, BOOL as one byte)."""
    dtype = _dtype(name, datatype)
    _check_rank(name, shape, dtype)
    count = element_count(shape)
    if datatype == "BYTES":
        return decode_bytes_elements(name, raw, count).reshape(tuple(shape))
    expected = count * dtype.itemsize
    if len(raw) != expected:
        raise InvalidInputError(f"input {name!r}: {datatype}{list(shape)} needs {expected} bytes, "
                                f"binary_data_size gives {len(raw)}")
    if datatype == "BOOL":
        return (np.frombuffer(raw, dtype=np.uint8) != 0).reshape(tuple(shape))
    array = np.frombuffer(raw, dtype=dtype.newbyteorder("<")).reshape(tuple(shape))
    return array if array.flags.aligned else array.copy()


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, memoryview]:
    """(JSON header, binary part) of a request body; plain JSON when the header is absent."""
    if header_length is None:
        return body, memoryview(b"")
    try:
        length = int(header_length)
    except ValueError:
        raise InvalidInputError(
            f"Inference-Header-Content-Length must be an integer, got {header_length[:40]!r}") from None
    if not 0 <= length <= len(body):
        raise InvalidInputError(f"Inference-Header-Content-Length {length} does not fit the "
                                f"{len(body)}-byte body")
    view = memoryview(body)
    return bytes(view[:length]), view[length:]


def parse_header(header: bytes) -> InferRequest:
    """Validate the JSON part of an inference request."""
    try:
        return InferRequest.model_validate_json(header)
    except ValidationError as exc:
        raise InvalidInputError("invalid inference request: " + validation_summary(exc)) from None


def validation_summary(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors(include_url=False)[:5]:
        where = ".".join(str(p) for p in error["loc"])
        parts.append(f"{where}: {error['msg']}" if where else error["msg"])
    return "; ".join(parts)


def binary_size(item: RequestInput) -> int | None:
    """The input's binary_data_size parameter, validated, or None for JSON data."""
    if "shared_memory_region" in (item.parameters or {}):
        raise InvalidInputError(f"input {item.name!r}: the shared memory extension is not supported; "
                                "send the data inline or in the binary part")
    size = (item.parameters or {}).get("binary_data_size")
    if size is None:
        return None
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InvalidInputError(f"input {item.name!r}: binary_data_size must be an integer >= 0")
    if item.data is not None:
        raise InvalidInputError(f"input {item.name!r} has both 'data' and binary_data_size")
    return size


def decode_inputs(request: InferRequest, binary: memoryview) -> dict[str, np.ndarray]:
    """Decode every input in order; binary ones take their bytes from ``binary`` one after another."""
    inputs: dict[str, np.ndarray] = {}
    offset = 0
    for item in request.inputs:
        if item.name in inputs:
            raise InvalidInputError(f"input {item.name!r} appears twice")
        size = binary_size(item)
        if size is None:
            inputs[item.name] = tensor_from_json(item)
            continue
        if offset + size > len(binary):
            raise InvalidInputError(f"binary data truncated: input {item.name!r} needs {size} bytes, "
                                    f"{len(binary) - offset} left in the body")
        inputs[item.name] = tensor_from_binary(item.name, item.datatype, item.shape,
                                               binary[offset:offset + size])
        offset += size
    if offset != len(binary):
        raise InvalidInputError(f"{len(binary) - offset} bytes after the header are not claimed by any "
                                "input's binary_data_size")
    return inputs


def raw_shape(spec: TensorSpec, nbytes: int) -> list[int]:
    """Shape of a raw binary input: batch dim 1, at most one other variable dim sized by the bytes."""
    if spec.dtype == object:
        return [1]
    dims = [1 if i == 0 and d is None else d for i, d in enumerate(spec.shape)]
    variable = [i for i, d in enumerate(dims) if d is None]
    if len(variable) > 1:
        raise InvalidInputError(f"a raw binary request needs at most one variable dim; input is "
                                f"{spec.describe()}")
    known = element_count([d for d in dims if d is not None]) * spec.dtype.itemsize
    fill = nbytes // known if known else 0
    return [fill if d is None else d for d in dims]


def decode_request(body: bytes, header_length: str | None,
                   inputs: Sequence[TensorSpec] = ()) -> DecodedRequest:
    """Decode a JSON or binary-extension request body; ``inputs`` are needed for raw binary bodies."""
    header, binary = split_body(body, header_length)
    if header_length is not None and not header:
        if len(inputs) != 1:
            raise InvalidInputError("a raw binary request (header length 0) needs a model with "
                                    f"exactly one input; this model has {len(inputs)}")
        spec = inputs[0]
        item = RequestInput(name=spec.name, shape=raw_shape(spec, len(binary)),
                            datatype=to_v2_datatype(spec.dtype),
                            parameters={"binary_data_size": len(binary)}, data=None)
        request = InferRequest(inputs=[item], parameters={"binary_data_output": True})
        return DecodedRequest(request, decode_inputs(request, binary), raw_binary=True)
    request = parse_header(header)
    return DecodedRequest(request, decode_inputs(request, binary))


def json_data(name: str, array: np.ndarray) -> list:
    """Flat row-major JSON elements; NaN/Inf become strings, BYTES become UTF-8 strings."""
    flat = array.reshape(-1)
    if flat.dtype == object or flat.dtype.kind in "SU":
        try:
            return [x.decode("utf-8") if isinstance(x, bytes) else str(x) for x in flat.tolist()]
        except UnicodeDecodeError:
            raise InvalidInputError(f"output {name!r} holds non-UTF-8 bytes; request it with "
                                    "binary_data: true") from None
    if flat.dtype.kind == "f" and not np.isfinite(flat).all():
        values = flat.astype(object)
        bad = ~np.isfinite(flat)
        values[bad] = ["NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")
                       for v in flat[bad].tolist()]
        return values.tolist()
    return flat.tolist()


def encode_bytes_elements(array: np.ndarray) -> bytes:
    parts = []
    for item in array.reshape(-1).tolist():
        data = item if isinstance(item, bytes) else str(item).encode("utf-8")
        parts += [_LENGTH.pack(len(data)), data]
    return b"".join(parts)


def binary_data(array: np.ndarray) -> bytes:
    """Binary extension form of an output tensor."""
    if array.dtype == object or array.dtype.kind in "SU":
        return encode_bytes_elements(array)
    if array.dtype.kind == "b":
        return np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def encode_response(header: dict[str, object], outputs: Sequence[OutputTensor]) -> tuple[bytes, int | None]:
    """Response body and, when some output is binary, the JSON header's length."""
    entries, blobs = [], []
    for out in outputs:
        entry: dict[str, object] = {"name": out.name, "datatype": to_v2_datatype(out.array.dtype),
                                    "shape": [int(d) for d in out.array.shape]}
        parameters = dict(out.parameters)
        if out.binary:
            blob = binary_data(out.array)
            blobs.append(blob)
            parameters["binary_data_size"] = len(blob)
        else:
            entry["data"] = json_data(out.name, out.array)
        if parameters:
            entry["parameters"] = parameters
        entries.append(entry)
    text = json.dumps({**header, "outputs": entries}, separators=(",", ":"), allow_nan=False).encode()
    if not blobs:
        return text, None
    return b"".join([text, *blobs]), len(text)


def classification(array: np.ndarray, count: int, labels: Sequence[str]) -> np.ndarray:
    """Triton's classification extension: top ``count`` per batch row as b"value:index[:label]"."""
    rows = array.reshape(array.shape[0], -1) if array.ndim >= 2 else array.reshape(1, -1)
    k = max(1, min(count, rows.shape[1]))
    encoded = []
    for row in rows.astype(np.float64):
        best = np.argsort(-row, kind="stable")[:k]
        encoded.append([(f"{row[i]:f}:{i}" + (f":{labels[i]}" if i < len(labels) else "")).encode()
                        for i in best.tolist()])
    result = np.empty((len(encoded), k), dtype=object)
    result[:] = encoded
    return result if array.ndim >= 2 else result.reshape(k)
