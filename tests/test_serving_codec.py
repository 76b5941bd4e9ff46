"""The V2 tensor codec on its own: every datatype through JSON and binary form, and each malformed body."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from edgerun.errors import InvalidInputError
from edgerun.serving.body import aligned_buffer
from edgerun.serving.codec import (
    OutputTensor,
    classification,
    decode_request,
    encode_response,
    json_data,
    parse_header,
)
from edgerun.serving.wire import InferRequest
from edgerun.types import TensorSpec

from .serving_helpers import V2_SAMPLES, binary_body


@pytest.mark.parametrize("datatype", sorted(V2_SAMPLES))
def test_every_datatype_round_trips_through_json_and_binary(datatype: str) -> None:
    array = V2_SAMPLES[datatype]
    as_json = json.dumps({"inputs": [{"name": "x", "shape": list(array.shape), "datatype": datatype,
                                      "data": json_data("x", array)}]}).encode()
    from_json = decode_request(as_json, None).inputs["x"]
    body, header_length = binary_body([("x", datatype, array)])
    from_binary = decode_request(body, str(header_length)).inputs["x"]
    for decoded in (from_json, from_binary):
        assert decoded.shape == array.shape
        assert decoded.tolist() == array.tolist()
        if datatype != "BYTES":
            assert decoded.dtype == array.dtype


def test_nested_and_flat_json_data_give_the_same_tensor() -> None:
    nested = {"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP32", "data": [[1, 2, 3], [4, 5, 6]]}]}
    flat = {"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP32", "data": [1, 2, 3, 4, 5, 6]}]}
    a = decode_request(json.dumps(nested).encode(), None).inputs["x"]
    b = decode_request(json.dumps(flat).encode(), None).inputs["x"]
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.float32 and a.shape == (2, 3)


def test_binary_response_carries_sizes_and_json_response_carries_data() -> None:
    logits = np.arange(6, dtype=np.float32).reshape(2, 3)
    names = np.array([b"cat", b"dog"], dtype=object)
    body, header_length = encode_response({"model_name": "m"}, [OutputTensor("logits", logits, binary=True),
                                                               OutputTensor("names", names)])
    assert header_length is not None
    header = json.loads(body[:header_length])
    assert header["outputs"][0] == {"name": "logits", "datatype": "FP32", "shape": [2, 3],
                                    "parameters": {"binary_data_size": 24}}
    assert header["outputs"][1]["data"] == ["cat", "dog"]
    np.testing.assert_array_equal(np.frombuffer(body[header_length:], dtype="<f4").reshape(2, 3), logits)
    plain, none = encode_response({"model_name": "m"}, [OutputTensor("logits", logits)])
    assert none is None and json.loads(plain)["outputs"][0]["data"] == [0, 1, 2, 3, 4, 5]


def test_non_finite_floats_become_json_strings_that_parse_back() -> None:
    values = np.array([1.5, np.nan, np.inf, -np.inf], dtype=np.float32)
    data = json_data("y", values)
    assert data[0] == 1.5 and data[1:] == ["NaN", "Infinity", "-Infinity"]
    body = json.dumps({"inputs": [{"name": "y", "shape": [4], "datatype": "FP32", "data": data}]})
    back = decode_request(body.encode(), None).inputs["y"]
    np.testing.assert_array_equal(back, values)


def test_raw_binary_body_uses_the_model_input_with_batch_one() -> None:
    spec = TensorSpec("input", (None, 3, 2, 2), np.dtype("float32"))
    tensor = np.arange(12, dtype=np.float32)
    decoded = decode_request(tensor.tobytes(), "0", [spec])
    assert decoded.raw_binary and decoded.inputs["input"].shape == (1, 3, 2, 2)


def test_classification_extension_lists_top_values_with_labels() -> None:
    scores = np.array([[0.1, 0.7, 0.2], [0.5, 0.1, 0.4]], dtype=np.float32)
    result = classification(scores, 2, ["a", "b", "c"])
    assert result.shape == (2, 2)
    assert result.tolist() == [[b"0.700000:1:b", b"0.200000:2:c"], [b"0.500000:0:a", b"0.400000:2:c"]]


def _json_input(**fields: object) -> bytes:
    item = {"name": "x", "shape": [2], "datatype": "FP32", "data": [1.0, 2.0], **fields}
    return json.dumps({"inputs": [item]}).encode()


@pytest.mark.parametrize("body, header_length, message", [
    (b"{not json", None, "Invalid JSON"),
    (b'{"inputs": []}', None, "inputs"),
    (b'{"inputs": [{"name": "x", "shape": [-1], "datatype": "FP32", "data": []}]}', None,
     "greater than or equal"),
    (_json_input(datatype="FP128"), None, "unknown V2 datatype 'FP128'"),
    (_json_input(shape=[1] * 40, data=[1.0]), None, "at most 32"),
    (_json_input(data=[1.0, 2.0, 3.0]), None, "needs 2 elements, data has 3"),
    (_json_input(data=[[1.0], [2.0, 3.0]]), None, "ragged"),
    (_json_input(datatype="INT8", data=[1, 300]), None, "outside the INT8 range"),
    (_json_input(datatype="INT32", data=[1.5, 2]), None, "INT32 data must be integers"),
    (_json_input(datatype="BOOL", data=[1, 0]), None, "BOOL data must be true/false"),
    (_json_input(data="1,2"), None, "'data' must be a list"),
    (_json_input(data=None), None, "'data' must be a list"),
    (_json_input(parameters={"binary_data_size": 8}), None, "both 'data' and binary_data_size"),
    (b'{"inputs": []}', "x", "must be an integer"),
    (b'{"inputs": []}', "9999", "does not fit"),
])
def test_malformed_requests_raise_a_clear_400(body: bytes, header_length: str | None, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        decode_request(body, header_length)


def test_truncated_and_oversized_binary_parts_are_rejected() -> None:
    body, header_length = binary_body([("x", "FP32", np.ones(4, dtype=np.float32))])
    with pytest.raises(InvalidInputError, match="truncated"):
        decode_request(body[:-3], str(header_length))
    with pytest.raises(InvalidInputError, match="not claimed"):
        decode_request(body + b"\0\0", str(header_length))
    header = json.dumps({"inputs": [{"name": "s", "shape": [1], "datatype": "BYTES",
                                     "parameters": {"binary_data_size": 7}}]}).encode()
    element_says_ten_bytes = struct.pack("<I", 10) + b"abc"
    with pytest.raises(InvalidInputError, match="BYTES element of 10 bytes is truncated"):
        decode_request(header + element_says_ten_bytes, str(len(header)))


@pytest.mark.parametrize("header", [
    {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "parameters": {"binary_data_size": 8}}]},
    {"id": "r1", "parameters": {"binary_data_output": True, "timeout": 5},
     "inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 8}}],
     "outputs": [{"name": "y", "parameters": {"binary_data": True, "classification": 2}}, {"name": "z"}]},
    {"inputs": [{"name": "x", "shape": [1.0, 2], "datatype": "FP32", "parameters": {"binary_data_size": 8}}],
     "unknown_field": 1},
])
def test_binary_headers_parse_without_pydantic_to_what_pydantic_gives(header: dict) -> None:
    text = json.dumps(header).encode()
    assert parse_header(text, binary=True).model_dump() == InferRequest.model_validate_json(text).model_dump()


@pytest.mark.parametrize("header, message", [
    (b'{"inputs": [{"name": "x", "shape": [-1], "datatype": "FP32"}]}', "greater than or equal to 0"),
    (b'{"inputs": [{"name": 3, "shape": [1], "datatype": "FP32"}]}', "valid string"),
    (b'{"id": 5, "inputs": [{"name": "x", "shape": [1], "datatype": "FP32"}]}', "id: Input should be"),
    (b'{"inputs": []}', "at least 1 item"),
    (b'{"inputs": [', "invalid inference request"),
])
def test_binary_headers_out_of_the_plain_form_get_pydantic_errors(header: bytes, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        parse_header(header, binary=True)


@pytest.mark.parametrize("header_length", [0, 1, 5, 173])
def test_binary_tensors_decode_in_place_from_an_aligned_body(header_length: int) -> None:
    array = np.arange(4, dtype=np.float64).reshape(1, 4)  # header length 0: raw, batch 1
    header = json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64",
                                     "parameters": {"binary_data_size": array.nbytes}}]}).encode()
    header = header.ljust(header_length) if header_length else b""
    body = header + array.tobytes()
    buffer = aligned_buffer(len(body), len(header))
    buffer[:] = body
    specs = (TensorSpec("x", (None, 4), np.dtype(np.float64)),)
    decoded = decode_request(buffer, str(len(header)), specs).inputs["x"]
    assert decoded.ctypes.data % 64 == 0
    assert np.shares_memory(decoded, np.frombuffer(buffer, dtype=np.uint8))  # no copy
    assert decoded.tolist() == array.tolist()
