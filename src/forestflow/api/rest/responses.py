"""JSON responses rendered with orjson (numpy-aware), and the single-key wrapper."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response


class JSONResponse(Response):
    """A JSON response rendered by orjson."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        """Serialise `content`; numpy scalars and arrays are allowed."""
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def wrapped(name: str, body: Any, status_code: int = 200) -> JSONResponse:
    """`{name: body}`: every response is a single-key wrapper naming its type (SPEC §3)."""
    return JSONResponse({name: body}, status_code=status_code)
