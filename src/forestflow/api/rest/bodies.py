"""Reading request bodies: size limit first, then JSON parsing, with clear errors."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.types import Receive

from forestflow.errors import MalformedRequest, PayloadTooLarge, UnsupportedMediaType


def require_json(request: Request) -> None:
    """415 unless the body is declared JSON (or not declared at all).

    Browsers send cross-site bodies without a preflight only as text/plain, form or
    multipart: refusing those keeps a web page from driving the API (CSRF).
    """
    check_json_type(request.headers.get("content-type"))


def check_json_type(declared: str | None) -> None:
    """`require_json` on the declared `Content-Type` (None: not declared)."""
    if declared is None:
        return
    media = declared.split(";", 1)[0].strip().lower()
    if media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    ):
        return
    raise UnsupportedMediaType(
        f"expected Content-Type: application/json, got {declared!r}", field="Content-Type"
    )


async def read_json(request: Request, limit: int) -> Any:
    """The parsed JSON body; 415 for another content type, 413 beyond `limit` bytes, 400
    for malformed or empty JSON."""
    require_json(request)
    check_declared_length(request.headers.get("content-length"), limit)
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(limit)
            chunks.append(chunk)
    except ClientDisconnect:  # a slow client cut off by the read timeout: not a server error
        raise MalformedRequest("the client went away before sending the whole body") from None
    return parse_json(b"".join(chunks))


def check_declared_length(declared: str | None, limit: int) -> None:
    """413 at once when the declared `Content-Length` is beyond `limit` bytes."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(limit)


async def receive_body(receive: Receive, limit: int) -> bytes:
    """The whole body read from an ASGI `receive`, refused (413) beyond `limit` bytes."""
    message = await receive()
    chunks: list[bytes] = []
    size = 0
    while True:
        if message["type"] == "http.disconnect":
            raise MalformedRequest("the client went away before sending the whole body")
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(limit)
        if not message.get("more_body", False):
            if not chunks:
                return chunk
            chunks.append(chunk)
            return b"".join(chunks)
        chunks.append(chunk)
        message = await receive()


def parse_json(raw: bytes) -> Any:
    """The JSON value in `raw`; 400 for empty or malformed JSON."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        if not raw.strip():
            raise MalformedRequest("the request body is empty; expected JSON") from None
        raise MalformedRequest(f"malformed JSON: {error}") from None
