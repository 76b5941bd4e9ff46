"""Model packages on disk: parse and validate manifests, verify checksums, list and find by name or path."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import Settings
from .errors import ModelIntegrityError, ModelNotFoundError

MANIFEST = "manifest.json"
BUILTIN_MODELS = Path(__file__).parent / "models"
DEFAULT_CLASSIFIER = "mobilenet_v2"
DEFAULT_DETECTOR = "blazeface"
DEFAULT_OBJECT_DETECTOR = "coco_detector"  # --task detect; none shipped (no redistributable COCO weights)
FORMATS_BY_SUFFIX = {".onnx": "onnx", ".tflite": "tflite", ".engine": "tensorrt", ".plan": "tensorrt",
                     ".param": "ncnn", ".xml": "openvino", ".rknn": "rknn"}
EDGETPU_SUFFIX = "_edgetpu.tflite"  # compiled by edgetpu_compiler: format "edgetpu"
TASKS = ("classification", "detection", "raw")
RESIZE_MODES = ("crop", "letterbox", "stretch")
LAYOUTS = ("NCHW", "NHWC")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class Preprocess:
    """How an image becomes the model input."""

    color: str = "RGB"
    resize: str = "stretch"
    resize_to: int | None = None
    input_size: tuple[int, int] = (224, 224)
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    pad_value: int = 0  # letterbox border colour (Ultralytics: 114)


@dataclass(frozen=True)
class Artifact:
    """One model file in one format, with its expected checksum."""

    format: str
    path: Path
    sha256: str | None
    layout: str | None = None
    precision: str = "fp32"
    companions: tuple[tuple[Path, str], ...] = ()  # (file, sha256) needed beside it, e.g. ncnn .bin


@dataclass(frozen=True)
class ModelPackage:
    """A validated model package: manifest values plus absolute artifact paths."""

    name: str
    root: Path
    task: str
    description: str = ""
    labels: tuple[str, ...] = ()
    preprocess: Preprocess | None = None
    postprocess: Mapping[str, Any] = field(default_factory=dict)
    artifacts: tuple[Artifact, ...] = ()

    @property
    def formats(self) -> tuple[str, ...]:
        return tuple(a.format for a in self.artifacts)

    def artifact_for(self, formats: Iterable[str]) -> Artifact | None:
        """The first artifact in one of ``formats``, or None."""
        wanted = tuple(formats)
        return next((a for a in self.artifacts if a.format in wanted), None)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _verify_file(path: Path, expected: str | None) -> None:
    if not path.is_file():
        raise ModelIntegrityError(f"artifact file {path} is missing")
    if expected is None:
        return
    actual = sha256_of(path)
    if actual != expected.lower():
        raise ModelIntegrityError(
            f"checksum mismatch for {path.name}: manifest says sha256 {expected}, "
            f"file has {actual}; the file is corrupt or was replaced"
        )


def verify_artifact(artifact: Artifact) -> None:
    """Raise ModelIntegrityError when a file (or companion) is missing or its sha256 differs."""
    _verify_file(artifact.path, artifact.sha256)
    for path, expected in artifact.companions:
        _verify_file(path, expected)


def _require(data: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in data:
        raise ModelIntegrityError(f"{where}: missing key {key!r}")
    return data[key]


def _choice(value: Any, valid: Sequence[str], what: str, where: str) -> str:
    if value not in valid:
        raise ModelIntegrityError(f"{where}: {what} {value!r} is not one of {', '.join(valid)}")
    return str(value)


def _parse_preprocess(data: Mapping[str, Any] | None, where: str) -> Preprocess | None:
    if data is None:
        return None
    try:
        height, width = (int(v) for v in data.get("input_size", (224, 224)))
        mean = tuple(float(v) for v in data.get("mean", (0.0, 0.0, 0.0)))
        std = tuple(float(v) for v in data.get("std", (1.0, 1.0, 1.0)))
        resize_to = int(data["resize_to"]) if data.get("resize_to") is not None else None
        pad_value = int(data.get("pad_value", 0))
    except (TypeError, ValueError) as exc:
        raise ModelIntegrityError(f"{where}: bad preprocess values: {exc}") from exc
    if not 0 <= pad_value <= 255:
        raise ModelIntegrityError(f"{where}: preprocess pad_value must lie in 0..255")
    if len(mean) != 3 or len(std) != 3 or 0.0 in std:
        raise ModelIntegrityError(f"{where}: preprocess mean and std need 3 values, std non-zero")
    resize = _choice(data.get("resize", "stretch"), RESIZE_MODES, "resize", where)
    if resize == "crop" and resize_to is None:
        raise ModelIntegrityError(f"{where}: resize 'crop' needs resize_to")
    return Preprocess(
        color=_choice(data.get("color", "RGB"), ("RGB", "BGR"), "color", where),
        resize=resize, resize_to=resize_to, input_size=(height, width),
        mean=mean, std=std, pad_value=pad_value,  # type: ignore[arg-type]
    )


def _inside(root: Path, relative: str, where: str) -> Path:
    path = (root / relative).resolve()
    if root.resolve() not in path.parents:
        raise ModelIntegrityError(f"{where}: artifact file {relative!r} lies outside the package")
    return path


def _parse_artifact(root: Path, data: Mapping[str, Any], where: str) -> Artifact:
    path = _inside(root, str(_require(data, "file", where)), where)
    companions = tuple(
        (_inside(root, str(_require(c, "file", where)), where), str(_require(c, "sha256", where)))
        for c in data.get("companions", ()))
    layout = data.get("layout")
    if layout is not None:
        _choice(layout, LAYOUTS, "layout", where)
    return Artifact(
        format=str(_require(data, "format", where)), path=path,
        sha256=str(_require(data, "sha256", where)), layout=layout,
        precision=str(data.get("precision", "fp32")), companions=companions,
    )


def _read_labels(root: Path, relative: str | None, where: str) -> tuple[str, ...]:
    if not relative:
        return ()
    try:
        text = (root / relative).read_text(encoding="utf-8")
    except OSError as exc:
        raise ModelIntegrityError(f"{where}: cannot read labels file {relative!r}: {exc}") from exc
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def load_package(root: Path) -> ModelPackage:
    """Parse ``root/manifest.json`` into a ModelPackage (files are verified at load time)."""
    where = str(root / MANIFEST)
    try:
        data = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ModelNotFoundError(f"{root} has no {MANIFEST}") from exc
    except (OSError, ValueError) as exc:
        raise ModelIntegrityError(f"{where}: unreadable manifest: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelIntegrityError(f"{where}: manifest must be a JSON object")
    artifacts = tuple(_parse_artifact(root, a, where) for a in _require(data, "artifacts", where))
    if not artifacts:
        raise ModelIntegrityError(f"{where}: no artifacts listed")
    return ModelPackage(
        name=str(data.get("name") or root.name), root=root,
        task=_choice(_require(data, "task", where), TASKS, "task", where),
        description=str(data.get("description", "")),
        labels=_read_labels(root, data.get("labels"), where),
        preprocess=_parse_preprocess(data.get("preprocess"), where),
        postprocess=dict(data.get("postprocess") or {}), artifacts=artifacts,
    )


def package_from_file(path: Path, task: str | None = None) -> ModelPackage:
    """A bare model file: its own metadata (Ultralytics, TFLite label files) gives the pipeline, else
    'raw' (no pipeline) unless ``task`` says otherwise ('auto': decided from the outputs at load)."""
    from .modelmeta import YOLO_PAD_VALUE, hints_from_file

    fmt = "edgetpu" if path.name.endswith(EDGETPU_SUFFIX) else FORMATS_BY_SUFFIX.get(path.suffix.lower())
    if fmt is None:
        raise ModelNotFoundError(
            f"{path.name}: unknown model file type; known: {', '.join(FORMATS_BY_SUFFIX)}"
        )
    hints = hints_from_file(path)
    chosen = hints.task if task in (None, "auto") and hints.task else (task or "raw")
    preprocess = None
    if hints.input_size is not None and chosen != "raw":
        size = hints.input_size
        preprocess = Preprocess(resize=hints.resize, input_size=size, pad_value=YOLO_PAD_VALUE,
                                resize_to=size[0] if hints.resize == "crop" else None)
    postprocess = hints.postprocess if chosen == hints.task else {}
    return ModelPackage(name=path.stem, root=path.parent, task=chosen, description=hints.description,
                        labels=hints.labels, preprocess=preprocess, postprocess=postprocess,
                        artifacts=(Artifact(fmt, path.resolve(), None),))


class ModelRepository:
    """Model packages found under one or more folders, addressed by name or by path."""

    def __init__(self, roots: Sequence[Path] = (BUILTIN_MODELS,)) -> None:
        self.roots = tuple(Path(r) for r in roots)

    @classmethod
    def from_settings(cls, settings: Settings) -> ModelRepository:
        """The folders of EDGERUN_MODEL_PATH first (they may shadow a built-in name), then the built-ins."""
        return cls((*settings.model_path, BUILTIN_MODELS))

    def _candidates(self) -> dict[str, Path]:
        found: dict[str, Path] = {}
        for root in self.roots:
            for folder in sorted(root.iterdir()) if root.is_dir() else ():
                if (folder / MANIFEST).is_file() and _NAME.match(folder.name):
                    found.setdefault(folder.name, folder)
        return found

    def names(self) -> list[str]:
        return sorted(self._candidates())

    def packages(self) -> list[ModelPackage]:
        return [load_package(folder) for folder in self._candidates().values()]

    def get(self, name_or_path: str | Path, task: str | None = None) -> ModelPackage:
        """A package by name (in the repository) or by path (a package folder or a model file);
        ``task`` applies to bare model files only (see package_from_file)."""
        text = str(name_or_path)
        if _NAME.match(text) and ".." not in text:
            folder = self._candidates().get(text)
            if folder is not None:
                return load_package(folder)
        path = Path(text).expanduser()
        if path.is_dir():
            return load_package(path)
        if path.is_file():
            return package_from_file(path, task)
        raise ModelNotFoundError(
            f"no model named or at {text!r}; known models: {', '.join(self.names()) or 'none'}"
        )
