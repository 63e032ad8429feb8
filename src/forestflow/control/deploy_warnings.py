"""What a deploy warns about: settings that behave unlike the original ForestFlow's.

`PerformanceBasedValidity` always held in the original (a stub). Here it holds once the
servable's metric is reported and meets the threshold, so a release deployed with it takes
no traffic until then — and a contract whose only servables use it answers
`NoActiveServablesForContract` (422). The semantics stay; a deploy that relies on it says
so: the server logs the warning, and the deploy's answer carries it in `warnings`.
"""

from __future__ import annotations

from forestflow.domain.fqrv import FQRV
from forestflow.domain.settings import LogLevel, ServableSettings
from forestflow.domain.validity import ImmediatelyValid, NeverValid, PerformanceBasedValidity


def deploy_warnings(fqrv: FQRV, settings: ServableSettings) -> list[str]:
    """The warnings a deploy of `fqrv` with `settings` answers (none for most deploys)."""
    rules = settings.policy_settings.validity_policy
    performance = [rule for rule in rules if isinstance(rule, PerformanceBasedValidity)]
    # ImmediatelyValid and NeverValid decide alone: the performance rule changes nothing
    if not performance or any(isinstance(rule, ImmediatelyValid | NeverValid) for rule in rules):
        return []
    metrics = " and ".join(sorted({rule.metric for rule in performance}))
    contract, release = fqrv.contract, fqrv.release_version
    base = f"/{contract.organization}/{contract.project}/{contract.contract_number}"
    logging = settings.logging_settings
    if logging.log_level is not LogLevel.NONE and logging.key_features:
        source = (
            f"The metric comes from feedback (POST {base}/feedback) or from an evaluator "
            f"(PUT {base}/{release}/metrics)"
        )
    else:
        source = (
            f"The metric can only come from an evaluator (PUT {base}/{release}/metrics): "
            f"feedback (POST {base}/feedback) cannot join its predictions, which are not "
            "logged with keyFeatures"
        )
    return [
        f"{fqrv} uses PerformanceBasedValidity: it takes no traffic until its {metrics} metric "
        "is reported and meets the threshold, and while no servable of contract "
        f"{contract} is valid, scoring the contract answers NoActiveServablesForContract "
        f"(422). {source}. The original ForestFlow treated this rule as always valid "
        "(docs/migrating.md)."
    ]
