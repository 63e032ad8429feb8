"""Scikit-learn flavor: a fitted estimator or pipeline saved with skops, joblib or pickle.

Security: joblib, pickle and cloudpickle files are pickles, and a pickle runs code when it
is loaded. The server refuses them (422, before a byte of the file is unpickled) unless
the operator sets `security.allow_unsafe_formats` (`LoadPolicy.allow_unsafe_formats`):
only then are pickles loaded, and only from trusted sources. skops files run no code:
they may hold the types skops trusts by default plus those the operator lists in
`security.skops_trusted_types`. Trust is the server's to give: a request's
`skopsTrustedTypes` is refused, and MLflow's `skops_trusted_types` is ignored.

Loading, by `serializationFormat` — `"cloudpickle"`, `"pickle"` or `"skops"` (MLflow's
names) — or, when it is left out, by the file's content: a file that starts like a pickle
(the protocol byte `\x80`) is a pickle, whatever its name (`model.skops` included); else
a zip archive, or a `.skops` file, is a skops file; anything else is a pickle. skops files
are read with `skops.io.load(path, trusted=security.skops_trusted_types)`, and a file
holding other types is refused naming them. Pickles (when allowed) from `.joblib`, `.pkl`
and `.pickle` files with `joblib.load` (which also reads plain pickles and cloudpickle's
output), any other file with `pickle.load`. A `serializationFormat` only chooses the
reader: a pickle format is refused like any pickle, and `skops` never unpickles.

Inputs: named by the estimator's `feature_names_in_`, else by `featureNames`, else the
model takes the request's fields in request order (as many as `n_features_in_`). Every
input is Float64, except columns that a leading `ColumnTransformer` (or a leading
encoder) sends to an encoder fitted on strings (`OneHotEncoder`, `OrdinalEncoder`, any
step with string `categories_`): those are String. A float input accepts missing values
(NaN) when every step it passes through allows NaN (`get_tags(step).input_tags.allow_nan`)
up to an imputer that replaces it (`SimpleImputer`, ...), or up to and including the final
estimator (HistGradientBoosting, recent trees). The steps are walked one by one because a
`Pipeline`'s own tags do not say whether it takes NaN. String inputs never accept missing
values. Estimators fitted on a pandas DataFrame
(`feature_names_in_`) are given a DataFrame, so they need pandas.

Outputs: a classifier (it has `classes_`) gives `label`, the predicted class (String when
the classes are strings, else their numeric type), plus, when it has `predict_proba`, one
Float64 column per class named `str(class)` (`proba_<class>` if a class is called
`label`). A regressor gives `prediction`, or `prediction_0` … `prediction_<k-1>` for k
outputs.
"""

from __future__ import annotations

import importlib
import math
import pickle
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from forestflow.domain.frame import Column, Frame, TensorType
from forestflow.domain.signature import FeatureSpec, ModelSignature, conform
from forestflow.errors import (
    CreateServableRequestInvalidError,
    FlavorUnavailable,
    InferenceRequestInvalidError,
)
from forestflow.flavors.base import Flavor, LoadedModel, LoadPolicy, resolve_inside

_FIELD = "flavor.Sklearn.modelPath"
_FEATURE_NAMES_FIELD = "flavor.Sklearn.featureNames"
_FORMAT_FIELD = "flavor.Sklearn.serializationFormat"
_TRUSTED_FIELD = "flavor.Sklearn.skopsTrustedTypes"
_SKOPS = "skops"
_FORMATS = ("cloudpickle", "pickle", _SKOPS)
_JOBLIB_SUFFIXES = frozenset({".joblib", ".pkl", ".pickle"})
_PICKLE_START = b"\x80"  # the PROTO opcode that opens every pickle of protocol 2 or later
_TRUST = "pickled artifacts execute code when loaded: deploy only models from a trusted source"
_STRING_KINDS = "OUS"

# What happens to a NaN that enters a step: the step fails, passes it on, or replaces it.
_REFUSED, _KEPT, _REMOVED = "refused", "kept", "removed"


