"""XGBoost flavor: a native `xgboost.Booster` saved with `save_model`.

Loading: the file is read into memory and handed to xgboost as a buffer, whatever its
name: UBJSON (`.ubj`, the default), JSON, or the legacy binary format for xgboost < 3.1.
xgboost trusts what it reads, so a damaged file can crash or hang the whole server
instead of raising; what can be checked cheaply is checked first. An empty buffer (which
aborts xgboost) is refused; a UBJSON file is walked in Python to check every length
against the file, so a truncated or foreign file is refused; once loaded, every tree is
checked to be a tree (children inside it, none reached twice, split features known), so
a damaged link fails the deploy rather than a later request. A file damaged inside in
other ways (a flipped byte in a well-formed document) can still crash xgboost while it
loads: deploy artifacts whose integrity you trust. The booster scores on one thread
(`nthread=1`): the server runs models from its own thread pool. xgboost's prediction is
thread-safe for tree boosters; a `gblinear` booster scores one request at a time.

Inputs: named by the booster's `feature_names`, else by `featureNames`, else the model
takes the request's fields in request order (as many as `num_features()`). Every input
is Float64 and accepts missing values: a `null` or a left-out field is NaN, xgboost's
missing value. A categorical feature (type `c`) of a model trained on integer codes takes
the code as a number; a model that stores its categories (trained on pandas or arrow
categorical columns, xgboost ≥ 3.1) is refused, since clients would have to know the
codes behind each category.

Outputs, by the learner's objective:
- `binary:logistic` → `label` (Int64: 1 when P(class 1) > 0.5, as `XGBClassifier`) plus
  `0` and `1`, the class probabilities;
- `multi:softprob` → `label` (the most probable class index) plus `0` … `k-1`;
- `multi:softmax`, `binary:hinge` → `label` only;
- anything else (`reg:*`, `count:*`, `survival:*`, `rank:*`, `binary:logitraw`, …) →
  `prediction`, or `prediction_0` … `prediction_<k-1>` for k outputs (multi-target,
  several quantiles, multi-label `binary:logistic`).
The number of outputs is read from a probe prediction at load time. xgboost computes in
float32; the values are widened to Float64, which is exact, so the response carries
xgboost's own numbers in the same type as the other flavors' probabilities.
"""

from __future__ import annotations

import importlib
import json
import re
import struct
import threading
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
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
from forestflow.flavors.booster_outputs import BoosterOutputs, OutputKind

_FIELD = "flavor.XGBoost.modelPath"
_FEATURE_NAMES_FIELD = "flavor.XGBoost.featureNames"
_NUMERIC_TYPES = frozenset({"q", "float", "int", "i"})
_CLASSIFIERS: dict[str, OutputKind] = {"binary:logistic": "binary", "multi:softprob": "classes"}
_LABEL_ONLY = frozenset({"multi:softmax", "binary:hinge"})
# UBJSON markers of fixed-size values (their payload size), and of integers (their layout).
_UBJ_FIXED = {
    **dict.fromkeys(b"ZNTF", 0),
    **dict.fromkeys(b"iUC", 1),
    ord("I"): 2,
    **dict.fromkeys(b"ld", 4),
    **dict.fromkeys(b"LD", 8),
}
_UBJ_INTEGERS = {ord("i"): ">b", ord("U"): ">B", ord("I"): ">h", ord("l"): ">i", ord("L"): ">q"}
_UBJ_MAX_DEPTH = 64
# "[23:40:12] /workspace/src/common/json.cc:409: " in front of every xgboost error message
_LOG_PREFIX = re.compile(r"^\[[\d:]+\]\s+\S+:\d+:\s*")


@dataclass(frozen=True, slots=True)
class XGBoostFlavor(Flavor):
    """`{"XGBoost": {"modelPath": "model.ubj", "featureNames": [...]}}`: a native Booster."""

    model_path: str
    feature_names: tuple[str, ...] = ()

    def load(self, directory: Path, policy: LoadPolicy) -> XGBoostModel:
        """Read the booster (checked well-formed first) and work out its signature.

        Any `policy` allows it: xgboost's own formats are data, never unpickled.
        """
        path = resolve_inside(directory, self.model_path, field=_FIELD)
        if not path.is_file():
            raise CreateServableRequestInvalidError(
                f"{self.model_path!r} is a directory, not an XGBoost model file", field=_FIELD
            )
        xgboost = _import_xgboost()
        booster = _read_booster(xgboost, path.read_bytes(), self.model_path)
        _check_trees(booster, self.model_path)
        _check_feature_types(booster)
        names = _input_names(booster, self.feature_names)
        objective, linear = _learner(booster, self.model_path)
        outputs = _plan_outputs(xgboost, booster, objective, self.model_path)
        return XGBoostModel(xgboost, booster, names, outputs, linear=linear)


