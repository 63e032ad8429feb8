"""`Contract` and `FQRV` as a client writes and reads them."""

from __future__ import annotations

import pytest

from forestflow.client import FQRV, Contract


class TestParsing:
    def test_the_slash_and_the_printed_forms_name_the_same_contract(self) -> None:
        assert Contract.parse("samples/energy_output/0") == Contract("samples", "energy_output", 0)
        assert Contract.parse("samples.energy_output.0") == Contract("samples", "energy_output", 0)
        assert str(Contract.parse("/a/b/3/")) == "a.b.3"

    def test_a_release_with_dots_needs_the_slash_form(self) -> None:
        fqrv = FQRV.parse("samples/energy_output/0/2024.01.15")

        assert fqrv.release_version == "2024.01.15"
        assert fqrv.path == "/samples/energy_output/0/2024.01.15"
        with pytest.raises(ValueError, match="<release_version>"):
            FQRV.parse("samples.energy_output.0.2024.01.15")

    @pytest.mark.parametrize("text", ["a/b", "a/b/x", "a/b/-1", "a/../0", "a b/c/0"])
    def test_what_names_no_contract_is_refused(self, text: str) -> None:
        with pytest.raises(ValueError):  # noqa: PT011 - the messages differ by case
            Contract.parse(text)


class TestJson:
    def test_the_wire_form_goes_both_ways(self) -> None:
        fqrv = Contract("samples", "energy_output", 0).release("v1")

        wire = fqrv.to_json()

        assert wire == {
            "contract": {
                "organization": "samples",
                "project": "energy_output",
                "contractNumber": 0,
            },
            "releaseVersion": "v1",
        }
        assert FQRV.from_json(wire) == fqrv
        snake = {"contract": {"organization": "a", "project": "b", "contract_number": 2},
                 "release_version": "r"}  # fmt: skip
        assert str(FQRV.from_json(snake)) == "a.b.2.r"