@dataclass(frozen=True, slots=True)
class SklearnFlavor(Flavor):
    """`{"Sklearn": {"modelPath": "model.skops", "featureNames": [...]}}`: a saved estimator.

    Also `serializationFormat` (`cloudpickle`, `pickle`, `skops`; default from the file's
    content). `skopsTrustedTypes` is decoded (so stored deploys still parse) but refused
    at load: trusted types are the server setting `security.skops_trusted_types`.
    """

    model_path: str
    feature_names: tuple[str, ...] = ()
    serialization_format: str | None = None
    skops_trusted_types: tuple[str, ...] = ()

    def load(self, directory: Path, policy: LoadPolicy) -> SklearnModel:
        """Read the estimator (pickles only if `policy` allows them), work out its signature."""
        if self.skops_trusted_types:
            raise CreateServableRequestInvalidError(
                "a request cannot choose which types a skops file may hold: they are the "
                "server setting security.skops_trusted_types "
                "(FORESTFLOW_SECURITY__SKOPS_TRUSTED_TYPES), set by the operator; leave "
                "skopsTrustedTypes out",
                field=_TRUSTED_FIELD,
            )
        path = resolve_inside(directory, self.model_path, field=_FIELD)
        if not path.is_file():
            raise CreateServableRequestInvalidError(
                f"{self.model_path!r} is a directory, not a model file", field=_FIELD
            )
        if self._format(path) == _SKOPS:
            estimator = _skops_load(path, self.model_path, policy.skops_trusted_types)
        else:
            policy.require_unsafe_formats(self._pickle_reason(), field=_FIELD)
            estimator = _unpickle(path, self.model_path)
        if not callable(getattr(estimator, "predict", None)):
            raise CreateServableRequestInvalidError(
                f"{self.model_path!r} holds a {type(estimator).__name__}, which has no predict "
                "method; save a fitted scikit-learn estimator or pipeline",
                field=_FIELD,
            )
        _single_threaded(estimator)
        names = _input_names(estimator, self.feature_names)
        pandas = _import("pandas") if hasattr(estimator, "feature_names_in_") else None
        return SklearnModel(estimator, names, pandas)

    def _format(self, path: Path) -> str:
        if self.serialization_format is None:
            return _content_format(path)
        chosen = self.serialization_format.lower()
        if chosen not in _FORMATS:
            raise CreateServableRequestInvalidError(
                f"unknown serialization format {self.serialization_format!r}; "
                f"expected one of {', '.join(_FORMATS)}",
                field=_FORMAT_FIELD,
            )
        return chosen

    def _pickle_reason(self) -> str:
        chosen = self.serialization_format
        given = f" (serializationFormat {chosen!r})" if chosen is not None else ""
        return f"{self.model_path!r} is a pickle{given}, and pickles run code when loaded"


def _content_format(path: Path) -> str:
    """`skops` or `pickle`, by what the file holds: its name alone is not trusted."""
    with path.open("rb") as file:
        start = file.read(len(_PICKLE_START))
    if start == _PICKLE_START:
        return "pickle"  # a pickle named model.skops is still a pickle
    # A skops file is a zip archive; a damaged one named .skops gets skops' own error.
    if path.suffix.lower() == ".skops" or zipfile.is_zipfile(path):
        return _SKOPS
    return "pickle"


class SklearnModel(LoadedModel):
    """A fitted estimator plus the mapping between frames and its `predict` arguments."""

    def __init__(self, estimator: Any, names: tuple[str, ...], pandas: ModuleType | None) -> None:
        self._estimator = estimator
        self._pandas = pandas
        width = len(names) or _n_features(estimator)
        self._columns = _column_specs(estimator, width)
        # Columns of a model that takes request fields by position and whose width is unknown.
        self._fallback = FeatureSpec(
            "", TensorType.Float64, accepts_missing=_chain_fate(_steps(estimator)) != _REFUSED
        )
        self._outputs = _Outputs.of(estimator)
        self.signature = ModelSignature(_named(names, self._columns), self._outputs.specs)

    def predict(self, frame: Frame) -> Frame:
        """Score a conformed frame with `predict` (and `predict_proba` for classifiers)."""
        if not self.signature.inputs:
            frame = self._conform_unnamed(frame)
        return Frame(self._outputs.compute(self._estimator, self._design_matrix(frame)))

    def _design_matrix(self, frame: Frame) -> Any:
        names = self.signature.input_names or frame.names
        block = frame.blocks[0] if len(frame.blocks) == 1 else None
        if block is not None and list(block.names) == names:
            # one matrix of the inputs in order (a conformed request): no per-column stacking
            if self._pandas is not None:
                return self._pandas.DataFrame(block.matrix, columns=names, copy=False)
            return block.matrix
        if self._pandas is not None:
            return self._pandas.DataFrame({name: frame[name] for name in names})
        return np.column_stack([frame[name] for name in names])

    def _conform_unnamed(self, frame: Frame) -> Frame:
        width = _n_features(self._estimator)
        if width is not None and len(frame.names) != width:
            raise InferenceRequestInvalidError(
                f"the model expects {width} features and carries no feature names, so it takes "
                f"the request's fields in request order; the request has {len(frame.names)} "
                "fields. Give featureNames at deploy time to match fields by name",
                field="schema",
            )
        columns = self._columns or [self._fallback] * len(frame.names)
        return conform(frame, ModelSignature(_named(frame.names, columns), outputs=()))