class XGBoostModel(LoadedModel):
    """A booster plus the mapping between frames and its feature matrix."""

    def __init__(
        self,
        xgboost: ModuleType,
        booster: Any,
        names: tuple[str, ...],
        outputs: BoosterOutputs,
        *,
        linear: bool = False,
    ) -> None:
        self._xgboost = xgboost
        self._booster: Any = booster
        # xgboost documents prediction as thread-safe for tree boosters, not for gblinear
        self._guard: AbstractContextManager[Any] = threading.Lock() if linear else nullcontext()
        self._width = int(booster.num_features())
        self._outputs = outputs
        types = _types(booster)
        inputs = tuple(
            _input_spec(name, kind) for name, kind in zip(names, types, strict=bool(names))
        )
        self.signature = ModelSignature(inputs, outputs.specs)

    def predict(self, frame: Frame) -> Frame:
        """Score a conformed frame through a DMatrix (NaN = missing)."""
        if self._booster is None:
            raise RuntimeError("the XGBoost model was closed")
        if not self.signature.inputs:
            frame = self._conform_unnamed(frame)
        names = self.signature.input_names or frame.names
        matrix = frame.matrix(names, np.dtype(np.float64))
        with self._guard:
            raw = _predict(self._xgboost, self._booster, matrix)
        return Frame(self._outputs.columns(raw))

    def close(self) -> None:
        """Drop the booster so xgboost frees its memory."""
        self._booster = None

    def _conform_unnamed(self, frame: Frame) -> Frame:
        if len(frame.names) != self._width:
            raise InferenceRequestInvalidError(
                f"the model expects {self._width} features and carries no feature names, so "
                f"it takes the request's fields in request order; the request has "
                f"{len(frame.names)} fields. Give featureNames at deploy time to match fields "
                "by name",
                field="schema",
            )
        specs = tuple(_input_spec(name, None) for name in frame.names)
        return conform(frame, ModelSignature(specs, outputs=()))


def _predict(xgboost: ModuleType, booster: Any, matrix: Column) -> Column:
    # A DMatrix rather than inplace_predict, which gblinear boosters do not support;
    # Booster.predict is thread-safe. Column order is ours: names are not checked again.
    data = xgboost.DMatrix(matrix, missing=np.nan, nthread=1)
    return np.asarray(booster.predict(data, validate_features=False))


def _import_xgboost() -> ModuleType:
    # Imported on first load, never at module import: `import forestflow` stays light.
    try:
        return importlib.import_module("xgboost")
    except ImportError:
        raise FlavorUnavailable("XGBoost", "xgboost", "xgboost") from None


def _invalid(relative: str, reason: str) -> CreateServableRequestInvalidError:
    return CreateServableRequestInvalidError(
        f"{relative!r} is not a valid XGBoost model (UBJSON, JSON or legacy binary, as "
        f"written by Booster.save_model): {reason}",
        field=_FIELD,
    )


def _read_booster(xgboost: ModuleType, data: bytes, relative: str) -> Any:
    if len(data) < 2:  # xgboost aborts the process on an empty buffer
        raise _invalid(relative, "the file is empty" if not data else "the file is too short")
    if data[:1] == b"{" and chr(data[1]).isalpha():  # how xgboost itself tells UBJSON
        try:
            _UbjsonChecker(data).check()
        except ValueError as error:
            raise _invalid(relative, f"malformed UBJSON ({error})") from None
    booster = xgboost.Booster()
    try:
        booster.load_model(bytearray(data))
        booster.set_param({"nthread": 1})
        # decoded once here, so that names or types that are not UTF-8 read as a bad file
        _ = booster.num_features(), booster.feature_names, booster.feature_types
    except (xgboost.core.XGBoostError, ValueError, MemoryError) as error:
        raise _invalid(relative, _reason(error)) from None
    return booster


