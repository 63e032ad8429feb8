from __future__ import annotations

import collections
import dataclasses
import enum
import json
import re
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given, settings

from forestflow.domain.codec import (
    decode,
    decode_changes,
    encode,
    enum_from_number,
    protobuf_numbers,
    wire,
)
from forestflow.domain.expiration import ExpirationPolicy, KeepLatest, KeepTopRanked
from forestflow.domain.fqrv import FQRV, Contract
from forestflow.domain.frame import TensorType
from forestflow.domain.metrics import Ordering, ServableMetrics
from forestflow.domain.phase_in import ImmediatePhaseIn, LinearTimeBasedPhaseIn, PhaseInPolicy
from forestflow.domain.routers import FairPhaseInPctBasedRouter, LatestPhaseInPctBasedRouter, Router
from forestflow.domain.settings import (
    ContractSettings,
    LoggingSettings,
    LogLevel,
    PolicySettings,
    ServableSettings,
)
from forestflow.domain.signature import FeatureSpec
from forestflow.domain.validity import (
    ImmediatelyValid,
    MinServedEventsBasedValidity,
    NeverValid,
    PerformanceBasedValidity,
    TimeBasedValidity,
    ValidityRule,
)
from forestflow.errors import InvalidField, UnknownName
from tests.builders import (
    contract_settings,
    fqrvs,
    make_fqrv,
    make_metrics,
    servable_metrics,
    servable_settings,
)

KEEP_2 = KeepLatest(2)


def field_of(error: pytest.ExceptionInfo[InvalidField]) -> str | None:
    return error.value.field


