"""Service settings: ServeConfig and per-model ModelConfig, read from a JSON/TOML file, validated, frozen."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import Settings
from ..errors import InvalidInputError
from ..repository import DEFAULT_CLASSIFIER, DEFAULT_DETECTOR, FORMATS_BY_SUFFIX

API_KEY_ENV = "EDGERUN_API_KEY"
DEFAULT_MODELS = (DEFAULT_CLASSIFIER, DEFAULT_DETECTOR)
DEFAULT_INSTANCES = 2  # concurrent executions of a thread-safe session (Triton's CPU default too)


@dataclass(frozen=True)
class ModelConfig:
    """How one model is served. ``path`` (operator input only) overrides lookup by name."""

    name: str
    path: str | None = None              # a package folder or model file; never from a request
    backend: str | None = None           # strict backend choice (see `edgerun backends`)
    device: str | None = None            # the backend's device option (needs backend)
    options: Mapping[str, Any] = field(default_factory=dict)  # backend options (edgerun backends NAME)
    threads: int | None = None           # runtime CPU threads
    instances: int | None = None         # concurrent executions: default 2, 1 if not thread-safe
    max_batch_size: int | None = None    # None: 8 if every tensor has a dynamic batch dim, else 0
    dynamic_batching: bool = False       # combine concurrent requests along the batch dim
    max_queue_delay_us: int = 500        # how long the batcher waits to fill a batch
    warmup: int = 1                      # inferences on zeros before the model is ready

    @property
    def source(self) -> str:
        return self.path or self.name


@dataclass(frozen=True)
class ServeConfig:
    """Everything `edgerun serve` needs; defaults are safe (localhost, limits on)."""

    host: str = "127.0.0.1"
    port: int = 8000
    models: tuple[ModelConfig, ...] = tuple(ModelConfig(n) for n in DEFAULT_MODELS)
    api_key: str | None = None           # also EDGERUN_API_KEY; None: no authentication
    max_body_bytes: int = 32 * 1024 * 1024
    request_timeout_s: float = 30.0      # queue + inference, per request
    graceful_timeout_s: float = 30.0     # how long SIGTERM waits for in-flight requests
    access_log: bool = True
    max_streams: int = 4                 # video streams running at once (POST /v1/streams)
    streams: tuple[Mapping[str, Any], ...] = ()   # streams started with the service (POST bodies)
    settings: Settings = field(default_factory=Settings.from_env)

    def model_config(self, name: str) -> ModelConfig:
        """The configured settings for ``name``, or the defaults."""
        return next((m for m in self.models if m.name == name), ModelConfig(name))


WorkingHook = Callable[[], AbstractContextManager[object]]


@dataclass(frozen=True)
class LifecycleHooks:
    """Callbacks at the service's life-cycle points (e.g. for systemd sd_notify)."""

    on_ready: Callable[[], None] | None = None        # start-up models loaded and warmed up
    on_stopping: Callable[[], None] | None = None     # shutdown began (SIGTERM or lifespan end)
    on_failed: Callable[[str], None] | None = None    # a start-up model could not be loaded
    working: WorkingHook | None = None                # wraps every model execution (watchdog progress)


def _check_type(value: Any, kind: type, where: str) -> Any:
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise InvalidInputError(f"{where} must be {kind.__name__}, got {value!r}")
    return value


_MODEL_TYPES: dict[str, type] = {
    "name": str, "path": str, "backend": str, "device": str, "options": Mapping, "threads": int,
    "instances": int,
    "max_batch_size": int, "dynamic_batching": bool, "max_queue_delay_us": int, "warmup": int,
}
_SERVE_TYPES: dict[str, type] = {
    "host": str, "port": int, "api_key": str, "max_body_bytes": int,
    "request_timeout_s": float, "graceful_timeout_s": float, "access_log": bool,
    "max_streams": int,
}


def _typed(data: Mapping[str, Any], types: Mapping[str, type], where: str) -> dict[str, Any]:
    unknown = sorted(set(data) - set(types))
    if unknown:
        raise InvalidInputError(f"{where}: unknown keys {unknown}; valid: {', '.join(types)}")
    return {key: _check_type(value, types[key], f"{where}.{key}") for key, value in data.items()}


