"""`Contract` and `FQRV`: the names a client addresses, as the server prints and reads them."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def _check_name(value: str, what: str) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value) or value in (".", ".."):
        raise ValueError(f"{what} must match [A-Za-z0-9_.-]+, got {value!r}")
    return value


def _field(data: Mapping[str, Any], camel: str, snake: str) -> Any:
    """A field the server emits in camelCase (and reads in either form)."""
    return data[camel] if camel in data else data[snake]


@dataclass(frozen=True, slots=True)
class Contract:
    """A contract: one use case, `(organization, project, contract_number)`."""

    organization: str
    project: str
    contract_number: int

    def __post_init__(self) -> None:
        _check_name(self.organization, "organization")
        _check_name(self.project, "project")
        number = self.contract_number
        if isinstance(number, bool) or not isinstance(number, int) or number < 0:
            raise ValueError(f"contract_number must be an integer >= 0, got {number!r}")

    def __str__(self) -> str:
        return f"{self.organization}.{self.project}.{self.contract_number}"

    @property
    def path(self) -> str:
        """The contract's path in the API: `/org/project/n`."""
        return f"/{self.organization}/{self.project}/{self.contract_number}"

    def release(self, release_version: str) -> FQRV:
        """The FQRV of one release of this contract."""
        return FQRV(self, release_version)

    def to_json(self) -> dict[str, Any]:
        """The contract as the API writes it."""
        return {
            "organization": self.organization,
            "project": self.project,
            "contractNumber": self.contract_number,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Contract:
        """A contract as the API writes it."""
        number = _field(data, "contractNumber", "contract_number")
        return cls(data["organization"], data["project"], int(number))

    @classmethod
    def parse(cls, text: str | Contract) -> Contract:
        """`org/project/n`, or `org.project.n` when no name holds a dot."""
        if isinstance(text, Contract):
            return text
        parts = text.strip("/").split("/") if "/" in text else text.split(".")
        if len(parts) != 3 or not parts[2].isdigit():
            raise ValueError(
                f"expected a contract as <organization>/<project>/<contract_number>, got {text!r}"
            )
        return cls(parts[0], parts[1], int(parts[2]))


@dataclass(frozen=True, slots=True)
class FQRV:
    """A servable's fully qualified release version: its contract and release."""

    contract: Contract
    release_version: str

    def __post_init__(self) -> None:
        _check_name(self.release_version, "release_version")

    def __str__(self) -> str:
        return f"{self.contract}.{self.release_version}"

    @property
    def path(self) -> str:
        """The servable's path in the API: `/org/project/n/release`."""
        return f"{self.contract.path}/{self.release_version}"

    def to_json(self) -> dict[str, Any]:
        """The FQRV as the API writes it."""
        return {"contract": self.contract.to_json(), "releaseVersion": self.release_version}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FQRV:
        """An FQRV as the API writes it."""
        release = _field(data, "releaseVersion", "release_version")
        return cls(Contract.from_json(data["contract"]), release)

    @classmethod
    def parse(cls, text: str | FQRV) -> FQRV:
        """`org/project/n/release`, or `org.project.n.release` when no name holds a dot."""
        if isinstance(text, FQRV):
            return text
        parts = text.strip("/").split("/") if "/" in text else text.split(".")
        if len(parts) != 4 or not parts[2].isdigit():
            raise ValueError(
                "expected a servable as <organization>/<project>/<contract_number>/"
                f"<release_version>, got {text!r}"
            )
        return cls(Contract(parts[0], parts[1], int(parts[2])), parts[3])