def _reason(error: Exception) -> str:
    # One line, without xgboost's timestamp, source path and stack trace.
    text = _LOG_PREFIX.sub("", str(error).strip())
    return text.splitlines()[0][:300] if text else type(error).__name__


class _UbjsonChecker:
    """Walks a UBJSON document checking every length against the buffer, building nothing.

    The markers are those of the UBJSON spec (draft 12) that xgboost reads and writes,
    including the optimized containers (`[$d#L<count>` typed arrays).
    """

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def check(self) -> None:
        self._value(self._byte(), depth=0)
        if self._pos != len(self._data):
            raise ValueError(f"{len(self._data) - self._pos} stray bytes after the document")

    def _skip(self, count: int) -> None:
        if count < 0 or self._pos + count > len(self._data):
            raise ValueError(f"the file ends inside a value at byte {self._pos}")
        self._pos += count

    def _byte(self) -> int:
        self._skip(1)
        return self._data[self._pos - 1]

    def _integer(self, marker: int) -> int:
        layout = _UBJ_INTEGERS.get(marker)
        if layout is None:
            raise ValueError(f"expected a length at byte {self._pos - 1}, got {chr(marker)!r}")
        start = self._pos
        self._skip(struct.calcsize(layout))
        value: int = struct.unpack_from(layout, self._data, start)[0]
        return value

    def _value(self, marker: int, depth: int) -> None:
        if marker in _UBJ_FIXED:
            self._skip(_UBJ_FIXED[marker])
        elif marker in b"SH":  # string, high-precision number: a length, then the bytes
            self._skip(self._integer(self._byte()))
        elif marker in b"[{":
            if depth >= _UBJ_MAX_DEPTH:
                raise ValueError("containers nested too deeply")
            self._container(keyed=marker == ord("{"), depth=depth + 1)
        else:
            raise ValueError(f"unknown marker {chr(marker)!r} at byte {self._pos - 1}")

    def _container(self, *, keyed: bool, depth: int) -> None:
        marker, typed = self._byte(), None
        if marker == ord("$"):
            typed, marker = self._byte(), self._byte()
            if marker != ord("#"):
                raise ValueError(f"a typed container without a count at byte {self._pos - 1}")
        if marker == ord("#"):
            count = self._integer(self._byte())
            if count < 0:
                raise ValueError(f"a negative count at byte {self._pos - 1}")
            if typed in _UBJ_FIXED and not keyed:  # a typed numeric array: one skip
                self._skip(count * _UBJ_FIXED[typed])
                return
            for _ in range(count):  # each item takes at least one byte: bounded by the file
                if keyed:
                    self._skip(self._integer(self._byte()))
                self._value(typed if typed is not None else self._byte(), depth)
            return
        closing = ord("}") if keyed else ord("]")
        while marker != closing:
            if keyed:
                self._skip(self._integer(marker))
                marker = self._byte()
            self._value(marker, depth)
            marker = self._byte()


def _learner(booster: Any, relative: str) -> tuple[str, bool]:
    """The learner's objective, and whether the booster is linear (`gblinear`)."""
    try:
        learner = json.loads(booster.save_config())["learner"]
        return str(learner["objective"]["name"]), learner["gradient_booster"]["name"] == "gblinear"
    except (KeyError, TypeError, ValueError) as error:
        raise _invalid(relative, f"its configuration is unreadable ({error!r})") from None


def _check_trees(booster: Any, relative: str) -> None:
    """Refuse trees whose node links leave the tree or loop: xgboost follows them blindly."""
    try:
        learner = json.loads(bytes(booster.save_raw(raw_format="json")))["learner"]
        gbm = learner["gradient_booster"]
        trees = gbm.get("gbtree", gbm)["model"].get("trees", [])  # dart wraps a gbtree
        width = int(learner["learner_model_param"]["num_feature"])
    except (KeyError, TypeError, ValueError, AttributeError):
        return  # a layout this check does not know (gblinear has no trees): nothing to check
    for index, tree in enumerate(trees):
        try:
            problem = _tree_problem(tree, width)
        except (KeyError, TypeError, ValueError):
            problem = "its node arrays are malformed"
        if problem:
            raise _invalid(relative, f"tree {index} is damaged: {problem}")


