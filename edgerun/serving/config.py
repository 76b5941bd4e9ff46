"""The service's one configuration: server, auth, limits, models, streams and telemetry as pydantic
dataclasses, read from a YAML, TOML or JSON file with EDGERUN_SECTION__KEY overrides, validated, frozen."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    InstanceOf,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.dataclasses import dataclass as config_dataclass
from pydantic.json_schema import SkipJsonSchema

from ..backends.base import LoadOptions
from ..config import Settings
from ..errors import InvalidInputError
from ..hal.hostfs import DEFAULT_CONFIG_PATH, HostFS
from ..repository import DEFAULT_CLASSIFIER, DEFAULT_DETECTOR, FORMATS_BY_SUFFIX

CONFIG_ENV = "EDGERUN_CONFIG"
API_KEY_ENV = "EDGERUN_API_KEY"
OVERRIDE_PREFIX = "EDGERUN_"
OVERRIDE_SEPARATOR = "__"   # EDGERUN_LIMITS__MAX_CONNECTIONS=200, EDGERUN_MODELS__0__BACKEND=litert
DEFAULT_MODELS = (DEFAULT_CLASSIFIER, DEFAULT_DETECTOR)
DEFAULT_INSTANCES = 2  # concurrent executions of a thread-safe session (Triton's CPU default too)
MAX_CONFIG_BYTES = 1024 * 1024
MAX_PROBLEMS = 10  # wrong keys named in one error line
FILE_KINDS = {".yaml": "YAML", ".yml": "YAML", ".toml": "TOML", ".json": "JSON"}

# Unknown keys are errors; NaN and infinity are refused wherever a number is expected.
STRICT = ConfigDict(extra="forbid", allow_inf_nan=False, protected_namespaces=())


@config_dataclass(frozen=True, config=STRICT)
class ServerConfig:
    """Where the service listens and how it stops."""

    host: str = Field("127.0.0.1", min_length=1, description="address to bind; 0.0.0.0 serves the network")
    port: int = Field(8000, ge=0, le=65535, description="TCP port; 0 picks a free one")
    grpc_port: int | None = Field(None, ge=0, le=65535, description=(
        "also serve KServe V2 over gRPC on this port (needs edgerun[grpc]); none: off"))
    graceful_timeout_s: float = Field(30.0, gt=0, le=3600,
                                      description="how long SIGTERM waits for in-flight requests")
    access_log: bool = Field(True, description="one JSON line per request on stderr")
    infer_fast_lane: bool = Field(True, description=(
        "serve V2 binary-tensor infer requests in the HTTP protocol itself (same checks, metrics, "
        "log and answers; less CPU per request); false: through the ASGI app like every other route"))


@config_dataclass(frozen=True, config=STRICT)
class AuthConfig:
    """Who may call the service."""

    api_key: str | None = Field(None, min_length=8, description=(
        "any UTF-8 text; clients send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'. Health "
        "routes stay open. EDGERUN_API_KEY fills it when the file has none"))
    metrics_require_key: bool = Field(False, description="with an api_key: /metrics needs it too")
    allowed_origins: tuple[str, ...] = Field((), description=(
        "browser origins (scheme://host:port) allowed to call state-changing routes, besides the "
        "server's own"))


@config_dataclass(frozen=True, config=STRICT)
class LimitsConfig:
    """Budgets that keep one client from costing the board its memory or its sockets."""

    max_body_bytes: int = Field(32 * 1024 * 1024, ge=1024, le=2**31, description="largest request body")
    request_timeout_s: float = Field(30.0, gt=0, le=3600, description="queue + inference, per request")
    max_streams: int = Field(4, ge=0, le=64, description="video streams running at once")
    max_connections: int = Field(100, ge=1, le=100_000, description=(
        "open connections; more are answered 503 with Retry-After and closed"))
    header_timeout_s: float = Field(10.0, gt=0, le=600, description=(
        "a request's line and headers must arrive within this, else the connection closes (408); "
        "so must each next part of a request body or of a gRPC call"))
    keep_alive_timeout_s: float = Field(5.0, gt=0, le=600,
                                        description="an idle keep-alive connection closes after this")
    max_header_bytes: int = Field(16 * 1024, ge=1024, le=1024 * 1024,
                                  description="request line + headers; larger ones get 431")


@config_dataclass(frozen=True, config=STRICT)
class TelemetryConfig:
    """The service's power and thermal sampler."""

    enabled: bool = Field(True, description="sample power and thermals while serving")
    power_period_s: float = Field(0.1, gt=0, le=60, description="power sensor sampling period")
    thermal_period_s: float = Field(1.0, gt=0, le=600, description="thermal zone sampling period")