def _named(names: Sequence[str], columns: Sequence[FeatureSpec]) -> tuple[FeatureSpec, ...]:
    # An empty `names` gives no named inputs: the model takes request fields by position.
    return tuple(replace(spec, name=name) for name, spec in zip(names, columns, strict=bool(names)))


def _import(name: str, extra: str = "sklearn") -> ModuleType:
    # Imported on first load, never at module import: `import forestflow` stays light.
    try:
        return importlib.import_module(name)
    except ImportError:
        package = {"sklearn": "scikit-learn", "skops.io": "skops"}.get(name, name)
        raise FlavorUnavailable("Sklearn", extra, package) from None


def _one_line(error: BaseException, path: Path, relative: str) -> str:
    text = str(error).replace(str(path), relative).strip()
    return text.splitlines()[0][:300] if text else ""


def _skops_load(path: Path, relative: str, trusted: tuple[str, ...]) -> Any:
    _import("sklearn")  # so a missing scikit-learn reads as such, not as a skops error
    sio = _import("skops.io", extra="mlflow")
    try:
        untrusted = [name for name in sio.get_untrusted_types(file=path) if name not in trusted]
        if not untrusted:
            return sio.load(path, trusted=list(trusted))
    except Exception as error:  # a damaged file makes skops raise anything from zip to json
        reason = _one_line(error, path, relative)
        raise CreateServableRequestInvalidError(
            f"{relative!r} could not be loaded as a skops file "
            f"({type(error).__name__}{': ' + reason if reason else ''})",
            field=_FIELD,
        ) from None
    raise CreateServableRequestInvalidError(
        f"{relative!r} holds types skops does not trust: {', '.join(untrusted)}. Review "
        "them; if you trust the model's source, the operator lists them in the server "
        "setting security.skops_trusted_types (FORESTFLOW_SECURITY__SKOPS_TRUSTED_TYPES)",
        field=_FIELD,
    )


def _unpickle(path: Path, relative: str) -> Any:
    _import("sklearn")  # so a missing scikit-learn reads as such, not as an unpickling error
    joblib = _import("joblib")
    try:
        if path.suffix.lower() in _JOBLIB_SUFFIXES:
            return joblib.load(path)
        with path.open("rb") as file:
            return pickle.load(file)  # noqa: S301 - only when the operator allows pickles
    except Exception as error:  # unpickling can raise anything the pickled code raises
        reason = _one_line(error, path, relative)
        if not reason and isinstance(error, EOFError):
            reason = "the file ends too early"
        raise CreateServableRequestInvalidError(
            f"{relative!r} could not be unpickled as a scikit-learn model "
            f"({type(error).__name__}{': ' + reason if reason else ''}); note that {_TRUST}",
            field=_FIELD,
        ) from None


def _single_threaded(estimator: Any) -> None:
    # The server scores several models at once from a thread pool: estimators that fan out
    # to joblib workers (n_jobs) would oversubscribe the CPUs, and their result is the same.
    try:
        params = estimator.get_params(deep=True)
        jobs = {
            key: 1
            for key, value in params.items()
            if key.endswith("n_jobs") and value not in (None, 1)
        }
        if jobs:
            estimator.set_params(**jobs)
    except (AttributeError, TypeError, ValueError):  # not a scikit-learn estimator: leave it
        return