def _tree_problem(tree: dict[str, Any], width: int) -> str | None:
    if "left_children" not in tree:
        return None  # not the RegTree layout this check knows
    size = int(tree["tree_param"]["num_nodes"])
    left = np.asarray(tree["left_children"], dtype=np.int64)
    right = np.asarray(tree["right_children"], dtype=np.int64)
    features = np.asarray(tree["split_indices"], dtype=np.int64)
    if not left.size == right.size == features.size == size:
        return f"its node arrays do not all have {size} entries"
    split = left != -1
    children = np.concatenate([left[split], right[split]])
    # Every child inside the tree, none of them the root, none with two parents: the walk
    # from the root ends at a leaf.
    if children.size and (
        children.min() < 1 or children.max() >= size or np.unique(children).size < children.size
    ):
        return "a node points outside the tree or shares a child"
    if np.any((features[split] < 0) | (features[split] >= width)):
        return f"a split uses a feature outside 0..{width - 1}"
    nodes, starts, sizes = (
        np.asarray(tree.get(key, ()), dtype=np.int64)
        for key in ("categories_nodes", "categories_segments", "categories_sizes")
    )
    categories = len(tree.get("categories", ()))
    if not nodes.size == starts.size == sizes.size or np.any(
        (nodes < 0) | (nodes >= size) | (starts < 0) | (sizes < 0) | (starts + sizes > categories)
    ):
        return "its categorical splits point outside the category table"
    return None


def _types(booster: Any) -> list[str | None]:
    types = booster.feature_types
    return [str(kind) for kind in types] if types else [None] * int(booster.num_features())


def _check_feature_types(booster: Any) -> None:
    types = _types(booster)
    unknown = sorted({kind for kind in types if kind and kind not in _NUMERIC_TYPES | {"c"}})
    if unknown:
        raise CreateServableRequestInvalidError(
            f"the model has features of unsupported types {unknown}", field=_FIELD
        )
    if "c" not in types or not hasattr(booster, "get_categories"):
        return  # before xgboost 3.1 categories were never stored: features take codes
    if booster.get_categories().empty():
        return
    names = booster.feature_names or [f"f{i}" for i in range(len(types))]
    categorical = [name for name, kind in zip(names, types, strict=True) if kind == "c"]
    raise CreateServableRequestInvalidError(
        f"the model stores the categories of its categorical features {categorical} (it was "
        "trained on pandas or arrow categorical columns); the XGBoost flavor takes numbers "
        "only: retrain it on integer category codes",
        field=_FIELD,
    )


def _input_names(booster: Any, feature_names: tuple[str, ...]) -> tuple[str, ...]:
    own = booster.feature_names
    if own:
        if feature_names and set(feature_names) != set(own):
            raise CreateServableRequestInvalidError(
                f"featureNames {list(feature_names)} differ from the booster's own feature "
                f"names {list(own)}; leave featureNames out for this model",
                field=_FEATURE_NAMES_FIELD,
            )
        return tuple(own)
    width = int(booster.num_features())
    if feature_names and len(feature_names) != width:
        raise CreateServableRequestInvalidError(
            f"the booster has {width} features but {len(feature_names)} featureNames were given",
            field=_FEATURE_NAMES_FIELD,
        )
    if len(set(feature_names)) != len(feature_names):
        raise CreateServableRequestInvalidError(
            "featureNames repeat a name", field=_FEATURE_NAMES_FIELD
        )
    return feature_names


def _input_spec(name: str, kind: str | None) -> FeatureSpec:
    description = "XGBoost feature" + (f" of type {kind!r}" if kind else "")
    if kind == "c":
        description = "XGBoost categorical feature: send the integer category code"
    return FeatureSpec(name, TensorType.Float64, description=description, accepts_missing=True)


def _plan_outputs(
    xgboost: ModuleType, booster: Any, objective: str, relative: str
) -> BoosterOutputs:
    """The response columns for the booster's objective, probed with one all-missing row."""
    try:
        probe = _predict(xgboost, booster, np.full((1, booster.num_features()), np.nan))
    except Exception as error:  # a booster that loads but cannot score: refuse it now
        raise _invalid(relative, f"it cannot score: {_reason(error)}") from None
    width = 1 if probe.ndim == 1 else int(probe.shape[1])
    kind: OutputKind = (
        "label" if objective in _LABEL_ONLY else _CLASSIFIERS.get(objective, "values")
    )
    if kind == "binary" and width != 1:  # multi-label: one probability per target
        kind = "values"
    return BoosterOutputs.of(kind, width, objective)
