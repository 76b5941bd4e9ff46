"""The V2 service driven by tritonclient.http over a real socket; results equal the in-process session's."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from edgerun.backends.base import Session

from .serving_helpers import V2_SAMPLES, ServerThread

RTOL = ATOL = 1e-5


def connect(server: ServerThread, **kwargs: Any) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(server.host_port, connection_timeout=30, network_timeout=30,
                                        **kwargs)


def tensor(name: str, array: np.ndarray, datatype: str, binary: bool = True) -> triton.InferInput:
    item = triton.InferInput(name, list(array.shape), datatype)
    item.set_data_from_numpy(array, binary_data=binary)
    return item


def images(rows: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, 3, 224, 224)).astype(np.float32)


def test_health_and_server_metadata(served: ServerThread) -> None:
    client = connect(served)
    assert client.is_server_live() and client.is_server_ready()
    metadata = client.get_server_metadata()
    assert metadata["name"] == "edgerun"
    assert {"binary_tensor_data", "model_configuration", "statistics"} <= set(metadata["extensions"])


@pytest.mark.parametrize("model, max_batch", [("mobilenet_v2", 8), ("blazeface", 0),
                                              ("mobilenet_v2_int8", 0)])
def test_model_metadata_and_config_describe_the_session(
        served: ServerThread, references: dict[str, Session], model: str, max_batch: int) -> None:
    client = connect(served)
    session = references[model]
    assert client.is_model_ready(model)
    metadata = client.get_model_metadata(model)
    assert metadata["versions"] == ["1"]
    expected = [(s.name, [-1 if d is None else d for d in s.shape]) for s in session.input_specs]
    assert [(t["name"], t["shape"]) for t in metadata["inputs"]] == expected
    assert [t["name"] for t in metadata["outputs"]] == [s.name for s in session.output_specs]
    config = client.get_model_config(model)
    assert config["max_batch_size"] == max_batch
    dims = [shape[1:] if max_batch else shape for _, shape in expected]
    assert [i["dims"] for i in config["input"]] == dims
    assert config["instance_group"][0]["count"] == (2 if session.thread_safe else 1)


@pytest.mark.parametrize("binary_in, binary_out", [(True, True), (True, False), (False, True),
                                                   (False, False)])
def test_mobilenet_infer_equals_the_in_process_session(
        served: ServerThread, references: dict[str, Session], binary_in: bool, binary_out: bool) -> None:
    x = images(2)
    expected = references["mobilenet_v2"].infer({"input": x})["logits"]
    result = connect(served).infer("mobilenet_v2", [tensor("input", x, "FP32", binary_in)],
                                   outputs=[triton.InferRequestedOutput("logits", binary_data=binary_out)],
                                   request_id="req-7")
    np.testing.assert_allclose(result.as_numpy("logits"), expected, rtol=RTOL, atol=ATOL)
    response = result.get_response()
    assert response["id"] == "req-7" and response["model_name"] == "mobilenet_v2"


def test_outputs_default_to_all_binary_and_can_be_selected(
        served: ServerThread, references: dict[str, Session]) -> None:
    x = np.random.default_rng(1).uniform(-1, 1, (1, 3, 128, 128)).astype(np.float32)
    expected = references["blazeface"].infer({"input": x})
    client = connect(served)
    everything = client.infer("blazeface", [tensor("input", x, "FP32")])
    for name, value in expected.items():
        np.testing.assert_allclose(everything.as_numpy(name), value, rtol=RTOL, atol=ATOL)
    one = client.infer("blazeface", [tensor("input", x, "FP32", binary=False)],
                       outputs=[triton.InferRequestedOutput("classificators", binary_data=False)])
    assert [o["name"] for o in one.get_response()["outputs"]] == ["classificators"]
    np.testing.assert_allclose(one.as_numpy("classificators"), expected["classificators"],
                               rtol=RTOL, atol=ATOL)


def test_int8_model_on_litert_is_exact(served: ServerThread, references: dict[str, Session]) -> None:
    spec = references["mobilenet_v2_int8"].input_specs[0]
    x = np.random.default_rng(2).integers(-128, 128, (1, 224, 224, 3), dtype=np.int8)
    expected = references["mobilenet_v2_int8"].infer({spec.name: x})
    client = connect(served)
    for binary in (True, False):
        result = client.infer("mobilenet_v2_int8", [tensor(spec.name, x, "INT8", binary)])
        for name, value in expected.items():
            np.testing.assert_array_equal(result.as_numpy(name), value)


@pytest.mark.parametrize("binary", [True, False])
def test_every_v2_datatype_through_the_echo_model(served: ServerThread, binary: bool) -> None:
    inputs = [tensor(f"in_{t}", a, t, binary) for t, a in V2_SAMPLES.items()]
    outputs = [triton.InferRequestedOutput(f"out_{t}", binary_data=binary) for t in V2_SAMPLES]
    result = connect(served).infer("echo", inputs, outputs=outputs)
    for datatype, sent in V2_SAMPLES.items():
        got = result.as_numpy(f"out_{datatype}")
        assert result.get_output(f"out_{datatype}")["datatype"] == datatype
        if datatype == "BYTES":
            text = [x.decode() if isinstance(x, bytes) else x for x in got.reshape(-1)]
            assert text == [x.decode() for x in sent.reshape(-1)]
        else:
            assert got.dtype == sent.dtype and got.tolist() == sent.tolist()


def test_classification_extension_names_the_top_classes(
        served: ServerThread, references: dict[str, Session]) -> None:
    x = images(2, seed=3)
    logits = references["mobilenet_v2"].infer({"input": x})["logits"]
    result = connect(served).infer("mobilenet_v2", [tensor("input", x, "FP32")], outputs=[
        triton.InferRequestedOutput("logits", binary_data=True, class_count=3)])
    rows = result.as_numpy("logits")
    assert rows.shape == (2, 3)
    labels = served.service.runner("mobilenet_v2").package.labels
    for row, scores in zip(rows, logits, strict=True):
        best = np.argsort(-scores)[:3]
        assert [int(entry.decode().split(":")[1]) for entry in row] == best.tolist()
        assert row[0].decode().split(":", 2)[2] == labels[best[0]]


def test_dynamic_batching_joins_concurrent_requests(
        served: ServerThread, references: dict[str, Session]) -> None:
    inputs = [images(1, seed=10 + i) for i in range(8)]
    client = connect(served, concurrency=8)
    before = client.get_inference_statistics("mobilenet_v2_batched")["model_stats"][0]
    pending = [client.async_infer("mobilenet_v2_batched", [tensor("input", x, "FP32")]) for x in inputs]
    results = [p.get_result(timeout=60).as_numpy("logits") for p in pending]
    for x, got in zip(inputs, results, strict=True):
        expected = references["mobilenet_v2"].infer({"input": x})["logits"]
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    after = client.get_inference_statistics("mobilenet_v2_batched")["model_stats"][0]
    assert after["inference_count"] - before["inference_count"] == 8
    assert after["execution_count"] - before["execution_count"] < 8  # some requests shared a run
    assert max(b["batch_size"] for b in after["batch_stats"]) > 1
    client.close()


def test_statistics_count_successes_and_failures(served: ServerThread) -> None:
    client = connect(served)
    before = client.get_inference_statistics("mobilenet_v2")["model_stats"][0]
    client.infer("mobilenet_v2", [tensor("input", images(3), "FP32")])
    with pytest.raises(InferenceServerException):
        client.infer("mobilenet_v2", [tensor("input", np.zeros((1, 3, 9, 9), np.float32), "FP32")])
    after = client.get_inference_statistics("mobilenet_v2")["model_stats"][0]
    assert after["inference_count"] - before["inference_count"] == 3
    assert after["inference_stats"]["success"]["count"] - before["inference_stats"]["success"]["count"] == 1
    assert after["inference_stats"]["fail"]["count"] - before["inference_stats"]["fail"]["count"] == 1
    stages = after["inference_stats"]
    counts = {stages[k]["count"] for k in ("success", "queue", "compute_input", "compute_infer",
                                           "compute_output")}
    assert len(counts) == 1  # perf_analyzer rejects statistics whose counts differ
    names = {s["name"] for s in client.get_inference_statistics()["model_stats"]}
    assert {"mobilenet_v2", "blazeface", "echo"} <= names


def test_versions_one_and_only_one(served: ServerThread) -> None:
    client = connect(served)
    assert client.get_model_metadata("mobilenet_v2", "1")["name"] == "mobilenet_v2"
    assert client.is_model_ready("mobilenet_v2", "1")
    with pytest.raises(InferenceServerException, match="no version '2'") as caught:
        client.get_model_metadata("mobilenet_v2", "2")
    assert caught.value.status() == "404"


def test_repository_unload_then_load_again(served: ServerThread, references: dict[str, Session]) -> None:
    client = connect(served)
    index = {m["name"]: m for m in client.get_model_repository_index()}
    assert index["mobilenet_v2_int8"]["state"] == "READY"
    spec = references["mobilenet_v2_int8"].input_specs[0]
    x = np.zeros((1, 224, 224, 3), dtype=np.int8)
    try:
        client.unload_model("mobilenet_v2_int8")
        assert not client.is_model_ready("mobilenet_v2_int8")
        assert client.is_server_ready()  # an unload on request is not a fault
        with pytest.raises(InferenceServerException, match="not loaded") as caught:
            client.infer("mobilenet_v2_int8", [tensor(spec.name, x, "INT8")])
        assert caught.value.status() == "404"
        state = {m["name"]: m["state"] for m in client.get_model_repository_index()}
        assert state["mobilenet_v2_int8"] == "UNAVAILABLE"
    finally:
        client.load_model("mobilenet_v2_int8")
    assert client.is_model_ready("mobilenet_v2_int8")
    expected = references["mobilenet_v2_int8"].infer({spec.name: x})
    result = client.infer("mobilenet_v2_int8", [tensor(spec.name, x, "INT8")])
    np.testing.assert_array_equal(result.as_numpy(next(iter(expected))), next(iter(expected.values())))


def test_unload_finishes_the_request_waiting_in_the_batcher(
        served: ServerThread, references: dict[str, Session]) -> None:
    x = images(1, seed=30)
    client = connect(served, concurrency=2)
    try:
        waiting = client.async_infer("mobilenet_v2_batched", [tensor("input", x, "FP32")])
        with served.client() as http:  # the batcher holds it for up to 200 ms
            deadline = time.monotonic() + 10
            while 'edgerun_queue_depth{model="mobilenet_v2_batched"} 1.0' not in http.get("/metrics").text:
                assert time.monotonic() < deadline
                time.sleep(0.005)
        client.unload_model("mobilenet_v2_batched")
        expected = references["mobilenet_v2"].infer({"input": x})["logits"]
        np.testing.assert_allclose(waiting.get_result(timeout=30).as_numpy("logits"), expected,
                                   rtol=1e-4, atol=1e-4)
        assert not client.is_model_ready("mobilenet_v2_batched")
    finally:
        client.load_model("mobilenet_v2_batched")
        client.close()
    assert connect(served).is_model_ready("mobilenet_v2_batched")


def test_repository_load_never_takes_a_path_or_an_upload(served: ServerThread) -> None:
    client = connect(served)
    for name in ("etc", "passwd", "mobilenet_v2.onnx"):
        with pytest.raises(InferenceServerException, match="no model") as caught:
            client.load_model(name)
        assert caught.value.status() == "404"
    with pytest.raises(InferenceServerException, match="no config override") as caught:
        client.load_model("mobilenet_v2", config='{"backend": "x"}')
    assert caught.value.status() == "400"
    with pytest.raises(InferenceServerException, match="no config override"):
        client.load_model("mobilenet_v2", files={"file:1/model.onnx": b"\0" * 8})
    with served.client() as http:
        for path in ("/v2/repository/models/..%2F..%2Fetc%2Fpasswd/load",
                     "/v2/repository/models/%2Fetc%2Fpasswd/load"):
            response = http.post(path)
            assert response.status_code == 404 and "error" in response.json()
