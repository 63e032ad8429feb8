"""Lineage and servable history from recorded events, old records included (issue 11, scope 5).

State files written before lineage was recorded must still replay: a `ServableDeployed`
without `path`, a `ServableExpired` without `policy`, a snapshot whose servables lack
`path`. Their lineage falls back on what was recorded.
"""

from __future__ import annotations

from typing import Any

from forestflow.control.events import (
    ContractCreated,
    ServableDeleted,
    ServableDeployed,
    ServableExpired,
    from_record,
    to_record,
)
from forestflow.control.lineage import Lineage, ServableState, lineage_of, servable_history
from forestflow.control.state import RegistryState
from forestflow.domain.codec import encode
from forestflow.domain.expiration import KeepLatest
from forestflow.domain.fqrv import FQRV, Contract
from forestflow.domain.settings import ContractSettings, ServableSettings
from forestflow.store.base import HistoryEntry, Lifetime

FQRV_V1 = FQRV(Contract("samples", "energy_output", 0), "v1")
FQRV_JSON = encode(FQRV_V1)
FLAVOR = {"ONNX": {"modelPath": "model.onnx"}}
OLD_DEPLOYED: dict[str, Any] = {
    # a ServableDeployed as recorded before lineage: no `path`
    "fqrv": FQRV_JSON,
    "source": "models:/m/1",
    "flavor": FLAVOR,
    "settings": encode(ServableSettings()),
    "createdAtMS": 1000,
    "artifactPath": None,
    "tags": {"team": "energy"},
    "digest": "sha256:abc",
    "deployedBy": "ci",
}


def entry(seq: int, kind: str, payload: dict[str, Any], actor: str | None = None) -> HistoryEntry:
    return HistoryEntry(seq, kind, payload, recorded_at_ms=seq * 100, actor=actor)


class TestOldRecords:
    def test_a_deploy_recorded_without_its_path_shows_the_resolved_source(self) -> None:
        deployed = from_record("ServableDeployed", OLD_DEPLOYED)
        assert isinstance(deployed, ServableDeployed)
        assert lineage_of(deployed) == Lineage(
            source="models:/m/1",
            resolved_source="models:/m/1",
            artifact_path=None,
            digest="sha256:abc",
            flavor=FLAVOR,
            tags={"team": "energy"},
            deployed_by="ci",
            deployed_at_ms=1000,
        )

    def test_an_expiry_recorded_without_its_policy_replays(self) -> None:
        expired = from_record("ServableExpired", {"fqrv": FQRV_JSON, "atMS": 5})
        assert expired == ServableExpired(FQRV_V1, 5, None)

    def test_a_snapshot_of_servables_without_path_loads(self) -> None:
        state = RegistryState()
        state.apply(ContractCreated(FQRV_V1.contract, ContractSettings()))
        state.apply(from_record("ServableDeployed", OLD_DEPLOYED))
        snapshot = state.to_snapshot()
        for contract in snapshot["contracts"]:
            for servable in contract["servables"]:
                del servable["path"]  # as a snapshot written before lineage has it

        restored = RegistryState.from_snapshot(snapshot).servable(FQRV_V1)
        assert restored is not None
        assert lineage_of(restored).source == "models:/m/1"


class TestNewRecords:
    def test_the_path_as_given_and_the_policy_round_trip(self) -> None:
        deployed = from_record("ServableDeployed", {**OLD_DEPLOYED, "path": "models:/m@champ"})
        assert isinstance(deployed, ServableDeployed)
        assert (lineage_of(deployed).source, lineage_of(deployed).resolved_source) == (
            "models:/m@champ",
            "models:/m/1",
        )
        expired = ServableExpired(FQRV_V1, 5, KeepLatest(2))
        kind, payload = to_record(expired)
        assert payload["policy"] == {"KeepLatest": {"servablesToKeep": 2}}
        assert from_record(kind, payload) == expired


class TestServableHistory:
    def test_an_expiry_names_the_policy_and_the_command_that_made_it(self) -> None:
        _, expired = to_record(ServableExpired(FQRV_V1, 700, KeepLatest(2)))
        lifetime = Lifetime(
            entry(3, "ServableDeployed", OLD_DEPLOYED, "ci"),
            entry(7, "ServableExpired", expired, "ci"),
        )

        found = servable_history(lifetime, None, lambda fqrv: None)

        assert (found.seq, found.fqrv, found.state) == (3, FQRV_V1, ServableState.EXPIRED)
        assert found.removal is not None
        assert (found.removal.by, found.removal.policy, found.removal.at_ms) == (
            "ci",
            KeepLatest(2),
            700,
        )

    def test_a_delete_names_the_deleter_at_the_time_it_was_recorded(self) -> None:
        _, deleted = to_record(ServableDeleted(FQRV_V1))
        lifetime = Lifetime(
            entry(3, "ServableDeployed", OLD_DEPLOYED, "ci"),
            entry(9, "ServableDeleted", deleted, "ops"),
        )

        found = servable_history(lifetime, None, lambda fqrv: None)

        assert found.state is ServableState.DELETED
        assert found.removal is not None
        assert (found.removal.by, found.removal.policy, found.removal.at_ms) == ("ops", None, 900)

    def test_one_still_there_is_loaded_or_failed_with_the_reason(self) -> None:
        state = RegistryState()
        state.apply(ContractCreated(FQRV_V1.contract, ContractSettings()))
        state.apply(from_record("ServableDeployed", OLD_DEPLOYED))
        record = state.contract(FQRV_V1.contract)
        lifetime = Lifetime(entry(3, "ServableDeployed", OLD_DEPLOYED), None)

        loaded = servable_history(lifetime, record, lambda fqrv: None)
        failed = servable_history(lifetime, record, {FQRV_V1: "model.onnx is missing"}.get)
        gone = servable_history(lifetime, None, lambda fqrv: None)

        assert (loaded.state, loaded.failure, loaded.removal) == (ServableState.LOADED, None, None)
        assert (failed.state, failed.failure) == (ServableState.FAILED, "model.onnx is missing")
        assert gone.state is ServableState.REMOVED
