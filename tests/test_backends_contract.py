"""One contract every backend's Session must honour, run against each built-in CPU backend, the
simulated backend and the fake one."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgerun.backends.base import LoadOptions, Session
from edgerun.errors import ModelLoadError, SessionClosedError, TensorSpecError
from edgerun.repository import ModelRepository

CONTRACT_MODELS = ("mobilenet_v2", "blazeface", "mobilenet_v2_int8")
EXTRA_BACKENDS = ("simulated", "fake")  # beside the CPU runtimes (see conftest.py)


def _artifact(backend: Any, model: str) -> Path | None:
    found = ModelRepository().get(model).artifact_for(backend.formats)
    return found.path if found else None


def _example_inputs(session: Session, batch: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    inputs = {}
    for spec in session.input_specs:
        shape = tuple(batch if d is None else d for d in spec.shape)
        if spec.dtype.kind in "iu":
            info = np.iinfo(spec.dtype)
            inputs[spec.name] = rng.integers(info.min, info.max, shape, dtype=spec.dtype)
        else:
            inputs[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
    return inputs


@pytest.fixture(params=CONTRACT_MODELS)
def session(request: pytest.FixtureRequest, backend: Any) -> Session:
    path = _artifact(backend, request.param)
    if path is None:
        pytest.skip(f"{request.param} ships no {backend.formats} artifact")
    with backend.load(path, LoadOptions(threads=1)) as opened:
        yield opened


def test_specs_describe_the_model(session: Session) -> None:
    assert session.input_specs and session.output_specs
    for spec in (*session.input_specs, *session.output_specs):
        assert spec.name and len(spec.shape) >= 2
        assert spec.dtype.kind in "fiu"
        if spec.quantization is not None:
            assert spec.quantization.scale > 0


def test_infer_returns_every_output_with_its_spec(session: Session) -> None:
    outputs = session.infer(_example_inputs(session))
    assert list(outputs) == [spec.name for spec in session.output_specs]
    for spec in session.output_specs:
        assert spec.accepts_shape(outputs[spec.name].shape)
        assert outputs[spec.name].dtype == spec.dtype
        assert np.isfinite(outputs[spec.name].astype(np.float64)).all()


def test_infer_is_deterministic(session: Session) -> None:
    inputs = _example_inputs(session)
    first, second = session.infer(inputs), session.infer(inputs)
    for name in first:
        assert np.array_equal(first[name], second[name])


def test_wrong_dtype_shape_and_names_are_rejected_with_the_spec(session: Session) -> None:
    spec = session.input_specs[0]
    good = _example_inputs(session)
    wrong_dtype = np.float64 if spec.dtype != np.float64 else np.float32
    with pytest.raises(TensorSpecError, match=f"expects {spec.name}: {spec.dtype.name}"):
        session.infer({spec.name: good[spec.name].astype(wrong_dtype)})
    with pytest.raises(TensorSpecError, match=r"expects .*got .*\[1,2,3\]"):
        session.infer({spec.name: np.zeros((1, 2, 3), spec.dtype)})
    with pytest.raises(TensorSpecError, match="do not match the model's"):
        session.infer({"not_an_input": good[spec.name]})
    with pytest.raises(TensorSpecError, match="numpy array"):
        session.infer({spec.name: good[spec.name].tolist()})


def test_closed_session_refuses_work(backend: Any) -> None:
    session = backend.load(_artifact(backend, "blazeface"), LoadOptions())
    inputs = _example_inputs(session)
    session.close()
    with pytest.raises(SessionClosedError):
        session.infer(inputs)


def test_broken_and_missing_model_files_raise_model_load_error(backend: Any, tmp_path: Path) -> None:
    source = _artifact(backend, "blazeface")
    with pytest.raises(ModelLoadError):
        backend.load(tmp_path / ("missing" + source.suffix), LoadOptions())
    if backend.name == "fake":
        return  # it never parses a model file
    broken = tmp_path / source.name
    broken.write_bytes(source.read_bytes()[:1000])
    with pytest.raises(ModelLoadError, match=source.name):
        backend.load(broken, LoadOptions())
    garbage = tmp_path / ("garbage" + source.suffix)
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(ModelLoadError):
        backend.load(garbage, LoadOptions())


def test_thread_safe_sessions_serve_concurrent_callers(backend: Any) -> None:
    with backend.load(_artifact(backend, "blazeface"), LoadOptions(threads=1)) as session:
        inputs = _example_inputs(session)
        expected = session.infer(inputs)
        if not session.thread_safe:
            pytest.skip(f"{backend.name} sessions are not thread-safe; the server serialises them")
        results: list[dict[str, np.ndarray]] = []
        threads = [threading.Thread(target=lambda: results.append(session.infer(inputs)))
                   for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(results) == 4
        for result in results:
            assert all(np.array_equal(result[k], expected[k]) for k in expected)


def test_dynamic_batch_when_the_model_declares_one(backend: Any) -> None:
    with backend.load(_artifact(backend, "mobilenet_v2"), LoadOptions()) as session:
        if session.input_specs[0].shape[0] is not None:
            pytest.skip(f"{backend.name} artifact has a fixed batch")
        single = session.infer(_example_inputs(session, batch=1))
        batch = session.infer({k: np.repeat(v, 3, axis=0) for k, v in _example_inputs(session).items()})
        name = session.output_specs[0].name
        assert batch[name].shape[0] == 3
        assert np.allclose(batch[name][2], single[name][0], atol=1e-4)

