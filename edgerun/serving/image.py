"""Image upload: POST /v1/models/{m}/predict with a multipart file or a raw body -> labels or boxes."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Query, Request
from starlette.datastructures import UploadFile

from ..errors import InvalidInputError
from ..predictor import Result
from . import wire
from .body import read_body
from .service import Service

MAX_TOP_K = 1000

_BODY_DOC = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"],
                                       "properties": {"file": {"type": "string", "format": "binary"}}}},
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    "image/*": {"schema": {"type": "string", "format": "binary"}}}}}


async def image_bytes(request: Request, limit: int) -> bytes:
    """The uploaded image: the first file of a multipart form, else the raw body."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        form = await request.form(max_files=1, max_fields=16)
        try:
            upload = next((v for v in form.values() if isinstance(v, UploadFile)), None)
            if upload is None:
                raise InvalidInputError("multipart body has no file field; send the image as field 'file'")
            data = await upload.read()
        finally:
            await form.close()
    else:
        data = await read_body(request, limit)
    if not data:
        raise InvalidInputError("no image: send it as the raw body or as multipart field 'file'")
    return data


def _payload(result: Result, queue_ms: float, total_ms: float) -> dict[str, Any]:
    payload = result.to_dict()
    payload["timings_ms"] = {**payload["timings_ms"], "queue": round(queue_ms, 3),
                             "total": round(total_ms, 3)}
    return payload


def image_router(service: Service) -> APIRouter:
    router = APIRouter()

    @router.post("/v1/models/{model_name}/predict", response_model=wire.PredictResponse,
                 response_model_exclude_none=True, name="predict_image",
                 responses=wire.ERROR_RESPONSES, openapi_extra=_BODY_DOC)
    async def predict(request: Request, model_name: str,
                      top_k: int | None = Query(None, ge=1, le=MAX_TOP_K)) -> dict[str, Any]:
        """Run the model's whole pipeline on one image; boxes come back in source-image pixels."""
        started = time.perf_counter()
        runner = service.runner(model_name)
        predictor = runner.predictor
        if predictor is None:
            raise InvalidInputError(f"model {model_name} has no image pipeline (task "
                                    f"{runner.package.task!r}); use POST /v2/models/{model_name}/infer")
        data = await image_bytes(request, service.config.max_body_bytes)
        result, queue_ns = await runner.call(lambda: predictor.predict(data, top_k=top_k),
                                             service.config.request_timeout_s)
        for stage, ms in result.timings_ms.items():
            service.metrics.stage_seconds.labels(model_name, stage).observe(ms / 1000)
        return _payload(result, queue_ns / 1e6, (time.perf_counter() - started) * 1000)

    return router
