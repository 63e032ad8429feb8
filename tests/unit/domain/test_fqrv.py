from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given

from forestflow.domain.fqrv import FQRV, Contract, check_name
from forestflow.errors import InvalidField
from tests.builders import contracts, make_contract, make_fqrv, names

BAD_NAMES = ["", "a/b", "with space", " lead", "trail ", "tab\there", "new\nline", "é", "a:b"]


class TestCheckName:
    @pytest.mark.parametrize("name", ["a", "A-z_0.9", "20240101", "...", "-_-"])
    def test_accepts_the_name_alphabet(self, name: str) -> None:
        assert check_name(name, "organization") == name

    @pytest.mark.parametrize("name", BAD_NAMES)
    def test_refuses_anything_else_naming_the_field(self, name: str) -> None:
        with pytest.raises(InvalidField, match="not a valid name") as caught:
            check_name(name, "project")
        assert caught.value.field == "project"


class TestContract:
    @pytest.mark.parametrize(
        ("field", "wire_name"), [("organization", "organization"), ("project", "project")]
    )
    @pytest.mark.parametrize("bad", ["a/b", "a b", ""])
    def test_refuses_bad_names(self, field: str, wire_name: str, bad: str) -> None:
        with pytest.raises(InvalidField) as caught:
            make_contract(**{field: bad})
        assert caught.value.field == wire_name

    def test_contract_number_zero_is_allowed(self) -> None:
        assert make_contract(contract_number=0).contract_number == 0

    @pytest.mark.parametrize("number", [-1, -(2**63)])
    def test_refuses_negative_contract_number(self, number: int) -> None:
        with pytest.raises(InvalidField, match=">= 0") as caught:
            make_contract(contract_number=number)
        assert caught.value.field == "contractNumber"

    def test_str_is_dotted(self) -> None:
        assert str(Contract("acme", "churn", 3)) == "acme.churn.3"

    def test_is_a_frozen_hashable_value(self) -> None:
        contract = make_contract()
        assert contract == make_contract()
        assert len({contract, make_contract()}) == 1
        with pytest.raises(dataclasses.FrozenInstanceError):
            contract.project = "other"  # type: ignore[misc]

    def test_orders_by_organization_project_then_number(self) -> None:
        unordered = [Contract("b", "a", 0), Contract("a", "b", 1), Contract("a", "b", 0)]
        assert sorted(unordered) == [
            Contract("a", "b", 0),
            Contract("a", "b", 1),
            Contract("b", "a", 0),
        ]


class TestFQRV:
    @pytest.mark.parametrize("bad", BAD_NAMES)
    def test_refuses_bad_release_versions(self, bad: str) -> None:
        with pytest.raises(InvalidField) as caught:
            make_fqrv(bad)
        assert caught.value.field == "releaseVersion"

    def test_str_is_org_project_number_release(self) -> None:
        fqrv = FQRV(Contract("samples", "energy_output", 0), "v1")
        assert str(fqrv) == "samples.energy_output.0.v1"

    def test_distinct_releases_are_distinct_servables(self) -> None:
        assert make_fqrv("v1") != make_fqrv("v2")
        assert make_fqrv("v1") != make_fqrv("v1", contract_number=1)
        assert make_fqrv("v1") == make_fqrv("v1")

    def test_replace_revalidates(self) -> None:
        with pytest.raises(InvalidField):
            dataclasses.replace(make_fqrv(), release_version="a/b")

    @given(contracts, names)
    def test_str_joins_contract_and_release(self, contract: Contract, release: str) -> None:
        fqrv = FQRV(contract, release)
        assert (
            str(fqrv)
            == f"{contract.organization}.{contract.project}.{contract.contract_number}.{release}"
        )


class TestDotNames:
    @pytest.mark.parametrize("name", [".", ".."])
    def test_dot_names_are_refused_as_they_would_escape_the_artifact_cache(self, name: str) -> None:
        with pytest.raises(InvalidField):
            Contract(name, "p", 0)
        with pytest.raises(InvalidField):
            FQRV(Contract("o", "p", 0), name)