def snake(data: Any) -> Any:
    """`data` with every field name in snake_case (wrapper names and metric names kept)."""
    if isinstance(data, list):
        return [snake(item) for item in data]
    if not isinstance(data, dict):
        return data
    result = {}
    for key, value in data.items():
        if key[:1].isupper():  # a wrapper naming a kind, e.g. "KeepLatest"
            result[key] = snake(value)
        elif key == "performanceMetrics":
            result["performance_metrics"] = value
        else:
            result[re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", key).lower()] = snake(value)
    return result


class TestPolymorphicForms:
    @pytest.mark.parametrize(
        "data",
        [
            {"KeepLatest": {"servablesToKeep": 2}},
            {"type": "KeepLatest", "servablesToKeep": 2},
            {"keepLatest": {"servables_to_keep": 2}},
            {"type": "keeplatest", "servables_to_keep": 2},
        ],
    )
    def test_wrapper_and_type_forms(self, data: object) -> None:
        assert decode(ExpirationPolicy, data) == KEEP_2

    @pytest.mark.parametrize(
        "data",
        [
            "LatestPhaseInPctBasedRouter",
            {"LatestPhaseInPctBasedRouter": {}},
            {"LatestPhaseInPctBasedRouter": None},
            {"type": "LatestPhaseInPctBasedRouter"},
        ],
    )
    def test_bodiless_values_in_every_form(self, data: object) -> None:
        assert decode(Router, data) == LatestPhaseInPctBasedRouter()

    @pytest.mark.parametrize(
        ("kind", "value"),
        [
            (ValidityRule, ImmediatelyValid()),
            (ValidityRule, NeverValid()),
            (ValidityRule, TimeBasedValidity(1_700_000_000_000)),
            (ValidityRule, MinServedEventsBasedValidity(100)),
            (ValidityRule, PerformanceBasedValidity(0.8, "auc", Ordering.ASC)),
            (PhaseInPolicy, ImmediatePhaseIn()),
            (PhaseInPolicy, LinearTimeBasedPhaseIn(3600)),
            (ExpirationPolicy, KeepLatest(3)),
            (ExpirationPolicy, KeepTopRanked(2, "auc", Ordering.DESC)),
            (Router, FairPhaseInPctBasedRouter()),
            (Router, LatestPhaseInPctBasedRouter()),
        ],
    )
    def test_every_kind_in_both_forms(self, kind: type, value: object) -> None:
        wrapped = encode(value)
        ((name, body),) = wrapped.items()
        assert name == type(value).wire_name  # type: ignore[attr-defined]
        assert decode(kind, wrapped) == value
        assert decode(kind, {"type": name, **body}) == value
        assert decode(kind, {name: snake(body)}) == value

    def test_bare_name_needs_no_required_fields(self) -> None:
        with pytest.raises(InvalidField, match="field required") as caught:
            decode(ContractSettings, {"expirationPolicy": "KeepLatest"})
        assert field_of(caught) == "expirationPolicy.KeepLatest.servablesToKeep"

    def test_unknown_name_lists_the_known_ones(self) -> None:
        with pytest.raises(UnknownName) as caught:
            decode(ContractSettings, {"router": {"RoundRobin": {}}})
        assert field_of(caught) == "router"
        assert "RoundRobin" in caught.value.message
        assert "FairPhaseInPctBasedRouter, LatestPhaseInPctBasedRouter" in caught.value.message

    def test_unknown_name_in_a_list_names_the_index(self) -> None:
        body = {"validityPolicy": [{"ImmediatelyValid": {}}, {"type": "SometimesValid"}]}
        with pytest.raises(UnknownName) as caught:
            decode(PolicySettings, body)
        assert field_of(caught) == "validityPolicy[1]"
        for known in ValidityRule.registry.names():
            assert known in caught.value.message

    def test_unknown_name_at_the_top_level(self) -> None:
        with pytest.raises(UnknownName) as caught:
            decode(PhaseInPolicy, "Gradual")
        assert field_of(caught) is None
        assert "ImmediatePhaseIn, LinearTimeBasedPhaseIn" in caught.value.message

    def test_several_keys_without_type(self) -> None:
        with pytest.raises(InvalidField, match="single-key") as caught:
            decode(ContractSettings, {"router": {"FairPhaseInPctBasedRouter": {}, "x": {}}})
        assert field_of(caught) == "router"

    def test_type_must_be_a_string(self) -> None:
        with pytest.raises(InvalidField, match="expected a string") as caught:
            decode(ContractSettings, {"router": {"type": 3}})
        assert field_of(caught) == "router.type"

    @pytest.mark.parametrize("data", [3, ["KeepLatest"], True])
    def test_neither_object_nor_name(self, data: object) -> None:
        with pytest.raises(InvalidField, match="naming the expiration policy") as caught:
            decode(ContractSettings, {"expirationPolicy": data})
        assert field_of(caught) == "expirationPolicy"

    def test_wrapper_body_must_be_an_object(self) -> None:
        with pytest.raises(InvalidField, match="expected an object, got number") as caught:
            decode(ContractSettings, {"expirationPolicy": {"KeepLatest": 2}})
        assert field_of(caught) == "expirationPolicy.KeepLatest"


# Every domain value's fields as emitted (SPEC §3: camelCase, with the original's "MS" suffixes)
WIRE_NAMES: list[tuple[object, list[str]]] = [
    (make_fqrv().contract, ["organization", "project", "contractNumber"]),
    (make_fqrv(), ["contract", "releaseVersion"]),
    (
        make_metrics(
            created_at_ms=1,
            became_valid_at_ms=2,
            score_count=3,
            shade_count=4,
            current_phase_in_pct=5,
            performance_metrics={"auc": 0.5},
        ),
        [
            "fqrv",
            "createdAtMS",
            "becameValidAtMS",
            "scoreCount",
            "shadeCount",
            "currentPhaseInPct",
            "performanceMetrics",
            "shadowDroppedCount",
            "shadowFailedCount",
            "state",
            "failure",
        ],
    ),
    (TimeBasedValidity(5), ["validAfterMS"]),
    (MinServedEventsBasedValidity(5), ["validAfterMinServedEvents"]),
    (
        PerformanceBasedValidity(0.5, "mae", Ordering.ASC),
        ["minThreshold", "metric", "ordering", "minSamples"],
    ),
    (LinearTimeBasedPhaseIn(60), ["phaseInOverSecs"]),
    (KeepLatest(3), ["servablesToKeep"]),
    (
        KeepTopRanked(3, "auc", Ordering.ASC),
        ["servablesToKeep", "metricToEvaluate", "ordering", "minSamples"],
    ),
    (
        LoggingSettings(LogLevel.SAMPLE, ("reqid", "user"), "-", 0.5),
        ["logLevel", "keyFeatures", "keyFeaturesSeparator", "sampleRate"],
    ),
    (
        PolicySettings((TimeBasedValidity(5),), LinearTimeBasedPhaseIn(60)),
        ["validityPolicy", "phaseInPolicy"],
    ),
    (ServableSettings(), ["policySettings", "loggingSettings", "batchingSettings"]),
    (
        ContractSettings(KeepLatest(3), FairPhaseInPctBasedRouter()),
        ["expirationPolicy", "router", "missingValues"],
    ),
]


def kind_of(value: object) -> type | None:
    """The polymorphic kind (`ValidityRule`, `Router`, …) `value` belongs to, if any."""
    return next((base for base in type(value).__mro__ if "registry" in vars(base)), None)


def body_of(encoded: dict[str, Any], value: object) -> dict[str, Any]:
    """The fields of an encoded value, without the wrapper of a polymorphic one."""
    if kind_of(value) is None:
        return encoded
    ((name, body),) = encoded.items()
    assert name == type(value).wire_name  # type: ignore[attr-defined]
    return body  # type: ignore[no-any-return]


class TestFieldNames:
    @pytest.mark.parametrize(("value", "names"), WIRE_NAMES, ids=lambda v: type(v).__name__)
    def test_encode_emits_camel_case(self, value: object, names: list[str]) -> None:
        assert list(body_of(encode(value), value)) == names

    @pytest.mark.parametrize(("value", "names"), WIRE_NAMES, ids=lambda v: type(v).__name__)
    def test_decode_accepts_snake_case_for_every_field(
        self, value: object, names: list[str]
    ) -> None:
        fields = dataclasses.fields(value)  # type: ignore[arg-type]
        # an internal field (`ServableMetrics.last_valid`) is never sent, so never read
        snake_body = {
            f.name: encode(getattr(value, f.name)) for f in fields if not f.metadata.get("internal")
        }
        assert decode(type(value), snake_body) == value
        kind = kind_of(value)
        if kind is not None:
            assert decode(kind, {type(value).wire_name: snake_body}) == value  # type: ignore[attr-defined]

    @pytest.mark.parametrize(("value", "names"), WIRE_NAMES, ids=lambda v: type(v).__name__)
    def test_decode_accepts_camel_case_for_every_field(
        self, value: object, names: list[str]
    ) -> None:
        camel_body = body_of(encode(value), value)
        assert decode(type(value), camel_body) == value

    def test_serve_request_spelling(self) -> None:
        # the SPEC's serve-request example writes the FQRV in snake_case
        data = {
            "contract": {
                "organization": "samples",
                "project": "energy_output",
                "contract_number": 0,
            },
            "release_version": "v1",
        }
        assert decode(FQRV, data) == make_fqrv("v1")

    def test_metrics_emit_the_original_timestamp_names(self) -> None:
        encoded = encode(make_metrics(created_at_ms=10, became_valid_at_ms=None))
        assert encoded["createdAtMS"] == 10
        assert encoded["becameValidAtMS"] is None
        assert encoded["fqrv"] == {
            "contract": {
                "organization": "samples",
                "project": "energy_output",
                "contractNumber": 0,
            },
            "releaseVersion": "v1",
        }

    def test_unknown_field_names_its_path_and_the_allowed_ones(self) -> None:
        body = {"expirationPolicy": {"KeepLatest": {"servablesToKeep": 2, "keepForever": True}}}
        with pytest.raises(
            InvalidField, match="unknown field; allowed fields: servablesToKeep"
        ) as caught:
            decode(ContractSettings, body)
        assert field_of(caught) == "expirationPolicy.KeepLatest.keepForever"

    def test_unknown_field_at_the_top_level(self) -> None:
        with pytest.raises(InvalidField) as caught:
            decode(ContractSettings, {"routr": "FairPhaseInPctBasedRouter"})
        assert field_of(caught) == "routr"
        assert "expirationPolicy, router" in caught.value.message

    def test_unknown_field_of_a_bodiless_kind(self) -> None:
        with pytest.raises(InvalidField, match=r"allowed fields: \(none\)") as caught:
            decode(Router, {"FairPhaseInPctBasedRouter": {"weights": [1]}})
        assert field_of(caught) == "FairPhaseInPctBasedRouter.weights"

    def test_a_field_given_twice(self) -> None:
        with pytest.raises(InvalidField, match="given twice") as caught:
            decode(ExpirationPolicy, {"KeepLatest": {"servablesToKeep": 2, "servables_to_keep": 3}})
        assert field_of(caught) == "KeepLatest.servables_to_keep"

    def test_required_field_missing(self) -> None:
        with pytest.raises(InvalidField, match="field required") as caught:
            decode(
                FQRV, {"contract": {"organization": "o", "project": "p"}, "releaseVersion": "v1"}
            )
        assert field_of(caught) == "contract.contractNumber"

    def test_defaults_fill_absent_fields(self) -> None:
        assert decode(ContractSettings, {}) == ContractSettings()
        assert decode(ServableSettings, {}) == ServableSettings()
        assert decode(LoggingSettings, {"keyFeatures": ["reqid"]}) == LoggingSettings(
            key_features=("reqid",)
        )


class TestDefaults:
    def test_default_contract_settings_are_the_spec_ones(self) -> None:
        # SPEC §1.5: KeepLatest(2) + LatestPhaseInPctBasedRouter, in the §2.3 JSON form
        assert encode(ContractSettings()) == {
            "expirationPolicy": {"KeepLatest": {"servablesToKeep": 2}},
            "router": {"LatestPhaseInPctBasedRouter": {}},
            "missingValues": "accept",
        }

    def test_sample_rate_defaults_to_one_percent(self) -> None:
        assert decode(LoggingSettings, {"logLevel": "SAMPLE"}).sample_rate == 0.01


class TestValidationPaths:
    def test_servables_to_keep_below_one(self) -> None:
        with pytest.raises(InvalidField, match=">= 1") as caught:
            decode(ContractSettings, {"expirationPolicy": {"KeepLatest": {"servablesToKeep": 0}}})
        assert field_of(caught) == "expirationPolicy.KeepLatest.servablesToKeep"

    def test_servables_to_keep_below_one_in_type_form(self) -> None:
        body = {
            "expirationPolicy": {
                "type": "KeepTopRanked",
                "servablesToKeep": -1,
                "metricToEvaluate": "auc",
            }
        }
        with pytest.raises(InvalidField, match=">= 1") as caught:
            decode(ContractSettings, body)
        assert field_of(caught) == "expirationPolicy.servablesToKeep"

    def test_negative_phase_in_over_secs(self) -> None:
        body = {
            "policySettings": {"phaseInPolicy": {"LinearTimeBasedPhaseIn": {"phaseInOverSecs": -1}}}
        }
        with pytest.raises(InvalidField) as caught:
            decode(ServableSettings, body)
        assert (
            field_of(caught)
            == "policySettings.phaseInPolicy.LinearTimeBasedPhaseIn.phaseInOverSecs"
        )
        assert ">= 0" in caught.value.describe()

    def test_error_in_a_list_item(self) -> None:
        body = {
            "validityPolicy": [
                {"ImmediatelyValid": {}},
                {"TimeBasedValidity": {"validAfterMS": "soon"}},
            ]
        }
        with pytest.raises(InvalidField, match="expected an integer") as caught:
            decode(PolicySettings, body)
        assert field_of(caught) == "validityPolicy[1].TimeBasedValidity.validAfterMS"

    def test_negative_contract_number(self) -> None:
        with pytest.raises(InvalidField) as caught:
            decode(
                FQRV,
                {
                    "contract": {"organization": "o", "project": "p", "contractNumber": -1},
                    "releaseVersion": "v",
                },
            )
        assert field_of(caught) == "contract.contractNumber"

    def test_bad_name(self) -> None:
        with pytest.raises(InvalidField, match="not a valid name") as caught:
            decode(
                FQRV,
                {
                    "contract": {"organization": "o/x", "project": "p", "contractNumber": 0},
                    "releaseVersion": "v",
                },
            )
        assert field_of(caught) == "contract.organization"

    def test_sample_rate_out_of_range(self) -> None:
        with pytest.raises(InvalidField) as caught:
            decode(ServableSettings, {"loggingSettings": {"logLevel": "SAMPLE", "sampleRate": 2}})
        assert field_of(caught) == "loggingSettings.sampleRate"

    def test_top_level_validation_error_keeps_its_field(self) -> None:
        with pytest.raises(InvalidField) as caught:
            decode(Contract, {"organization": "o", "project": "p", "contractNumber": -3})
        assert field_of(caught) == "contractNumber"


class TestEnums:
    @pytest.mark.parametrize(
        "data", ["FULL", "full", "Full", {"type": "Full"}, {"type": "FULL"}, {"Full": {}}]
    )
    def test_log_level_forms(self, data: object) -> None:
        assert decode(LoggingSettings, {"logLevel": data}).log_level is LogLevel.FULL

    @pytest.mark.parametrize("data", ["ASC", "asc", {"type": "Asc"}])
    def test_ordering_forms(self, data: object) -> None:
        rule = decode(
            ValidityRule,
            {"PerformanceBasedValidity": {"minThreshold": 3, "metric": "mae", "ordering": data}},
        )
        assert rule == PerformanceBasedValidity(3.0, "mae", Ordering.ASC)

    @pytest.mark.parametrize("data", ["VERBOSE", 0, 4, True, 2.0, "2", None, {"type": "Loud"}])
    def test_unknown_value_lists_the_known_ones(self, data: object) -> None:
        with pytest.raises(InvalidField, match="expected one of NONE, FULL, SAMPLE") as caught:
            decode(ServableSettings, {"loggingSettings": {"logLevel": data}})
        assert field_of(caught) == "loggingSettings.logLevel"
        assert caught.value.message.endswith("(or their numbers 1, 2, 3)")

    @pytest.mark.parametrize(
        ("number", "level"), [(1, LogLevel.NONE), (2, LogLevel.FULL), (3, LogLevel.SAMPLE)]
    )
    def test_log_level_by_the_original_s_protobuf_number(
        self, number: int, level: LogLevel
    ) -> None:
        # LoggingSettings.proto: NONE = 1, FULL = 2, SAMPLE = 3
        assert decode(LoggingSettings, {"logLevel": number}).log_level is level

    @pytest.mark.parametrize(("number", "ordering"), [(1, Ordering.DESC), (2, Ordering.ASC)])
    def test_ordering_by_the_original_s_protobuf_number(
        self, number: int, ordering: Ordering
    ) -> None:
        # ExpirationPolicies.proto: DESC = 1, ASC = 2
        policy = decode(
            ExpirationPolicy,
            {
                "KeepTopRanked": {
                    "servablesToKeep": 1,
                    "metricToEvaluate": "mae",
                    "ordering": number,
                }
            },
        )
        assert policy == KeepTopRanked(1, "mae", ordering)

    def test_tensor_types_by_the_original_s_protobuf_numbers(self) -> None:
        # Tensor.proto: Float16 = 1 ... Bytes = 10, in this order
        names = [
            "Float16", "Float32", "Float64", "Int8", "Int16", "Int32", "Int64", "String", "Bool",
            "Bytes",
        ]  # fmt: skip
        assert [enum_from_number(TensorType, n) for n in range(1, 11)] == [
            TensorType[name] for name in names
        ]
        assert protobuf_numbers(TensorType) == tuple(range(1, 11))
        assert enum_from_number(TensorType, 11) is None
        assert enum_from_number(TensorType, "3") is None

    def test_an_enum_the_original_did_not_have_takes_no_numbers(self) -> None:
        class Colour(enum.Enum):
            RED = "RED"

        assert protobuf_numbers(Colour) == ()
        assert enum_from_number(Colour, 1) is None

    def test_encode_emits_the_upper_case_value(self) -> None:
        assert encode(LogLevel.SAMPLE) == "SAMPLE"
        assert encode(KeepTopRanked(1, "mae", Ordering.ASC))["KeepTopRanked"]["ordering"] == "ASC"


class TestScalars:
    def test_the_original_s_numbers_as_protobuf_json_renders_them(self) -> None:
        # protobuf JSON renders int64 as strings; the original's clients may send them so
        assert decode(
            ServableSettings,
            {
                "policySettings": {
                    "validityPolicy": [{"TimeBasedValidity": {"validAfterMS": "1700000000000"}}],
                    "phaseInPolicy": {"LinearTimeBasedPhaseIn": {"phaseInOverSecs": "3600"}},
                },
                "loggingSettings": {"logLevel": 2, "keyFeatures": ["reqid"]},
            },
        ).policy_settings == PolicySettings(
            (TimeBasedValidity(1_700_000_000_000),), LinearTimeBasedPhaseIn(3600.0)
        )
        settings = decode(
            ContractSettings, {"expirationPolicy": {"KeepLatest": {"servablesToKeep": "2"}}}
        )
        assert settings.expiration_policy == KeepLatest(2)
        fqrv = {
            "contract": {"organization": "o", "project": "p", "contract_number": "3"},
            "release_version": "v1",
        }
        assert decode(FQRV, fqrv) == FQRV(Contract("o", "p", 3), "v1")

    @pytest.mark.parametrize(
        ("data", "expected"), [("1700000000000", 1_700_000_000_000), (" 42 ", 42), (7.0, 7), (3, 3)]
    )
    def test_int64_as_string_or_whole_float(self, data: object, expected: int) -> None:
        rule = decode(ValidityRule, {"TimeBasedValidity": {"validAfterMS": data}})
        assert rule == TimeBasedValidity(expected)

    def test_negative_int_as_string(self) -> None:
        with pytest.raises(InvalidField, match=">= 0") as caught:
            decode(Contract, {"organization": "o", "project": "p", "contractNumber": "-1"})
        assert field_of(caught) == "contractNumber"

    @pytest.mark.parametrize(
        ("data", "message"),
        [
            (True, "boolean"),
            (2.5, "number"),
            ("two", "string"),
            (None, "null"),
            ([1], "array"),
            ({}, "object"),
        ],
    )
    def test_not_an_int(self, data: object, message: str) -> None:
        with pytest.raises(InvalidField, match=message) as caught:
            decode(ExpirationPolicy, {"KeepLatest": {"servablesToKeep": data}})
        assert field_of(caught) == "KeepLatest.servablesToKeep"

    # CODEC BUG (codec.py is not ours to edit; reported): `_decode_int` checks
    # `data.strip().lstrip("-").isdigit()`, which lets "--1" and Unicode digits such as "²"
    # through to `int()`, so a ValueError escapes instead of an InvalidField (a 500, not a 422).
    @pytest.mark.parametrize("data", ["--1", "²", "-"])
    def test_malformed_int_string_is_an_invalid_field(self, data: str) -> None:
        with pytest.raises(InvalidField, match="expected an integer") as caught:
            decode(ExpirationPolicy, {"KeepLatest": {"servablesToKeep": data}})
        assert field_of(caught) == "KeepLatest.servablesToKeep"

    @pytest.mark.parametrize(("data", "expected"), [(1, 1.0), ("0.25", 0.25), (0.5, 0.5)])
    def test_float_forms(self, data: object, expected: float) -> None:
        assert decode(
            PhaseInPolicy, {"LinearTimeBasedPhaseIn": {"phaseInOverSecs": data}}
        ) == LinearTimeBasedPhaseIn(expected)

    @pytest.mark.parametrize(
        ("data", "message"), [(False, "boolean"), ("fast", "string"), ([], "array")]
    )
    def test_not_a_float(self, data: object, message: str) -> None:
        with pytest.raises(InvalidField, match=message) as caught:
            decode(PhaseInPolicy, {"LinearTimeBasedPhaseIn": {"phaseInOverSecs": data}})
        assert field_of(caught) == "LinearTimeBasedPhaseIn.phaseInOverSecs"

    @pytest.mark.parametrize("data", ["NaN", "inf"])
    def test_non_finite_phase_in_window_is_refused(self, data: str) -> None:
        with pytest.raises(InvalidField) as caught:
            decode(PhaseInPolicy, {"LinearTimeBasedPhaseIn": {"phaseInOverSecs": data}})
        assert field_of(caught) == "LinearTimeBasedPhaseIn.phaseInOverSecs"

    # CODEC BUG (codec.py is not ours to edit; reported): `_decode_float` calls `float()` on any
    # int, and a JSON integer too large for a float (10**400) raises OverflowError instead of
    # an InvalidField naming the field.
    def test_huge_integer_for_a_float_is_an_invalid_field(self) -> None:
        with pytest.raises(InvalidField) as caught:
            decode(PhaseInPolicy, {"LinearTimeBasedPhaseIn": {"phaseInOverSecs": 10**400}})
        assert field_of(caught) == "LinearTimeBasedPhaseIn.phaseInOverSecs"

    @pytest.mark.parametrize(("data", "message"), [(3, "number"), (None, "null"), (["a"], "array")])
    def test_not_a_string(self, data: object, message: str) -> None:
        with pytest.raises(InvalidField, match=f"expected a string, got {message}") as caught:
            decode(
                FQRV,
                {
                    "contract": {"organization": "o", "project": "p", "contractNumber": 0},
                    "releaseVersion": data,
                },
            )
        assert field_of(caught) == "releaseVersion"

    def test_bool(self) -> None:
        spec = decode(FeatureSpec, {"name": "x", "type": "float64", "acceptsMissing": True})
        assert spec == FeatureSpec("x", TensorType.Float64, accepts_missing=True)
        with pytest.raises(InvalidField, match="expected true or false, got string") as caught:
            decode(FeatureSpec, {"name": "x", "type": "Float64", "accepts_missing": "yes"})
        assert field_of(caught) == "acceptsMissing"

    def test_optional_values(self) -> None:
        assert (
            decode(
                ServableMetrics, {**encode(make_metrics()), "becameValidAtMS": None}
            ).became_valid_at_ms
            is None
        )
        assert decode(FeatureSpec, {"name": "x", "type": "String", "domain": None}).domain is None
        assert decode(
            FeatureSpec, {"name": "x", "type": "String", "domain": ["a", "b"]}
        ).domain == ("a", "b")

    def test_null_for_a_required_value(self) -> None:
        with pytest.raises(InvalidField, match="got null") as caught:
            decode(ContractSettings, {"router": None})
        assert field_of(caught) == "router"
        with pytest.raises(InvalidField, match="must not be null") as caught:
            decode(EitherOr, {"value": None})
        assert field_of(caught) == "value"

    def test_list_expected(self) -> None:
        with pytest.raises(InvalidField, match="expected an array, got object") as caught:
            decode(PolicySettings, {"validityPolicy": {"ImmediatelyValid": {}}})
        assert field_of(caught) == "validityPolicy"

    def test_tuple_of_ints(self) -> None:
        assert decode(FeatureSpec, {"name": "x", "type": "Float32", "shape": [-1, "3"]}).shape == (
            -1,
            3,
        )

    def test_object_expected(self) -> None:
        with pytest.raises(InvalidField, match="expected an object, got array") as caught:
            decode(ServableMetrics, {**encode(make_metrics()), "performanceMetrics": [0.5]})
        assert field_of(caught) == "performanceMetrics"
        with pytest.raises(InvalidField, match="expected an object, got string"):
            decode(ContractSettings, "KeepLatest")

    def test_map_values_are_checked_with_their_key_in_the_path(self) -> None:
        with pytest.raises(InvalidField, match="expected a number") as caught:
            decode(
                ServableMetrics, {**encode(make_metrics()), "performanceMetrics": {"auc": "high"}}
            )
        assert field_of(caught) == "performanceMetrics.auc"


# --- test-only dataclasses for the codec's remaining type shapes -----------------------------


@dataclasses.dataclass(frozen=True)
class Loose:
    anything: Any
    counts: collections.OrderedDict[str, int] = dataclasses.field(
        default_factory=collections.OrderedDict
    )
    renamed: int = wire("renamedAsThis", default=0, metadata={"aliases": ("oldName",)})
    internal: int = dataclasses.field(default=0, metadata={"internal": True})
    derived: int = dataclasses.field(default=0, init=False)


@dataclasses.dataclass(frozen=True)
class EitherOr:
    value: int | str


@dataclasses.dataclass(frozen=True)
class ListOf:
    values: list[int]


class TestTypeShapes:
    def test_any_passes_through(self) -> None:
        assert decode(Loose, {"anything": {"a": [1, None]}}).anything == {"a": [1, None]}

    def test_mapping_subclass(self) -> None:
        assert decode(Loose, {"anything": 1, "counts": {"a": "2"}}).counts == {"a": 2}

    def test_wire_name_and_aliases(self) -> None:
        assert decode(Loose, {"anything": 1, "renamedAsThis": 5}).renamed == 5
        assert decode(Loose, {"anything": 1, "old_name": 6}).renamed == 6
        assert encode(Loose(1, collections.OrderedDict(a=1), 7)) == {
            "anything": 1,
            "counts": {"a": 1},
            "renamedAsThis": 7,
        }

    def test_internal_and_non_init_fields_are_not_on_the_wire(self) -> None:
        for name in ("internal", "derived"):
            with pytest.raises(
                InvalidField, match="unknown field; allowed fields: anything, counts, renamedAsThis"
            ):
                decode(Loose, {"anything": 1, name: 1})

    def test_unions_other_than_optional_are_a_programming_error(self) -> None:
        with pytest.raises(TypeError, match=re.escape("only `X | None` unions")):
            decode(EitherOr, {"value": 1})
        with pytest.raises(InvalidField, match="must not be null"):
            decode(EitherOr, {"value": None})

    def test_unsupported_types_are_a_programming_error(self) -> None:
        with pytest.raises(TypeError, match="cannot decode"):
            decode(ListOf, {"values": [1]})

    def test_encode_passes_plain_values_through(self) -> None:
        assert encode({"a": (1, [2.5, None]), 3: "x"}) == {"a": [1, [2.5, None]], "3": "x"}
        assert encode(KeepLatest) is KeepLatest  # a class is not a value to render


class TestRoundTrip:
    @settings(max_examples=150)
    @given(contract_settings)
    def test_contract_settings(self, value: ContractSettings) -> None:
        assert decode(ContractSettings, encode(value)) == value

    @settings(max_examples=150)
    @given(servable_settings)
    def test_servable_settings(self, value: ServableSettings) -> None:
        assert decode(ServableSettings, encode(value)) == value
        assert decode(ServableSettings, snake(encode(value))) == value

    @settings(max_examples=100)
    @given(servable_metrics)
    def test_servable_metrics_through_json_text(self, value: ServableMetrics) -> None:
        assert decode(ServableMetrics, json.loads(json.dumps(encode(value)))) == value
        assert decode(ServableMetrics, snake(encode(value))) == value

    @given(fqrvs)
    def test_fqrv(self, value: FQRV) -> None:
        assert decode(FQRV, encode(value)) == value

    @given(contract_settings)
    def test_type_form(self, value: ContractSettings) -> None:
        def type_form(wrapped: Mapping[str, Any]) -> dict[str, Any]:
            ((name, body),) = wrapped.items()
            return {"type": name, **body}

        encoded = encode(value)
        data = {
            key: type_form(wrapped) if isinstance(wrapped, Mapping) else wrapped
            for key, wrapped in encoded.items()
        }
        assert decode(ContractSettings, data) == value


class TestDecodeChanges:
    """`decode_changes`: the fields a partial body names, checked as `decode` checks them."""

    def test_only_the_named_fields_keyed_by_attribute(self) -> None:
        body = {"phase_in_policy": {"LinearTimeBasedPhaseIn": {"phaseInOverSecs": 60}}}
        assert decode_changes(PolicySettings, body) == {
            "phase_in_policy": LinearTimeBasedPhaseIn(60)
        }

    def test_an_empty_object_names_nothing(self) -> None:
        assert decode_changes(ContractSettings, {}) == {}

    def test_a_field_that_decode_requires_may_be_left_out(self) -> None:
        assert decode_changes(KeepTopRanked, {"servablesToKeep": 3}) == {"servables_to_keep": 3}

    @pytest.mark.parametrize(
        ("body", "field", "message"),
        [
            ({"logLevel": "LOUD"}, "logLevel", "unknown value"),
            ({"keyFeatures": "reqid"}, "keyFeatures", "expected an array"),
            ({"colour": "red"}, "colour", "unknown field"),
            ({"logLevel": "FULL", "log_level": "NONE"}, "log_level", "given twice"),
        ],
    )
    def test_a_named_field_is_checked(self, body: dict[str, Any], field: str, message: str) -> None:
        with pytest.raises(InvalidField, match=message) as caught:
            decode_changes(LoggingSettings, body)
        assert field_of(caught) == field

    def test_the_body_must_be_an_object(self) -> None:
        with pytest.raises(InvalidField, match="expected an object") as caught:
            decode_changes(LoggingSettings, [])
        assert field_of(caught) is None

    def test_rules_over_the_whole_value_wait_for_the_merge(self) -> None:
        # sampleRate's range is LoggingSettings' own rule: checked when the changes are applied
        assert decode_changes(LoggingSettings, {"sampleRate": 2}) == {"sample_rate": 2.0}
