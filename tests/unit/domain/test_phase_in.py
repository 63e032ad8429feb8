from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from forestflow.domain.phase_in import ImmediatePhaseIn, LinearTimeBasedPhaseIn, PhaseInPolicy
from forestflow.errors import InvalidField

T0 = 1_700_000_000_000  # becameValidAtMS in the examples
HOUR = LinearTimeBasedPhaseIn(phase_in_over_secs=3600)

times = st.integers(min_value=0, max_value=2**53)
windows_secs = st.integers(min_value=1, max_value=10**7)


class TestRegistry:
    def test_spec_policies_are_registered(self) -> None:
        assert PhaseInPolicy.registry.names() == ["ImmediatePhaseIn", "LinearTimeBasedPhaseIn"]
        assert PhaseInPolicy.registry.get("LinearTimeBasedPhaseIn") is LinearTimeBasedPhaseIn


class TestImmediatePhaseIn:
    def test_zero_before_validity(self) -> None:
        assert ImmediatePhaseIn().phase_in_pct(None, T0) == 0

    @given(times, times)
    def test_full_once_valid(self, became: int, now: int) -> None:
        assert ImmediatePhaseIn().phase_in_pct(became, now) == 100


class TestLinearTimeBasedPhaseIn:
    def test_zero_before_validity(self) -> None:
        assert HOUR.phase_in_pct(None, T0) == 0
        assert HOUR.phase_in_pct(None, T0 + 10**9) == 0

    @pytest.mark.parametrize(
        ("elapsed_ms", "pct"),
        [
            (0, 0),
            (35_999, 0),  # floor(0.9997)
            (36_000, 1),
            (1_800_000, 50),
            (3_563_999, 98),
            (3_564_000, 99),
            (3_599_999, 99),  # floor, never rounded up to 100 early
            (3_600_000, 100),
            (3_600_001, 100),
            (10**12, 100),
        ],
    )
    def test_hour_window_examples(self, elapsed_ms: int, pct: int) -> None:
        assert HOUR.phase_in_pct(T0, T0 + elapsed_ms) == pct

    def test_clock_before_became_valid_counts_as_zero_elapsed(self) -> None:
        assert HOUR.phase_in_pct(T0, T0 - 5_000) == 0

    def test_zero_window_is_immediate(self) -> None:
        policy = LinearTimeBasedPhaseIn(0)
        assert policy.phase_in_pct(T0, T0) == 100
        assert policy.phase_in_pct(None, T0) == 0

    @pytest.mark.parametrize(
        ("secs", "elapsed_ms", "pct"),
        [
            (2.015, 403, 20),  # 40300 / 2015 is exactly 20; the float 2.015 * 1000 is not 2015
            (2.015, 402, 19),
            (0.05, 11, 22),
            (0.5, 499, 99),
            (0.5, 500, 100),
            (1.1, 11, 1),
        ],
    )
    def test_fractional_windows_use_the_decimal_value(
        self, secs: float, elapsed_ms: int, pct: int
    ) -> None:
        assert LinearTimeBasedPhaseIn(secs).phase_in_pct(T0, T0 + elapsed_ms) == pct

    @pytest.mark.parametrize("secs", [-1, -0.001, math.nan, math.inf, -math.inf])
    def test_refuses_negative_or_non_finite_windows(self, secs: float) -> None:
        with pytest.raises(InvalidField) as caught:
            LinearTimeBasedPhaseIn(secs)
        assert caught.value.field == "phaseInOverSecs"

    @given(windows_secs, times, st.integers(min_value=0, max_value=2**40))
    def test_floor_formula(self, secs: int, became: int, elapsed: int) -> None:
        # min(100, floor(100 · (now − becameValidAtMS) / (phaseInOverSecs · 1000))), exactly
        expected = min(100, (100 * elapsed) // (secs * 1000))
        assert LinearTimeBasedPhaseIn(secs).phase_in_pct(became, became + elapsed) == expected

    @given(st.integers(min_value=1, max_value=10**9), st.integers(min_value=0, max_value=2 * 10**9))
    def test_floor_formula_for_millisecond_windows(self, window_ms: int, elapsed: int) -> None:
        # phaseInOverSecs as written in JSON with up to three decimals, e.g. 2.015
        secs = window_ms / 1000
        expected = min(100, (100 * elapsed) // window_ms)
        assert LinearTimeBasedPhaseIn(secs).phase_in_pct(T0, T0 + elapsed) == expected

    @given(windows_secs, times, st.lists(st.integers(min_value=0, max_value=2**40), min_size=2))
    def test_monotonic_in_time(self, secs: int, became: int, offsets: list[int]) -> None:
        policy = LinearTimeBasedPhaseIn(secs)
        pcts = [policy.phase_in_pct(became, became + offset) for offset in sorted(offsets)]
        assert pcts == sorted(pcts)
        assert all(0 <= pct <= 100 for pct in pcts)

    @given(windows_secs, times, st.integers(min_value=0, max_value=2**40))
    def test_exactly_100_from_the_end_of_the_window(
        self, secs: int, became: int, extra: int
    ) -> None:
        policy = LinearTimeBasedPhaseIn(secs)
        assert policy.phase_in_pct(became, became + secs * 1000 + extra) == 100
        assert policy.phase_in_pct(became, became + secs * 1000 - 1) == 99
