from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forestflow.domain.evaluation import ContractEvaluation, evaluate_contract
from forestflow.domain.expiration import KeepLatest, KeepTopRanked
from forestflow.domain.fqrv import FQRV
from forestflow.domain.metrics import Ordering, ServableMetrics, samples_name
from forestflow.domain.phase_in import LinearTimeBasedPhaseIn
from forestflow.domain.routers import FairPhaseInPctBasedRouter, LatestPhaseInPctBasedRouter
from forestflow.domain.settings import ContractSettings, PolicySettings
from forestflow.domain.validity import (
    ImmediatelyValid,
    MinServedEventsBasedValidity,
    NeverValid,
    PerformanceBasedValidity,
    TimeBasedValidity,
)
from tests.builders import make_metrics, make_policy

T0 = 1_700_000_000_000
MINUTE = 60_000
DEFAULTS = ContractSettings()
FAIR_KEEP_ALL = ContractSettings(KeepLatest(100), FairPhaseInPctBasedRouter())

Servables = list[tuple[ServableMetrics, PolicySettings]]


def by_release(result: ContractEvaluation) -> dict[str, ServableMetrics]:
    return {m.fqrv.release_version: m for m in result.metrics}


def names(fqrvs: frozenset[FQRV] | Sequence[FQRV]) -> set[str]:
    return {f.release_version for f in fqrvs}


def shares(result: ContractEvaluation) -> dict[str, float]:
    return {f.release_version: share for f, share in result.plan.shares().items()}


class SteppedContract:
    """A contract's servables stepped through evaluation passes, as the control plane does.

    Each pass's updated metrics feed the next one; the expired servables are deleted.
    """

    def __init__(self, settings: ContractSettings = DEFAULTS) -> None:
        self.settings = settings
        self.servables: dict[str, tuple[ServableMetrics, PolicySettings]] = {}
        self.deleted: list[str] = []

    def deploy(self, release: str, now_ms: int, policy: PolicySettings | None = None) -> None:
        self.servables[release] = (
            make_metrics(release, created_at_ms=now_ms),
            policy or make_policy(),
        )

    def update(self, release: str, **metric_changes: Any) -> None:
        metrics, policy = self.servables[release]
        self.servables[release] = (dataclasses.replace(metrics, **metric_changes), policy)

    def set_policy(self, release: str, policy: PolicySettings) -> None:
        self.servables[release] = (self.servables[release][0], policy)

    def step(self, now_ms: int) -> ContractEvaluation:
        result = evaluate_contract(self.settings, list(self.servables.values()), now_ms)
        for metrics in result.metrics:
            name = metrics.fqrv.release_version
            self.servables[name] = (metrics, self.servables[name][1])
        for fqrv in result.expired:
            del self.servables[fqrv.release_version]
            self.deleted.append(fqrv.release_version)
        return result


class TestBecameValid:
    def test_set_the_first_time_valid(self) -> None:
        contract = SteppedContract()
        contract.deploy("v1", T0, make_policy(TimeBasedValidity(T0 + MINUTE)))
        first = contract.step(T0)
        assert by_release(first)["v1"].became_valid_at_ms is None
        assert first.valid == first.became_valid == frozenset()
        second = contract.step(T0 + MINUTE)
        assert by_release(second)["v1"].became_valid_at_ms == T0 + MINUTE
        assert names(second.became_valid) == names(second.valid) == {"v1"}

    def test_never_reset_by_later_passes(self) -> None:
        contract = SteppedContract()
        contract.deploy("v1", T0)
        contract.step(T0)
        later = contract.step(T0 + 5 * MINUTE)
        assert by_release(later)["v1"].became_valid_at_ms == T0
        assert later.became_valid == frozenset()

    def test_kept_when_the_servable_turns_invalid_and_back(self) -> None:
        policy = make_policy(
            PerformanceBasedValidity(0.8, "auc"), phase_in=LinearTimeBasedPhaseIn(600)
        )
        contract = SteppedContract(FAIR_KEEP_ALL)
        contract.deploy("v1", T0, policy)
        contract.update("v1", performance_metrics={"auc": 0.9})
        assert by_release(contract.step(T0))["v1"].became_valid_at_ms == T0

        contract.update("v1", performance_metrics={"auc": 0.5})
        dropped = contract.step(T0 + 2 * MINUTE)
        v1 = by_release(dropped)["v1"]
        assert (v1.became_valid_at_ms, v1.current_phase_in_pct) == (T0, 0)
        assert dropped.valid == frozenset()
        assert dropped.plan.choose(random.Random(0)) is None

        contract.update("v1", performance_metrics={"auc": 0.85})
        back = contract.step(T0 + 5 * MINUTE)
        v1 = by_release(back)["v1"]
        assert v1.became_valid_at_ms == T0  # phase-in resumes from the first validity
        assert v1.current_phase_in_pct == 50
        assert back.became_valid == frozenset()

    def test_an_existing_timestamp_is_kept_as_given(self) -> None:
        metrics = make_metrics("v1", became_valid_at_ms=T0 - MINUTE)
        result = evaluate_contract(DEFAULTS, [(metrics, make_policy())], T0)
        assert result.metrics[0].became_valid_at_ms == T0 - MINUTE
        assert result.became_valid == frozenset()


