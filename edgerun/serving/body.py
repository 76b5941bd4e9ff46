"""Request bodies: read whole (gzip/deflate undone within the size limit) or into an aligned buffer."""

from __future__ import annotations

import zlib

import numpy as np
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


ALIGN = 64  # bytes; enough for every V2 datatype and for SIMD loads in the runtimes


def aligned_buffer(size: int, header_length: int) -> memoryview:
    """A writable ``size``-byte buffer whose byte ``header_length`` (where the binary tensors
    start) sits on an ALIGN boundary, so that numpy views of the tensors need no copy."""
    storage = np.empty(size + ALIGN, dtype=np.uint8)
    start = -(storage.ctypes.data + header_length) % ALIGN
    return memoryview(storage)[start:start + size]


def binary_lengths(content_length: str | bytes | None, header_length: str | bytes | None,
                   limit: int) -> tuple[int, int] | None:
    """(body bytes, JSON header bytes) of a binary-extension body that can be received straight
    into an aligned buffer: both lengths given as digits, header <= body <= ``limit``; else None."""
    if content_length is None or header_length is None or not content_length.isdigit() \
            or not header_length.isdigit():
        return None
    size, header = int(content_length), int(header_length)
    return (size, header) if header <= size <= limit else None


async def read_infer_body(request: Request, limit: int, header_length: str | None) -> bytes | memoryview:
    """An infer request's body. A plain binary-extension body of known length is received
    straight into an aligned buffer (one copy from the socket's chunks, none when decoding);
    any other body is read whole by :func:`read_body`."""
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    lengths = binary_lengths(request.headers.get("content-length"), header_length, limit)
    if lengths is None or encoding not in ("", "identity"):
        return await read_body(request, limit)
    size, header_size = lengths
    buffer = aligned_buffer(size, header_size)
    offset = 0
    async for chunk in request.stream():
        end = offset + len(chunk)
        if end > size:
            raise InvalidInputError(f"request body is longer than its Content-Length {size}")
        buffer[offset:end] = chunk
        offset = end
    if offset != size:
        raise InvalidInputError(f"request body ended after {offset} of its {size} bytes")
    return buffer