def _n_features(estimator: Any) -> int | None:
    width = getattr(estimator, "n_features_in_", None)
    return int(width) if isinstance(width, int | np.integer) else None


def _input_names(estimator: Any, feature_names: tuple[str, ...]) -> tuple[str, ...]:
    own = getattr(estimator, "feature_names_in_", None)
    if own is not None:
        names = tuple(str(name) for name in own)
        if feature_names and set(feature_names) != set(names):
            raise CreateServableRequestInvalidError(
                f"featureNames {list(feature_names)} differ from the names the model was fitted "
                f"with {list(names)}; leave featureNames out for this model",
                field=_FEATURE_NAMES_FIELD,
            )
        return names
    width = _n_features(estimator)
    if feature_names and width is not None and len(feature_names) != width:
        raise CreateServableRequestInvalidError(
            f"the model was fitted on {width} features but {len(feature_names)} featureNames "
            "were given",
            field=_FEATURE_NAMES_FIELD,
        )
    if len(set(feature_names)) != len(feature_names):
        raise CreateServableRequestInvalidError(
            "featureNames repeat a name", field=_FEATURE_NAMES_FIELD
        )
    return feature_names


def _steps(estimator: Any) -> list[Any]:
    """The estimator as a flat chain of steps (nested pipelines unrolled)."""
    steps = getattr(estimator, "steps", None)
    if isinstance(steps, list):
        return [leaf for _, step in steps for leaf in _steps(step)]
    return [estimator]


def _is_imputer(step: Any) -> bool:
    missing = getattr(step, "missing_values", None)
    return (
        type(step).__name__.endswith("Imputer")
        and isinstance(missing, float)
        and math.isnan(missing)
    )


def _allows_nan(step: Any) -> bool:
    utils = importlib.import_module("sklearn.utils")
    try:
        if hasattr(utils, "get_tags"):
            return bool(utils.get_tags(step).input_tags.allow_nan)
        return bool(step._get_tags().get("allow_nan", False))  # scikit-learn < 1.6
    except (AttributeError, TypeError, ValueError):  # not a scikit-learn estimator
        return False


def _fate(step: Any) -> str:
    if step is None or isinstance(step, str):  # "passthrough" keeps columns, "drop" drops them
        return _REMOVED if step == "drop" else _KEPT
    if hasattr(step, "transformers_"):  # a ColumnTransformer away from the head
        fates = {_chain_fate(_steps(branch)) for _, branch, _ in step.transformers_}
        return _REFUSED if _REFUSED in fates else _KEPT if _KEPT in fates else _REMOVED
    if not _allows_nan(step):
        return _REFUSED
    return _REMOVED if _is_imputer(step) else _KEPT


def _chain_fate(steps: Sequence[Any]) -> str:
    for step in steps:
        fate = _fate(step)
        if fate != _KEPT:
            return fate
    return _KEPT  # every step, the final estimator included, takes NaN


def _column_specs(estimator: Any, width: int | None) -> list[FeatureSpec]:
    """Per input column (by position): its type and whether it accepts missing values."""
    if width is None:
        return []
    steps = _steps(estimator)
    head = steps[0]
    if not hasattr(head, "transformers_"):
        fate = _chain_fate(steps)
        return _branch_specs(steps, width, fate != _REFUSED)
    specs = [FeatureSpec("", TensorType.Float64)] * width
    rest = _chain_fate(steps[1:])
    names = [str(name) for name in getattr(head, "feature_names_in_", ())]
    for _, branch, columns in head.transformers_:
        try:
            indices = _column_indices(columns, names, width)
        except (ValueError, TypeError, IndexError):  # a column spec we cannot map: keep Float64
            continue
        branch_fate = _chain_fate(_steps(branch))
        takes_nan = branch_fate == _REMOVED or (branch_fate == _KEPT and rest != _REFUSED)
        for index, spec in zip(
            indices, _branch_specs(_steps(branch), len(indices), takes_nan), strict=True
        ):
            specs[index] = spec
    return specs


