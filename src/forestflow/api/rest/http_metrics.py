"""HTTP requests by route template, method and status class, with their latency (issue 12).

Filled by `ScoreLane`, which sees every HTTP request first: the score and inference routes
it serves itself count under their templates, every other request under the template of
the framework route that matched it (`scope["route"]`), or `unmatched`. Labels therefore
come from the routes the server has, never from raw paths. Changed and read on the event
loop only (see `control.telemetry`).
"""

from __future__ import annotations

from collections.abc import Iterator

from forestflow.control.telemetry import LATENCY_BUCKETS_S, Histogram

UNMATCHED = "unmatched"
"""The route of a request no route matched (a 404 or 405 from the framework)."""
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
"""Methods counted by name; any other counts as `other`."""


class RouteCalls:
    """Requests of one route and method: how many by status class, and how long each took."""

    __slots__ = ("seconds", "statuses")

    def __init__(self) -> None:
        self.statuses = [0] * 10  # by status // 100
        self.seconds = Histogram(LATENCY_BUCKETS_S)

    def observe(self, status: int, seconds: float) -> None:
        """Count one request answered with `status` after `seconds`."""
        self.statuses[status // 100 % 10] += 1
        self.seconds.observe(seconds)

    def by_status_class(self) -> dict[str, int]:
        """Requests by status class (`2xx`), for the classes seen."""
        return {f"{n}xx": count for n, count in enumerate(self.statuses) if count}


class HttpTelemetry:
    """`RouteCalls` per (route template, method), made on first use."""

    def __init__(self) -> None:
        self._routes: dict[tuple[str, str], RouteCalls] = {}

    def route(self, template: str, method: str) -> RouteCalls:
        """The calls of `method` on the route `template` (bind once where the route is fixed)."""
        key = (template, method if method in METHODS else "other")
        calls = self._routes.get(key)
        if calls is None:
            calls = self._routes[key] = RouteCalls()
        return calls

    def routes(self) -> Iterator[tuple[str, str, RouteCalls]]:
        """(route template, method, calls) of every route and method seen so far."""
        for (template, method), calls in self._routes.items():
            yield template, method, calls
