"""Bad input over real HTTP: each gets {"error": ...} with a 4xx status, and the server keeps answering."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from .helpers import SAMPLES
from .serving_helpers import STRICT_BODY_LIMIT, ServerThread, binary_body

INFER = "/v2/models/mobilenet_v2/infer"
IMAGE = np.zeros((1, 3, 224, 224), dtype=np.float32)


def json_request(**fields: object) -> bytes:
    item = {"name": "input", "shape": [1, 3, 224, 224], "datatype": "FP32",
            "data": [0.0] * (3 * 224 * 224), **fields}
    return json.dumps({"inputs": [item]}).encode()


@pytest.fixture
def http(served: ServerThread) -> Iterator[httpx.Client]:
    with served.client() as client:
        yield client
    assert_still_serving(served)


def assert_still_serving(server: ServerThread) -> None:
    """After any bad request: live, ready, and a valid inference still succeeds."""
    with server.client() as client:
        assert client.get("/v2/health/live").json() == {"live": True}
        assert client.get("/v2/health/ready").status_code == 200
        body, length = binary_body([("input", "FP32", IMAGE)])
        ok = client.post(INFER, content=body, headers={"Inference-Header-Content-Length": str(length)})
        assert ok.status_code == 200, ok.text


def expect_error(response: httpx.Response, status: int, *fragments: str) -> None:
    assert response.status_code == status, response.text
    message = response.json()["error"]
    for fragment in fragments:
        assert fragment in message, message


@pytest.mark.parametrize("body, status, fragments", [
    (b'{"inputs": [', 400, ("Invalid JSON",)),
    (b"", 400, ("Invalid JSON",)),
    (json_request(datatype="INT32", data=[0] * (3 * 224 * 224)), 400, ("must be FP32, got INT32",)),
    (json_request(data=[0.0] * 10), 400, ("needs 150528 elements, data has 10",)),
    (json_request(shape=[1, 3, 100, 100], data=[0.0] * 30000), 400, ("has shape [1, 3, 100, 100]",)),
    (json_request(name="pixels"), 400, ("unknown input(s) ['pixels']", "input: float32[?,3,224,224]")),
    (json_request(datatype="FP8"), 400, ("unknown V2 datatype 'FP8'",)),
    (json.dumps({"inputs": [{"name": "input", "shape": [9, 3, 224, 224], "datatype": "FP32",
                             "parameters": {"binary_data_size": 0}}]}).encode(), 400, ()),
    (b'{"inputs": [{"name": "input"}]}', 400, ("shape", "Field required")),
    (b'[1, 2, 3]', 400, ("invalid inference request",)),
])
def test_bad_json_requests(http: httpx.Client, body: bytes, status: int, fragments: tuple[str, ...]) -> None:
    expect_error(http.post(INFER, content=body), status, *fragments)


def test_unknown_output_name(http: httpx.Client) -> None:
    body = json.loads(json_request())
    body["outputs"] = [{"name": "probabilities"}]
    expect_error(http.post(INFER, json=body), 400, "unknown output 'probabilities'", "['logits']")


def test_batch_over_max_batch_size(http: httpx.Client) -> None:
    body, length = binary_body([("input", "FP32", np.zeros((9, 3, 224, 224), np.float32))])
    expect_error(http.post(INFER, content=body, headers={"Inference-Header-Content-Length": str(length)}),
                 400, "batch size 9 is outside 1..8")


def test_unknown_model_version_and_route(http: httpx.Client) -> None:
    expect_error(http.post("/v2/models/resnet50/infer", content=json_request()), 404,
                 "'resnet50' is not loaded")
    expect_error(http.get("/v2/models/resnet50"), 404, "not loaded")
    expect_error(http.get("/v2/models/resnet50/ready"), 404, "unknown model 'resnet50'")
    expect_error(http.post("/v2/models/mobilenet_v2/versions/3/infer", content=json_request()), 404,
                 "no version '3'")
    expect_error(http.get("/v3/nothing"), 404, "Not Found")
    expect_error(http.delete("/v2/models/mobilenet_v2"), 405, "method DELETE not allowed here; allowed: GET")


def test_truncated_binary_payload(http: httpx.Client) -> None:
    body, length = binary_body([("input", "FP32", IMAGE)])
    headers = {"Inference-Header-Content-Length": str(length)}
    expect_error(http.post(INFER, content=body[:-100], headers=headers),
                 400, "binary data truncated", "needs 602112 bytes, 602012 left")


def test_header_length_larger_than_the_body(http: httpx.Client) -> None:
    body, _ = binary_body([("input", "FP32", IMAGE)])
    headers = {"Inference-Header-Content-Length": str(len(body) + 1)}
    expect_error(http.post(INFER, content=body, headers=headers), 400, "does not fit")
    expect_error(http.post(INFER, content=body, headers={"Inference-Header-Content-Length": "-5"}),
                 400, "does not fit")


def test_raw_binary_body_with_header_length_zero(http: httpx.Client) -> None:
    response = http.post(INFER, content=IMAGE.tobytes(), headers={"Inference-Header-Content-Length": "0"})
    assert response.status_code == 200
    length = int(response.headers["inference-header-content-length"])
    header = json.loads(response.content[:length])
    assert header["outputs"][0]["parameters"] == {"binary_data_size": 4000}
    short = http.post(INFER, content=IMAGE.tobytes()[:1000], headers={"Inference-Header-Content-Length": "0"})
    expect_error(short, 400, "input 'input'")


def test_gzip_body_is_accepted_and_a_gzip_bomb_is_413(served: ServerThread, strict: ServerThread) -> None:
    with served.client() as http:
        ok = http.post(INFER, content=gzip.compress(json_request()), headers={"Content-Encoding": "gzip"})
        assert ok.status_code == 200 and ok.json()["outputs"][0]["shape"] == [1, 1000]
        expect_error(http.post(INFER, content=b"not gzip", headers={"Content-Encoding": "gzip"}), 400, "gzip")
        expect_error(http.post(INFER, content=b"x", headers={"Content-Encoding": "br"}), 400, "br")
    bomb = gzip.compress(b"\0" * (4 * STRICT_BODY_LIMIT))
    with strict.client() as http:
        response = http.post(INFER, content=bomb, headers={"Content-Encoding": "gzip"})
        expect_error(response, 413, "decompressed")
    assert_still_serving(served)


def test_body_over_the_limit_by_length_and_by_stream(strict: ServerThread) -> None:
    too_big = b"{" + b" " * STRICT_BODY_LIMIT + b"}"
    with strict.client() as http:
        expect_error(http.post(INFER, content=too_big), 413, f"exceeds the {STRICT_BODY_LIMIT}-byte limit")
        chunks = (too_big[i:i + 65536] for i in range(0, len(too_big), 65536))  # no Content-Length
        expect_error(http.post(INFER, content=chunks), 413, "exceeds")
        expect_error(http.post("/v1/models/mobilenet_v2/predict", content=too_big), 413, "exceeds")
        assert http.get("/v2/health/ready").status_code == 200


def test_non_image_upload(http: httpx.Client) -> None:
    url = "/v1/models/mobilenet_v2/predict"
    expect_error(http.post(url, content=b"this is not an image"), 400, "not a decodable image")
    truncated = (SAMPLES / "chelsea.png").read_bytes()[:5000]
    expect_error(http.post(url, files={"file": ("cat.png", truncated, "image/png")}), 400, "image")
    expect_error(http.post(url, content=b""), 400, "no image")
    expect_error(http.post(url, files={"note": (None, "a text field")}), 400, "no file field")
    expect_error(http.post(url + "?top_k=0", content=truncated), 400, "top_k")
    expect_error(http.post("/v1/models/echo/predict", content=truncated), 400, "no image pipeline")


def test_classification_of_a_text_output_is_refused(http: httpx.Client) -> None:
    body = {"inputs": [{"name": "in_BYTES", "shape": [1, 2], "datatype": "BYTES", "data": ["a", "b"]}],
            "outputs": [{"name": "out_BYTES", "parameters": {"classification": 2}}]}
    other = [{"name": f"in_{t}", "shape": [1, 2], "datatype": t, "data": v}
             for t, v in (("BOOL", [True, False]), ("FP16", [1, 2]), ("FP32", [1, 2]), ("FP64", [1, 2]))]
    ints = [{"name": f"in_{t}", "shape": [1, 2], "datatype": t, "data": [1, 2]}
            for t in ("UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64")]
    body["inputs"] += other + ints
    expect_error(http.post("/v2/models/echo/infer", json=body), 400, "classification needs a numeric output")


def test_unsupported_extensions_are_named(http: httpx.Client) -> None:
    body = json.loads(json_request())
    body["parameters"] = {"sequence_id": 7}
    expect_error(http.post(INFER, json=body), 400, "sequence_id")
    body = json.loads(json_request())
    body["outputs"] = [{"name": "logits", "parameters": {"shared_memory_region": "r0"}}]
    expect_error(http.post(INFER, json=body), 400, "shared memory")
    body = json.loads(json_request(parameters={"shared_memory_region": "r0", "shared_memory_byte_size": 8}))
    del body["inputs"][0]["data"]
    expect_error(http.post(INFER, json=body), 400, "shared memory extension is not supported")


def test_request_timeout_parameter_and_server_timeout(served: ServerThread, strict: ServerThread) -> None:
    with served.client() as http:
        body = json.loads(json_request())
        body["parameters"] = {"timeout": 1000}  # 1 ms, while the batcher waits up to 200 ms
        expect_error(http.post("/v2/models/mobilenet_v2_batched/infer", json=body), 504, "no result within")
    with strict.client() as http:  # 0.3 s server limit, 1 s batching delay
        expect_error(http.post(INFER, content=json_request()), 504, "within 0.3 s")
        assert http.get("/metrics").status_code == 200
    assert_still_serving(served)