class TestPhaseIn:
    def test_invalid_servable_is_at_zero(self) -> None:
        # a stale percentage from an earlier pass is cleared
        metrics = make_metrics("v1", became_valid_at_ms=T0, current_phase_in_pct=100)
        result = evaluate_contract(DEFAULTS, [(metrics, make_policy(NeverValid()))], T0 + MINUTE)
        assert result.metrics[0].current_phase_in_pct == 0

    def test_valid_servable_follows_its_policy(self) -> None:
        contract = SteppedContract()
        contract.deploy("v1", T0, make_policy(phase_in=LinearTimeBasedPhaseIn(100)))
        assert by_release(contract.step(T0))["v1"].current_phase_in_pct == 0
        assert by_release(contract.step(T0 + 25_000))["v1"].current_phase_in_pct == 25
        assert by_release(contract.step(T0 + 100_000))["v1"].current_phase_in_pct == 100

    def test_other_metrics_pass_through(self) -> None:
        metrics = make_metrics("v1", score_count=7, shade_count=3, performance_metrics={"auc": 0.5})
        updated = evaluate_contract(DEFAULTS, [(metrics, make_policy())], T0).metrics[0]
        assert updated == dataclasses.replace(
            metrics, became_valid_at_ms=T0, current_phase_in_pct=100, last_valid=True
        )

    def test_each_pass_records_whether_the_servable_was_valid(self) -> None:
        contract = SteppedContract()
        contract.deploy("v1", T0, make_policy(TimeBasedValidity(T0 + MINUTE)))
        assert by_release(contract.step(T0))["v1"].last_valid is False
        assert by_release(contract.step(T0 + MINUTE))["v1"].last_valid is True


class TestExpiration:
    def test_only_valid_servables_are_considered(self) -> None:
        contract = SteppedContract(ContractSettings(KeepLatest(1), LatestPhaseInPctBasedRouter()))
        contract.deploy("shadow", T0, make_policy(NeverValid()))
        contract.deploy("v1", T0)
        contract.deploy("v2", T0 + 1)
        result = contract.step(T0 + 2)
        assert names(result.expired) == {"v1"}
        assert "shadow" not in names(result.valid)
        for later in range(3, 10):
            assert "shadow" not in names(contract.step(T0 + later).expired)
        assert "shadow" in contract.servables

    def test_expired_servables_are_valid_but_not_routed(self) -> None:
        metrics = [make_metrics(f"v{i}", created_at_ms=i) for i in range(3)]
        settings = ContractSettings(KeepLatest(1), FairPhaseInPctBasedRouter())
        result = evaluate_contract(settings, [(m, make_policy()) for m in metrics], T0)
        assert names(result.valid) == {"v0", "v1", "v2"}
        assert names(result.expired) == {"v0", "v1"}
        assert shares(result) == {"v2": 1.0}

    def test_ranks_on_updated_phase_in(self) -> None:
        # equal metric: KeepTopRanked keeps the more phased-in, as computed in this pass
        settings = ContractSettings(KeepTopRanked(1, "auc"), FairPhaseInPctBasedRouter())
        slow = make_metrics("slow", performance_metrics={"auc": 0.9}, current_phase_in_pct=100)
        fast = make_metrics("fast", performance_metrics={"auc": 0.9})
        result = evaluate_contract(
            settings,
            [
                (slow, make_policy(phase_in=LinearTimeBasedPhaseIn(1000))),
                (fast, make_policy()),
            ],
            T0,
        )
        assert names(result.expired) == {"slow"}


class TestRouting:
    def test_router_sees_only_valid_servables(self) -> None:
        servables = [
            (make_metrics("valid"), make_policy()),
            (make_metrics("waiting", shade_count=5), make_policy(MinServedEventsBasedValidity(10))),
            (make_metrics("never"), make_policy(NeverValid())),
        ]
        result = evaluate_contract(FAIR_KEEP_ALL, servables, T0)
        assert shares(result) == {"valid": 1.0}

    def test_no_valid_servable_no_route(self) -> None:
        result = evaluate_contract(DEFAULTS, [(make_metrics("v1"), make_policy(NeverValid()))], T0)
        assert result.plan.choose(random.Random(0)) is None
        assert result.plan.shares() == {}

    def test_no_servables(self) -> None:
        result = evaluate_contract(DEFAULTS, [], T0)
        assert result == ContractEvaluation((), frozenset(), frozenset(), frozenset(), result.plan)
        assert result.plan.shares() == {}


