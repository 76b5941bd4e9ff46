"""The model manifest's typed schema (pydantic): one clear error naming the key, a publishable JSON Schema."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import ModelIntegrityError

MAX_INPUT_SIDE = 8192  # model input height/width: bounds the letterbox canvas and every intermediate
MAX_RESIZE_TO = 65536

Finite = Annotated[float, Field(allow_inf_nan=False)]
Side = Annotated[int, Field(ge=1, le=MAX_INPUT_SIDE)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
RelativePath = Annotated[str, Field(min_length=1, description="a file inside the package folder")]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-fA-F]{64}$")]


class Preprocess(BaseModel):
    """How an image becomes the model input."""

    model_config = ConfigDict(extra="forbid")

    color: Literal["RGB", "BGR"] = "RGB"
    resize: Literal["crop", "letterbox", "stretch"] = "stretch"
    resize_to: Annotated[int, Field(ge=1, le=MAX_RESIZE_TO)] | None = None
    input_size: tuple[Side, Side] = (224, 224)
    mean: tuple[Finite, Finite, Finite] = (0.0, 0.0, 0.0)
    std: tuple[Finite, Finite, Finite] = (1.0, 1.0, 1.0)

    @model_validator(mode="after")
    def _consistent(self) -> Preprocess:
        if 0.0 in self.std:
            raise ValueError("std values must be non-zero")
        if self.resize == "crop" and self.resize_to is None:
            raise ValueError("resize 'crop' needs resize_to")
        return self


class Postprocess(BaseModel):
    """The decoder after the model: softmax/top-k for classifiers, anchors and NMS for detectors."""

    model_config = ConfigDict(extra="allow")

    kind: str | None = None
    top_k: Annotated[int, Field(ge=1, le=1000)] | None = None
    score_threshold: Fraction | None = None
    iou_threshold: Fraction | None = None
    strides: list[Annotated[int, Field(ge=1, le=MAX_INPUT_SIDE)]] | None = Field(None, max_length=64)
    anchor_offset: Finite | None = None
    nms: Literal["weighted", "hard"] | None = None


class Companion(BaseModel):
    """A file needed beside an artifact (ncnn's .bin beside its .param)."""

    model_config = ConfigDict(extra="forbid")

    file: RelativePath
    sha256: Sha256


class Artifact(BaseModel):
    """One model file in one format, with its checksum."""

    model_config = ConfigDict(extra="allow")

    format: Annotated[str, Field(min_length=1)]
    file: RelativePath
    sha256: Sha256
    layout: Literal["NCHW", "NHWC"] | None = None
    precision: str = "fp32"
    companions: list[Companion] = []


class ModelManifest(BaseModel):
    """manifest.json of a model package; every path it names must lie inside the package folder."""

    model_config = ConfigDict(extra="allow", title="edgerun model manifest")

    schema_version: int = Field(1, alias="schema", ge=1)
    name: str | None = None
    task: Literal["classification", "detection", "raw"]
    description: str = ""
    labels: RelativePath | None = None
    license: RelativePath | None = None
    preprocess: Preprocess | None = None
    postprocess: Postprocess = Postprocess()
    artifacts: Annotated[list[Artifact], Field(min_length=1)]

    def paths(self) -> Iterator[tuple[str, str]]:
        """(key, relative path) for every file the manifest names."""
        for key in ("labels", "license"):
            value = getattr(self, key)
            if value:
                yield key, value
        for index, artifact in enumerate(self.artifacts):
            yield f"artifacts.{index}.file", artifact.file
            for number, companion in enumerate(artifact.companions):
                yield f"artifacts.{index}.companions.{number}.file", companion.file


def _key(location: tuple[int | str, ...]) -> str:
    """a.b.0.c; an odd key (control characters, very long) shown escaped and cut short, on one line."""
    def shown(part: int | str) -> str:
        text = str(part)
        text = text if text.isprintable() else json.dumps(text)
        return text if len(text) <= 40 else text[:37] + "..."
    return ".".join(shown(part) for part in location) or "(top level)"


def _describe(error: Any) -> str:
    key = _key(tuple(error.get("loc", ())))
    if error.get("type") == "missing":
        return f"missing key {key!r}"
    if error.get("type") == "value_error":
        return f"{key}: {str(error.get('msg', 'invalid')).removeprefix('Value error, ')}"
    shown = json.dumps(error.get("input"), default=str)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return f"{key}: {error.get('msg', 'invalid')} (got {shown})"


def parse_manifest(data: Any, where: str) -> ModelManifest:
    """Validate parsed JSON as a manifest; ModelIntegrityError naming the key(s) when it is not one."""
    try:
        return ModelManifest.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        shown = "; ".join(_describe(e) for e in errors[:3])
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        raise ModelIntegrityError(f"{where}: {shown}{more}") from None


def manifest_json_schema() -> dict[str, Any]:
    """The JSON Schema of manifest.json (published as docs/schema/manifest.schema.json)."""
    return ModelManifest.model_json_schema(by_alias=True)


if __name__ == "__main__":  # python -m edgerun.manifest > docs/schema/manifest.schema.json
    print(json.dumps(manifest_json_schema(), indent=2))
