"""No 500s from arithmetic: empty shapes whose dims overflow are 400s; unallocatable batches a CLI error."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys

import numpy as np
import pytest

from edgerun.errors import InvalidInputError
from edgerun.profiler.scenarios import synthetic_inputs
from edgerun.types import TensorSpec, check_shape

from .helpers import REPO
from .serving_helpers import ServerThread

OVERFLOWING = ([0, 2**62, 4], [0, 2**40, 2**40], [2**31, 0, 2**31, 2**31], [0, 2**63 - 1])


@pytest.mark.parametrize("shape", OVERFLOWING)
def test_empty_shapes_whose_dims_overflow_are_400(served: ServerThread, shape: list[int]) -> None:
    as_json = {"inputs": [{"name": "input", "shape": shape, "datatype": "FP32", "data": []}]}
    header = json.dumps({"inputs": [{"name": "input", "shape": shape, "datatype": "FP32",
                                     "parameters": {"binary_data_size": 0}}]}).encode()
    with served.client() as http:
        responses = [http.post("/v2/models/mobilenet_v2/infer", json=as_json),
                     http.post("/v2/models/mobilenet_v2/infer", content=header,
                               headers={"Inference-Header-Content-Length": str(len(header))})]
    for response in responses:
        assert response.status_code == 400, response.text
        assert "is too large to address" in response.json()["error"]


def test_check_shape_accepts_what_numpy_can_hold() -> None:
    assert check_shape("x", [0, 2**31], np.float32) == (0, 2**31)
    assert np.zeros(0, np.float32).reshape(check_shape("x", [0, 2**31], np.float32)).size == 0
    for shape in OVERFLOWING:
        with pytest.raises(InvalidInputError, match="too large to address"):
            check_shape("x", shape, np.float32)
    with pytest.raises(InvalidInputError, match="negative dimension"):
        check_shape("x", [1, -3], np.uint8)


def test_profile_batch_that_cannot_be_allocated_is_a_clear_error_before_allocating() -> None:
    def limit() -> None:  # so that an attempt to allocate fails fast instead of swapping
        resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))

    done = subprocess.run([sys.executable, "-m", "edgerun", "profile", "--batch", "100000", "--runs", "1",
                           "--idle", "0", "--no-progress"], capture_output=True, text=True, timeout=300,
                          cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, preexec_fn=limit)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "edgerun: error: --batch 100000 needs 57422 MiB of input tensors, over the limit of 256 MiB "
        "(setting max_batch_bytes, EDGERUN_MAX_BATCH_BYTES); use a smaller batch"]


def test_synthetic_inputs_respect_the_budget() -> None:
    spec = TensorSpec("input", (None, 3, 224, 224), np.float32)
    assert synthetic_inputs([spec], 2, max_bytes=2 * 3 * 224 * 224 * 4)["input"].shape == (2, 3, 224, 224)
    with pytest.raises(InvalidInputError, match="--batch 3 needs 2 MiB .* over the limit of 1 MiB"):
        synthetic_inputs([spec], 3, max_bytes=1 << 20)
