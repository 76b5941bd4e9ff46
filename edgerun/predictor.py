"""Predictor: a Session plus the model package's task pipeline (decode, pre-process, infer, post-process)."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from .backends.base import LoadOptions, Session, Tensors
from .backends.registry import Registry, Selection
from .config import Settings
from .errors import InvalidInputError, ModelIntegrityError
from .hal import HostFS, Platform, detect
from .hal.boards import backend_preference
from .processing import image as img
from .processing.classify import Classification, softmax, top_k
from .processing.decoders import Decoder
from .processing.detect import Detection
from .repository import DEFAULT_CLASSIFIER, ModelPackage, ModelRepository, Preprocess, verify_artifact
from .types import TensorSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClassificationResult:
    """Top-k classes for one image, with per-stage timings in milliseconds."""

    model: str
    backend: str
    classes: list[Classification]
    timings_ms: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DetectionResult:
    """Detections in source-image pixels for one image, with per-stage timings."""

    model: str
    backend: str
    image_size: tuple[int, int]  # width, height
    detections: list[Detection]
    timings_ms: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


Result = ClassificationResult | DetectionResult


def open_session(model: str | Path | None = None, *, backend: str | None = None,
                 options: LoadOptions | None = None, repository: ModelRepository | None = None,
                 registry: Registry | None = None, platform: Platform | None = None,
                 settings: Settings | None = None, task: str | None = None
                 ) -> tuple[ModelPackage, Selection, Session]:
    """Find a package, choose a backend, verify the artifact's checksum and load it. ``task`` is
    for a bare model file: 'detection', 'classification' or 'auto' (decided from its outputs).

    Typed backend options (``options.options``) name their backend: with no ``backend`` given,
    that one is chosen; a different ``backend`` is an error.
    """
    settings = settings or Settings.from_env()
    repository = repository or ModelRepository.from_settings(settings)
    package = repository.get(model or DEFAULT_CLASSIFIER, task)
    platform = platform or detect(HostFS(settings.host_root))
    backend = _backend_for(backend or settings.backend, options)
    selection = (registry or Registry()).select(package, platform, backend,
                                                prefer=backend_preference(platform))
    verify_artifact(selection.artifact)
    log.info("model %s on %s: %s", package.name, platform.summary(), selection.explain())
    options = dataclasses.replace(options or LoadOptions(threads=settings.threads), platform=platform)
    return package, selection, selection.backend.load(selection.artifact.path, options)


def _backend_for(backend: str | None, options: LoadOptions | None) -> str | None:
    typed = options.options if options is not None else None
    if typed is None:
        return backend
    if backend is not None and backend != typed.backend:
        raise InvalidInputError(f"options for backend {typed.backend!r} given, but backend {backend!r} "
                                "was chosen; give the options of the backend that loads the model")
    return typed.backend


def effective_settings(session: Session) -> dict[str, Any]:
    """Backend, device and the options a session was loaded with (defaults resolved): what
    `predict --json`, profile reports and the service's model config show."""
    return {"backend": session.backend_name, "device": getattr(session, "device", None),
            "options": dict(getattr(session, "effective_options", {}) or {})}


def _image_input(session: Session) -> TensorSpec:
    specs = session.input_specs
    if len(specs) != 1 or len(specs[0].shape) != 4:
        shown = "; ".join(s.describe() for s in specs)
        raise ModelIntegrityError(f"the image pipeline needs one 4-D input tensor, model has: {shown}")
    return specs[0]


def _since(start: float) -> float:
    return round((time.perf_counter() - start) * 1000.0, 3)


def task_from_outputs(specs: Sequence[TensorSpec]) -> str:
    """'classification' for one [1, K] output, else 'detection' (boxes need rank 3 or several outputs)."""
    if len(specs) == 1 and len(specs[0].shape) == 2:
        return "classification"
    return "detection"


def _spatial_size(spec: TensorSpec, layout: str) -> tuple[int, int]:
    height, width = spec.shape[2:4] if layout == "NCHW" else spec.shape[1:3]
    if not isinstance(height, int) or not isinstance(width, int):
        raise ModelIntegrityError(f"input {spec.describe()} has a dynamic size and the model names none; "
                                  "give preprocess.input_size in a manifest (edgerun models import)")
    return height, width


def default_preprocess(spec: TensorSpec, layout: str, task: str) -> Preprocess:
    """A file without a manifest: letterbox (detection) or stretch, pixels scaled to [0, 1], or to
    exactly the range a quantised input represents."""
    mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    q = spec.quantization
    if q is not None and spec.dtype.kind in "iu":
        info = np.iinfo(spec.dtype)
        low, high = q.scale * (info.min - q.zero_point), q.scale * (info.max - q.zero_point)
        mean, std = (-low / (high - low),) * 3, (1.0 / (high - low),) * 3
    resize = "letterbox" if task == "detection" else "stretch"
    return Preprocess(resize=resize, input_size=_spatial_size(spec, layout), mean=mean, std=std,  # type: ignore[arg-type]
                      pad_value=114 if resize == "letterbox" else 0)


