"""Where the clients connect, and how an answer becomes a value or an error.

An error answer `{"UnknownServable": {"errorMessage", "field"?, ...}}` is raised as the
class the server raised: `forestflow.errors.error_kinds()` maps the wire name back, from
the error tree itself. What is not a ForestFlow answer at all raises a `ClientError`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from functools import cache
from typing import Any

import httpx

from forestflow.errors import ForestFlowError, error_kinds

DEFAULT_URL = "http://127.0.0.1:8090"
URL_VARIABLE = "FORESTFLOW_URL"
TOKEN_VARIABLE = "FORESTFLOW_TOKEN"  # noqa: S105 - a variable's name, not a secret
NDJSON = "application/x-ndjson"
DEFAULT_TIMEOUT_S = 30.0
"""How long one call may wait for its answer."""
DEFAULT_DEPLOY_TIMEOUT_S = 900.0
"""How long a deploy may take: the server's `storage.fetch_deadline_s`, plus the load."""


class ClientError(Exception):
    """The call got no ForestFlow answer (the server's own errors are `ForestFlowError`s)."""


class NoAnswer(ClientError):
    """The server could not be reached, or did not answer in time."""


class UnexpectedAnswer(ClientError):
    """An answer that is not ForestFlow's (a proxy's error page, another service)."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"HTTP {status}: {text[:300]}")
        self.status = status
        self.text = text


def connection(url: str | None, token: str | None) -> tuple[str, str | None]:
    """The base URL and token: as given, else `$FORESTFLOW_URL` / `$FORESTFLOW_TOKEN`,
    else the default local server without a token."""
    found_url = url or os.environ.get(URL_VARIABLE) or DEFAULT_URL
    found_token = token if token is not None else os.environ.get(TOKEN_VARIABLE)
    return found_url.rstrip("/"), found_token or None


def client_options(
    url: str | None, token: str | None, timeout: float | None, headers: Mapping[str, str] | None
) -> dict[str, Any]:
    """`httpx.Client` / `httpx.AsyncClient` keyword arguments."""
    base_url, secret = connection(url, token)
    sent = {"Accept": "application/json", **(headers or {})}
    if secret:
        sent["Authorization"] = f"Bearer {secret}"
    return {"base_url": base_url, "headers": sent, "timeout": timeout}


@cache
def _kinds() -> dict[str, type[ForestFlowError]]:
    return error_kinds()


def error_from_answer(body: Any) -> ForestFlowError | None:
    """The error a `{wire name: {"errorMessage", ...}}` body carries; None for other bodies.

    The error has the server's message and field (`describe()` reads as the server's
    `errorMessage`) and, in `context`, the rest of the body as sent (`fqrv`, `contract`,
    `StatusCode`). A name this client does not know (a newer server's) is raised as the
    root `ForestFlowError`, its name in `context["wireName"]`.
    """
    if not isinstance(body, Mapping) or len(body) != 1:
        return None
    ((name, detail),) = body.items()
    if not isinstance(detail, Mapping) or not isinstance(detail.get("errorMessage"), str):
        return None
    field = detail.get("field") if isinstance(detail.get("field"), str) else None
    message: str = detail["errorMessage"]
    if field and message.startswith(f"{field}: "):
        message = message[len(field) + 2 :]
    context = {k: v for k, v in detail.items() if k not in ("errorMessage", "field")}
    kind = _kinds().get(name)
    if kind is None:
        kind, context = ForestFlowError, {**context, "wireName": name}
    error = kind.__new__(kind)
    ForestFlowError.__init__(error, message, field=field, context=context)
    return error


def read_answer(response: httpx.Response) -> Any:
    """The JSON of a success (a list of the lines of a JSON Lines answer); a failure raised
    as its `ForestFlowError` (or a `ClientError`)."""
    if response.is_success and response.headers.get("content-type", "").startswith(NDJSON):
        return [json.loads(line) for line in response.text.splitlines() if line.strip()]
    try:
        body = response.json() if response.content else None
    except ValueError:
        body = None
        if response.is_success:
            raise UnexpectedAnswer(response.status_code, response.text) from None
    if response.is_success:
        return body
    error = error_from_answer(body)
    if error is None:
        raise UnexpectedAnswer(response.status_code, response.text)
    raise error


def no_answer(error: httpx.TransportError, url: str) -> NoAnswer:
    """The `NoAnswer` for a transport failure, saying where and what."""
    if isinstance(error, httpx.TimeoutException):
        return NoAnswer(f"{url} did not answer in time ({type(error).__name__})")
    if isinstance(error, httpx.ConnectError):
        return NoAnswer(f"cannot reach {url}: {error or type(error).__name__}")
    return NoAnswer(f"lost the connection to {url}: {error or type(error).__name__}")
