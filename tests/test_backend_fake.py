"""The public fake backend: configured tensors, the output rule, delay and thread-safety, and the
service's batching and serialisation shown with it (no real runtime needed)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from edgerun.backends.base import LoadOptions
from edgerun.backends.fake import FakeBackend, fake_options
from edgerun.backends.options import parse_options
from edgerun.backends.registry import Registry
from edgerun.config import Settings
from edgerun.errors import InferenceError, InvalidInputError
from edgerun.predictor import open_session
from edgerun.serving import ModelConfig, ServeConfig, create_app

from .helpers import MODELS
from .serving_helpers import ServerThread

ANY_FILE = MODELS / "mobilenet_v2" / "manifest.json"


def test_configured_tensors_and_the_output_rule() -> None:
    options = parse_options("fake", {"inputs": "a=Nx2,b=Nx1", "outputs": "y=Nx3"})
    with FakeBackend().load(ANY_FILE, LoadOptions(options=options)) as session:
        assert [(s.name, s.shape) for s in session.input_specs] == [("a", (None, 2)), ("b", (None, 1))]
        out = session.infer({"a": np.array([[1, 2], [3, 4]], np.float32),
                             "b": np.array([[10], [20]], np.float32)})["y"]
    np.testing.assert_array_equal(out, [[13, 14, 15], [27, 28, 29]])
    with pytest.raises(InvalidInputError, match="write shapes as name=Nx3x224x224"):
        parse_options("fake", {"outputs": "y=big"})


def test_not_thread_safe_sessions_fail_when_called_concurrently() -> None:
    def hammer(thread_safe: bool) -> tuple[list[Exception], int]:
        session = FakeBackend().load(ANY_FILE, fake_options(inputs={"x": "Nx1"}, outputs={"y": "Nx1"},
                                                            delay_ms=30, thread_safe=thread_safe))
        errors: list[Exception] = []
        barrier = threading.Barrier(4)

        def call() -> None:
            barrier.wait()
            try:
                session.infer({"x": np.ones((1, 1), np.float32)})
            except InferenceError as exc:
                errors.append(exc)

        threads = [threading.Thread(target=call) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return errors, session.max_concurrent

    errors, most = hammer(thread_safe=False)
    assert errors and "not thread-safe and was called concurrently" in str(errors[0])
    errors, most = hammer(thread_safe=True)
    assert errors == [] and most > 1


def test_fake_is_chosen_only_by_name() -> None:
    assert "fake" not in Registry().order() and Registry().order(explicit=True)[-1] == "fake"
    _, selection, session = open_session("mobilenet_v2", options=fake_options(), settings=Settings())
    assert selection.backend.name == "fake" and session.backend_name == "fake"  # options name it
    with pytest.raises(InvalidInputError, match="options for backend 'fake' given, but backend 'litert'"):
        open_session("mobilenet_v2", backend="litert", options=fake_options(), settings=Settings())


@pytest.fixture(scope="module")
def fake_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """Two raw fake models: one not thread-safe with 4 instances asked for, one batching."""
    model_file = tmp_path_factory.mktemp("fake") / "fake.onnx"
    model_file.write_bytes(b"the fake backend never reads this")
    tensors = {"inputs": {"x": "Nx4"}, "outputs": {"y": "Nx3"}}
    config = ServeConfig(settings=Settings(), models=(
        ModelConfig("serial", path=str(model_file), backend="fake", instances=4,
                    options={**tensors, "delay_ms": 20, "thread_safe": False}),
        ModelConfig("batched", path=str(model_file), backend="fake", dynamic_batching=True,
                    max_queue_delay_us=300_000, max_batch_size=8, options={**tensors, "delay_ms": 5}),
    ))
    with ServerThread(create_app(config)) as server:
        server.wait_ready()
        yield server


def _infer(server: ServerThread, model: str, row: list[float]) -> list[float]:
    body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": row}]}
    with server.client() as http:
        response = http.post(f"/v2/models/{model}/infer", json=body)
    assert response.status_code == 200, response.text
    return response.json()["outputs"][0]["data"]


def _rows(count: int) -> list[list[float]]:
    return [[float(i), 1.0, 2.0, 3.0] for i in range(count)]


def test_service_serialises_a_session_that_is_not_thread_safe(fake_server: ServerThread) -> None:
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda row: _infer(fake_server, "serial", row), _rows(6)))
    assert results == [[sum(row) + j for j in range(3)] for row in _rows(6)]
    runner = fake_server.service.runner("serial")
    assert runner.workers == 1 and runner.session.max_concurrent == 1


def test_dynamic_batching_returns_each_row_to_its_request(fake_server: ServerThread) -> None:
    session = fake_server.service.runner("batched").session
    calls_before = session.calls
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda row: _infer(fake_server, "batched", row), _rows(8)))
    assert results == [[sum(row) + j for j in range(3)] for row in _rows(8)]
    assert session.calls - calls_before < 8  # several requests shared one execution


def test_model_options_that_do_not_fit_the_backend_fail_the_load(tmp_path: Path) -> None:
    from edgerun.serving.execution import load_options

    model = ModelConfig("m", backend="fake", options={"delay": 5})
    with pytest.raises(InvalidInputError, match="unknown option 'delay'.*valid fake options: inputs"):
        load_options(model, ServeConfig(settings=Settings()))
    with pytest.raises(InvalidInputError, match="device and options need a backend"):
        load_options(ModelConfig("m", device="usb:0"), ServeConfig(settings=Settings()))
