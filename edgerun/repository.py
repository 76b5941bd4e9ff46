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
FORMATS_BY_SUFFIX = {".onnx": "onnx", ".tflite": "tflite", ".engine": "tensorrt", ".plan": "tensorrt",
                     ".param": "ncnn", ".xml": "openvino", ".rknn": "rknn"}
EDGETPU_SUFFIX = "_edgetpu.tflite"  # compiled by edgetpu_compiler: format "edgetpu"
TASKS = ("classification", "detection", "raw")
RESIZE_MODES = ("crop", "letterbox", "stretch")
LAYOUTS = ("NCHW", "NHWC")
MAX_MANIFEST_BYTES = 1024 * 1024
MAX_LABELS_BYTES = 16 * 1024 * 1024
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


def inside(root: Path, relative: str, what: str) -> Path:
    """``root / relative`` resolved (symlinks followed); ModelIntegrityError unless it stays inside root."""
    path = (root / relative).resolve()
    if root.resolve() not in path.parents:
        raise ModelIntegrityError(f"{what} {relative!r} lies outside the package {root}")
    return path


def _preprocess(spec: Any) -> Preprocess | None:
    if spec is None:
        return None
    return Preprocess(color=spec.color, resize=spec.resize, resize_to=spec.resize_to,
                      input_size=tuple(spec.input_size), mean=tuple(spec.mean), std=tuple(spec.std))


def _artifact(paths: Mapping[str, Path], index: int, spec: Any) -> Artifact:
    companions = tuple((paths[f"artifacts.{index}.companions.{n}.file"], c.sha256)
                       for n, c in enumerate(spec.companions))
    return Artifact(format=spec.format, path=paths[f"artifacts.{index}.file"], sha256=spec.sha256,
                    layout=spec.layout, precision=spec.precision, companions=companions)


def _read_labels(path: Path | None, where: str) -> tuple[str, ...]:
    if path is None:
        return ()
    try:
        if not path.is_file():
            raise ModelIntegrityError(f"{where}: labels {path.name!r} is not a regular file")
        if path.stat().st_size > MAX_LABELS_BYTES:
            raise ModelIntegrityError(f"{where}: labels file {path.name!r} is over {MAX_LABELS_BYTES} bytes")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelIntegrityError(f"{where}: cannot read labels file {path.name!r}: {exc}") from exc
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def _read_manifest(root: Path, where: str) -> Any:
    path = root / MANIFEST
    try:
        if path.is_file() and path.stat().st_size > MAX_MANIFEST_BYTES:
            raise ModelIntegrityError(f"{where}: manifest is over {MAX_MANIFEST_BYTES} bytes")
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ModelNotFoundError(f"{root} has no {MANIFEST}") from exc
    except (OSError, ValueError, RecursionError) as exc:
        raise ModelIntegrityError(f"{where}: unreadable manifest: {exc}") from exc


def load_package(root: Path) -> ModelPackage:
    """Parse ``root/manifest.json`` into a ModelPackage (files are verified at load time).

    Every path the manifest names must resolve (symlinks followed) inside ``root``.
    """
    from .manifest import parse_manifest

    where = str(root / MANIFEST)
    manifest = parse_manifest(_read_manifest(root, where), where)
    paths = {key: inside(root, relative, f"{where}: {key}") for key, relative in manifest.paths()}
    return ModelPackage(
        name=manifest.name or root.name, root=root, task=manifest.task,
        description=manifest.description, labels=_read_labels(paths.get("labels"), where),
        preprocess=_preprocess(manifest.preprocess),
        postprocess=manifest.postprocess.model_dump(exclude_none=True),
        artifacts=tuple(_artifact(paths, i, a) for i, a in enumerate(manifest.artifacts)),
    )


def package_from_file(path: Path) -> ModelPackage:
    """A bare model file as a 'raw' package: no pipeline, no checksum to verify."""
    fmt = "edgetpu" if path.name.endswith(EDGETPU_SUFFIX) else FORMATS_BY_SUFFIX.get(path.suffix.lower())
    if fmt is None:
        raise ModelNotFoundError(
            f"{path.name}: unknown model file type; known: {', '.join(FORMATS_BY_SUFFIX)}"
        )
    return ModelPackage(name=path.stem, root=path.parent, task="raw",
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

    def get(self, name_or_path: str | Path) -> ModelPackage:
        """A package by name (in the repository) or by path (a package folder or a model file)."""
        text = str(name_or_path)
        if _NAME.match(text) and ".." not in text:
            folder = self._candidates().get(text)
            if folder is not None:
                return load_package(folder)
        path = Path(text).expanduser()
        if path.is_dir():
            return load_package(path)
        if path.is_file():
            return package_from_file(path)
        raise ModelNotFoundError(
            f"no model named or at {text!r}; known models: {', '.join(self.names()) or 'none'}"
        )