def _name_from_path(data: Any) -> Any:
    if isinstance(data, dict) and "name" not in data and isinstance(data.get("path"), str):
        return {**data, "name": Path(data["path"]).stem}
    return data


@config_dataclass(frozen=True, config=STRICT)
class ModelConfig:
    """How one model is served. ``path`` (operator input only) overrides lookup by name."""

    name: str = Field(min_length=1, max_length=256, description="the name clients use")
    path: str | None = Field(None, min_length=1, description="a package folder or model file")
    backend: str | None = Field(None, description="strict backend choice (see `edgerun backends`)")
    device: str | None = Field(None, description="accelerator on that backend (e.g. usb:1, pci:0, dla:0)")
    options: dict[str, Any] = Field(default_factory=dict, description="the backend's own options")
    threads: int | None = Field(None, ge=1, le=1024, description="runtime CPU threads")
    instances: int | None = Field(None, ge=1, le=64,
                                  description="concurrent executions: default 2, 1 if not thread-safe")
    max_batch_size: int | None = Field(None, ge=0, le=65536, description=(
        "largest batch; default 8 if every tensor has a dynamic batch dim, else 0"))
    dynamic_batching: bool = Field(False, description="combine concurrent requests along the batch dim")
    max_queue_delay_us: int = Field(500, ge=0, le=10_000_000, description="how long the batcher waits")
    warmup: int = Field(1, ge=0, le=100, description="inferences on zeros before the model is ready")

    @property
    def source(self) -> str:
        return self.path or self.name

    _name = model_validator(mode="before")(_name_from_path)


