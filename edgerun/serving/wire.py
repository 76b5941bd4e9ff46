"""Pydantic models of the KServe V2 / Triton wire formats (request parsing and the OpenAPI schema)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt

Parameters = dict[str, Any]

TENSOR_DATA_DOC = ("row-major tensor elements, flat or nested; numbers, booleans (BOOL) or strings "
                   "(BYTES); omitted when the tensor travels in the binary part of the body")


class ErrorBody(BaseModel):
    error: str


class RequestInput(BaseModel):
    name: str
    shape: list[NonNegativeInt]
    datatype: str = Field(description="BOOL, UINT8..UINT64, INT8..INT64, FP16, FP32, FP64 or BYTES")
    parameters: Parameters | None = Field(None, description='"binary_data_size": bytes in the binary part')
    data: Any = Field(None, description=TENSOR_DATA_DOC)


class RequestOutput(BaseModel):
    name: str
    parameters: Parameters | None = Field(
        None, description='"binary_data": bool, "classification": top-N as "value:index:label" strings')


class InferRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str | None = None
    parameters: Parameters | None = Field(None, description='"binary_data_output": bool, "timeout": us')
    inputs: list[RequestInput] = Field(min_length=1)
    outputs: list[RequestOutput] | None = None


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: Parameters | None = None
    data: list[Any] | None = Field(None, description=TENSOR_DATA_DOC + "; NaN/Inf as strings")


class InferResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: Parameters | None = None
    outputs: list[ResponseOutput]


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int] = Field(description="-1 marks a variable dim")


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class LiveResponse(BaseModel):
    live: bool


class ReadyResponse(BaseModel):
    ready: bool


class ModelReadyResponse(BaseModel):
    name: str
    ready: bool


class RepositoryIndexRequest(BaseModel):
    ready: bool = False


class RepositoryModel(BaseModel):
    name: str
    version: str | None = None
    state: str = Field(description="READY, LOADING, UNAVAILABLE or UNLOADED")
    reason: str = ""


class RepositoryLoadRequest(BaseModel):
    parameters: Parameters | None = None


class ModelConfigResponse(BaseModel):
    """Triton's model configuration, the subset that describes an edgerun model."""

    model_config = ConfigDict(extra="allow")

    name: str
    platform: str
    backend: str
    max_batch_size: int
    input: list[dict[str, Any]]
    output: list[dict[str, Any]]


class ModelStatsResponse(BaseModel):
    model_stats: list[dict[str, Any]]


class Detection(BaseModel):
    box: list[float] = Field(description="x0, y0, x1, y1 in source-image pixels")
    score: float
    label: str
    keypoints: list[list[float]]
    class_id: int = Field(0, description="index of the label in the model's labels")


class ClassScore(BaseModel):
    index: int
    label: str
    score: float


class PredictResponse(BaseModel):
    model: str
    backend: str
    classes: list[ClassScore] | None = None
    image_size: list[int] | None = Field(None, description="width, height")
    detections: list[Detection] | None = None
    timings_ms: dict[str, float]


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in ((400, "bad request"), (401, "missing or wrong API key"),
                         (404, "unknown model, version or path"), (413, "body over the limit"),
                         (503, "model loading or not ready"), (504, "request timed out"))
}
