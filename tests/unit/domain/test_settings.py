"""Settings updates (SPEC §2.4, issue 11): what a `PUT` names replaces, the rest stays."""

from __future__ import annotations

from typing import Any

import pytest

from forestflow.domain.expiration import KeepLatest, KeepTopRanked
from forestflow.domain.phase_in import ImmediatePhaseIn, LinearTimeBasedPhaseIn
from forestflow.domain.routers import FairPhaseInPctBasedRouter
from forestflow.domain.settings import (
    BatchingSettings,
    ContractSettings,
    LoggingSettings,
    LogLevel,
    PolicySettings,
    with_changes,
)
from forestflow.domain.validity import ImmediatelyValid, MinServedEventsBasedValidity, NeverValid
from forestflow.errors import InvalidField
from tests.builders import make_policy

LOGGING = LoggingSettings(LogLevel.SAMPLE, ("reqid",), "-", 0.5)


class TestWithChanges:
    def test_a_named_field_replaces_only_that_field(self) -> None:
        assert with_changes(LOGGING, {"key_features": ("gameid",)}) == LoggingSettings(
            LogLevel.SAMPLE, ("gameid",), "-", 0.5
        )

    def test_no_changes_keep_everything(self) -> None:
        assert with_changes(LOGGING, {}) == LOGGING

    def test_a_named_policy_replaces_the_whole_policy(self) -> None:
        current = ContractSettings(KeepTopRanked(1, "mae"), FairPhaseInPctBasedRouter())
        assert with_changes(current, {"expiration_policy": KeepLatest(3)}) == ContractSettings(
            KeepLatest(3), FairPhaseInPctBasedRouter()
        )

    def test_a_named_list_replaces_the_list(self) -> None:
        current = make_policy(NeverValid(), phase_in=LinearTimeBasedPhaseIn(3600))
        changed = with_changes(current, {"validity_policy": (MinServedEventsBasedValidity(5),)})
        assert changed == make_policy(
            MinServedEventsBasedValidity(5), phase_in=LinearTimeBasedPhaseIn(3600)
        )

    def test_a_field_is_reset_by_naming_its_default(self) -> None:
        current = make_policy(NeverValid(), phase_in=LinearTimeBasedPhaseIn(3600))
        reset = with_changes(current, {"phase_in_policy": ImmediatePhaseIn()})
        assert reset == PolicySettings(validity_policy=(NeverValid(),))
        assert with_changes(reset, {"validity_policy": (ImmediatelyValid(),)}) == PolicySettings()

    @pytest.mark.parametrize(
        ("current", "changes", "field"),
        [
            (LOGGING, {"sample_rate": 1.5}, "sampleRate"),
            (BatchingSettings(4), {"max_batch_size": 0}, "maxBatchSize"),
        ],
    )
    def test_the_values_rules_run_on_the_result(
        self, current: Any, changes: dict[str, object], field: str
    ) -> None:
        with pytest.raises(InvalidField) as caught:
            with_changes(current, changes)
        assert caught.value.field == field