def real_outputs(specs: Sequence[TensorSpec], outputs: Mapping[str, np.ndarray]
                 ) -> list[tuple[str, np.ndarray]]:
    """(name, float32 values) per output in spec order; quantised outputs dequantised through their spec."""
    real = []
    for spec in specs:
        value = outputs[spec.name]
        if spec.quantization is not None and value.dtype.kind in "iu":
            value = img.dequantize(value, spec.quantization)
        real.append((spec.name, value.astype(np.float32, copy=False)))
    return real


class Predictor:
    """Runs a model package's task end to end: ``predict(image) -> result``."""

    def __init__(self, package: ModelPackage, session: Session, selection: Selection | None = None,
                 image_budget: img.ImageBudget | None = None):
        self.task = task_from_outputs(session.output_specs) if package.task == "auto" else package.task
        if self.task not in ("classification", "detection"):
            raise InvalidInputError(
                f"model {package.name} has task {package.task!r} and no image pipeline; give --task "
                "detection or classification, or use session.infer with raw tensors"
            )
        self.package = package
        self.session = session
        self.selection = selection
        self.backend_name = session.backend_name  # e.g. "tensorrt (simulated)" on an emulated board
        self._input = _image_input(session)
        layout = selection.artifact.layout if selection else None
        self.layout = layout or ("NCHW" if self._input.shape[1] == 3 else "NHWC")
        self.pre = package.preprocess or default_preprocess(self._input, self.layout, self.task)
        self.decoder = None
        if self.task == "detection":
            self.decoder = Decoder.from_postprocess(package.postprocess, session.output_specs, package.labels,
                                                    f"model {package.name} postprocess")
        self.image_budget = image_budget or img.ImageBudget.from_settings(Settings.from_env())

    @classmethod
    def open(cls, model: str | Path | None = None, **kwargs: Any) -> Predictor:
        """Open a Predictor; keyword arguments are those of :func:`open_session`."""
        package, selection, session = open_session(model, **kwargs)
        budget = img.ImageBudget.from_settings(kwargs.get("settings") or Settings.from_env())
        try:
            return cls(package, session, selection, budget)
        except Exception:
            session.close()
            raise

    def preprocess(self, image: img.Picture) -> tuple[Tensors, img.Geometry]:
        """Decoded RGB image (array or Pillow) -> the model input tensor and the geometry to map back."""
        pre = self.pre
        height, width = pre.input_size
        if pre.resize == "crop":
            fitted, geometry = img.resize_crop(image, pre.resize_to or height, height, width)
        elif pre.resize == "letterbox":
            fitted, geometry = img.letterbox(image, height, width, pre.pad_value)
        else:
            fitted, geometry = img.stretch(image, height, width)
        if pre.color == "BGR":
            fitted = fitted[:, :, ::-1]
        tensor = self._to_input_dtype(img.to_layout(img.normalize(fitted, pre.mean, pre.std), self.layout))
        return {self._input.name: tensor}, geometry

    def _to_input_dtype(self, tensor: np.ndarray) -> np.ndarray:
        spec = self._input
        if spec.quantization is not None and spec.dtype.kind in "iu":
            return img.quantize(tensor, spec.quantization, spec.dtype)
        return tensor.astype(spec.dtype, copy=False)

    def _real_outputs(self, outputs: Mapping[str, np.ndarray]) -> list[tuple[str, np.ndarray]]:
        return real_outputs(self.session.output_specs, outputs)

    def predict(self, image: img.ImageInput, top_k: int | None = None) -> Result:
        """Decode, pre-process, infer and post-process one image."""
        timings: dict[str, float] = {}
        start = time.perf_counter()
        decoded = img.open_image(image, self.image_budget)
        timings["decode"] = _since(start)
        start = time.perf_counter()
        inputs, geometry = self.preprocess(decoded)
        timings["preprocess"] = _since(start)
        start = time.perf_counter()
        outputs = self.session.infer(inputs)
        timings["infer"] = _since(start)
        start = time.perf_counter()
        real = self._real_outputs(outputs)
        if self.task == "classification":
            result: Result = ClassificationResult(
                self.package.name, self.backend_name, self._classify(real, top_k), timings)
        else:
            width, height = img.image_size(decoded)
            result = DetectionResult(self.package.name, self.backend_name, (width, height),
                                     self._detect(real, geometry, width, height), timings)
        timings["postprocess"] = _since(start)
        return result

    def _classify(self, outputs: list[tuple[str, np.ndarray]], k: int | None) -> list[Classification]:
        post = self.package.postprocess
        scores = outputs[0][1].reshape(-1)
        if post.get("kind", "softmax") == "softmax":
            scores = softmax(scores)
        return top_k(scores, k or int(post.get("top_k", 5)), self.package.labels)

    def _detect(self, outputs: list[tuple[str, np.ndarray]], geometry: img.Geometry, width: int, height: int
                ) -> list[Detection]:
        assert self.decoder is not None
        return self.decoder(outputs, self.pre.input_size, geometry, width, height)

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> Predictor:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
