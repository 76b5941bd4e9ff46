"""The configuration reference in Markdown (one table per section), generated from the JSON Schema so
that docs/configuration.md cannot drift from the code."""

from __future__ import annotations

import json
from typing import Any

from .config import OVERRIDE_PREFIX, OVERRIDE_SEPARATOR, config_schema

SECTIONS = ("server", "auth", "limits", "models", "streams", "telemetry")


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref") or next((item.get("$ref") for item in node.get("anyOf", []) if "$ref" in item),
                                   None)
    return schema["$defs"][ref.rsplit("/", 1)[1]] if ref else node


def _type(node: dict[str, Any]) -> str:
    if "anyOf" in node:
        return " or ".join(_type(item) for item in node["anyOf"])
    if "$ref" in node:
        return "table"
    kind = node.get("type", "any")
    if kind == "array":
        return f"list of {_type(node.get('items', {}))}"
    if kind == "object":
        return "table"
    return str(kind)


def _bounds(node: dict[str, Any]) -> str:
    items = [node, *node.get("anyOf", [])]
    words = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<",
             "minLength": "length >=", "maxLength": "length <="}
    found = [f"{words[key]} {item[key]}" for item in items for key in words if key in item]
    return ", ".join(found)


def _default(node: dict[str, Any]) -> str:
    if "default" not in node:
        return "required" if node.get("required") else ""
    return f"`{json.dumps(node['default'], ensure_ascii=False)}`"


def _table(schema: dict[str, Any], section: str, model: dict[str, Any], prefix: str) -> list[str]:
    required = set(model.get("required", []))
    rows = [f"### `{section}`", "", model.get("description", ""), "",
            "| key | type | default | allowed | description | environment |", "|---|---|---|---|---|---|"]
    for key, node in model["properties"].items():
        default = "required" if key in required else _default(node)
        variable = f"`{OVERRIDE_PREFIX}{prefix}{OVERRIDE_SEPARATOR}{key.upper()}`"
        rows.append(f"| `{key}` | {_type(node)} | {default} | {_bounds(node)} | "
                    f"{node.get('description', '')} | {variable} |")
    return [*rows, ""]


def config_reference() -> str:
    """Every setting of the configuration file: section, key, type, default, bounds, description and
    the environment variable that overrides it."""
    schema = config_schema()
    lines: list[str] = []
    for section in SECTIONS:
        node = schema["properties"][section]
        if node.get("type") == "array":
            model = _resolve(schema, node["items"])
            lines += _table(schema, f"{section}[]", model, f"{section.upper()}{OVERRIDE_SEPARATOR}N")
            if section == "streams":
                lines += _table(schema, "streams[].options", schema["$defs"]["StreamOptions"],
                                f"STREAMS{OVERRIDE_SEPARATOR}N{OVERRIDE_SEPARATOR}OPTIONS")
        else:
            lines += _table(schema, section, _resolve(schema, node), section.upper())
    return "\n".join(lines).rstrip() + "\n"
