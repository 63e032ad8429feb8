"""Error answers raised as the server's own classes; where the client connects."""

from __future__ import annotations

import pytest

from forestflow.client._transport import DEFAULT_URL, connection, error_from_answer
from forestflow.errors import (
    ForestFlowError,
    InternalServerError,
    InvalidField,
    UnknownServable,
    error_kinds,
)

FQRV = {
    "contract": {"organization": "samples", "project": "energy_output", "contractNumber": 0},
    "releaseVersion": "v9",
}


class TestErrorFromAnswer:
    def test_the_wire_name_gives_the_class_and_the_body_its_message_and_context(self) -> None:
        body = {"UnknownServable": {"fqrv": FQRV, "errorMessage": "unknown servable x",
                                    "StatusCode": 404}}  # fmt: skip

        error = error_from_answer(body)

        assert type(error) is UnknownServable
        assert error.describe() == "unknown servable x"
        assert error.context == {"fqrv": FQRV, "StatusCode": 404}

    def test_a_field_reads_back_as_the_server_wrote_it(self) -> None:
        body = {"InvalidRequestError": {"errorMessage": "datum[0]: ragged", "field": "datum[0]"}}

        error = error_from_answer(body)

        assert isinstance(error, InvalidField)
        assert (error.field, error.message, error.describe()) == (
            "datum[0]",
            "ragged",
            "datum[0]: ragged",
        )

    @pytest.mark.parametrize("name", sorted(error_kinds()))
    def test_every_wire_name_is_raised_as_its_class(self, name: str) -> None:
        error = error_from_answer({name: {"errorMessage": "m"}})

        assert type(error) is error_kinds()[name]

    def test_an_unexpected_failure_is_the_internal_error(self) -> None:
        body = {"InternalServerError": {"errorMessage": "internal server error; see the log"}}

        assert type(error_from_answer(body)) is InternalServerError

    def test_a_name_from_a_newer_server_is_the_root_error_and_says_its_name(self) -> None:
        error = error_from_answer({"SomethingNew": {"errorMessage": "m", "StatusCode": 418}})

        assert type(error) is ForestFlowError
        assert error.context["wireName"] == "SomethingNew"

    @pytest.mark.parametrize(
        "body", [None, [], {"a": 1, "b": 2}, {"X": "text"}, {"X": {"message": "m"}}]
    )
    def test_other_bodies_are_no_forestflow_error(self, body: object) -> None:
        assert error_from_answer(body) is None


class TestConnection:
    def test_given_values_win_then_the_environment_then_the_default(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.delenv("FORESTFLOW_URL", raising=False)
        monkeypatch.delenv("FORESTFLOW_TOKEN", raising=False)
        assert connection(None, None) == (DEFAULT_URL, None)

        monkeypatch.setenv("FORESTFLOW_URL", "http://ff.internal:8090/")
        monkeypatch.setenv("FORESTFLOW_TOKEN", "ff_env")
        assert connection(None, None) == ("http://ff.internal:8090", "ff_env")
        assert connection("http://other", "ff_given") == ("http://other", "ff_given")
        assert connection(None, "") == ("http://ff.internal:8090", None)