def model_config_from(data: Mapping[str, Any] | str, where: str = "model") -> ModelConfig:
    """A ModelConfig from a mapping (config file) or a bare name/path (command line)."""
    if isinstance(data, str):
        return validate_model(ModelConfig(name=Path(data).stem if _looks_like_path(data) else data,
                                          path=data if _looks_like_path(data) else None))
    if not isinstance(data, Mapping) or "name" not in data and "path" not in data:
        raise InvalidInputError(f"{where} needs a 'name' or a 'path'")
    values = _typed(data, _MODEL_TYPES, where)
    if "name" not in values:
        values["name"] = Path(values["path"]).stem
    return validate_model(ModelConfig(**values))


def _looks_like_path(text: str) -> bool:
    """Command-line model values with a separator or a model-file suffix are paths, not names."""
    return os.sep in text or Path(text).suffix.lower() in FORMATS_BY_SUFFIX


def validate_model(model: ModelConfig) -> ModelConfig:
    """Raise InvalidInputError for values that cannot work."""
    checks = [
        (model.instances is None or model.instances >= 1, "instances must be >= 1"),
        (model.threads is None or model.threads >= 1, "threads must be >= 1"),
        (model.max_batch_size is None or model.max_batch_size >= 0, "max_batch_size must be >= 0"),
        (0 <= model.max_queue_delay_us <= 10_000_000, "max_queue_delay_us must be in 0..10000000"),
        (0 <= model.warmup <= 100, "warmup must be in 0..100"),
    ]
    for ok, message in checks:
        if not ok:
            raise InvalidInputError(f"model {model.name}: {message}")
    return model


def validate_serve(config: ServeConfig) -> ServeConfig:
    """Raise InvalidInputError for service values that cannot work."""
    names = [m.name for m in config.models]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    checks = [
        (0 <= config.port <= 65535, "port must be in 0..65535"),
        (config.max_body_bytes >= 1024, "max_body_bytes must be >= 1024"),
        (0 <= config.max_streams <= 64, "max_streams must be in 0..64"),
        (config.request_timeout_s > 0, "request_timeout_s must be > 0"),
        (config.graceful_timeout_s > 0, "graceful_timeout_s must be > 0"),
        (not duplicates, f"models served twice under one name: {duplicates}"),
        (config.api_key is None or len(config.api_key) >= 8, "api_key must have >= 8 characters"),
    ]
    for ok, message in checks:
        if not ok:
            raise InvalidInputError(f"serve config: {message}")
    return config


def _read_file(path: Path) -> Mapping[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInputError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
    try:
        if path.suffix.lower() == ".toml":
            import tomllib  # Python >= 3.11

            data: Any = tomllib.loads(text)
        else:
            data = json.loads(text)
    except ImportError as exc:
        raise InvalidInputError("TOML config files need Python >= 3.11; use JSON") from exc
    except ValueError as exc:
        kind = path.suffix[1:] or "JSON"
        raise InvalidInputError(f"config file {path} is not valid {kind}: {exc}") from exc
    if not isinstance(data, Mapping):
        raise InvalidInputError(f"config file {path} must hold an object/table at the top")
    return data


def config_from_mapping(data: Mapping[str, Any], where: str = "config") -> ServeConfig:
    """A ServeConfig from parsed file content; ``models`` is a list of names/paths or tables."""
    values = dict(data)
    models = values.pop("models", None)
    streams = values.pop("streams", [])
    if not isinstance(streams, list) or not all(isinstance(s, Mapping) and "source" in s for s in streams):
        raise InvalidInputError(f"{where}.streams must be a list of tables with a 'source'")
    config = ServeConfig(**_typed(values, _SERVE_TYPES, where), streams=tuple(streams))
    if models is not None:
        if not isinstance(models, list):
            raise InvalidInputError(f"{where}.models must be a list")
        parsed = tuple(model_config_from(m, f"{where}.models[{i}]") for i, m in enumerate(models))
        config = dataclasses.replace(config, models=parsed)
    return config


def load_config(path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> ServeConfig:
    """Read a JSON (or, on Python >= 3.11, TOML) config file; EDGERUN_API_KEY fills a missing key."""
    env = os.environ if environ is None else environ
    config = config_from_mapping(_read_file(Path(path)), str(path)) if path else ServeConfig()
    if config.api_key is None and env.get(API_KEY_ENV):
        config = dataclasses.replace(config, api_key=env[API_KEY_ENV])
    return validate_serve(dataclasses.replace(config, settings=Settings.from_env(env)))