def feedback(mae: float, samples: int) -> dict[str, float]:
    """`performanceMetrics` as the feedback loop keeps them: `mae` on `samples` joined rows."""
    return {"mae": mae, samples_name("mae"): float(samples)}


class TestMinimumEvidence:
    """Issue 11: one record below `minSamples` changes neither validity nor the ranking."""

    SETTINGS = ContractSettings(
        KeepTopRanked(1, "mae", Ordering.ASC), LatestPhaseInPctBasedRouter()
    )
    PROMOTION = make_policy(PerformanceBasedValidity(5.0, "mae", Ordering.ASC))

    def deployed(self) -> SteppedContract:
        """v1 serves (ImmediatelyValid), v2 must earn its validity by MAE <= 5."""
        contract = SteppedContract(self.SETTINGS)
        contract.deploy("v1", T0)
        contract.deploy("v2", T0 + 1, self.PROMOTION)
        first = contract.step(T0 + 1)
        assert names(first.valid) == {"v1"}
        return contract

    def test_one_record_neither_promotes_nor_expires(self) -> None:
        contract = self.deployed()
        contract.update("v1", performance_metrics=feedback(9.0, 1))
        contract.update("v2", performance_metrics=feedback(0.1, 1))
        for minute in range(1, 4):
            result = contract.step(T0 + minute * MINUTE)
            assert names(result.valid) == {"v1"}
            assert result.expired == frozenset()
            assert shares(result) == {"v1": 1.0}
        assert contract.deleted == []

    def test_at_min_samples_v2_is_promoted_and_v1_ranked_out(self) -> None:
        contract = self.deployed()
        contract.update("v1", performance_metrics=feedback(9.0, 29))
        contract.update("v2", performance_metrics=feedback(0.1, 29))
        assert contract.step(T0 + MINUTE).valid == frozenset({contract_fqrv(contract, "v1")})

        contract.update("v1", performance_metrics=feedback(9.0, 30))
        contract.update("v2", performance_metrics=feedback(0.1, 30))
        result = contract.step(T0 + 2 * MINUTE)
        assert names(result.became_valid) == {"v2"}
        assert names(result.expired) == {"v1"}
        assert shares(result) == {"v2": 1.0}
        assert contract.deleted == ["v1"]

    def test_a_valid_servable_stays_valid_until_its_metric_is_known(self) -> None:
        contract = SteppedContract(FAIR_KEEP_ALL)
        contract.deploy("v1", T0, self.PROMOTION)
        contract.update("v1", performance_metrics=feedback(1.0, 30))
        assert names(contract.step(T0).valid) == {"v1"}
        # after a restart the rolling window is empty again: one bad record
        contract.update("v1", performance_metrics=feedback(50.0, 1), last_valid=None)
        assert names(contract.step(T0 + MINUTE).valid) == {"v1"}
        assert names(contract.step(T0 + 2 * MINUTE).valid) == {"v1"}
        contract.update("v1", performance_metrics=feedback(50.0, 30))
        assert contract.step(T0 + 3 * MINUTE).valid == frozenset()

    def test_a_demoted_servable_is_not_promoted_again_by_one_record(self) -> None:
        contract = SteppedContract(FAIR_KEEP_ALL)
        contract.deploy("v1", T0, self.PROMOTION)
        contract.update("v1", performance_metrics=feedback(1.0, 30))
        contract.step(T0)
        contract.update("v1", performance_metrics=feedback(50.0, 100))
        assert contract.step(T0 + MINUTE).valid == frozenset()
        # its metric starts over (a restart): one lucky record decides nothing
        contract.update("v1", performance_metrics=feedback(0.1, 1))
        for minute in range(2, 5):
            assert contract.step(T0 + minute * MINUTE).valid == frozenset()


def contract_fqrv(contract: SteppedContract, release: str) -> FQRV:
    return contract.servables[release][0].fqrv


