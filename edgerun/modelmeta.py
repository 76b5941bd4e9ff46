"""What a bare model file says about itself: ONNX metadata_props (Ultralytics), files zipped into a TFLite."""

from __future__ import annotations

import ast
import json
import mmap
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ModelIntegrityError

ONNX_METADATA_FIELD = 14  # ModelProto.metadata_props (repeated StringStringEntryProto)
ULTRALYTICS_TASKS = {"detect": "detection", "classify": "classification"}
YOLO_PAD_VALUE = 114


@dataclass(frozen=True)
class ModelHints:
    """Task, labels, input size and decoder settings found in a model file (all optional)."""

    task: str | None = None
    labels: tuple[str, ...] = ()
    input_size: tuple[int, int] | None = None  # height, width
    resize: str = "letterbox"
    postprocess: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    source: str = ""  # where the hints came from, for messages


# ---- ONNX: a minimal protobuf reader for the top-level fields of ModelProto --------------------
def _varint(data: mmap.mmap | bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data):
            raise ModelIntegrityError("truncated ONNX file (varint runs past the end)")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _fields(data: mmap.mmap | bytes, start: int, end: int) -> Any:
    """(field number, span or None) of each field in data[start:end]; length-delimited ones have a span."""
    pos = start
    while pos < end:
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, pos = _varint(data, pos)
            yield number, None
        elif wire == 2:
            length, pos = _varint(data, pos)
            if pos + length > end:
                raise ModelIntegrityError("truncated ONNX file (a field runs past the end)")
            yield number, (pos, pos + length)
            pos += length
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
            yield number, None
        else:
            raise ModelIntegrityError(f"not an ONNX model (protobuf wire type {wire})")


def onnx_metadata(path: Path) -> dict[str, str]:
    """The metadata_props of an ONNX model as a dict, read without loading the graph."""
    with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        props: dict[str, str] = {}
        for number, span in _fields(data, 0, len(data)):
            if number != ONNX_METADATA_FIELD or span is None:
                continue
            entry = {n: bytes(data[s[0]:s[1]]).decode("utf-8", "replace")
                     for n, s in _fields(data, *span) if s is not None}
            props[entry.get(1, "")] = entry.get(2, "")
        return props


# ---- TFLite: associated files are a zip archive appended to the flatbuffer ----------------------
def tflite_associated_files(path: Path) -> dict[str, bytes]:
    """Files packed into a .tflite by the metadata writer (label maps, Ultralytics metadata.json)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return {info.filename: archive.read(info) for info in archive.infolist()
                    if not info.is_dir() and info.file_size < 4 << 20}
    except (zipfile.BadZipFile, OSError):
        return {}


def parse_labels(text: str) -> tuple[str, ...]:
    """One label per line, or 'ID label' lines (pycoral label maps), gaps filled with ''."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    pairs = [line.split(maxsplit=1) for line in lines]
    if pairs and all(len(p) == 2 and p[0].isdigit() for p in pairs):
        by_id = {int(p[0]): p[1].strip() for p in pairs}
        return tuple(by_id.get(i, "") for i in range(max(by_id) + 1))
    return tuple(lines)


def _literal(value: Any, what: str) -> Any:
    """A Python literal from a metadata string (never eval: ast.literal_eval only)."""
    if not isinstance(value, str):
        return value
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError, MemoryError, RecursionError) as exc:
        raise ModelIntegrityError(f"model metadata {what!r} is not a literal: {value[:80]!r}") from exc


def _names(value: Any) -> tuple[str, ...]:
    names = _literal(value, "names")
    if isinstance(names, Mapping):
        by_id = {int(k): str(v) for k, v in names.items()}
        return tuple(by_id.get(i, "") for i in range(max(by_id) + 1)) if by_id else ()
    if isinstance(names, (list, tuple)):
        return tuple(str(n) for n in names)
    raise ModelIntegrityError(f"model metadata 'names' must be a dict or list, got {type(names).__name__}")


def _imgsz(value: Any) -> tuple[int, int] | None:
    size = _literal(value, "imgsz")
    if isinstance(size, int):
        return size, size
    if isinstance(size, (list, tuple)) and len(size) == 2 and all(isinstance(v, int) for v in size):
        return int(size[0]), int(size[1])
    return None


def ultralytics_hints(meta: Mapping[str, Any], source: str) -> ModelHints:
    """Hints from Ultralytics export metadata: task, names, imgsz (stride and the rest are informative)."""
    task = str(meta.get("task", ""))
    labels = _names(meta["names"]) if "names" in meta else ()
    size = _imgsz(meta["imgsz"]) if "imgsz" in meta else None
    description = str(meta.get("description", "")) or f"Ultralytics {task} model"
    if task == "classify":
        return ModelHints("classification", labels, size, "crop", {"kind": "probabilities"},
                          description, source)
    if task != "detect":
        return ModelHints(None, labels, size, description=f"{description} (task {task!r}: raw tensors only)",
                          source=source)
    end2end = _literal(meta.get("end2end", "False"), "end2end") is True
    return ModelHints("detection", labels, size, "letterbox",
                      {"kind": "yolo_end2end" if end2end else "yolov8"}, description, source)


def _is_ultralytics(meta: Mapping[str, Any]) -> bool:
    return "names" in meta and ("task" in meta or "ultralytics" in str(meta.get("author", "")).lower())


def _tflite_hints(path: Path) -> ModelHints:
    files = tflite_associated_files(path)
    if "metadata.json" in files:
        meta = json.loads(files["metadata.json"].decode("utf-8", "replace"))
        if isinstance(meta, dict) and _is_ultralytics(meta):
            return ultralytics_hints(meta, f"{path.name}: metadata.json")
    if "metadata.txt" in files:
        meta = _literal(files["metadata.txt"].decode("utf-8", "replace"), "metadata.txt")
        if isinstance(meta, dict) and _is_ultralytics(meta):
            return ultralytics_hints(meta, f"{path.name}: metadata.txt")
    texts = sorted(n for n in files if n.lower().endswith(".txt"))
    preferred = [n for n in texts if "label" in n.lower()] or texts
    if preferred:
        labels = parse_labels(files[preferred[0]].decode("utf-8", "replace"))
        return ModelHints(labels=labels, source=f"{path.name}: {preferred[0]}")
    return ModelHints()


def hints_from_file(path: Path) -> ModelHints:
    """Whatever the file itself declares; empty hints when it declares nothing we understand."""
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        try:
            meta = onnx_metadata(path)
        except (ModelIntegrityError, ValueError, OSError):
            return ModelHints()  # not readable as ONNX: the backend that loads it says why
        if _is_ultralytics(meta):
            return ultralytics_hints(meta, f"{path.name}: metadata_props")
        return ModelHints()
    if suffix == ".tflite":
        return _tflite_hints(path)
    return ModelHints()
