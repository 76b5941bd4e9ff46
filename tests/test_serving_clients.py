"""Real clients against a real `edgerun serve` process: Triton's perf_analyzer and schemathesis (fuzzing
and positive cases checked against the app's OpenAPI); BYTES tensors on onnxruntime; the runtime options
the service loads models with (what benchmarks/serving.py gives KServe too)."""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import re
import signal
import subprocess
import sysconfig
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton

from edgerun.backends.base import LoadOptions
from edgerun.backends.onnxruntime_backend import OnnxRuntimeBackend
from edgerun.config import Settings
from edgerun.errors import InvalidInputError
from edgerun.serving import ModelConfig, ServeConfig
from edgerun.serving.execution import default_threads, load_options, release_free_heap

from .helpers import SAMPLES
from .serving_helpers import V2_SAMPLES, ServerThread, binary_body
from .test_serving_ops import ServeProcess

SCRIPTS = Path(sysconfig.get_path("scripts"))
PERF_ANALYZER = SCRIPTS / "perf_analyzer"
SCHEMATHESIS = SCRIPTS / "schemathesis"
MODELS = ("mobilenet_v2", "blazeface")

# Path parameters for the fuzzer: model routes use mobilenet_v2, the repository routes (which unload
# and reload) use blazeface, so that mobilenet_v2 stays loaded and its routes get past the 404.
SCHEMATHESIS_CONFIG = r"""
[[operations]]
include-path-regex = "^/v2/repository/"
parameters = { "path.model_name" = "blazeface" }

[[operations]]
include-path-regex = "^/v[12]/models/\\{model_name\\}"
parameters = { "path.model_name" = "mobilenet_v2", "path.model_version" = "1" }
"""


@pytest.fixture(scope="module")
def edgerun_serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`edgerun serve` with the default models in a subprocess; yields its 127.0.0.1:PORT. No stream
    may start (max_streams 0: a valid POST /v1/streams is 429), so that the fuzzer's sources are never
    opened; tests/test_streams.py covers running streams."""
    config = tmp_path_factory.mktemp("serve") / "config.yaml"
    config.write_text("limits:\n  max_streams: 0\n")
    server = ServeProcess("--config", str(config), *(arg for model in MODELS for arg in ("--model", model)))
    try:
        address = f"127.0.0.1:{server.port()}"
        deadline = time.monotonic() + 60
        with httpx.Client(base_url=f"http://{address}", timeout=10) as http:
            while http.get("/v2/health/ready").status_code != 200:
                assert time.monotonic() < deadline and server.process.poll() is None, "".join(server.log)
                time.sleep(0.05)
        yield address
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=30) == 0, "".join(server.log[-20:])
    finally:
        server.stop()


def cuda_runtime_env() -> dict[str, str]:
    """perf_analyzer links libcudart.so.12 even without a GPU: the nvidia-cuda-runtime-cu12 wheel's."""
    spec = importlib.util.find_spec("nvidia.cuda_runtime")
    assert spec is not None and spec.submodule_search_locations, \
        "nvidia-cuda-runtime-cu12 (test extra) provides libcudart.so.12 for perf_analyzer"
    folders = [str(Path(p) / "lib") for p in spec.submodule_search_locations]
    library_path = os.pathsep.join([*folders, os.environ.get("LD_LIBRARY_PATH", "")])
    return {**os.environ, "LD_LIBRARY_PATH": library_path}


@pytest.mark.skipif(platform.machine() != "x86_64",
                    reason="perf_analyzer ships only in tritonclient's x86_64 manylinux wheel, and "
                           "libcudart (nvidia-cuda-runtime-cu12) is installed for x86_64 only")
def test_perf_analyzer_runs_against_edgerun_serve(edgerun_serve: str) -> None:
    assert PERF_ANALYZER.exists(), "tritonclient[http]==2.51.0 (test extra) installs bin/perf_analyzer"
    command = [str(PERF_ANALYZER), "-m", "mobilenet_v2", "-u", edgerun_serve, "-i", "http",
               # measurement-window flags only: short count windows, accepted as stable
               "--measurement-mode", "count_windows", "--measurement-request-count", "20",
               "--stability-percentage", "100", "--max-trials", "5"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, env=cuda_runtime_env())
    output = done.stdout + done.stderr
    assert "libb64" not in output, "perf_analyzer needs Debian's libb64-0d (installed by .ci/run)"
    assert done.returncode == 0, output
    throughput = re.search(r"Throughput: ([\d.]+) infer/sec", output)
    assert throughput and float(throughput.group(1)) > 0, output
    # perf_analyzer also read the statistics extension: the server counted the inferences it sent
    served = re.search(r"Server:\s+Inference count: (\d+)", output)
    assert served and int(served.group(1)) > 0, output


