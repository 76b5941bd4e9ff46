"""Request bodies: read whole, undo gzip/deflate Content-Encoding without exceeding the size limit."""

from __future__ import annotations

import zlib

from starlette.requests import Request

from ..errors import InvalidInputError
from .errors import PayloadTooLargeError

_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS}


def decompress(data: bytes, encoding: str, limit: int) -> bytes:
    """Inflate ``data``; PayloadTooLargeError when the result would pass ``limit`` bytes."""
    wbits = _WBITS.get(encoding)
    if wbits is None:
        raise InvalidInputError(f"unsupported Content-Encoding {encoding!r}; use gzip, deflate or none")
    inflater = zlib.decompressobj(wbits)
    try:
        result = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise InvalidInputError(f"body is not valid {encoding} data: {exc}") from None
    if len(result) > limit:
        raise PayloadTooLargeError(f"decompressed body exceeds the {limit}-byte limit")
    if not inflater.eof:
        raise InvalidInputError(f"{encoding} body is truncated")
    return result


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, decompressed when it says Content-Encoding gzip or deflate."""
    body = await request.body()
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return body
    return decompress(body, encoding, limit)
