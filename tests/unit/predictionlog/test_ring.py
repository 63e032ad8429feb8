"""`RingSink`: the latest events for followers, bounded, never holding the writer back."""

from __future__ import annotations

import asyncio
import json

import pytest

from forestflow.predictionlog.events import EncodedEvent
from forestflow.predictionlog.ring import RingSink
from tests.builders import make_fqrv


def encoded(n: int, release: str = "v1", size: int = 0) -> EncodedEvent:
    value = json.dumps({"n": n, "pad": "x" * size}, separators=(",", ":")).encode()
    return EncodedEvent(make_fqrv(release), None, n, value)


def numbers(ring: RingSink, after: int) -> list[int]:
    return [json.loads(held.record)["n"] for held in ring.read(after).events]


class TestReading:
    def test_events_are_numbered_from_one_and_read_after_a_cursor(self) -> None:
        ring = RingSink()
        ring.write_encoded([encoded(n) for n in range(5)])

        first = ring.read(0)
        later = ring.read(3)

        assert [h.seq for h in first.events] == [1, 2, 3, 4, 5]
        assert (first.missed, first.cursor) == (0, 5)
        assert [h.seq for h in later.events] == [4, 5]
        assert ring.read(5).events == []
        assert ring.head == 5

    def test_a_read_stops_at_its_limit_and_the_cursor_goes_on_from_there(self) -> None:
        ring = RingSink()
        ring.write_encoded([encoded(n) for n in range(10)])

        part = ring.read(0, limit=4)

        assert [h.seq for h in part.events] == [1, 2, 3, 4]
        assert part.cursor == 4
        assert [h.seq for h in ring.read(part.cursor).events] == [5, 6, 7, 8, 9, 10]

    def test_a_cursor_from_before_a_restart_starts_from_the_oldest_held(self) -> None:
        ring = RingSink()
        ring.write_encoded([encoded(n) for n in range(3)])

        assert numbers(ring, 500) == [0, 1, 2]


class TestBounds:
    def test_the_oldest_are_evicted_and_a_slow_reader_is_told_how_many_it_missed(self) -> None:
        ring = RingSink(capacity=3)
        ring.write_encoded([encoded(n) for n in range(8)])

        behind = ring.read(2)

        assert [h.seq for h in behind.events] == [6, 7, 8]
        assert (behind.missed, behind.cursor) == (3, 8)

    def test_bytes_are_bounded_but_the_newest_event_is_kept_whatever_its_size(self) -> None:
        ring = RingSink(max_bytes=1000)
        ring.write_encoded([encoded(n, size=300) for n in range(5)])
        assert numbers(ring, 0) == [2, 3, 4]  # about 320 bytes each

        ring.write_encoded([encoded(99, size=5000)])

        assert numbers(ring, 0) == [99]

    def test_events_dropped_before_the_ring_are_a_gap_readers_count_as_missed(self) -> None:
        ring = RingSink()
        ring.write_encoded([encoded(1)])
        ring.count_dropped(2)
        ring.write_encoded([encoded(4)])
        ring.count_dropped(1)

        slice_ = ring.read(0)

        assert [h.seq for h in slice_.events] == [1, 4]
        assert (slice_.missed, slice_.cursor) == (3, 5)
        assert ring.stats().dropped == 3

    def test_the_last_matching_events_are_where_a_read_begins(self) -> None:
        ring = RingSink()
        ring.write_encoded([encoded(n, "a" if n % 2 else "b") for n in range(6)])

        cursor = ring.last(2, lambda fqrv: fqrv.release_version == "a")

        assert [h.seq for h in ring.read(cursor).events] == [4, 5, 6]
        assert ring.last(0, lambda fqrv: True) == ring.head

    def test_bad_bounds_are_refused(self) -> None:
        with pytest.raises(ValueError, match="positive"):
            RingSink(capacity=0)


class TestWaiting:
    async def test_a_waiting_reader_is_woken_by_an_event_written_from_another_thread(
        self,
    ) -> None:
        ring = RingSink()

        # tasks start in order: the reader waits before the thread writes
        woken, _ = await asyncio.gather(
            ring.wait(0, timeout_s=30), asyncio.to_thread(ring.write_encoded, [encoded(1)])
        )

        assert woken is True
        assert numbers(ring, 0) == [1]

    async def test_a_reader_behind_returns_at_once_and_one_at_the_head_times_out(self) -> None:
        ring = RingSink()
        ring.write_encoded([encoded(1)])

        assert await ring.wait(0, timeout_s=30) is True
        assert await ring.wait(1, timeout_s=0) is True  # still open: nothing new yet

    async def test_closing_wakes_every_reader_for_good(self) -> None:
        ring = RingSink()

        answers = await asyncio.gather(
            ring.wait(0, timeout_s=30), ring.wait(0, timeout_s=30), ring.close()
        )

        assert answers == [False, False, None]
        assert await ring.wait(0, timeout_s=30) is False

    async def test_a_closed_ring_still_gives_a_reader_behind_what_it_holds(self) -> None:
        ring = RingSink()
        ring.write_encoded([encoded(1)])

        await ring.close()

        assert await ring.wait(0, timeout_s=30) is True
        assert await ring.wait(1, timeout_s=30) is False
