"""The output model package: manifest, labels, licence, pre-processing carried over; checksummed."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import ModelIntegrityError
from ..outputs import check_replaceable_folder
from ..repository import MANIFEST, ModelPackage, load_package, sha256_of, verify_artifact


def check_destination(destination: Path, force: bool, source: Path | None = None) -> None:
    """Refuse a destination that is not ours to replace: see edgerun.outputs.check_replaceable_folder."""
    check_replaceable_folder(destination, "--output", force, () if source is None else (source,))


def staging_folder(destination: Path, force: bool, source: Path | None = None) -> Path:
    """A new empty folder beside ``destination`` to build the package in (renamed into place at the end)."""
    check_destination(destination, force, source)
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", dir=destination.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; a model package is readable like its source
    return staging


def _source_manifest(package: ModelPackage) -> dict[str, Any]:
    try:
        data = json.loads((package.root / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelIntegrityError(f"{package.root / MANIFEST}: unreadable manifest: {exc}") from exc
    return data if isinstance(data, dict) else {}


def carry_files(package: ModelPackage, staging: Path) -> list[str]:
    """Copy every file of the source package except its manifest and model files (labels, NOTICE, LICENSE)."""
    model_files = {a.path.resolve() for a in package.artifacts}
    model_files |= {c.resolve() for a in package.artifacts for c, _ in a.companions}
    copied = []
    root = package.root.resolve()
    for path in sorted(package.root.iterdir()):
        outside = root not in path.resolve().parents  # a symlink out of the package is not carried
        if path.is_file() and not outside and path.name != MANIFEST and path.resolve() not in model_files:
            shutil.copy2(path, staging / path.name)
            copied.append(path.name)
    return copied


def artifact_entry(staging: Path, file: str, fmt: str, layout: str | None, precision: str) -> dict[str, Any]:
    """A manifest artifact entry for a file already in ``staging``, with its sha256."""
    entry: dict[str, Any] = {"format": fmt, "file": file, "sha256": sha256_of(staging / file)}
    if layout:
        entry["layout"] = layout
    entry["precision"] = precision
    return entry


def write_manifest(
    package: ModelPackage,
    staging: Path,
    name: str,
    description: str,
    artifacts: Sequence[Mapping[str, Any]],
    extra: Mapping[str, Any],
) -> None:
    """The source manifest (task, labels, licence, preprocess, postprocess) with new name and artifacts."""
    manifest = _source_manifest(package)
    manifest.update({"name": name, "description": description, "artifacts": [dict(a) for a in artifacts]})
    manifest.update(extra)
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def publish(staging: Path, destination: Path, force: bool, source: Path | None = None) -> ModelPackage:
    """Check the staged package loads and every checksum matches, then move it to ``destination``."""
    staged = load_package(staging)
    for artifact in staged.artifacts:
        verify_artifact(artifact)
    check_destination(destination, force, source)  # again: the folder may have changed meanwhile
    if destination.exists() and force:
        shutil.rmtree(destination) if destination.is_dir() else destination.unlink()
    elif destination.exists():
        destination.rmdir()  # empty (checked by staging_folder)
    os.replace(staging, destination)
    return load_package(destination)


def discard(staging: Path) -> None:
    shutil.rmtree(staging, ignore_errors=True)
