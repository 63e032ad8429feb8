"""Contract ids and FQRVs (Fully Qualified Release Versions): the names of everything served."""

from __future__ import annotations

import re
from dataclasses import dataclass

from forestflow.domain.codec import wire
from forestflow.errors import InvalidField

NAME_PATTERN = re.compile(r"[A-Za-z0-9_.-]+")
MAX_NAME_LENGTH = 128
"""Longest organization, project or release version: names become path segments."""
MAX_CONTRACT_NUMBER = 2**63 - 1


def check_name(value: str, field: str) -> str:
    """Return `value` if it is a valid ForestFlow name (`[A-Za-z0-9_.-]+`), else raise.

    `.` and `..` are refused too: names become directory names in the artifact cache.
    """
    if len(value) > MAX_NAME_LENGTH:
        raise InvalidField(
            f"name is {len(value)} characters long; the limit is {MAX_NAME_LENGTH}", field=field
        )
    if not NAME_PATTERN.fullmatch(value) or value in (".", ".."):
        raise InvalidField(
            f"{value!r} is not a valid name: use letters, digits, '_', '.' and '-' "
            "(but not '.' or '..' alone)",
            field=field,
        )
    return value


@dataclass(frozen=True, slots=True, order=True)
class Contract:
    """One use case: `(organization, project, contract_number)`. Requests address contracts."""

    organization: str
    project: str
    contract_number: int = wire("contractNumber")

    def __post_init__(self) -> None:
        check_name(self.organization, "organization")
        check_name(self.project, "project")
        if not 0 <= self.contract_number <= MAX_CONTRACT_NUMBER:
            raise InvalidField(
                f"must be an integer >= 0 and <= {MAX_CONTRACT_NUMBER}", field="contractNumber"
            )

    def __str__(self) -> str:
        return f"{self.organization}.{self.project}.{self.contract_number}"


@dataclass(frozen=True, slots=True, order=True)
class FQRV:
    """A contract plus a release version: the unique name of one servable."""

    contract: Contract
    release_version: str = wire("releaseVersion")

    def __post_init__(self) -> None:
        check_name(self.release_version, "releaseVersion")

    def __str__(self) -> str:
        return f"{self.contract}.{self.release_version}"
