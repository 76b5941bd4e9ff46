"""Top-1 agreement of a backend with the fp32 ONNX model on onnxruntime, over sample images."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..backends.base import LoadOptions, Session
from ..backends.registry import Registry, Selection
from ..errors import EdgerunError
from ..hal import Platform
from ..predictor import ClassificationResult, Predictor
from ..repository import ModelPackage, ModelRepository

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
REFERENCE_BACKEND = "onnxruntime"


def default_samples_dir() -> Path | None:
    """The repository's samples/ folder when edgerun runs from a checkout, else None."""
    folder = Path(__file__).resolve().parents[2] / "samples"
    return folder if folder.is_dir() else None


def sample_images(folder: Path | None) -> list[Path]:
    if folder is None or not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


@dataclass(frozen=True)
class Reference:
    """Top-1 class of each sample image from the fp32 ONNX model on onnxruntime, or why there is none."""

    description: str
    images: tuple[Path, ...] = ()
    top1: tuple[int, ...] = ()
    reason: str | None = None


def _top1(predictor: Predictor, images: Sequence[Path]) -> tuple[int, ...]:
    indices = []
    for image in images:
        result = predictor.predict(image, top_k=1)
        assert isinstance(result, ClassificationResult)
        indices.append(result.classes[0].index)
    return tuple(indices)


def _reference_problem(package: ModelPackage, images: Sequence[Path]) -> str | None:
    if package.task != "classification":
        return f"top-1 agreement applies to classifiers; {package.name} is a {package.task} model"
    artifact = package.artifact_for(("onnx",))
    if artifact is None or artifact.precision != "fp32":
        return f"reference {package.name} has no fp32 ONNX artifact (pass --reference MODEL)"
    if not images:
        return "no sample images (pass --samples DIR)"
    return None


def reference_top1(reference_model: str | Path, images: Sequence[Path], repository: ModelRepository,
                   registry: Registry, platform: Platform, threads: int | None) -> Reference:
    """Run the reference package's fp32 ONNX artifact on onnxruntime over ``images``."""
    try:
        package = repository.get(reference_model)
    except EdgerunError as exc:
        return Reference(str(reference_model), reason=str(exc))
    description = f"{package.name} fp32 ONNX on {REFERENCE_BACKEND}"
    problem = _reference_problem(package, images)
    if problem is not None:
        return Reference(description, reason=problem)
    try:
        with Predictor.open(reference_model, backend=REFERENCE_BACKEND, repository=repository,
                            registry=registry, platform=platform,
                            options=LoadOptions(threads=threads)) as predictor:
            return Reference(description, tuple(images), _top1(predictor, images))
    except EdgerunError as exc:
        return Reference(description, reason=f"reference failed: {exc}")


def top1_agreement(package: ModelPackage, session: Session, selection: Selection | None,
                   reference: Reference) -> dict[str, Any]:
    """How many sample images get the same top-1 class on ``session`` as on the reference."""
    base: dict[str, Any] = {"reference": reference.description}
    if reference.reason is not None:
        return {**base, "status": "unavailable", "reason": reference.reason}
    if package.task != "classification":
        return {**base, "status": "unavailable", "reason": f"{package.name} is not a classifier"}
    try:
        predicted = _top1(Predictor(package, session, selection), reference.images)
    except EdgerunError as exc:
        return {**base, "status": "failed", "reason": str(exc)}
    agree = sum(a == b for a, b in zip(predicted, reference.top1, strict=True))
    return {**base, "status": "ok", "agree": agree, "images": len(predicted),
            "rate": agree / len(predicted),
            "disagree": [path.name for path, got, want in zip(reference.images, predicted, reference.top1,
                                                             strict=True) if got != want]}

