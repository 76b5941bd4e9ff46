"""Serving test helpers: a real uvicorn server on 127.0.0.1 in a thread, an all-datatypes echo model,
hand-built binary-extension bodies, and the session-scoped servers the serving tests share."""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from edgerun.backends.base import LoadOptions, Session
from edgerun.config import Settings
from edgerun.predictor import open_session
from edgerun.serving import ModelConfig, ServeConfig, create_app
from edgerun.serving.config import AuthConfig, LimitsConfig

from .helpers import MODELS, SAMPLES

API_KEY = "serving-test-key"
STRICT_BODY_LIMIT = 1024 * 1024
TIMEOUT_S = 30.0

# One small sample per V2 datatype, shape [1, 2] (the echo model's [batch, 2]).
V2_SAMPLES: dict[str, np.ndarray] = {
    "BOOL": np.array([[True, False]]),
    "UINT8": np.array([[0, 255]], dtype=np.uint8),
    "UINT16": np.array([[1, 65535]], dtype=np.uint16),
    "UINT32": np.array([[2, 4294967295]], dtype=np.uint32),
    "UINT64": np.array([[3, 2**63 + 5]], dtype=np.uint64),
    "INT8": np.array([[-128, 127]], dtype=np.int8),
    "INT16": np.array([[-32768, 7]], dtype=np.int16),
    "INT32": np.array([[-(2**31), 9]], dtype=np.int32),
    "INT64": np.array([[-(2**62), 11]], dtype=np.int64),
    "FP16": np.array([[0.5, -2.25]], dtype=np.float16),
    "FP32": np.array([[1.25, -3.5e-8]], dtype=np.float32),
    "FP64": np.array([[1e300, -0.125]], dtype=np.float64),
    "BYTES": np.array([["édge".encode(), b"run"]], dtype=object),
}


def _raw_bytes(datatype: str, array: np.ndarray) -> bytes:
    """The binary extension's byte form, written independently of the server's codec."""
    if datatype == "BYTES":
        return b"".join(struct.pack("<I", len(x)) + x for x in array.reshape(-1))
    if datatype == "BOOL":
        return array.astype(np.uint8).tobytes()
    return array.astype(array.dtype.newbyteorder("<")).tobytes()


def binary_body(tensors: Sequence[tuple[str, str, np.ndarray]], outputs: list[dict[str, Any]] | None = None,
                parameters: dict[str, Any] | None = None) -> tuple[bytes, int]:
    """A binary-extension request body for (name, datatype, array) inputs, and its header length."""
    inputs = []
    blobs = []
    for name, datatype, array in tensors:
        blob = _raw_bytes(datatype, array)
        blobs.append(blob)
        inputs.append({"name": name, "shape": list(array.shape), "datatype": datatype,
                       "parameters": {"binary_data_size": len(blob)}})
    request: dict[str, Any] = {"inputs": inputs}
    if outputs is not None:
        request["outputs"] = outputs
    if parameters is not None:
        request["parameters"] = parameters
    header = json.dumps(request).encode()
    return header + b"".join(blobs), len(header)


