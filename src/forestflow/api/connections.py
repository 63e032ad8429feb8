"""Connection limits of the HTTP listener: a read deadline per request, a cap on connections.

uvicorn closes a keep-alive connection that stays idle between requests, but not one that
never finishes a request (slowloris), and it accepts connections until the process runs
out of file descriptors, after which every new client fails. `BoundedHttpProtocol` adds
the missing deadline and the cap; `uvicorn_options` gives the `uvicorn.Config` arguments.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

if TYPE_CHECKING:
    from uvicorn._types import ASGI3Application
    from uvicorn.config import Config
    from uvicorn.protocols.http.httptools_impl import RequestResponseCycle
    from uvicorn.server import ServerState

logger = logging.getLogger(__name__)

DEFAULT_SHARE_OF_OPEN_FILES = 0.75
LIMIT_WARNING_INTERVAL_S = 60.0
REQUEST_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"content-length: 16\r\n"
    b"connection: close\r\n"
    b"\r\n"
    b"Request Timeout\n"
)


class ConnectionSettings(Protocol):
    """The server settings this module reads (`forestflow.config.ServerSettings` has them)."""

    @property
    def keep_alive_timeout_s(self) -> float:
        """Close a keep-alive connection idle for this long."""

    @property
    def request_read_timeout_s(self) -> float:
        """A request's headers and body must arrive within this long."""

    @property
    def max_connections(self) -> int | None:
        """Open connections at most (None: a share of the open-file limit)."""


class ConnectionLimits:
    """The open HTTP connections of one server, with the idle ones ordered longest-idle first.

    A connection is idle while no request of it is with the application: from accept, and
    from each response's end until the next request's headers are complete. Nothing here
    scans the connections: marking one idle or busy is O(1), and admitting one over the
    limit closes idle ones from the front of the order.
    """

    def __init__(self, max_connections: int, read_timeout_s: float) -> None:
        self.max_connections = max_connections
        self.read_timeout_s = read_timeout_s
        self._open: set[BoundedHttpProtocol] = set()
        self._idle: OrderedDict[BoundedHttpProtocol, None] = OrderedDict()
        self._warned_at = -LIMIT_WARNING_INTERVAL_S

    def admit(self, connection: BoundedHttpProtocol) -> bool:
        """Count a new connection, closing the longest-idle ones beyond the limit.

        Returns False when the new connection itself had to go: every other one is busy.
        """
        self._open.add(connection)
        self._idle[connection] = None
        while len(self._open) > self.max_connections:
            # never empty here: `connection` itself is idle, last in the order
            oldest, _ = self._idle.popitem(last=False)
            self.release(oldest)
            self._warn_limit_reached()
            if oldest is connection:
                return False
            oldest.evict()
        return True

    def idle(self, connection: BoundedHttpProtocol) -> None:
        """`connection` has no request with the application any more."""
        if connection in self._open:
            self._idle[connection] = None

    def busy(self, connection: BoundedHttpProtocol) -> None:
        """A request of `connection` went to the application."""
        self._idle.pop(connection, None)

    def release(self, connection: BoundedHttpProtocol) -> None:
        """`connection` is closed, or closing; it no longer counts."""
        self._open.discard(connection)
        self._idle.pop(connection, None)

    def _warn_limit_reached(self) -> None:
        # at most once a minute: a flood of connections must not become a flood of log lines
        now = time.monotonic()
        if now - self._warned_at >= LIMIT_WARNING_INTERVAL_S:
            self._warned_at = now
            logger.warning(
                "%d open connections reached server.max_connections: "
                "closing the longest-idle ones to admit new clients",
                self.max_connections,
            )


class BoundedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with a read deadline per request and a shared connection cap.

    The read clock starts when the connection is accepted and when a response ends; it
    stops when the next request's body is complete. A connection whose clock passes
    `request_read_timeout_s` is closed, with a 408 if it had begun a request and none is
    being answered. Use it through `uvicorn_options`, which binds `limits`.
    """

    limits: ClassVar[ConnectionLimits]

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._read_deadline: float | None = None
        # one timer per connection, re-armed lazily, so that a request costs no timer call
        self._read_timer: asyncio.TimerHandle | None = None
        self._reading_request = False
        self._active_cycle: RequestResponseCycle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Admit the connection under the cap, or close it, and start its read clock."""
        super().connection_made(transport)
        if not self.limits.admit(self):
            transport.close()
            return
        self._start_read_clock()

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop counting the connection."""
        self._forget()
        super().connection_lost(exc)

    def handle_websocket_upgrade(self) -> None:
        """Hand the connection over; the WebSocket protocol keeps its own state."""
        self._forget()
        super().handle_websocket_upgrade()

    def on_message_begin(self) -> None:
        """A request's first bytes arrived."""
        super().on_message_begin()
        self._reading_request = True

    def on_message_complete(self) -> None:
        """The request is fully read: stop the read clock."""
        super().on_message_complete()
        self._reading_request = False
        # a body that ends after its response was sent counts against the next request
        if self.cycle is None or not self.cycle.response_complete:
            self._read_deadline = None

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        self._active_cycle = cycle
        self.limits.busy(self)
        super()._start_asgi_task(cycle, app)

    def on_response_complete(self) -> None:
        """Wait for the next request, unless a pipelined one starts right away."""
        finished = self._active_cycle
        super().on_response_complete()
        if self.transport.is_closing():
            return
        started = self._active_cycle
        if started is finished:
            self.limits.idle(self)
            self._start_read_clock()
        elif started is not None and started.more_body:
            self._start_read_clock()

    def evict(self) -> None:
        """Close the connection to make room for a new one."""
        self._forget()
        self.transport.close()

    def _forget(self) -> None:
        self.limits.release(self)
        self._read_deadline = None
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _start_read_clock(self) -> None:
        self._read_deadline = self.loop.time() + self.limits.read_timeout_s
        if self._read_timer is None:
            self._read_timer = self.loop.call_at(self._read_deadline, self._check_read_deadline)

    def _check_read_deadline(self) -> None:
        self._read_timer = None
        deadline = self._read_deadline
        if deadline is None or self.transport.is_closing():
            return
        if self.loop.time() < deadline:
            self._read_timer = self.loop.call_at(deadline, self._check_read_deadline)
            return
        answering = self.cycle is not None and not self.cycle.response_complete
        if self._reading_request and not answering:
            self.transport.write(REQUEST_TIMEOUT_RESPONSE)
        logger.debug("closing %s: no complete request within the read timeout", self.client)
        self.transport.close()


def default_max_connections() -> int | None:
    """Three quarters of the soft open-file limit; None where there is no such limit."""
    if sys.platform == "win32":
        return None
    import resource  # noqa: PLC0415 - POSIX only

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return None
    return max(1, int(soft * DEFAULT_SHARE_OF_OPEN_FILES))


def uvicorn_options(server: ConnectionSettings) -> dict[str, Any]:
    """The `uvicorn.Config` keyword arguments that enforce the server's connection limits."""
    max_connections = server.max_connections or default_max_connections()
    limits = ConnectionLimits(max_connections or sys.maxsize, server.request_read_timeout_s)

    class Bound(BoundedHttpProtocol):
        pass

    Bound.limits = limits
    return {
        "http": Bound,
        "timeout_keep_alive": server.keep_alive_timeout_s,
    }
