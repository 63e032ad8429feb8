"""FailureLog: the first failure at once, then at most one summary line a minute per key."""

from __future__ import annotations

import logging

import pytest

from forestflow.serving.failure_log import FailureLog
from forestflow.testing import FakeClock

LOGGER = "tests.failure_log"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def failures(clock: FakeClock, caplog: pytest.LogCaptureFixture) -> FailureLog:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    return FailureLog(logging.getLogger(LOGGER), clock, what="shadow scoring")


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == LOGGER]


class TestFailureLog:
    def test_the_first_failure_is_written_at_once_as_a_warning(
        self, failures: FailureLog, caplog: pytest.LogCaptureFixture
    ) -> None:
        failures.failed("a.b.0.v1", "ValueError: boom")
        assert lines(caplog) == [
            "shadow scoring on a.b.0.v1 failed: ValueError: boom "
            "(repeats are summarised once a minute)"
        ]
        (record,) = caplog.records
        assert record.levelno == logging.WARNING
        assert record.exc_info is None

    def test_repeats_within_a_minute_write_nothing(
        self, failures: FailureLog, clock: FakeClock, caplog: pytest.LogCaptureFixture
    ) -> None:
        for _ in range(300):
            failures.failed("k", "boom")
        clock.advance(seconds=59.999)
        failures.failed("k", "boom")
        assert len(lines(caplog)) == 1

    def test_a_minute_later_one_summary_counts_the_repeats_with_the_last_reason(
        self, failures: FailureLog, clock: FakeClock, caplog: pytest.LogCaptureFixture
    ) -> None:
        failures.failed("k", "first")
        for i in range(299):
            failures.failed("k", f"reason {i}")
        clock.advance(seconds=60)
        failures.failed("k", "latest")
        assert lines(caplog)[1:] == [
            "shadow scoring on k failed 300 more times in the last minute: latest"
        ]

    def test_after_a_summary_the_next_one_waits_another_minute(
        self, failures: FailureLog, clock: FakeClock, caplog: pytest.LogCaptureFixture
    ) -> None:
        failures.failed("k", "boom")
        clock.advance(seconds=61)
        failures.failed("k", "boom")
        clock.advance(seconds=30)
        failures.failed("k", "boom")
        assert len(lines(caplog)) == 2
        clock.advance(seconds=31)
        failures.failed("k", "boom")
        assert (
            lines(caplog)[2] == "shadow scoring on k failed 2 more times in the last minute: boom"
        )

    def test_a_summary_after_a_long_gap_says_how_long(
        self, failures: FailureLog, clock: FakeClock, caplog: pytest.LogCaptureFixture
    ) -> None:
        failures.failed("k", "boom")
        clock.advance(seconds=10)
        failures.failed("k", "boom")
        clock.advance(seconds=300)
        failures.failed("k", "bang")
        assert (
            lines(caplog)[1]
            == "shadow scoring on k failed 2 more times in the last 5 minutes: bang"
        )

    def test_after_a_quiet_minute_a_failure_is_written_as_a_first_one(
        self, failures: FailureLog, clock: FakeClock, caplog: pytest.LogCaptureFixture
    ) -> None:
        failures.failed("k", "boom")
        clock.advance(seconds=120)
        failures.failed("k", "bang")
        assert lines(caplog)[1] == (
            "shadow scoring on k failed: bang (repeats are summarised once a minute)"
        )

    def test_keys_are_limited_independently(
        self, failures: FailureLog, caplog: pytest.LogCaptureFixture
    ) -> None:
        for _ in range(5):
            failures.failed("a", "boom")
            failures.failed("b", "bang")
        assert lines(caplog) == [
            "shadow scoring on a failed: boom (repeats are summarised once a minute)",
            "shadow scoring on b failed: bang (repeats are summarised once a minute)",
        ]

    def test_a_key_that_stopped_failing_gets_its_summary_when_another_key_writes(
        self, failures: FailureLog, clock: FakeClock, caplog: pytest.LogCaptureFixture
    ) -> None:
        failures.failed("gone", "boom")
        failures.failed("gone", "boom")
        clock.advance(seconds=61)
        failures.failed("other", "bang")
        assert lines(caplog)[1:] == [
            "shadow scoring on other failed: bang (repeats are summarised once a minute)",
            "shadow scoring on gone failed 1 more time in the last minute: boom",
        ]

    def test_quiet_keys_are_forgotten(self, failures: FailureLog, clock: FakeClock) -> None:
        failures.failed("gone", "boom")
        clock.advance(seconds=61)
        failures.failed("other", "bang")
        assert list(failures._windows) == ["other"]
