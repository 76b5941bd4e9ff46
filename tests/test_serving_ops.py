"""Operations: image upload, metrics, API key, access log, hooks, start-up failure, config, SIGTERM drain."""

from __future__ import annotations

import json
import logging
import os
import queue
import re
import resource
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from prometheus_client.parser import text_string_to_metric_families

from edgerun.backends.base import LoadOptions, Session
from edgerun.cli import build_parser
from edgerun.cli.serve import build_config
from edgerun.config import Settings
from edgerun.errors import InvalidInputError
from edgerun.predictor import Predictor
from edgerun.serving import LifecycleHooks, ModelConfig, ServeConfig, create_app, load_config

from .helpers import REPO, SAMPLES
from .serving_helpers import API_KEY, ServerThread, binary_body


def metric_samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [(s.name, s.labels, s.value) for family in text_string_to_metric_families(text)
            for s in family.samples]


def sample(samples: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float:
    return sum(value for n, got, value in samples if n == name and labels.items() <= got.items())


@pytest.mark.parametrize("upload", ["multipart", "raw"])
def test_image_upload_equals_the_predictor(served: ServerThread, upload: str) -> None:
    with Predictor.open("mobilenet_v2", backend="onnxruntime", options=LoadOptions(threads=1),
                        settings=Settings()) as predictor:
        expected = predictor.predict(SAMPLES / "chelsea.png", top_k=3)
    data = (SAMPLES / "chelsea.png").read_bytes()
    with served.client() as http:
        url = "/v1/models/mobilenet_v2/predict?top_k=3"
        if upload == "multipart":
            response = http.post(url, files={"file": ("chelsea.png", data, "image/png")})
        else:
            response = http.post(url, content=data, headers={"Content-Type": "image/png"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["backend"] == "onnxruntime"
    assert [c["label"] for c in body["classes"]] == [c.label for c in expected.classes]
    assert body["classes"][0]["label"] == "Egyptian cat"
    np.testing.assert_allclose([c["score"] for c in body["classes"]], [c.score for c in expected.classes],
                               rtol=1e-5, atol=1e-6)
    assert set(body["timings_ms"]) == {"decode", "preprocess", "infer", "postprocess", "queue", "total"}


def test_detector_upload_returns_boxes_in_pixels(served: ServerThread) -> None:
    with Predictor.open("blazeface", backend="onnxruntime", options=LoadOptions(threads=1),
                        settings=Settings()) as predictor:
        expected = predictor.predict(SAMPLES / "astronaut.png")
    with served.client() as http:
        response = http.post("/v1/models/blazeface/predict",
                             content=(SAMPLES / "astronaut.png").read_bytes())
    body = response.json()
    assert response.status_code == 200 and body["image_size"] == [512, 512]
    assert len(body["detections"]) == len(expected.detections) == 1
    np.testing.assert_allclose(body["detections"][0]["box"], expected.detections[0].box, atol=0.11)
    assert body["detections"][0]["label"] == "face"


def test_not_thread_safe_session_serves_concurrent_requests_one_at_a_time(
        served: ServerThread, references: dict[str, Session]) -> None:
    runner = served.service.runner("mobilenet_v2_int8")
    assert runner.workers == 1 and not runner.session.thread_safe
    reference = references["mobilenet_v2_int8"]
    spec, output = reference.input_specs[0], reference.output_specs[0].name
    inputs = [np.random.default_rng(20 + i).integers(-128, 128, (1, 224, 224, 3), dtype=np.int8)
              for i in range(6)]
    client = triton.InferenceServerClient(served.host_port, concurrency=6, network_timeout=60)

    def call(x: np.ndarray) -> np.ndarray:
        item = triton.InferInput(spec.name, list(x.shape), "INT8")
        item.set_data_from_numpy(x)
        return client.infer("mobilenet_v2_int8", [item]).as_numpy(output)

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(call, inputs))
    for x, got in zip(inputs, results, strict=True):
        np.testing.assert_array_equal(got, reference.infer({spec.name: x})[output])


def test_metrics_count_requests_stages_queue_and_batches(served: ServerThread) -> None:
    with served.client() as http:
        body, length = binary_body([("input", "FP32", np.zeros((2, 3, 224, 224), np.float32))])
        assert http.post("/v2/models/mobilenet_v2/infer", content=body,
                         headers={"Inference-Header-Content-Length": str(length)}).status_code == 200
        http.post("/v2/models/no_such_model_123/infer", content=b"{}")
        infer_route = "/v2/models/{model_name}/infer"
        requests = "edgerun_requests_total"
        deadline = time.monotonic() + 10  # a request is counted just after its response is sent
        while True:
            response = http.get("/metrics")
            samples = metric_samples(response.text)
            counted = sample(samples, requests, route=infer_route, model="", status="404") >= 1
            if (counted and sample(samples, "edgerun_inflight_requests") == 1) or time.monotonic() > deadline:
                break
            time.sleep(0.01)
    assert response.headers["content-type"].startswith("text/plain")
    assert sample(samples, requests, route=infer_route, model="mobilenet_v2", status="200") >= 1
    assert sample(samples, requests, route=infer_route, model="", status="404") >= 1
    assert "no_such_model_123" not in response.text  # unknown names never become label values
    for stage in ("decode", "queue", "infer", "encode"):
        assert sample(samples, "edgerun_stage_duration_seconds_count", model="mobilenet_v2", stage=stage) >= 1
    assert sample(samples, "edgerun_batch_size_sum", model="mobilenet_v2") >= 2
    assert sample(samples, "edgerun_queue_depth", model="mobilenet_v2") == 0
    assert sample(samples, "edgerun_inflight_requests") == 1  # this /metrics request
    assert sample(samples, "edgerun_model_ready", model="blazeface") == 1
    assert sample(samples, "edgerun_request_duration_seconds_count", route=infer_route) >= 1


def test_access_log_is_one_json_object_per_request(served: ServerThread,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    def mine() -> list[dict[str, object]]:
        records = [json.loads(r.getMessage()) for r in caplog.records if r.name == "edgerun.serving.access"]
        return [r for r in records if r["request_id"] == "trace-42"]

    with caplog.at_level(logging.INFO, logger="edgerun.serving.access"), served.client() as http:
        http.get("/v2/health/live", headers={"X-Request-Id": "trace-42"})
        deadline = time.monotonic() + 10  # the record is written just after the response is sent
        while not mine() and time.monotonic() < deadline:
            time.sleep(0.01)
    assert len(mine()) == 1
    record = mine()[0]
    assert record["path"] == "/v2/health/live" and record["status"] == 200 and float(str(record["ms"])) >= 0


def test_api_key_guards_everything_but_health_metrics_and_docs(strict: ServerThread) -> None:
    with httpx.Client(base_url=strict.url, timeout=30) as http:
        for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/mobilenet_v2/ready",
                     "/v2/models/mobilenet_v2/versions/1/ready", "/metrics", "/openapi.json", "/docs"):
            assert http.get(path).status_code == 200, path
        for method, path in (("GET", "/v2"), ("GET", "/v2/models/mobilenet_v2"), ("GET", "/v1/health"),
                             ("POST", "/v2/models/mobilenet_v2/infer"),
                             ("POST", "/v1/models/mobilenet_v2/predict"), ("POST", "/v2/repository/index")):
            response = http.request(method, path)
            assert response.status_code == 401, path
            assert "API key" in response.json()["error"] and response.headers["www-authenticate"] == "Bearer"
        assert http.get("/v2", headers={"Authorization": "Bearer wrong-key-123"}).status_code == 401
        assert http.get("/v2", headers={"X-API-Key": API_KEY}).status_code == 200
        assert http.get("/v2", headers={"Authorization": f"Bearer {API_KEY}"}).status_code == 200
    client = triton.InferenceServerClient(strict.host_port)
    assert client.is_server_ready() and client.is_model_ready("mobilenet_v2")  # as Triton's: no key
    with pytest.raises(Exception, match="API key"):
        client.get_server_metadata()


def test_openapi_documents_the_v2_routes(served: ServerThread) -> None:
    with served.client() as http:
        schema = http.get("/openapi.json").json()
    assert "InferRequest" in schema["components"]["schemas"]
    infer = schema["paths"]["/v2/models/{model_name}/infer"]["post"]
    assert {"200", "400", "404", "413"} <= set(infer["responses"])
    assert "/v2/models/{model_name}/versions/{model_version}/config" in schema["paths"]


def test_hooks_mark_ready_then_stopping() -> None:
    events: list[str] = []
    hooks = LifecycleHooks(on_ready=lambda: events.append("ready"),
                           on_stopping=lambda: events.append("stopping"),
                           on_failed=lambda reason: events.append("failed"))
    config = ServeConfig(settings=Settings(),
                         models=(ModelConfig("blazeface", backend="onnxruntime", threads=1, warmup=2),))
    with ServerThread(create_app(config, hooks)) as server:
        server.wait_ready()
        assert events == ["ready"]
    assert events == ["ready", "stopping"]


def test_a_model_that_fails_to_load_keeps_the_server_live_but_not_ready(tmp_path: Path) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"this is not an onnx model")
    failures: list[str] = []
    config = ServeConfig(settings=Settings(),
                         models=(ModelConfig("broken", path=str(broken), backend="onnxruntime"),))
    with ServerThread(create_app(config, LifecycleHooks(on_failed=failures.append))) as server:
        deadline = time.monotonic() + 30
        while not failures:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        with server.client() as http:
            assert http.get("/v2/health/live").status_code == 200
            assert http.get("/v2/health/ready").json() == {"ready": False}
            ready = http.get("/v2/models/broken/ready")
            assert ready.status_code == 503 and ready.json() == {"name": "broken", "ready": False}
            index = {m["name"]: m for m in http.post("/v2/repository/index").json()}
            assert index["broken"]["state"] == "UNAVAILABLE" and "could not load" in index["broken"]["reason"]
    assert "broken" in failures[0] and "could not load" in failures[0]


def test_config_files_json_and_toml(tmp_path: Path) -> None:
    json_file = tmp_path / "serve.json"
    json_file.write_text(json.dumps({"server": {"port": 9000}, "limits": {"request_timeout_s": 5}, "models": [
        "blazeface", {"name": "mobilenet_v2", "dynamic_batching": True, "max_queue_delay_us": 2000}]}))
    config = load_config(json_file, environ={"EDGERUN_API_KEY": "from-the-environment"})
    assert config.port == 9000 and config.request_timeout_s == 5.0
    assert config.api_key == "from-the-environment"
    assert config.model_config("mobilenet_v2").dynamic_batching
    toml_file = tmp_path / "serve.toml"
    toml_file.write_text('[server]\nhost = "0.0.0.0"\n[[models]]\nname = "blazeface"\ninstances = 1\n')
    assert load_config(toml_file, environ={}).models == (ModelConfig("blazeface", instances=1),)
    for text, message in (('{"server": {"port": "eighty"}}', "server.port: Input should be a valid integer"),
                          ('{"models": [{"name": "a", "x": 1}]}', "models[0].x: unknown key"),
                          ('{"auth": {"api_key": "short"}}', "auth.api_key: String should have at least 8"),
                          ('{"port": 80}', "port: unknown key (it belongs in the server section"),
                          ("[1]", "mapping")):
        json_file.write_text(text)
        with pytest.raises(InvalidInputError, match=re.escape(message)):
            load_config(json_file, environ={})


def test_command_line_overrides_the_config_file(tmp_path: Path) -> None:
    config_file = tmp_path / "serve.json"
    config_file.write_text(json.dumps({"models": [{"name": "mobilenet_v2", "max_batch_size": 4}]}))
    args = build_parser().parse_args(["serve", "--config", str(config_file), "--port", "0",
                                      "--model", "mobilenet_v2", "--model", str(tmp_path / "x.onnx")])
    config = build_config(args)
    assert config.port == 0 and config.host == "127.0.0.1"
    assert config.models[0] == ModelConfig("mobilenet_v2", max_batch_size=4)
    assert config.models[1] == ModelConfig("x", path=str(tmp_path / "x.onnx"))
    assert [m.name for m in build_config(build_parser().parse_args(["serve"])).models] == \
        ["mobilenet_v2", "blazeface"]


class ServeProcess:
    """`python -m edgerun serve` in a subprocess; stderr lines collected by a thread."""

    def __init__(self, *args: str, nofile: int | None = None) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGERUN_")}

        def limit_descriptors() -> None:  # as systemd's default soft limit, 1024
            if nofile is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        self.process = subprocess.Popen([sys.executable, "-m", "edgerun", "serve", "--port", "0", *args],
                                        cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, text=True, preexec_fn=limit_descriptors)
        self.lines: queue.Queue[str] = queue.Queue()
        self.log: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.log.append(line)
            self.lines.put(line)

    def port(self, timeout: float = 60.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                if self.process.poll() is not None:
                    break
                continue
            found = re.search(r"running on http://127\.0\.0\.1:(\d+)", line)
            if found:
                return int(found.group(1))
        raise AssertionError("server did not start:\n" + "".join(self.log))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)


def test_sigterm_finishes_the_request_in_flight_and_exits_0(
        tmp_path: Path, references: dict[str, Session]) -> None:
    config = tmp_path / "serve.json"  # a 1.5 s batching delay holds the request in flight
    config.write_text(json.dumps({"models": [{"name": "mobilenet_v2", "backend": "onnxruntime", "threads": 1,
                                              "dynamic_batching": True, "max_queue_delay_us": 1_500_000}]}))
    server = ServeProcess("--config", str(config))
    try:
        url = f"http://127.0.0.1:{server.port()}"
        with httpx.Client(base_url=url, timeout=30) as http:
            deadline = time.monotonic() + 60
            while http.get("/v2/health/ready").status_code != 200:
                assert time.monotonic() < deadline and server.process.poll() is None, "".join(server.log)
                time.sleep(0.05)
            x = np.random.default_rng(5).standard_normal((1, 3, 224, 224)).astype(np.float32)
            body, length = binary_body([("input", "FP32", x)], parameters={"binary_data_output": False})
            with ThreadPoolExecutor(1) as pool:
                in_flight = pool.submit(httpx.post, url + "/v2/models/mobilenet_v2/infer", content=body,
                                        headers={"Inference-Header-Content-Length": str(length)}, timeout=30)
                while 'edgerun_queue_depth{model="mobilenet_v2"} 1.0' not in http.get("/metrics").text:
                    assert time.monotonic() < deadline and not in_flight.done()
                    time.sleep(0.02)
                server.process.send_signal(signal.SIGTERM)
                response = in_flight.result(timeout=30)
        assert response.status_code == 200, response.text
        logits = np.array(response.json()["outputs"][0]["data"], dtype=np.float32).reshape(1, 1000)
        expected = references["mobilenet_v2"].infer({"input": x})["logits"]
        np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)
        assert server.process.wait(timeout=30) == 0
        assert any("shutting down" in line for line in server.log)
    finally:
        server.stop()


def test_serve_exits_1_when_a_start_up_model_cannot_load(tmp_path: Path) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"garbage")
    server = ServeProcess("--model", str(broken))
    try:
        assert server.process.wait(timeout=60) == 1
        assert any("start-up failed: broken" in line for line in server.log)
    finally:
        server.stop()
    done = subprocess.run([sys.executable, "-m", "edgerun", "serve", "--model", "no_such_model"],
                          capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 1 and done.stderr.startswith("edgerun: error: no model named")