def write_echo_model(path: Path) -> Path:
    """An ONNX model with one Identity per V2 datatype: in_<TYPE> [batch, 2] -> out_<TYPE>."""
    import onnx
    from onnx import TensorProto, helper

    types = {"BOOL": TensorProto.BOOL, "UINT8": TensorProto.UINT8, "UINT16": TensorProto.UINT16,
             "UINT32": TensorProto.UINT32, "UINT64": TensorProto.UINT64, "INT8": TensorProto.INT8,
             "INT16": TensorProto.INT16, "INT32": TensorProto.INT32, "INT64": TensorProto.INT64,
             "FP16": TensorProto.FLOAT16, "FP32": TensorProto.FLOAT, "FP64": TensorProto.DOUBLE,
             "BYTES": TensorProto.STRING}
    graph = helper.make_graph(
        [helper.make_node("Identity", [f"in_{t}"], [f"out_{t}"]) for t in types], "echo",
        [helper.make_tensor_value_info(f"in_{t}", code, ["batch", 2]) for t, code in types.items()],
        [helper.make_tensor_value_info(f"out_{t}", code, ["batch", 2]) for t, code in types.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


class ServerThread:
    """A real uvicorn server for ``app`` (made by create_app) on 127.0.0.1 (free port, pre-bound) in a
    daemon thread, configured as ``edgerun serve`` configures it: connection budgets and, unless the
    config turns it off, the infer fast lane."""

    def __init__(self, app: Any, headers: dict[str, str] | None = None) -> None:
        import uvicorn

        from edgerun.serving.runner import uvicorn_config

        self.app = app
        self.headers = headers or {}
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.bind(("127.0.0.1", 0))
        self.port = self._socket.getsockname()[1]
        config = uvicorn_config(app, app.state.service.config)
        config.timeout_graceful_shutdown = 10
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._socket]},
                                        daemon=True, name=f"uvicorn-{self.port}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def host_port(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def service(self) -> Any:
        return self.app.state.service

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.headers, timeout=TIMEOUT_S, **kwargs)

    def wait_ready(self, expect: int = 200, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        with self.client() as http:
            while http.get("/v2/health/ready").status_code != expect:
                assert time.monotonic() < deadline, f"server not ready ({expect}) within {timeout} s"
                time.sleep(0.05)

    def __enter__(self) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + TIMEOUT_S
        while not self.server.started:
            assert self._thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=TIMEOUT_S)
        self._socket.close()
        assert not self._thread.is_alive(), "uvicorn did not stop"


def classify_sample(http: httpx.Client, times: int = 1) -> None:
    """Upload the sample photo to mobilenet_v2's image route ``times`` times, each answered 200."""
    for _ in range(times):
        with (SAMPLES / "chelsea.png").open("rb") as image:
            assert http.post("/v1/models/mobilenet_v2/predict", files={"file": image}).status_code == 200


def shared_config(echo_model: Path) -> ServeConfig:
    """Models of the shared server: both CPU backends, a detector, a batcher and all datatypes."""
    return ServeConfig(settings=Settings(), models=(
        ModelConfig("mobilenet_v2", backend="onnxruntime", threads=1),
        ModelConfig("mobilenet_v2_batched", path=str(MODELS / "mobilenet_v2"), backend="onnxruntime",
                    threads=1, dynamic_batching=True, max_queue_delay_us=200_000),
        ModelConfig("blazeface", backend="onnxruntime", threads=1),
        ModelConfig("mobilenet_v2_int8", backend="litert", threads=1),
        ModelConfig("echo", path=str(echo_model), backend="onnxruntime", threads=1),
    ))


@pytest.fixture(scope="session")
def echo_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_echo_model(tmp_path_factory.mktemp("echo") / "echo.onnx")


@pytest.fixture(scope="session")
def served(echo_model: Path) -> Iterator[ServerThread]:
    """The shared server (no API key, default limits), ready."""
    with ServerThread(create_app(shared_config(echo_model))) as server:
        server.wait_ready()
        yield server


@pytest.fixture(scope="session")
def strict() -> Iterator[ServerThread]:
    """A server with an API key, a 1 MiB body limit, a 0.3 s timeout and a 1 s batching delay."""
    config = ServeConfig(settings=Settings(), auth=AuthConfig(api_key=API_KEY),
                         limits=LimitsConfig(max_body_bytes=STRICT_BODY_LIMIT, request_timeout_s=0.3),
                         models=(
                             ModelConfig("mobilenet_v2", backend="onnxruntime", threads=1,
                                         dynamic_batching=True, max_queue_delay_us=1_000_000),))
    with ServerThread(create_app(config), headers={"Authorization": f"Bearer {API_KEY}"}) as server:
        server.wait_ready()
        yield server


@pytest.fixture(scope="session")
def references() -> Iterator[dict[str, Session]]:
    """In-process sessions with the shared server's backends, to compare results with."""
    sessions = {}
    for name, backend in (("mobilenet_v2", "onnxruntime"), ("blazeface", "onnxruntime"),
                          ("mobilenet_v2_int8", "litert")):
        sessions[name] = open_session(name, backend=backend, options=LoadOptions(threads=1),
                                      settings=Settings())[2]
    yield sessions
    for session in sessions.values():
        session.close()