def _column_indices(columns: Any, names: list[str], width: int) -> list[int]:
    if isinstance(columns, slice):
        return list(range(width))[columns]
    items = [columns] if isinstance(columns, str | int) else list(columns)
    if items and all(isinstance(item, bool | np.bool_) for item in items):
        return [index for index, keep in enumerate(items) if keep]
    return [names.index(item) if isinstance(item, str) else int(item) for item in items]


def _branch_specs(steps: Sequence[Any], width: int, takes_nan: bool) -> list[FeatureSpec]:
    strings = _string_columns(steps, width)
    return [
        FeatureSpec("", TensorType.String)
        if is_string
        else FeatureSpec("", TensorType.Float64, accepts_missing=takes_nan)
        for is_string in strings
    ]


def _string_columns(steps: Sequence[Any], width: int) -> list[bool]:
    """Which of the columns entering `steps` are strings, judged by the fitted encoders."""
    object_imputer = False
    for step in steps:
        categories = getattr(step, "categories_", None)
        if isinstance(categories, list) and len(categories) == width:
            return [np.asarray(values).dtype.kind in _STRING_KINDS for values in categories]
        if not _is_imputer(step):  # anything else may reshape the columns: stop looking
            break
        statistics = np.asarray(getattr(step, "statistics_", ()))
        object_imputer = object_imputer or statistics.dtype.kind in _STRING_KINDS
    return [object_imputer] * width


@dataclass(frozen=True, slots=True)
class _Outputs:
    """The response columns of a classifier or a regressor, and how to compute them."""

    specs: tuple[FeatureSpec, ...]
    classifier: bool
    probabilities: bool

    @classmethod
    def of(cls, estimator: Any) -> _Outputs:
        classes = getattr(estimator, "classes_", None)
        if classes is None:
            return cls(_regression_specs(estimator), classifier=False, probabilities=False)
        if isinstance(classes, list):
            raise CreateServableRequestInvalidError(
                "multi-output classifiers are not supported", field=_FIELD
            )
        classes = np.asarray(classes)
        label = FeatureSpec("label", _label_type(classes), description="predicted class")
        if not hasattr(estimator, "predict_proba"):
            return cls((label,), classifier=True, probabilities=False)
        names = [str(value) for value in classes]
        if "label" in names:
            names = [f"proba_{name}" for name in names]
        probabilities = tuple(
            FeatureSpec(name, TensorType.Float64, description=f"probability of class {value!r}")
            for name, value in zip(names, classes.tolist(), strict=True)
        )
        return cls((label, *probabilities), classifier=True, probabilities=True)

    def compute(self, estimator: Any, matrix: Any) -> dict[str, Column]:
        prediction = np.asarray(estimator.predict(matrix))
        if not self.classifier:
            return _regression_columns(prediction)
        if prediction.dtype.kind in "US":  # the wire shape for strings is an object column
            prediction = prediction.astype(object)
        columns: dict[str, Column] = {"label": prediction.reshape(-1)}
        if self.probabilities:
            proba = np.asarray(estimator.predict_proba(matrix), dtype=np.float64)
            columns.update((spec.name, proba[:, i]) for i, spec in enumerate(self.specs[1:]))
        return columns


def _label_type(classes: Column) -> TensorType:
    if classes.dtype.kind in _STRING_KINDS:
        return TensorType.String
    return TensorType.of_column(classes)


def _regression_specs(estimator: Any) -> tuple[FeatureSpec, ...]:
    final = _steps(estimator)[-1]
    outputs = getattr(final, "n_outputs_", None)
    coef = getattr(final, "coef_", None)
    if outputs is None and coef is not None and np.ndim(coef) == 2:
        outputs = np.shape(coef)[0]
    if not outputs or outputs == 1:
        return (FeatureSpec("prediction", TensorType.Float64, description="predicted value"),)
    return tuple(
        FeatureSpec(f"prediction_{i}", TensorType.Float64, description=f"predicted value {i}")
        for i in range(int(outputs))
    )


def _regression_columns(prediction: Column) -> dict[str, Column]:
    values = (
        prediction.astype(np.float64, copy=False) if prediction.dtype.kind in "biuf" else prediction
    )
    if values.ndim == 2 and values.shape[1] > 1:
        return {f"prediction_{i}": values[:, i] for i in range(values.shape[1])}
    return {"prediction": values.reshape(-1)}
