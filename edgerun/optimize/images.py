"""Image sets for calibration and evaluation: find files, decode them, run the model's own pre-processing."""

from __future__ import annotations

import glob
import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np

from ..backends.base import Tensors
from ..errors import ImageDecodeError, InvalidInputError
from ..processing import image as img

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".ppm")
GLOB_CHARACTERS = frozenset("*?[")

T = TypeVar("T")

# Decoded RGB uint8 image -> the model's input tensors (Predictor.preprocess without the geometry).
Preprocess = Callable[[np.ndarray], Tensors]


@dataclass(frozen=True)
class ImageFiles:
    """Image files named by a folder or a glob, and the other files that were passed over."""

    source: str
    paths: tuple[Path, ...]
    ignored: int = 0  # files without an image suffix


@dataclass
class ImageSet:
    """Model inputs made from image files; undecodable files are skipped and counted."""

    source: str
    paths: list[Path] = field(default_factory=list)
    inputs: list[Tensors] = field(default_factory=list)
    labels: list[int] | None = None  # class index per used image, for a labelled set
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, why)
    ignored: int = 0

    def summary(self) -> dict[str, object]:
        return {
            "source": self.source,
            "images": len(self.paths),
            "skipped": len(self.skipped),
            "skipped_files": [{"file": name, "reason": why} for name, why in self.skipped],
            "ignored_non_images": self.ignored,
            "labelled": self.labels is not None,
        }


def find_images(spec: str | Path) -> ImageFiles:
    """Every image file under a folder (recursively, sorted) or matching a glob pattern."""
    text = str(spec)
    if GLOB_CHARACTERS & set(text):
        candidates = sorted(Path(p) for p in glob.glob(text, recursive=True))
    elif Path(text).is_dir():
        candidates = sorted(p for p in Path(text).rglob("*"))
    elif Path(text).is_file():
        candidates = [Path(text)]
    else:
        raise InvalidInputError(f"{text}: no such folder or file, and not a glob pattern")
    files = [p for p in candidates if p.is_file()]
    images = tuple(p for p in files if p.suffix.lower() in IMAGE_SUFFIXES)
    return ImageFiles(text, images, len(files) - len(images))


def spread(items: Sequence[T], limit: int) -> list[T]:
    """At most ``limit`` items, evenly spaced over the sequence (deterministic); all when limit <= 0."""
    if limit <= 0 or len(items) <= limit:
        return list(items)
    step = len(items) / limit
    return [items[int(i * step)] for i in range(limit)]


def load_images(files: ImageFiles, preprocess: Preprocess, limit: int = 0) -> ImageSet:
    """Decode and pre-process each file; a file that does not decode is skipped with its reason."""
    loaded = ImageSet(files.source, ignored=files.ignored)
    for path in spread(files.paths, limit):
        try:
            tensors = preprocess(img.decode_image(path))
        except ImageDecodeError as exc:
            log.warning("skipping %s: %s", path, exc)
            loaded.skipped.append((str(path), str(exc)))
            continue
        loaded.paths.append(path)
        loaded.inputs.append(tensors)
    return loaded


def require_images(images: ImageSet, purpose: str) -> None:
    """Raise InvalidInputError when a set ended up with no usable image, saying why."""
    if images.paths:
        return
    why = (
        f"{len(images.skipped)} file(s) could not be decoded (first: {images.skipped[0][1]})"
        if images.skipped
        else f"no files ending in {', '.join(IMAGE_SUFFIXES)}"
    )
    raise InvalidInputError(f"{purpose} set {images.source!r} has no usable images: {why}")


def folder_labels(images: ImageSet, root: str, class_names: Sequence[str]) -> list[int] | None:
    """Class indices from ImageNet-style sub-folders (``ROOT/<label or index>/file``), or None.

    The set counts as labelled only when every image sits in a direct sub-folder of ``root``;
    a sub-folder name that is neither a class name nor a class index is an error."""
    base = Path(root)
    if not base.is_dir() or not images.paths or any(p.parent.parent != base for p in images.paths):
        return None
    by_name = {name: index for index, name in enumerate(class_names)}
    labels, unknown = [], set()
    for path in images.paths:
        name = path.parent.name
        index = by_name.get(name, int(name) if name.isdigit() and int(name) < len(class_names) else None)
        if index is None:
            unknown.add(name)
        labels.append(index if index is not None else -1)
    if unknown:
        raise InvalidInputError(
            f"evaluation folders {sorted(unknown)} under {root} are neither class names nor class "
            f"indices of this model (0..{len(class_names) - 1}); use the names in the package's labels file"
        )
    return labels


def content_digests(paths: Sequence[Path]) -> set[str]:
    """sha256 of each file's bytes: finds the same image under two names."""
    return {hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}
