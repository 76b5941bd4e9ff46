"""Output paths, checked before the long work starts; a folder is replaced only when edgerun wrote it."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from .errors import InvalidInputError

MANIFEST = "manifest.json"


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path("/")


def _writable_folder(folder: Path, flag: str, path: Path) -> None:
    existing = _nearest_existing(folder)
    if not existing.is_dir():
        raise InvalidInputError(f"{flag} {path}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InvalidInputError(f"{flag} {path}: folder {existing} is not writable")


def check_output_file(path: Path | str, flag: str) -> Path:
    """A file edgerun will (over)write: not a folder or special file, in a writable folder that exists."""
    target = Path(path).expanduser()
    if target.exists() or target.is_symlink():
        if not target.is_file():
            raise InvalidInputError(f"{flag} {path}: is a folder or a special file, not a regular file")
        if not os.access(target, os.W_OK):
            raise InvalidInputError(f"{flag} {path}: file is not writable")
    folder = target.parent
    if not folder.is_dir():
        raise InvalidInputError(f"{flag} {path}: folder {folder} does not exist")
    _writable_folder(folder, flag, target)
    return target


def check_output_folder(path: Path | str, flag: str) -> Path:
    """A folder edgerun writes files into (kept if it exists): a folder, or one that can be made."""
    target = Path(path).expanduser()
    if target.exists() and not target.is_dir():
        raise InvalidInputError(f"{flag} {path}: exists and is not a folder")
    _writable_folder(target, flag, target)
    return target


def is_edgerun_package(folder: Path) -> bool:
    """True when ``folder`` holds a valid edgerun manifest.json and no sub-folders."""
    from .manifest import ModelManifest

    manifest = folder / MANIFEST
    try:
        if not manifest.is_file() or any(entry.is_dir() for entry in folder.iterdir()):
            return False
        ModelManifest.model_validate(json.loads(manifest.read_text(encoding="utf-8")))
    except (OSError, ValueError, RecursionError):  # pydantic's ValidationError is a ValueError
        return False
    return True


def _protected(sources: Iterable[Path]) -> list[tuple[Path, str]]:
    kept = [(Path("/"), "the root folder"), (Path.home().resolve(), "your home folder"),
            (Path.cwd().resolve(), "the working folder")]
    return kept + [(Path(s).resolve(), f"the source package {s}") for s in sources]


def check_replaceable_folder(path: Path | str, flag: str, force: bool, sources: Iterable[Path] = ()) -> Path:
    """A folder edgerun (re)creates whole, as ``optimize --output`` does.

    Refused: the root, home and working folders, any of their ancestors, the source packages and their
    ancestors, a file; an existing non-empty folder unless ``force`` and it is an edgerun package
    (so --force deletes only what edgerun wrote).
    """
    target = Path(path).expanduser()
    resolved = target.resolve()
    for kept, what in _protected(sources):
        if resolved == kept or resolved in kept.parents:
            relation = "is" if resolved == kept else "contains"
            raise InvalidInputError(f"{flag} {path}: refusing to write there, it {relation} {what}")
    if target.exists() or target.is_symlink():
        if target.is_symlink() or not target.is_dir():
            raise InvalidInputError(f"{flag} {path}: exists and is not a folder; refusing to replace it")
        if any(target.iterdir()):
            if not force:
                raise InvalidInputError(f"{flag} {path}: folder already exists and is not empty (use --force "
                                        "to replace an edgerun model package)")
            if not is_edgerun_package(target):
                raise InvalidInputError(f"{flag} {path}: not an edgerun model package (no valid manifest"
                                        ".json, or sub-folders); refusing to delete it even with --force")
    _writable_folder(target.parent, flag, target)
    return target
