"""Typed backend options: the base class each backend's options derive from, and one parser for all.

Every backend declares its options as a frozen pydantic model in its own module and names it
``options_class``. ``parse_options("tensorrt", {"precision": "int8"})`` validates a mapping (values
may be strings, as the command line gives them) against that class; unknown keys and wrong types
are one error that lists every valid option with its type and default.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from ..errors import InvalidInputError

if typing.TYPE_CHECKING:
    from .registry import Registry


class BackendOptions(BaseModel):
    """Options of one backend. Subclasses set ``backend`` and declare fields with descriptions."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    backend: ClassVar[str] = ""

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, data: Any) -> Any:
        """Command-line text: "a,b" for lists, "k=v,k2=v2" for maps, "none"/"" for optional values."""
        if not isinstance(data, Mapping):
            return data
        return {key: _from_text(cls.model_fields[key].annotation, value)
                if key in cls.model_fields and isinstance(value, str) else value
                for key, value in data.items()}

    def effective(self) -> dict[str, Any]:
        """The options as plain JSON values (lists for tuples)."""
        return self.model_dump(mode="json")


class NoOptions(BackendOptions):
    """For a backend (e.g. a plugin) that declares no options."""


def _optional(annotation: Any) -> tuple[Any, bool]:
    """``X | None`` -> (X, True); anything else -> (annotation, False)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(annotation)) == 2:
            return args[0], True
    return annotation, False


def _from_text(annotation: Any, text: str) -> Any:
    inner, optional = _optional(annotation)
    if optional and text.strip().lower() in ("", "none"):
        return None
    origin = typing.get_origin(inner)
    if origin in (tuple, list):
        return [part.strip() for part in text.split(",") if part.strip()]
    if origin in (dict, Mapping):
        pairs = [part.partition("=") for part in text.split(",") if part.strip()]
        if not all(sep for _, sep, _ in pairs):
            return text  # not k=v pairs: pydantic reports it as not a map
        return {key.strip(): value.strip() for key, _, value in pairs}
    return text


def type_name(annotation: Any, bounds: str = "") -> str:
    """A short human name for a field's type: int >= 1, bool, fp32|fp16|int8, list of str, ..."""
    inner, optional = _optional(annotation)
    origin = typing.get_origin(inner)
    if origin is Literal:
        name = "|".join(str(v) for v in typing.get_args(inner))
    elif origin in (tuple, list):
        name = f"list of {type_name(typing.get_args(inner)[0])}"
    elif origin in (dict, Mapping):
        key, value = typing.get_args(inner)
        name = f"map {type_name(key)}={type_name(value)}"
    else:
        name = getattr(inner, "__name__", str(inner))
    return f"{name}{bounds} or none" if optional else f"{name}{bounds}"


def _default_text(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple | list):
        return ",".join(str(v) for v in value) or "(empty)"
    if isinstance(value, Mapping):
        return ",".join(f"{k}={v}" for k, v in value.items()) or "(empty)"
    return str(value)


def _bounds(metadata: list[Any]) -> str:
    """" >= 1", " 0..5" from a field's annotated-types constraints."""
    low = next((getattr(m, "ge", None) for m in metadata if getattr(m, "ge", None) is not None), None)
    high = next((getattr(m, "le", None) for m in metadata if getattr(m, "le", None) is not None), None)
    if low is not None and high is not None:
        return f" {low}..{high}"
    return f" >= {low}" if low is not None else (f" <= {high}" if high is not None else "")


def describe_options(options_class: type[BackendOptions]) -> list[dict[str, str]]:
    """One row per option: name, type, default (as text) and help."""
    return [{"name": name, "type": type_name(field.annotation, _bounds(field.metadata)),
             "default": _default_text(field.get_default(call_default_factory=True)),
             "help": field.description or ""}
            for name, field in options_class.model_fields.items()]


def valid_options_text(options_class: type[BackendOptions]) -> str:
    rows = describe_options(options_class)
    if not rows:
        return f"{options_class.backend or 'this backend'} takes no options"
    listed = "; ".join(f"{r['name']} ({r['type']}, default {r['default']})" for r in rows)
    return f"valid {options_class.backend} options: {listed}"


def _problem(error: Mapping[str, Any], owners: Mapping[str, list[str]]) -> str:
    key = ".".join(str(part) for part in error["loc"]) or "options"
    if error["type"] == "extra_forbidden":
        others = owners.get(str(error["loc"][0]), [])
        return f"unknown option {key!r}" + (f" (an option of {', '.join(others)})" if others else "")
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{key}={error.get('input')!r}: {message[:1].lower()}{message[1:]}"


def options_class_of(backend: Any) -> type[BackendOptions]:
    """The options class a backend instance declares (``NoOptions`` when it declares none)."""
    found = getattr(backend, "options_class", None)
    return found if isinstance(found, type) and issubclass(found, BackendOptions) else NoOptions


def _owners(registry: Registry, exclude: str) -> dict[str, list[str]]:
    """option name -> the other backends that have it (for 'that is a litert option')."""
    owners: dict[str, list[str]] = {}
    for name in registry.names():
        if name == exclude:
            continue
        try:
            fields = options_class_of(registry.get(name)).model_fields
        except Exception:  # a plugin that fails to import must not hide the real error
            continue
        for field_name in fields:
            owners.setdefault(field_name, []).append(name)
    return owners


def validate_options(options_class: type[BackendOptions], values: Mapping[str, Any],
                     owners: Mapping[str, list[str]] | None = None) -> BackendOptions:
    """``options_class(**values)``, or one InvalidInputError naming every problem and the valid options."""
    try:
        return options_class.model_validate(dict(values))
    except ValidationError as exc:
        problems = "; ".join(_problem(e, owners or {}) for e in exc.errors())
        name = options_class.backend or "backend"
        raise InvalidInputError(f"{name} options: {problems}. {valid_options_text(options_class)}") from None


def parse_options(backend: str, values: Mapping[str, Any] | None = None,
                  registry: Registry | None = None) -> BackendOptions:
    """Validate ``values`` (strings or typed values) against ``backend``'s options class."""
    from .registry import Registry

    registry = registry or Registry()
    options_class = options_class_of(registry.get(backend))
    values = dict(values or {})
    unknown = set(values) - set(options_class.model_fields)
    return validate_options(options_class, values, _owners(registry, backend) if unknown else None)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def options_markdown(registry: Registry | None = None) -> str:
    """Every built-in backend's options as Markdown tables (docs/hardware.md, "Backend options")."""
    from .registry import Registry

    registry = registry or Registry(plugins=False)
    sections = []
    for name in registry.order(explicit=True):
        options_class = options_class_of(registry.get(name))
        doc = (options_class.__doc__ or "").strip().splitlines()
        lines = [f"#### `{name}`", "", doc[0] if doc else "", "",
                 "| option | type | default | meaning |", "|---|---|---|---|"]
        lines += [f"| `{r['name']}` | {_cell(r['type'])} | `{_cell(r['default'])}` | {_cell(r['help'])} |"
                  for r in describe_options(options_class)]
        sections.append("\n".join(lines))
    return "\n\n".join(sections) + "\n"
