"""Rockchip NPU backend: rknn-toolkit-lite2 (RKNNLite) runs ``.rknn`` models; return codes explained."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from ..errors import BackendUnavailableError, InferenceError, InvalidInputError, ModelLoadError
from ..hal import Platform
from ..hal.hostfs import ACCESS_OK
from ..types import Quantization, TensorSpec
from ._imports import has_module, require
from .base import Availability, BaseSession, LoadOptions, Tensors
from .options import BackendOptions

log = logging.getLogger(__name__)

# rknn_api.h return codes (RKNPU2).
RKNN_ERRORS = {
    -1: "execution failed (RKNN_ERR_FAIL)",
    -2: "timeout (RKNN_ERR_TIMEOUT)",
    -3: "NPU device unavailable (RKNN_ERR_DEVICE_UNAVAILABLE): driver not loaded or no access to it",
    -4: "out of memory (RKNN_ERR_MALLOC_FAIL)",
    -5: "invalid parameter (RKNN_ERR_PARAM_INVALID)",
    -6: "invalid model (RKNN_ERR_MODEL_INVALID): corrupt, or built by an incompatible rknn-toolkit2",
    -7: "invalid context (RKNN_ERR_CTX_INVALID)",
    -8: "invalid input (RKNN_ERR_INPUT_INVALID)",
    -9: "invalid output (RKNN_ERR_OUTPUT_INVALID)",
    -10: "device mismatch (RKNN_ERR_DEVICE_UNMATCH): librknnrt.so and the rknpu driver versions do not match",
    -11: "pre-compiled model incompatible with this runtime (RKNN_ERR_INCOMPATILE_PRE_COMPILE_MODEL)",
    -12: "optimisation level not supported by this runtime (RKNN_ERR_INCOMPATILE_OPTIMIZATION_LEVEL_VERSION)",
    -13: "model compiled for another SoC (RKNN_ERR_TARGET_PLATFORM_UNMATCH): convert it with target_platform "
    "set to this board's SoC",
}
CORE_MASKS = {
    "auto": "NPU_CORE_AUTO",
    "0": "NPU_CORE_0",
    "1": "NPU_CORE_1",
    "2": "NPU_CORE_2",
    "0_1": "NPU_CORE_0_1",
    "0_1_2": "NPU_CORE_0_1_2",
    "all": "NPU_CORE_ALL",
}
MULTI_CORE_SOCS = ("rk3588", "rk3576")
# rknn_tensor_type -> numpy dtype (RKNNPU2 rknn_api.h order).
_TENSOR_TYPES = {
    0: "float32",
    1: "float16",
    2: "int8",
    3: "uint8",
    4: "int16",
    5: "uint16",
    6: "int32",
    7: "uint32",
    8: "int64",
    9: "bool",
}
_FORMATS = {0: "nchw", 1: "nhwc"}


def explain(call: str, code: int | None) -> str:
    """'init_runtime returned -13: model compiled for another SoC ...'."""
    if code is None:
        return f"{call} failed (RKNNLite returned nothing; see its log above)"
    meaning = RKNN_ERRORS.get(code, "unknown RKNN error code")
    if code == -1 and call == "load_rknn":
        meaning = "the .rknn file could not be read"
    elif code == -1 and call == "init_runtime":
        meaning = (
            "the runtime could not start: librknnrt.so missing or older than the model's toolkit, "
            "rknpu driver too old, or the model was converted for another SoC"
        )
    return f"{call} returned {code}: {meaning}"


def core_mask(rknnlite: Any, text: str | None, soc: str | None) -> int:
    """The RKNNLite core-mask constant for "auto", "0", "1", "2", "0_1", "0_1_2" or "all"."""
    choice = (text or "auto").lower()
    if choice not in CORE_MASKS:
        raise InvalidInputError(f"core_mask {text!r} is not valid; use one of {', '.join(CORE_MASKS)}")
    if choice != "auto" and soc and soc not in MULTI_CORE_SOCS:
        raise InvalidInputError(
            f"core_mask {choice!r}: {soc} has a single NPU core; only RK3588/RK3576 take masks"
        )
    return int(getattr(rknnlite, CORE_MASKS[choice]))


def _attr_spec(attr: Any) -> tuple[TensorSpec, str | None]:
    """A TensorSpec (and data format) from an rknn_tensor_attr."""
    name = attr.name.decode() if isinstance(attr.name, bytes) else str(attr.name)
    shape = tuple(int(d) for d in list(attr.dims)[: int(attr.n_dims)])
    scale, zero_point = float(getattr(attr, "scale", 0.0)), int(getattr(attr, "zp", 0))
    dtype = np.dtype(_TENSOR_TYPES.get(int(attr.type), "float32"))
    quantization = Quantization(scale, zero_point) if dtype.kind in "iu" and scale else None
    return TensorSpec(name, shape, dtype, quantization), _FORMATS.get(int(getattr(attr, "fmt", -1)))


def tensor_specs(runtime: Any) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...], str | None]:
    """Input/output specs through RKNNLite's runtime object (get_in_out_num, get_tensor_attr).

    These calls are not part of RKNNLite's documented surface; field code relies on them and so
    do we, guarded: a failure becomes ModelLoadError naming the toolkit version."""
    try:
        n_in, n_out = runtime.get_in_out_num()
        ins = [_attr_spec(runtime.get_tensor_attr(i, is_output=False)) for i in range(n_in)]
        outs = [_attr_spec(runtime.get_tensor_attr(i, is_output=True)) for i in range(n_out)]
    except Exception as exc:  # vendor boundary: undocumented API
        raise ModelLoadError(f"rknn-toolkit-lite2 did not report the model's tensors ({exc})") from exc
    # Outputs come back as float32 (RKNNLite dequantises them).
    outputs = tuple(TensorSpec(s.name, s.shape, np.dtype(np.float32)) for s, _ in outs)
    return tuple(s for s, _ in ins), outputs, ins[0][1] if ins else None


class RknnSession(BaseSession):
    """An initialised RKNNLite object (not thread-safe)."""

    backend_name = "rknn"
    thread_safe = False

    def __init__(self, rknn: Any) -> None:
        inputs, outputs, data_format = tensor_specs(rknn.rknn_runtime)
        super().__init__(inputs, outputs)
        self._rknn = rknn
        self._data_format = data_format

    def _run(self, inputs: Mapping[str, np.ndarray]) -> Tensors:
        arrays = [np.ascontiguousarray(inputs[spec.name]) for spec in self.input_specs]
        outputs = self._rknn.inference(inputs=arrays, data_format=self._data_format)
        if outputs is None:
            raise InferenceError(explain("inference", None))
        return {
            spec.name: np.asarray(value, np.float32)
            for spec, value in zip(self.output_specs, outputs, strict=False)
        }

    def close(self) -> None:
        if not self._closed and self._rknn is not None:
            self._rknn.release()
        super().close()
        self._rknn = None


class RknnOptions(BackendOptions):
    """RKNNLite runtime settings."""

    backend: ClassVar[str] = "rknn"
    core_mask: Literal["auto", "0", "1", "2", "0_1", "0_1_2", "all"] = Field(
        "auto", description="NPU cores to run on (RK3588/RK3576 only; others have one core)")


class RknnBackend:
    """Runs ``.rknn`` models on the Rockchip NPU; option ``core_mask`` picks NPU cores (RK3588/RK3576)."""

    name = "rknn"
    formats = ("rknn",)
    options_class = RknnOptions

    def probe(self, platform: Platform) -> Availability:
        npu = platform.accelerator("rknpu")
        if npu is None:
            return Availability.no("no Rockchip NPU (no rknpu driver or device-tree node)")
        if "problem" in npu.detail:
            return Availability.no(npu.detail["problem"])
        if npu.access != ACCESS_OK:
            return Availability.no(
                f"{npu.node or 'NPU device node'} {npu.access}: the user needs access to the "
                "NPU render node (group render/video)"
            )
        if "rknnrt" not in platform.libraries:
            return Availability.no("librknnrt.so not found (install the rknpu2 runtime to /usr/lib)")
        if not has_module("rknnlite"):
            return Availability.no(
                "python package rknn-toolkit-lite2 not installed (aarch64 only: pip install 'edgerun[rknn]')"
            )
        return Availability.yes(
            f"{npu.name}, driver {npu.detail.get('driver', 'unknown')}, "
            f"{npu.detail.get('npu_cores', '1')} core(s)"
        )

    def load(self, artifact: Path, options: LoadOptions) -> RknnSession:
        typed = options.typed(RknnOptions)
        module = require("rknnlite.api", "rknn")
        soc = options.platform.facts.get("soc") if options.platform else None
        mask = core_mask(module.RKNNLite, typed.core_mask, soc)
        rknn = module.RKNNLite(verbose=False)
        code = rknn.load_rknn(str(artifact))
        if code != 0:
            raise ModelLoadError(f"rknn could not load {artifact.name}: {explain('load_rknn', code)}")
        code = rknn.init_runtime(core_mask=mask)
        if code != 0:
            rknn.release()
            raise BackendUnavailableError(
                f"rknn could not start {artifact.name}: {explain('init_runtime', code)}"
            )
        try:
            session = RknnSession(rknn)
        except ModelLoadError:
            rknn.release()
            raise
        session.device = f"npu cores {typed.core_mask}"
        session.effective_options = typed.effective()
        return session
