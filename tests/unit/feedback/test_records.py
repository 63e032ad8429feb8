from __future__ import annotations

from typing import Any

import pytest

from forestflow.errors import InvalidField
from forestflow.feedback.records import (
    MAX_RECORDS,
    Actual,
    FeedbackRecord,
    misfit,
    parse_feedback,
)


def invalid(body: object) -> InvalidField:
    with pytest.raises(InvalidField) as caught:
        parse_feedback(body)
    return caught.value


class TestValidBodies:
    def test_the_spec_body(self) -> None:
        body = {"records": [{"key": "123-456", "actual": 437.2}]}

        assert parse_feedback(body) == [FeedbackRecord("123-456", 437.2)]

    def test_every_kind_of_actual_keeps_its_type(self) -> None:
        records = [
            {"key": "a", "actual": 3},
            {"key": "b", "actual": "cat"},
            {"key": "c", "actual": True},
            {"key": "d", "actual": [1.5, "x", False, 2]},
        ]

        parsed = parse_feedback({"records": records})

        assert [r.actual for r in parsed] == [3, "cat", True, (1.5, "x", False, 2)]
        assert type(parsed[0].actual) is int
        assert type(parsed[2].actual) is bool

    def test_an_integer_key_is_read_as_its_decimal_text(self) -> None:
        assert parse_feedback({"records": [{"key": 123, "actual": 1}]})[0].key == "123"

    def test_other_fields_are_ignored(self) -> None:
        body = {"records": [{"key": "k", "actual": 1, "at": "noon"}], "source": "batch"}

        assert parse_feedback(body) == [FeedbackRecord("k", 1)]

    def test_the_record_limit_itself_is_accepted(self) -> None:
        records = [{"key": str(i), "actual": i} for i in range(MAX_RECORDS)]

        assert len(parse_feedback({"records": records})) == MAX_RECORDS


class TestBodyShape:
    @pytest.mark.parametrize("body", [None, [], "records", 3])
    def test_a_body_that_is_not_an_object(self, body: object) -> None:
        error = invalid(body)

        assert error.field is None
        assert '{"records": [' in error.message

    @pytest.mark.parametrize(
        ("body", "fragment"),
        [
            ({}, "missing"),
            ({"records": None}, "expected a list of records, got null"),
            ({"records": {"key": "k"}}, "got an object"),
            ({"records": []}, "no records given"),
            (
                {"records": [{"key": str(i), "actual": 1} for i in range(MAX_RECORDS + 1)]},
                f"{MAX_RECORDS + 1} records; at most {MAX_RECORDS}",
            ),
        ],
    )
    def test_bad_records_lists(self, body: object, fragment: str) -> None:
        error = invalid(body)

        assert error.field == "records"
        assert fragment in error.message


class TestBadRecords:
    @pytest.mark.parametrize(
        ("record", "field", "fragment"),
        [
            ("k", "records[2]", "expected an object"),
            (None, "records[2]", "got null"),
            ({"actual": 1}, "records[2].key", "missing or null"),
            ({"key": None, "actual": 1}, "records[2].key", "missing or null"),
            ({"key": "", "actual": 1}, "records[2].key", "empty string"),
            ({"key": 1.5, "actual": 1}, "records[2].key", "got float 1.5"),
            ({"key": True, "actual": 1}, "records[2].key", "got bool True"),
            ({"key": ["a"], "actual": 1}, "records[2].key", "got a list"),
            ({"key": "k"}, "records[2].actual", "missing"),
            ({"key": "k", "actual": None}, "records[2].actual", "got null"),
            ({"key": "k", "actual": {"v": 1}}, "records[2].actual", "got an object"),
            ({"key": "k", "actual": float("nan")}, "records[2].actual", "finite number"),
            ({"key": "k", "actual": float("inf")}, "records[2].actual", "finite number"),
            ({"key": "k", "actual": 10**400}, "records[2].actual", "finite number"),
            ({"key": "k", "actual": []}, "records[2].actual", "at least one value"),
            ({"key": "k", "actual": [1, None]}, "records[2].actual[1]", "got null"),
            ({"key": "k", "actual": [[1]]}, "records[2].actual[0]", "got a list"),
            ({"key": "k", "actual": [1, -float("inf")]}, "records[2].actual[1]", "finite"),
        ],
    )
    def test_the_error_names_the_record_and_field(
        self, record: Any, field: str, fragment: str
    ) -> None:
        good = {"key": "ok", "actual": 1.0}

        error = invalid({"records": [good, good, record, good]})

        assert error.field == field
        assert fragment in error.message
        assert error.status == 422

    def test_the_first_bad_record_is_reported(self) -> None:
        records = [{"key": "a", "actual": 1}, {"key": "b"}, {"key": "", "actual": 2}]

        assert invalid({"records": records}).field == "records[1].actual"


class TestMisfit:
    @pytest.mark.parametrize(
        ("actual", "n_rows", "numbers"),
        [
            (1.5, 1, True),
            (3, 1, True),
            ((1.5,), 1, True),
            ((1.5, 2), 2, True),
            ("cat", 1, False),
            (True, 1, False),
            (("a", 1, False), 3, False),
        ],
    )
    def test_what_fits(self, actual: Actual, n_rows: int, numbers: bool) -> None:
        assert misfit(actual, n_rows, numbers=numbers) is None

    @pytest.mark.parametrize(
        ("actual", "n_rows", "numbers", "expected"),
        [
            (
                1.0,
                3,
                True,
                ("", "one value for a prediction of 3 rows: send a list of 3 values, one per row"),
            ),
            (
                (1.0,),
                2,
                False,
                (
                    "",
                    "a list of 1 value for a prediction of 2 rows: "
                    "send a list of 2 values, one per row",
                ),
            ),
            ((1.0, 2.0), 1, True, ("", "2 values for a prediction of 1 row: send one value")),
            (
                "437.2",
                1,
                True,
                ("", "expected a number (the prediction is a regression), got str '437.2'"),
            ),
            (
                False,
                1,
                True,
                ("", "expected a number (the prediction is a regression), got bool False"),
            ),
            (
                (1, 2, "x"),
                3,
                True,
                ("[2]", "expected a number (the prediction is a regression), got str 'x'"),
            ),
        ],
    )
    def test_what_does_not_fit_says_where_and_why(
        self, actual: Actual, n_rows: int, numbers: bool, expected: tuple[str, str]
    ) -> None:
        assert misfit(actual, n_rows, numbers=numbers) == expected

    def test_the_row_count_is_checked_before_the_values(self) -> None:
        assert misfit(("x",), 2, numbers=True) == (
            "",
            "a list of 1 value for a prediction of 2 rows: send a list of 2 values, one per row",
        )