class StreamOptions(BaseModel):
    """How a stream reads its source (the `options` of POST /v1/streams and of a configured stream)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    max_fps: float | None = Field(default=None, gt=0, le=1000, description="cap on inferences per second")
    loop: bool = Field(default=False, description="files and folders: start again at the end")
    realtime: bool = Field(default=True, description="files: read at the file's frame rate, like a camera")
    open_timeout_s: float = Field(default=5.0, gt=0, le=60, description="network sources: connect timeout")
    read_timeout_s: float = Field(default=5.0, gt=0, le=60,
                                  description="a stalled source reconnects after this")
    jpeg_quality: int = Field(default=80, ge=10, le=100, description="of the annotated MJPEG frames")
    labels: list[str] | None = Field(default=None, max_length=1000,
                                     description="keep only detections (or classes) with these labels")
    min_score: float = Field(default=0.0, ge=0.0, le=1.0,
                             description="keep only results scoring at least this")


@config_dataclass(frozen=True, config=STRICT)
class StreamConfig:
    """A stream started with the service (sources are retried until they appear)."""

    source: str = Field(min_length=1, max_length=2048, description=(
        "rtsp://, http(s)://, v4l2://, csi://N, file:// or a path, an image folder or glob"))
    model: str = Field(DEFAULT_DETECTOR, min_length=1, max_length=256, description="a served model")
    fps: float | None = Field(None, gt=0, le=1000, description="cap on inferences per second")
    output: str | None = Field(None, min_length=1, description=(
        "annotated video (.mp4/.avi/.mkv) or a folder of JPEG frames written on the host"))
    options: StreamOptions = Field(default_factory=StreamOptions)

    @field_validator("output")
    @classmethod
    def _output_kind(cls, output: str | None) -> str | None:
        from ..camera.sinks import VIDEO_CODECS

        suffix = Path(output).suffix.lower() if output else ""
        if suffix and suffix not in VIDEO_CODECS:
            raise ValueError(f"use a video file ({', '.join(VIDEO_CODECS)}) or a folder, not {suffix!r}")
        return output

    def request_body(self) -> dict[str, Any]:
        """The POST /v1/streams body this stream amounts to (``fps`` becomes options.max_fps)."""
        options = self.options.model_dump(exclude_unset=True)
        if self.fps is not None:
            options["max_fps"] = self.fps
        return {"source": self.source, "model": self.model, "options": options}


def _models_from_names(value: Any) -> Any:
    """Bare strings in ``models`` are names or paths, as on the command line."""
    if isinstance(value, (list, tuple)):
        return [_model_table(item) if isinstance(item, str) else item for item in value]
    return value


def _model_table(text: str) -> dict[str, str]:
    return {"name": Path(text).stem, "path": text} if _looks_like_path(text) else {"name": text}


ModelList = Annotated[tuple[ModelConfig, ...], BeforeValidator(_models_from_names, list[ModelConfig | str])]


@config_dataclass(frozen=True, config=STRICT)
class ServeConfig:
    """The whole configuration file; every default is safe (localhost, limits on, no key needed)."""

    server: ServerConfig = Field(default_factory=ServerConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    models: ModelList = Field(tuple(ModelConfig(n) for n in DEFAULT_MODELS),
              description="served from start-up (a table each, or a bare name or path); names must be unique")
    streams: tuple[StreamConfig, ...] = Field((), description="started once the models are ready")
    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig)
    settings: SkipJsonSchema[InstanceOf[Settings]] = Field(default_factory=Settings.from_env, exclude=True)

    @model_validator(mode="after")
    def _unique_models(self) -> ServeConfig:
        names = [m.name for m in self.models]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"models served twice under one name: {duplicates}")
        return self

    # The settings the request path reads, by their short names.
    @property
    def host(self) -> str:
        return self.server.host

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def grpc_port(self) -> int | None:
        return self.server.grpc_port

    @property
    def graceful_timeout_s(self) -> float:
        return self.server.graceful_timeout_s

    @property
    def access_log(self) -> bool:
        return self.server.access_log

    @property
    def api_key(self) -> str | None:
        return self.auth.api_key

    @property
    def max_body_bytes(self) -> int:
        return self.limits.max_body_bytes

    @property
    def request_timeout_s(self) -> float:
        return self.limits.request_timeout_s

    @property
    def max_streams(self) -> int:
        return self.limits.max_streams

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


# ---- errors ------------------------------------------------------------------------------------
def _key(location: Sequence[int | str]) -> str:
    """``models[0].threads`` for ("models", 0, "threads"); odd key names quoted (a file may hold any)."""
    text = ""
    for part in location:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part.isidentifier():
            text += f".{part}" if text else part
        else:
            text += f"[{json.dumps(part, ensure_ascii=False)}]"
    return text or "(top level)"


def describe_errors(error: ValidationError, where: str) -> str:
    """One line naming every wrong key: ``where: limits.max_connections: Input should be ...``."""
    problems = []
    for item in error.errors(include_url=False)[:MAX_PROBLEMS]:
        message = " ".join(item["msg"].removeprefix("Value error, ").split())
        if item["type"] in ("unexpected_keyword_argument", "extra_forbidden"):
            message = "unknown key" + _section_hint(item["loc"])
        problems.append(f"{_key(item['loc'])}: {message}")
    more = error.error_count() - len(problems)
    return f"{where}: " + "; ".join(problems) + (f"; and {more} more" if more > 0 else "")


def _section_hint(location: Sequence[int | str]) -> str:
    """For a top-level key that belongs in a section (the flat files of edgerun 0.1): where it goes."""
    if len(location) != 1:
        return ""
    sections = {"server": ServerConfig, "auth": AuthConfig, "limits": LimitsConfig}
    home = next((name for name, kind in sections.items()
                 if location[0] in {f.name for f in dataclasses.fields(kind)}), None)
    return f" (it belongs in the {home} section: {home}.{location[0]})" if home else ""


def checked(build: Callable[[], Any], where: str) -> Any:
    """``build()``, with a pydantic ValidationError turned into one InvalidInputError line."""
    try:
        return build()
    except ValidationError as exc:
        raise InvalidInputError(describe_errors(exc, where)) from None


def replace_config(config: ServeConfig, where: str = "config", **changes: Any) -> ServeConfig:
    """``config`` with ``changes`` (validated: a wrong value is one InvalidInputError)."""
    return checked(lambda: dataclasses.replace(config, **changes), where)


# ---- reading -----------------------------------------------------------------------------------
def _kind(path: Path) -> str:
    kind = FILE_KINDS.get(path.suffix.lower())
    if kind is None:
        raise InvalidInputError(f"config file {path}: unknown type {path.suffix or '(no suffix)'!r}; "
                                f"use {', '.join(FILE_KINDS)}")
    return kind


def _parse(path: Path, text: str) -> Any:
    kind = _kind(path)
    try:
        if kind == "YAML":
            import yaml

            return yaml.safe_load(text)
        if kind == "TOML":
            import tomllib  # Python >= 3.11

            return tomllib.loads(text)
        return json.loads(text)
    except ImportError as exc:
        raise InvalidInputError(f"{kind} config files need {exc.name}: use "
                                f"{'JSON' if kind == 'TOML' else 'pip install pyyaml'}") from None
    except Exception as exc:  # json/toml ValueError, yaml.YAMLError, RecursionError on deep nesting
        reason = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        raise InvalidInputError(f"config file {path} is not valid {kind}: "
                                f"{reason[:300] or type(exc).__name__}") from None


def read_config_file(path: Path) -> dict[str, Any]:
    """The parsed content of a YAML, TOML or JSON file (by suffix); an empty file is {}. Only a
    regular file of at most MAX_CONFIG_BYTES is read (not a FIFO or a device)."""
    try:
        if path.exists() and not path.is_file():
            raise InvalidInputError(f"config file {path} is not a regular file")
        _kind(path)
        with path.open("rb") as stream:
            raw = stream.read(MAX_CONFIG_BYTES + 1)
        if len(raw) > MAX_CONFIG_BYTES:
            raise InvalidInputError(f"config file {path} is larger than {MAX_CONFIG_BYTES} bytes")
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise InvalidInputError(f"cannot read config file {path}: {reason}") from None
    data = _parse(path, text)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InvalidInputError(f"config file {path} must hold a mapping (key: value) at the top, "
                                f"not {type(data).__name__}")
    return data


def _env_value(text: str) -> Any:
    """An override's value: JSON for lists and objects (``["a", "b"]``), else the text itself
    (pydantic turns "200", "0.5" and "true" into the field's type)."""
    if text.strip()[:1] in ("[", "{"):
        try:
            return json.loads(text)
        except ValueError as exc:
            raise InvalidInputError(f"environment value {text[:60]!r} is not valid JSON: {exc}") from None
    return text


def _with(node: Any, parts: list[str], value: Any, variable: str) -> Any:
    """A copy of ``node`` with ``value`` at key path ``parts`` (copied along the path only)."""
    if not parts:
        return value
    head, rest = parts[0], parts[1:]
    if isinstance(node, list):
        if not head.isdigit() or int(head) >= len(node):
            raise InvalidInputError(f"{variable}: the list has no item {head!r} (items 0..{len(node) - 1})")
        copy = list(node)
        copy[int(head)] = _with(node[int(head)], rest, value, variable)
        return copy
    if node is None and head.isdigit():
        raise InvalidInputError(f"{variable}: no list item {head} to set (the file has no such list)")
    if node is None:
        node = {}
    if not isinstance(node, dict):
        raise InvalidInputError(f"{variable}: {head!r} is inside a {type(node).__name__}, not a mapping")
    return {**node, head: _with(node.get(head), rest, value, variable)}


def apply_env_overrides(data: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """A copy of ``data`` with every EDGERUN_A__B[__C...] variable set at key path a.b[.c]
    (lower-cased; a number indexes a list: EDGERUN_MODELS__0__THREADS=2)."""
    merged = data
    for variable in sorted(environ):
        if not variable.startswith(OVERRIDE_PREFIX) or OVERRIDE_SEPARATOR not in variable:
            continue
        parts = variable[len(OVERRIDE_PREFIX):].lower().split(OVERRIDE_SEPARATOR)
        if not all(parts):
            raise InvalidInputError(f"{variable}: empty key in the path (use single names joined by __)")
        merged = _with(merged, parts, _env_value(environ[variable]), variable)
    return merged


def find_config_file(explicit: str | Path | None, environ: Mapping[str, str],
                     root: str | Path = "/") -> Path | None:
    """--config, else $EDGERUN_CONFIG, else /etc/edgerun/config.yaml (under ``root``) when present."""
    if explicit:
        return Path(explicit)
    if environ.get(CONFIG_ENV, "").strip():
        return Path(environ[CONFIG_ENV].strip())
    default = HostFS(root).path(DEFAULT_CONFIG_PATH)
    return default if default.is_file() else None


def config_from_mapping(data: Mapping[str, Any], where: str = "config",
                        settings: Settings | None = None) -> ServeConfig:
    """A validated ServeConfig from parsed file content."""
    if "settings" in data:
        raise InvalidInputError(f"{where}: settings: unknown key")
    values = {**data, "settings": settings if settings is not None else Settings.from_env({})}
    return checked(lambda: _ADAPTER.validate_python(values), where)


def load_config(path: str | Path | None = None, environ: Mapping[str, str] | None = None,
                root: str | Path = "/") -> ServeConfig:
    """The effective configuration: the file (see find_config_file), EDGERUN_SECTION__KEY overrides
    on top, EDGERUN_API_KEY for a missing key; process settings from the environment."""
    env = os.environ if environ is None else environ
    found = find_config_file(path, env, root)
    data = read_config_file(found) if found is not None else {}
    data = apply_env_overrides(data, env)
    auth = data.get("auth")
    if env.get(API_KEY_ENV) and (auth is None or isinstance(auth, dict) and auth.get("api_key") is None):
        data = {**data, "auth": {**(auth or {}), "api_key": env[API_KEY_ENV]}}
    where = str(found) if found is not None else "config"
    return config_from_mapping(data, where, Settings.from_env(env))


# ---- models ------------------------------------------------------------------------------------
def model_config_from(data: Mapping[str, Any] | str, where: str = "model") -> ModelConfig:
    """A ModelConfig from a mapping (config file) or a bare name/path (command line)."""
    table = _model_table(data) if isinstance(data, str) else data
    return checked(lambda: TypeAdapter(ModelConfig).validate_python(table), where)


def _looks_like_path(text: str) -> bool:
    """Command-line model values with a separator or a model-file suffix are paths, not names."""
    return os.sep in text or Path(text).suffix.lower() in FORMATS_BY_SUFFIX


def load_options_for(model: ModelConfig, settings: Settings,
                     default_threads: int | None = None) -> LoadOptions:
    """The LoadOptions ``model`` is loaded with: its backend's typed options (from ``device`` and
    ``options``, validated against ``backend``), threads from the model, else the process
    settings, else ``default_threads``."""
    from ..backends.options import parse_options

    threads = model.threads or settings.threads or default_threads
    values = {**model.options, **({"device": model.device} if model.device is not None else {})}
    if not values:
        return LoadOptions(threads=threads)
    backend = model.backend or settings.backend
    if backend is None:
        raise InvalidInputError(f"model {model.name}: device and options need a backend (each backend "
                                "has its own options; edgerun backends NAME lists them)")
    return LoadOptions(threads=threads, options=parse_options(backend, values))


def _option_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(_option_text(v) for v in value)
    return value if isinstance(value, str) else json.dumps(value)


def triton_settings(effective: Mapping[str, Any], on_cpu: bool) -> dict[str, Any]:
    """The model configuration fields that show a session's effective settings (backend, device,
    options: ``predictor.effective_settings``) in Triton's conventions: ``parameters`` (string
    values) and ``optimization.execution_accelerators`` (the backend as the accelerator, with its
    options; Triton knows only GPU and CPU lists, so an NPU or TPU backend is listed as a GPU one)."""
    backend = str(effective["backend"])
    shown = {"device": effective.get("device"), **dict(effective.get("options") or {})}
    options = {key: _option_text(value) for key, value in shown.items() if value is not None}
    accelerator = {"name": backend, "parameters": options}
    kind = "cpu_execution_accelerator" if on_cpu else "gpu_execution_accelerator"
    parameters = {"backend": backend, **options}
    return {"parameters": {key: {"string_value": value} for key, value in parameters.items()},
            "optimization": {"execution_accelerators": {kind: [accelerator]}}}


# ---- schema and output -------------------------------------------------------------------------
_ADAPTER: TypeAdapter[ServeConfig] = TypeAdapter(ServeConfig)


def config_schema() -> dict[str, Any]:
    """The JSON Schema of the configuration file."""
    schema = _ADAPTER.json_schema(mode="validation")
    schema["title"] = "edgerun configuration"
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


def effective_config(config: ServeConfig, redact: bool = True) -> dict[str, Any]:
    """``config`` as plain data (the api_key shown as "***" unless ``redact`` is False)."""
    data: dict[str, Any] = _ADAPTER.dump_python(config, mode="json")
    if redact and data["auth"]["api_key"] is not None:
        data["auth"]["api_key"] = "***"
    return data
