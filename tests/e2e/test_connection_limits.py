"""Idle and slow clients cannot starve others: a connection cap, read and keep-alive timeouts."""

from __future__ import annotations

import contextlib
import http.client
import resource
import selectors
import socket
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.e2e.conftest import ServerProcess

pytestmark = pytest.mark.e2e

SERVER_OPEN_FILES = 1024
DEFAULT_MAX_CONNECTIONS = SERVER_OPEN_FILES * 3 // 4
IDLE_CONNECTIONS = 1100
# generous bounds on how long the server may take to react; none is a speed measurement
ANSWER_WITHIN_S = 5.0
CLOSE_WITHIN_S = 10.0
SHORT_TIMEOUT_S = 1.0
KEEP_ALIVE_CLOSE_WITHIN_S = 4.0
# `loop.time()` is read once per event-loop pass: allow for a pass's worth of earliness
EARLIEST_S = SHORT_TIMEOUT_S - 0.1

ServerFactory = Callable[..., ServerProcess]


@contextlib.contextmanager
def soft_open_file_limit(limit: int) -> Iterator[None]:
    """Set this process's soft open-file limit, which child processes inherit, then restore it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.fixture
def room_for_a_flood() -> Iterator[None]:
    """Enough descriptors in the test process for the idle flood and its own needs."""
    needed = IDLE_CONNECTIONS + 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        # the tests run as root (as CI does), which may raise the hard limit
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, needed))
    with soft_open_file_limit(max(soft, needed)):
        yield


def connect(server: ServerProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=CLOSE_WITHIN_S)


def read_until_closed(sock: socket.socket, within_s: float = CLOSE_WITHIN_S) -> bytes:
    """Everything the server sends until it closes the connection; fails after `within_s`."""
    sock.settimeout(within_s)
    received = b""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(4096)
        except ConnectionResetError:
            return received
        except TimeoutError:
            break
        if not chunk:
            return received
        received += chunk
    raise AssertionError(f"the server kept the connection open for {within_s} s")


def count_closed_by_server(
    sockets: list[socket.socket], at_least: int, within_s: float = CLOSE_WITHIN_S
) -> int:
    """How many of `sockets` the server closed, polled until `at_least` or `within_s`."""
    closed = 0
    # a selector, not select(): the descriptors are beyond select()'s 1024
    with selectors.DefaultSelector() as selector:
        for sock in sockets:
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
        deadline = time.monotonic() + within_s
        while closed < at_least and (remaining := deadline - time.monotonic()) > 0:
            for key, _ in selector.select(timeout=remaining):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                selector.unregister(sock)
                with contextlib.suppress(ConnectionResetError):
                    if sock.recv(1):
                        continue  # data, not a close: idle clients are sent nothing
                closed += 1
    return closed


class TestConnectionCap:
    def test_a_flood_of_idle_connections_does_not_lock_out_clients(
        self, server_factory: ServerFactory, room_for_a_flood: None
    ) -> None:
        with soft_open_file_limit(SERVER_OPEN_FILES):
            server = server_factory()
        assert server.proc is not None
        assert resource.prlimit(server.proc.pid, resource.RLIMIT_NOFILE)[0] == SERVER_OPEN_FILES

        with contextlib.ExitStack() as stack:
            idle = [stack.enter_context(connect(server)) for _ in range(IDLE_CONNECTIONS)]
            for _ in range(3):
                response = httpx.get(f"{server.base_url}/health/live", timeout=ANSWER_WITHIN_S)
                assert response.status_code == 200
            # the cap made room by closing the longest-idle connections, not by failing
            evicted = IDLE_CONNECTIONS - DEFAULT_MAX_CONNECTIONS
            assert count_closed_by_server(idle, at_least=evicted) >= evicted
        server.wait_for_line("reached server.max_connections", timeout=CLOSE_WITHIN_S)
        assert server.alive()


class TestReadTimeout:
    @pytest.mark.parametrize(
        ("sent", "answer"),
        [
            pytest.param(b"", b"", id="nothing"),
            pytest.param(
                b"GET /health/live HTTP/1.1\r\nHost: x\r\n", b"HTTP/1.1 408", id="headers"
            ),
        ],
    )
    def test_a_connection_without_a_complete_request_is_closed(
        self, server_factory: ServerFactory, sent: bytes, answer: bytes
    ) -> None:
        server = server_factory(
            env={"FORESTFLOW_SERVER__REQUEST_READ_TIMEOUT_S": str(SHORT_TIMEOUT_S)}
        )
        with connect(server) as sock:
            started = time.monotonic()
            sock.sendall(sent)
            received = read_until_closed(sock)
        assert time.monotonic() - started >= EARLIEST_S
        assert received.startswith(answer)

    def test_trickling_headers_does_not_extend_the_deadline(
        self, server_factory: ServerFactory
    ) -> None:
        server = server_factory(
            env={"FORESTFLOW_SERVER__REQUEST_READ_TIMEOUT_S": str(SHORT_TIMEOUT_S)}
        )
        request = b"GET /health/live HTTP/1.1\r\n" + b"X-Slow: " + b"a" * 200
        with connect(server) as sock, selectors.DefaultSelector() as selector:
            selector.register(sock, selectors.EVENT_READ)
            started = time.monotonic()
            sent = 0
            # one byte every 0.1 s (20 s for the whole request), until the server answers
            while sent < len(request) and not selector.select(timeout=0.1):
                sock.sendall(request[sent : sent + 1])
                sent += 1
            received = read_until_closed(sock)
        assert sent < len(request)
        assert time.monotonic() - started >= EARLIEST_S
        assert received.startswith(b"HTTP/1.1 408")

    def test_a_body_that_stops_short_is_not_waited_for(self, server_factory: ServerFactory) -> None:
        server = server_factory(
            env={"FORESTFLOW_SERVER__REQUEST_READ_TIMEOUT_S": str(SHORT_TIMEOUT_S)}
        )
        head = (
            b"POST /contract/acme/slow/1 HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
        )
        with connect(server) as sock:
            started = time.monotonic()
            sock.sendall(head + b'{"router":')
            received = read_until_closed(sock)
        assert time.monotonic() - started >= EARLIEST_S
        assert not received.startswith(b"HTTP/1.1 2")
        assert server.client.get("/health/live").status_code == 200


class TestKeepAliveTimeout:
    def test_an_idle_keep_alive_connection_is_closed(self, server_factory: ServerFactory) -> None:
        server = server_factory(
            env={"FORESTFLOW_SERVER__KEEP_ALIVE_TIMEOUT_S": str(SHORT_TIMEOUT_S)}
        )
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=ANSWER_WITHIN_S)
        with contextlib.closing(conn):
            for _ in range(2):  # the connection is reused: it is kept alive between requests
                conn.request("GET", "/health/live")
                response = conn.getresponse()
                assert response.status == 200
                response.read()
            assert conn.sock is not None
            started = time.monotonic()
            # well before uvicorn's own default (5 s) or the read timeout (30 s) would close it
            assert read_until_closed(conn.sock, within_s=KEEP_ALIVE_CLOSE_WITHIN_S) == b""
        assert time.monotonic() - started >= EARLIEST_S
