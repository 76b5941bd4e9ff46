"""TensorSpec checks, error statuses and the dtype <-> V2 datatype table."""

from __future__ import annotations

import numpy as np
import pytest

from edgerun import errors
from edgerun.config import Settings
from edgerun.types import V2_DATATYPES, Quantization, TensorSpec, from_v2_datatype, to_v2_datatype


def test_v2_table_round_trips_every_datatype() -> None:
    for dtype_name, v2 in V2_DATATYPES.items():
        assert to_v2_datatype(dtype_name) == v2
        assert from_v2_datatype(v2) == np.dtype(dtype_name)


def test_v2_strings_are_bytes_and_unknown_names_list_valid_ones() -> None:
    assert to_v2_datatype(np.dtype("<U5")) == "BYTES"
    with pytest.raises(errors.InvalidInputError, match="FP32"):
        from_v2_datatype("FLOAT")
    with pytest.raises(errors.InvalidInputError, match="no V2 datatype"):
        to_v2_datatype("complex64")


def test_spec_describe_shows_dynamic_dims_and_quantization() -> None:
    spec = TensorSpec("input", (None, 3, 224, 224), "float32")
    assert spec.describe() == "input: float32[?,3,224,224]"
    quant = TensorSpec("x", (1, 4), "int8", Quantization(0.5, -3))
    assert quant.describe() == "x: int8[1,4] (scale=0.5, zero_point=-3)"


def test_spec_check_accepts_dynamic_batch_and_rejects_mismatches() -> None:
    spec = TensorSpec("input", (None, 3, 2, 2), np.float32)
    spec.check(np.zeros((5, 3, 2, 2), np.float32))
    with pytest.raises(errors.TensorSpecError, match=r"expects input: float32\[\?,3,2,2\], got float64"):
        spec.check(np.zeros((1, 3, 2, 2), np.float64))
    with pytest.raises(errors.TensorSpecError, match=r"got float32\[1,2,2\]"):
        spec.check(np.zeros((1, 2, 2), np.float32))
    with pytest.raises(errors.TensorSpecError, match=r"got float32\[1,4,2,2\]"):
        spec.check(np.zeros((1, 4, 2, 2), np.float32))


def test_every_error_class_maps_to_an_http_status() -> None:
    assert errors.InvalidInputError.http_status == 400
    assert errors.TensorSpecError.http_status == 400
    assert errors.ModelNotFoundError.http_status == 404
    assert errors.ModelIntegrityError.http_status == 422
    assert errors.BackendUnavailableError.http_status == 503
    assert errors.InferenceError.http_status == 500
    assert issubclass(errors.ImageDecodeError, errors.InvalidInputError)


def test_settings_read_from_environment() -> None:
    settings = Settings.from_env({"EDGERUN_BACKEND": "litert", "EDGERUN_THREADS": "2",
                                  "EDGERUN_MODEL_PATH": "/a:/b", "EDGERUN_HOST_ROOT": "/tree"})
    assert settings.backend == "litert" and settings.threads == 2
    assert [str(p) for p in settings.model_path] == ["/a", "/b"]
    assert str(settings.host_root) == "/tree"
    assert Settings.from_env({}) == Settings()
    with pytest.raises(errors.InvalidInputError, match="EDGERUN_THREADS must be a positive integer"):
        Settings.from_env({"EDGERUN_THREADS": "zero"})