class TestCanaryScenario:
    """SPEC §1.6: KeepLatest(2) + LatestPhaseInPctBasedRouter, FOO → BAR → BAZ."""

    def test_foo_bar_baz(self) -> None:
        contract = SteppedContract(ContractSettings(KeepLatest(2), LatestPhaseInPctBasedRouter()))
        linear_10_min = make_policy(ImmediatelyValid(), phase_in=LinearTimeBasedPhaseIn(600))

        contract.deploy("FOO", T0)
        first = contract.step(T0)
        assert shares(first) == {"FOO": 1.0}

        # BAR deployed, valid from T0 + 1 min, phasing in over 10 minutes
        bar_policy = make_policy(
            TimeBasedValidity(T0 + MINUTE), phase_in=LinearTimeBasedPhaseIn(600)
        )
        contract.deploy("BAR", T0 + 30_000, bar_policy)
        waiting = contract.step(T0 + 30_000)
        assert names(waiting.valid) == {"FOO"}
        assert by_release(waiting)["BAR"].current_phase_in_pct == 0
        assert shares(waiting) == {"FOO": 1.0}

        valid = contract.step(T0 + MINUTE)
        assert names(valid.became_valid) == {"BAR"}
        assert shares(valid) == {"FOO": 1.0}  # BAR at 0% gets no traffic yet

        halfway = contract.step(T0 + 6 * MINUTE)
        assert by_release(halfway)["BAR"].current_phase_in_pct == 50
        assert shares(halfway) == pytest.approx({"FOO": 100 / 150, "BAR": 50 / 150})

        full = contract.step(T0 + 11 * MINUTE)
        assert by_release(full)["BAR"].current_phase_in_pct == 100
        assert shares(full) == {"BAR": 1.0}
        # FOO stays valid and deployed (shadowing, ready for rollback): nothing expires
        assert names(full.valid) == {"FOO", "BAR"}
        assert full.expired == frozenset()
        for minute in range(12, 20):
            assert contract.step(T0 + minute * MINUTE).expired == frozenset()

        # a third release expires FOO as soon as it is valid
        contract.deploy("BAZ", T0 + 20 * MINUTE, linear_10_min)
        baz = contract.step(T0 + 20 * MINUTE)
        assert names(baz.expired) == {"FOO"}
        assert contract.deleted == ["FOO"]
        assert shares(baz) == {"BAR": 1.0}

        later = contract.step(T0 + 25 * MINUTE)
        assert shares(later) == pytest.approx({"BAR": 100 / 150, "BAZ": 50 / 150})
        assert set(contract.servables) == {"BAR", "BAZ"}

    def test_never_valid_shadow_stays_out_of_traffic_and_expiration(self) -> None:
        contract = SteppedContract()
        contract.deploy("FOO", T0)
        contract.deploy("SHADOW", T0, make_policy(NeverValid()))
        for minute in range(5):
            result = contract.step(T0 + minute * MINUTE)
            assert shares(result) == {"FOO": 1.0}
            assert result.expired == frozenset()
        # promoted by updating its policy
        contract.set_policy("SHADOW", make_policy())
        promoted = contract.step(T0 + 10 * MINUTE)
        assert names(promoted.became_valid) == {"SHADOW"}
        assert shares(promoted) == {"SHADOW": 1.0}


@st.composite
def contract_states(draw: st.DrawFn) -> tuple[ContractSettings, Servables, int]:
    now = draw(st.integers(min_value=0, max_value=10**6))
    servables: Servables = []
    for i in range(draw(st.integers(min_value=0, max_value=6))):
        became = draw(st.one_of(st.none(), st.integers(min_value=0, max_value=now)))
        metrics = make_metrics(
            f"v{i}",
            created_at_ms=draw(st.integers(min_value=0, max_value=now)),
            became_valid_at_ms=became,
            shade_count=draw(st.integers(0, 20)),
            current_phase_in_pct=draw(st.integers(0, 100)),
        )
        rules = draw(
            st.lists(
                st.sampled_from(
                    [
                        ImmediatelyValid(),
                        NeverValid(),
                        TimeBasedValidity(now // 2),
                        MinServedEventsBasedValidity(10),
                    ]
                ),
                max_size=2,
            )
        )
        phase_in = LinearTimeBasedPhaseIn(draw(st.integers(0, 1000)))
        servables.append((metrics, PolicySettings(tuple(rules), phase_in)))
    settings = ContractSettings(
        KeepLatest(draw(st.integers(1, 4))),
        draw(st.sampled_from([FairPhaseInPctBasedRouter(), LatestPhaseInPctBasedRouter()])),
    )
    return settings, servables, now


class TestEvaluationProperties:
    @settings(max_examples=200)
    @given(contract_states())
    def test_invariants(self, state: tuple[ContractSettings, Servables, int]) -> None:
        contract_settings, servables, now = state
        result = evaluate_contract(contract_settings, servables, now)
        assert [m.fqrv for m in result.metrics] == [m.fqrv for m, _ in servables]
        assert result.expired <= result.valid
        assert result.became_valid <= result.valid
        assert set(result.plan.shares()) <= result.valid - result.expired
        for (before, _), after in zip(servables, result.metrics, strict=True):
            if before.became_valid_at_ms is not None:
                assert after.became_valid_at_ms == before.became_valid_at_ms
            if after.fqrv in result.became_valid:
                assert (before.became_valid_at_ms, after.became_valid_at_ms) == (None, now)
            if after.fqrv not in result.valid:
                assert after.current_phase_in_pct == 0
                assert after.became_valid_at_ms == before.became_valid_at_ms
            else:
                assert after.became_valid_at_ms is not None
