"""Reading request bodies: size limit first, then JSON parsing, with clear errors."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request

from forestflow.errors import MalformedRequest, PayloadTooLarge


async def read_json(request: Request, limit: int) -> Any:
    """The parsed JSON body; 413 beyond `limit` bytes, 400 for malformed or empty JSON."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(limit)
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        raise MalformedRequest("the request body is empty; expected JSON")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise MalformedRequest(f"malformed JSON: {error}") from None
