"""TensorRT engine cache: keys, metadata beside each engine, and the stale/foreign/corrupt decisions."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

PRECISIONS = ("fp32", "fp16", "int8")
# Fields that describe the machine and toolchain: a mismatch means the engine is stale or foreign.
ENVIRONMENT_FIELDS = ("tensorrt_version", "gpu_name", "compute_capability", "device")

Shape = tuple[int, ...]


@dataclass(frozen=True)
class InputProfile:
    """One input's optimisation-profile shapes (equal min/opt/max for a static input)."""

    name: str
    min: Shape
    opt: Shape
    max: Shape


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine depends on; two equal keys may share one engine file."""

    model_sha256: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    precision: str
    inputs: tuple[InputProfile, ...]
    device: str = "gpu"
    calibration_sha256: str | None = None

    def to_dict(self) -> dict[str, object]:
        return json.loads(json.dumps(asdict(self)))

    def slot(self) -> str:
        """File stem: the model and build request, not the machine (a machine change is 'stale')."""
        request = json.dumps([self.to_dict()[k] for k in ("inputs", "device", "calibration_sha256")])
        digest = hashlib.sha256(request.encode()).hexdigest()[:12]
        return f"{self.model_sha256[:16]}-{self.precision}-{digest}"


def default_cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """EDGERUN_CACHE_DIR, else systemd's CACHE_DIRECTORY, else $XDG_CACHE_HOME or ~/.cache, + /edgerun."""
    env = os.environ if environ is None else environ
    if env.get("EDGERUN_CACHE_DIR"):
        return Path(env["EDGERUN_CACHE_DIR"]) / "tensorrt"
    if env.get("CACHE_DIRECTORY"):
        return Path(env["CACHE_DIRECTORY"].split(":")[0]) / "tensorrt"
    base = Path(env["XDG_CACHE_HOME"]) if env.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return base / "edgerun" / "tensorrt"


def profile_for(
    inputs: Sequence[tuple[str, Shape]], max_batch: int = 1, overrides: Mapping[str, Shape] | None = None
) -> tuple[InputProfile, ...]:
    """Profiles from the network's input dims (-1 = dynamic): a dynamic batch spans 1..max_batch
    (opt 1); any other dynamic dim needs an explicit shape in ``overrides``."""
    profiles = []
    for name, dims in inputs:
        if overrides and name in overrides:
            shape = tuple(overrides[name])
            profiles.append(InputProfile(name, shape, shape, shape))
            continue
        inner = dims[1:]
        if any(d < 0 for d in inner):
            raise ValueError(
                f"input {name!r} has dynamic dims {list(dims)} beyond the batch; "
                f"give its shape with the option shapes={name}=1x3x224x224"
            )
        if dims and dims[0] < 0:
            profiles.append(InputProfile(name, (1, *inner), (1, *inner), (max(1, max_batch), *inner)))
        else:
            profiles.append(InputProfile(name, tuple(dims), tuple(dims), tuple(dims)))
    return tuple(profiles)


def _paths(cache_dir: Path, key: EngineKey) -> tuple[Path, Path]:
    stem = cache_dir / key.slot()
    return stem.with_suffix(".engine"), stem.with_suffix(".json")


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def mismatch(recorded: Mapping[str, object], key: EngineKey) -> str | None:
    """Why an engine built for ``recorded`` must not be used for ``key``; None when it fits."""
    current = key.to_dict()
    for field in (*ENVIRONMENT_FIELDS, "model_sha256", "precision", "inputs", "calibration_sha256"):
        if recorded.get(field) != current[field]:
            return f"{field} was {recorded.get(field)!r}, this host/request has {current[field]!r}"
    return None


def lookup(cache_dir: Path, key: EngineKey) -> tuple[Path | None, str]:
    """(engine path, 'cache hit') or (None, why it must be built): missing, foreign, stale or corrupt."""
    engine, meta = _paths(cache_dir, key)
    if not engine.is_file():
        return None, f"no cached engine at {engine}"
    try:
        recorded = json.loads(meta.read_text())
    except (OSError, ValueError):
        return None, f"{engine.name} has no readable metadata ({meta.name}): treated as foreign"
    why = mismatch(recorded.get("key", {}), key)
    if why is not None:
        return None, f"{engine.name} is stale or foreign: {why}"
    if _sha256_bytes(engine.read_bytes()) != recorded.get("engine_sha256"):
        return None, f"{engine.name} is corrupt: its checksum differs from {meta.name}"
    return engine, "cache hit"


def store(cache_dir: Path, key: EngineKey, engine_bytes: bytes, build_seconds: float) -> Path:
    """Write the engine and its metadata atomically (a crash never leaves a half engine behind)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    engine, meta = _paths(cache_dir, key)
    record = {
        "key": key.to_dict(),
        "engine_sha256": _sha256_bytes(engine_bytes),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "build_seconds": round(build_seconds, 1),
    }
    for path, data in ((engine, engine_bytes), (meta, json.dumps(record, indent=2).encode())):
        handle, temporary = tempfile.mkstemp(dir=cache_dir, prefix=path.name + ".")
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(temporary, path)
    return engine


def sidecar_problem(engine_file: Path, current: Mapping[str, str]) -> str | None:
    """For a user-supplied .engine/.plan: compare its ``<file>.json`` (if any) with this host."""
    meta = engine_file.with_name(engine_file.name + ".json")
    if not meta.is_file():
        return None
    try:
        recorded = json.loads(meta.read_text()).get("key", {})
    except (OSError, ValueError, AttributeError):
        return f"{meta.name} is unreadable"
    for field in ENVIRONMENT_FIELDS:
        if field in recorded and field in current and recorded[field] != current[field]:
            return (
                f"{engine_file.name} was built for {field} {recorded[field]!r}, this host has "
                f"{current[field]!r}; rebuild it on this device from the ONNX model"
            )
    return None
