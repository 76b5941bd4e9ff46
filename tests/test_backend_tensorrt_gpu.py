"""TensorRT end to end on a real NVIDIA GPU: engine build into the cache, a cache hit on the second
load, and the same logits as onnxruntime. Skipped (with the probe's reason) wherever TensorRT or a
GPU is missing, which is every machine this project has run on so far."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgerun.backends.base import LoadOptions
from edgerun.backends.onnxruntime_backend import OnnxRuntimeBackend
from edgerun.backends.tensorrt_backend import TensorRTBackend
from edgerun.hal import HostFS, detect

from .helpers import MODELS

MODEL = MODELS / "mobilenet_v2" / "mobilenet_v2.onnx"


def test_engine_build_cache_hit_and_onnxruntime_agreement(tmp_path: Path) -> None:
    platform = detect(HostFS("/"))
    availability = TensorRTBackend().probe(platform)
    if not availability.ok:
        pytest.skip(f"TensorRT cannot run here: {availability.reason}")
    options = LoadOptions(platform=platform, extra={"cache_dir": str(tmp_path), "precision": "fp32"})
    batch = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    with OnnxRuntimeBackend().load(MODEL, LoadOptions()) as reference:
        expected = reference.infer({"input": batch})["logits"]
    with TensorRTBackend().load(MODEL, options) as built:
        assert built.info["cache"].startswith("built")
        logits = built.infer({"input": batch})["logits"]
    np.testing.assert_allclose(logits, expected, atol=1e-2, rtol=1e-2)
    assert int(logits.argmax()) == int(expected.argmax())
    with TensorRTBackend().load(MODEL, options) as cached:
        assert cached.info["cache"] == "hit"
        np.testing.assert_allclose(cached.infer({"input": batch})["logits"], logits, atol=1e-5)
