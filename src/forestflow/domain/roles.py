"""Roles and what they may do (docs/security.md): pure rules, no I/O.

Every route needs one `Permission`; a token's `Role` grants a set of them. The
`shadow-deployer` role is narrower than its permissions say: it may deploy only
servables that can never serve (`NeverValid`) and change only the servables it deployed.
Those two checks need the request and the servable's owner, so they are functions here
that the transports call once they have decoded the request.
"""

from __future__ import annotations

from enum import StrEnum

from forestflow.domain.settings import PolicySettings
from forestflow.domain.validity import NeverValid


class Permission(StrEnum):
    """What a route does, as far as authorisation is concerned."""

    READ = "read"
    """Metadata, settings, lists, stats and metrics."""
    SCORE = "score"
    """Inference on any transport."""
    DEPLOY = "deploy"
    """Servables: deploy, change their settings and metrics, delete."""
    MANAGE_CONTRACTS = "manage-contracts"
    """Contracts: create, update, delete; feedback, which moves every servable's metrics."""
    READ_HISTORY = "read-history"
    """The audit trail of control commands."""
    ADMIN = "admin"
    """Tokens."""


class Role(StrEnum):
    """A token's role (SPEC §7)."""

    ADMIN = "admin"
    DEPLOYER = "deployer"
    SCORER = "scorer"
    SHADOW_DEPLOYER = "shadow-deployer"


GRANTS: dict[Role, frozenset[Permission]] = {
    Role.ADMIN: frozenset(Permission),
    Role.DEPLOYER: frozenset(
        {
            Permission.READ,
            Permission.SCORE,
            Permission.DEPLOY,
            Permission.MANAGE_CONTRACTS,
            Permission.READ_HISTORY,
        }
    ),
    Role.SCORER: frozenset({Permission.READ, Permission.SCORE}),
    Role.SHADOW_DEPLOYER: frozenset({Permission.READ, Permission.SCORE, Permission.DEPLOY}),
}
"""What each role may do. The shadow deployer's DEPLOY is narrowed by the rules below."""


def allows(role: Role, permission: Permission) -> bool:
    """Whether `role` grants `permission`."""
    return permission in GRANTS[role]


def may_only_shadow(role: Role) -> bool:
    """Whether deploys of `role` must stay `NeverValid` and it may touch only its own."""
    return role is Role.SHADOW_DEPLOYER


def never_serves(policy: PolicySettings) -> bool:
    """Whether a policy keeps its servable out of traffic for good (it holds `NeverValid`)."""
    return any(isinstance(rule, NeverValid) for rule in policy.validity_policy)