def test_schemathesis_finds_no_server_error_and_no_schema_violation(edgerun_serve: str,
                                                                    tmp_path: Path) -> None:
    config = tmp_path / "schemathesis.toml"
    config.write_text(SCHEMATHESIS_CONFIG)
    command = [str(SCHEMATHESIS), "--config-file", str(config), "run", f"http://{edgerun_serve}/openapi.json",
               "--max-examples", "25", "--seed", "20261125", "--request-timeout", "20",
               "--max-failures", "20",
               # every check but positive_data_acceptance: a tensor that fits the generic InferRequest
               # schema is still refused (400) unless its name, shape and datatype fit the model
               "--checks", "all", "--exclude-checks", "positive_data_acceptance"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    generated = re.search(r"(\d+) generated, (\d+) passed", done.stdout)
    assert generated and generated.group(1) == generated.group(2) and int(generated.group(1)) > 100, \
        done.stdout[-3000:]


def _positive_cases() -> list[tuple[str, str, dict[str, Any]]]:
    """(path, method, Case keyword arguments) of valid requests whose answers must fit the schema."""
    x = np.random.default_rng(4).standard_normal((1, 3, 224, 224)).astype(np.float32)
    body, length = binary_body([("input", "FP32", x)], parameters={"binary_data_output": True})
    model = {"model_name": "mobilenet_v2"}
    infer = "/v2/models/{model_name}/infer"
    return [
        (infer, "POST", {"path_parameters": model, "media_type": "application/json", "body": {
            "id": "json-1", "inputs": [{"name": "input", "shape": [1, 3, 224, 224], "datatype": "FP32",
                                        "data": x.reshape(-1).tolist()}]}}),
        (infer, "POST", {"path_parameters": model, "media_type": "application/octet-stream", "body": body,
                         "headers": {"Inference-Header-Content-Length": str(length)}}),
        ("/v1/models/{model_name}/predict", "POST", {
            "path_parameters": model, "media_type": "image/png",
            "body": (SAMPLES / "chelsea.png").read_bytes(), "query": {"top_k": 3}}),
        ("/v2/models/{model_name}/config", "GET", {"path_parameters": model}),
        ("/v2/models/{model_name}/stats", "GET", {"path_parameters": model}),
        ("/v2/repository/index", "POST", {"media_type": "application/json", "body": {"ready": True}}),
    ]


def test_valid_requests_get_answers_that_fit_the_schema(edgerun_serve: str) -> None:
    import schemathesis

    schema = schemathesis.openapi.from_url(f"http://{edgerun_serve}/openapi.json")
    for path, method, case_args in _positive_cases():
        try:
            response = schema[path][method].Case(**case_args).call_and_validate(timeout=30)
        except Exception as exc:  # schemathesis' failure report, minus the megabyte curl reproducer
            report = "\n".join(line[:300] for line in str(exc).splitlines())
            pytest.fail(f"{method} {path}: {report[:4000]}", pytrace=False)
        assert response.status_code == 200, (path, response.text[:300])


def test_onnxruntime_takes_bytes_elements_of_string_tensors(echo_model: Path) -> None:
    session = OnnxRuntimeBackend().load(echo_model, LoadOptions(threads=1))
    inputs = {f"in_{t}": a for t, a in V2_SAMPLES.items()}
    try:
        out = session.infer(inputs)["out_BYTES"]
        assert out.tolist() == [["édge", "run"]]  # decoded, not "b'\\xc3\\xa9dge'"
        mixed = np.array([["str", b"bytes"]], dtype=object)
        assert session.infer({**inputs, "in_BYTES": mixed})["out_BYTES"].tolist() == [["str", "bytes"]]
        with pytest.raises(InvalidInputError, match="in_BYTES.*UTF-8"):
            session.infer({**inputs, "in_BYTES": np.array([[b"\xff", b"ok"]], dtype=object)})
    finally:
        session.close()


def test_bytes_over_v2_reach_onnxruntime_as_text(served: ServerThread) -> None:
    client = triton.InferenceServerClient(served.host_port, network_timeout=30)
    inputs = []
    for datatype, array in V2_SAMPLES.items():
        item = triton.InferInput(f"in_{datatype}", list(array.shape), datatype)
        item.set_data_from_numpy(array)
        inputs.append(item)
    wanted = [triton.InferRequestedOutput("out_BYTES", binary_data=False)]
    result = client.infer("echo", inputs, outputs=wanted)
    assert result.get_response()["outputs"][0]["data"] == ["édge", "run"]
    bad = [(f"in_{t}", t, np.array([[b"\xff\xfe", b"x"]], dtype=object) if t == "BYTES" else a)
           for t, a in V2_SAMPLES.items()]
    body, length = binary_body(bad)
    with served.client() as http:
        response = http.post("/v2/models/echo/infer", content=body,
                             headers={"Inference-Header-Content-Length": str(length)})
    assert response.status_code == 400 and "UTF-8" in response.json()["error"], response.text
    assert json.loads(httpx.get(f"{served.url}/v2/health/live").text) == {"live": True}


def test_runtime_threads_share_the_cpus_between_instances() -> None:
    cpus = len(os.sched_getaffinity(0))
    assert default_threads(1) == cpus and default_threads(2) == max(1, cpus // 2)
    assert default_threads(cpus * 4) == 1
    config = ServeConfig(settings=Settings())
    assert load_options(ModelConfig("m"), config).threads == max(1, cpus // 2)   # 2 instances by default
    assert load_options(ModelConfig("m", instances=1), config).threads == cpus
    assert load_options(ModelConfig("m", threads=3), config).threads == 3
    assert load_options(ModelConfig("m"), ServeConfig(settings=Settings(threads=5))).threads == 5
    release_free_heap()  # glibc's malloc_trim here; must not fail where it is missing either
