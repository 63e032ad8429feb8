"""The error tree's wire names, as a client maps them back (errors.error_kinds)."""

from __future__ import annotations

import inspect

from forestflow import errors
from forestflow.errors import (
    CreateServableRequestInvalidError,
    ForestFlowError,
    InvalidField,
    ModelFailedError,
    error_kinds,
)


def tree() -> list[type[ForestFlowError]]:
    """Every error class of the errors module."""
    return [
        kind
        for _, kind in inspect.getmembers(errors, inspect.isclass)
        if issubclass(kind, ForestFlowError) and kind.__module__ == errors.__name__
    ]


class TestErrorKinds:
    def test_every_wire_name_of_the_tree_maps_to_a_class_answering_it(self) -> None:
        kinds = error_kinds()

        assert {kind.wire_name for kind in tree()} == set(kinds)
        for name, kind in kinds.items():
            assert kind.wire_name == name
            assert "wire_name" in vars(kind), kind  # declares it: not a narrowing subclass

    def test_a_subclass_that_only_words_its_message_answers_as_its_parent(self) -> None:
        kinds = error_kinds()

        assert kinds["InvalidRequestError"] is InvalidField  # not UnknownName
        assert kinds["CreateServableRequestInvalidError"] is CreateServableRequestInvalidError
        assert kinds["UnknownServableError"] is ModelFailedError  # the root's name

    def test_the_frameworks_own_answers_have_classes(self) -> None:
        kinds = error_kinds()

        assert (kinds["NotFound"].status, kinds["HttpError"].status) == (404, 405)
        assert kinds["InternalServerError"].status == 500
