"""LightGBM flavor: a native `lightgbm.Booster` saved as text (`save_model`, `model.txt`).

Loading: the file is read as text and given to LightGBM as a model string, whatever its
name. LightGBM trusts what it reads, so a damaged file can crash or hang the whole server
instead of raising (an exception escapes its parallel tree parser; a cut parameter line
is read past its end; a tree whose links loop makes prediction spin forever). The text is
therefore checked first: it must start with `tree`, hold every tree up to `end of trees`,
and close its `parameters:` section with well-formed lines. The `tree_sizes` line is
dropped so that LightGBM parses the trees one after the other, raising on a malformed
tree; the number of trees it loaded must equal the file's, in whole iterations; and every
tree must be a tree (each node reached once from the root, split features and category
tables inside their bounds). The booster scores on one thread (`num_threads=1`): the
server runs models from its own thread pool; LightGBM's prediction is thread-safe.

Inputs: named by `booster.feature_name()`, else by `featureNames`, else the model takes the
request's fields in request order (as many as `num_feature()`). LightGBM invents the names
`Column_0`, `Column_1`, … for a model trained without names: those count as no names.
LightGBM replaces spaces in names with `_`, so `featureNames` that differ from the model's
names only by those spaces (an MLflow signature) name the inputs. Every input is Float64
and accepts missing values (NaN). A categorical feature trained on integer codes takes the
code as a number; a model trained on pandas categorical columns (`pandas_categorical` in
the file) is refused, since the file does not say which columns those categories belong to.

Outputs, by the objective in the file's header:
- `binary` → `label` (Int64: 1 when P(class 1) > 0.5, as `LGBMClassifier`) plus `0` and
  `1`, the class probabilities;
- `multiclass`, `multiclassova` → `label` (the most probable class index) plus `0` … `k-1`;
- anything else (regression objectives, `cross_entropy`, ranking, a custom objective) →
  `prediction` (Float64), or `prediction_0` … `prediction_<k-1>` for k outputs.
"""

from __future__ import annotations

import importlib
import re
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

_FIELD = "flavor.LightGBM.modelPath"
_FEATURE_NAMES_FIELD = "flavor.LightGBM.featureNames"
_CLASSIFIERS: dict[str, OutputKind] = {
    "binary": "binary",
    "multiclass": "classes",
    "multiclassova": "classes",
}
_TREE_LINE = re.compile(r"^Tree=\d+\r?$", re.M)
_TREE_SIZES_LINE = re.compile(r"^tree_sizes=.*(?:\r?\n)?", re.M)
_PARAMETER_LINE = re.compile(r"^\[[^\]:\s]+: .*\]$")
# " at /__w/LightGBM/.../common.h, line 1173 ." after LightGBM's check failures
_SOURCE_SUFFIX = re.compile(r"\s+at \S+, line \d+\s*\.?$")
_INVENTED_NAME = "Column_{}"


@dataclass(frozen=True, slots=True)
class LightGBMFlavor(Flavor):
    """`{"LightGBM": {"modelPath": "model.lgb", "featureNames": [...]}}`: a native Booster."""

    model_path: str
    feature_names: tuple[str, ...] = ()

    def load(self, directory: Path, policy: LoadPolicy) -> LightGBMModel:
        """Read the model text (checked first), load the booster, work out its signature.

        Any `policy` allows it: the model is text, read by LightGBM's parser, never unpickled.
        """
        path = resolve_inside(directory, self.model_path, field=_FIELD)
        if not path.is_file():
            raise CreateServableRequestInvalidError(
                f"{self.model_path!r} is a directory, not a LightGBM model file", field=_FIELD
            )
        lightgbm = _import_lightgbm()
        text = _ModelText.read(path, self.model_path)
        booster = _open_booster(lightgbm, text, self.model_path)
        if booster.pandas_categorical:
            raise CreateServableRequestInvalidError(
                f"the model was trained on pandas categorical columns (categories "
                f"{_shorten(booster.pandas_categorical)} are stored in the file); the LightGBM "
                "flavor takes numbers only: retrain it on integer category codes",
                field=_FIELD,
            )
        names = _input_names(booster, self.feature_names)
        outputs = _plan_outputs(booster, text.objective, self.model_path)
        return LightGBMModel(booster, names, outputs)


class LightGBMModel(LoadedModel):
    """A booster plus the mapping between frames and its feature matrix."""

    def __init__(self, booster: Any, names: tuple[str, ...], outputs: BoosterOutputs) -> None:
        self._booster: Any = booster
        self._width = int(booster.num_feature())
        self._outputs = outputs
        categorical = _categorical_indices(booster)
        self.signature = ModelSignature(
            tuple(_input_spec(name, i in categorical) for i, name in enumerate(names)),
            outputs.specs,
        )

    def predict(self, frame: Frame) -> Frame:
        """Score a conformed frame with `Booster.predict` on one thread (NaN = missing)."""
        if self._booster is None:
            raise RuntimeError("the LightGBM model was closed")
        if not self.signature.inputs:
            frame = self._conform_unnamed(frame)
        names = self.signature.input_names or frame.names
        matrix = frame.matrix(names, np.dtype(np.float64))
        raw = self._booster.predict(matrix, num_threads=1)
        return Frame(self._outputs.columns(np.asarray(raw)))

    def close(self) -> None:
        """Drop the booster so LightGBM frees its memory."""
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
        specs = tuple(_input_spec(name, categorical=False) for name in frame.names)
        return conform(frame, ModelSignature(specs, outputs=()))


def _import_lightgbm() -> ModuleType:
    # Imported on first load, never at module import: `import forestflow` stays light.
    try:
        return importlib.import_module("lightgbm")
    except ImportError:
        raise FlavorUnavailable("LightGBM", "lightgbm", "lightgbm") from None


def _invalid(relative: str, reason: str) -> CreateServableRequestInvalidError:
    return CreateServableRequestInvalidError(
        f"{relative!r} is not a valid LightGBM model (the text written by Booster.save_model): "
        f"{reason}",
        field=_FIELD,
    )


@dataclass(frozen=True, slots=True)
class _ModelText:
    """A model file checked to be whole, ready for LightGBM's sequential tree parser."""

    text: str  # without the tree_sizes line
    trees: int
    objective: str | None

    @classmethod
    def read(cls, path: Path, relative: str) -> _ModelText:
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            raise _invalid(relative, "the file is not text") from None
        lines = text.splitlines()
        if not lines or lines[0].strip() != "tree":
            raise _invalid(relative, "it does not start with the line 'tree'")
        if "end of trees" not in lines:
            raise _invalid(relative, "it has no 'end of trees' line: the file is truncated")
        for line in _section(lines, "parameters:", "end of parameters", relative):
            if line and not _PARAMETER_LINE.match(line):
                raise _invalid(relative, f"malformed parameter line {line[:80]!r}")
        _section(lines, "parser:", "end of parser", relative)
        head, _, _ = text.partition("end of trees")
        objective = next(
            (line[len("objective=") :].split() for line in lines if line.startswith("objective=")),
            None,
        )
        return cls(
            _TREE_SIZES_LINE.sub("", text, count=1),
            trees=len(_TREE_LINE.findall(head)),
            objective=objective[0] if objective else None,
        )


def _section(lines: list[str], start: str, end: str, relative: str) -> list[str]:
    """The lines between `start` and `end` (none when the file has no such section)."""
    if start not in lines:
        return []
    body = lines[lines.index(start) + 1 :]
    if end not in body:
        raise _invalid(relative, f"its '{start}' section has no '{end}' line: it is truncated")
    return body[: body.index(end)]


def _reason(error: Exception) -> str:
    # One line, without LightGBM's source location.
    text = str(error).strip()
    return _SOURCE_SUFFIX.sub("", text.splitlines()[0])[:300] if text else type(error).__name__


def _open_booster(lightgbm: ModuleType, text: _ModelText, relative: str) -> Any:
    try:
        booster = lightgbm.Booster(model_str=text.text)
    except (lightgbm.basic.LightGBMError, ValueError, MemoryError) as error:
        raise _invalid(relative, _reason(error)) from None
    if booster.num_trees() != text.trees:
        raise _invalid(relative, f"LightGBM read {booster.num_trees()} of its {text.trees} trees")
    if booster.num_trees() % booster.num_model_per_iteration():
        raise _invalid(
            relative,
            f"{booster.num_trees()} trees do not make whole iterations of "
            f"{booster.num_model_per_iteration()} trees: some are missing",
        )
    _check_trees(text.text, int(booster.num_feature()), relative)
    return booster


def _check_trees(text: str, width: int, relative: str) -> None:
    """Refuse trees whose node links leave the tree or loop: LightGBM follows them blindly."""
    head, _, _ = text.partition("end of trees")
    for index, block in enumerate(_TREE_LINE.split(head)[1:]):
        pairs = [line.split("=", 1) for line in block.splitlines() if "=" in line]
        fields = dict(pairs)
        try:
            problem = "a field repeats" if len(fields) < len(pairs) else None
            problem = problem or _tree_problem(fields, width)
        except (KeyError, ValueError, OverflowError):
            problem = "its node arrays are malformed"
        if problem:
            raise _invalid(relative, f"tree {index} is damaged: {problem}")


def _tree_problem(fields: dict[str, str], width: int) -> str | None:
    leaves = int(fields["num_leaves"])
    if leaves <= 1:
        return None  # a constant tree has no splits
    splits = leaves - 1
    left, right, features, decisions = (
        np.array(fields[key].split(), dtype=np.int64)
        for key in ("left_child", "right_child", "split_feature", "decision_type")
    )
    if not left.size == right.size == features.size == decisions.size == splits:
        return f"its split arrays do not all have {splits} entries"
    # Children are split nodes 1.. (never the root 0) or leaves ~0.. (negative): each must be
    # named exactly once, so the walk from the root ends at a leaf.
    children = np.concatenate([left, right])
    nodes = np.where(children >= 0, children, splits - 1 - children)
    if not np.array_equal(np.sort(nodes), np.arange(1, splits + leaves)):
        return "a node points outside the tree or is reached twice"
    if np.any((features < 0) | (features >= width)):
        return f"a split uses a feature outside 0..{width - 1}"
    categorical = (decisions & 1) == 1  # LightGBM's kCategoricalMask
    return _categorical_problem(fields, categorical) if categorical.any() else None


def _categorical_problem(fields: dict[str, str], categorical: Column) -> str | None:
    # A categorical split's threshold indexes the tree's category tables.
    tables = int(fields["num_cat"])
    bounds = np.array(fields["cat_boundaries"].split(), dtype=np.int64)
    thresholds = np.array(fields["threshold"].split(), dtype=np.float64)[categorical]
    if (
        bounds.size != tables + 1
        or bounds[0] != 0
        or np.any(np.diff(bounds) < 0)
        or bounds[-1] != len(fields["cat_threshold"].split())
        or np.any((thresholds < 0) | (thresholds >= tables))
    ):
        return "its categorical splits point outside the category tables"
    return None


def _shorten(values: object) -> str:
    text = repr(values)
    return text if len(text) <= 80 else text[:77] + "..."


def _categorical_indices(booster: Any) -> set[int]:
    indices = booster.params.get("categorical_feature") if booster.params else None
    if isinstance(indices, int):
        return {indices}
    return {int(i) for i in indices} if isinstance(indices, list | tuple) else set()


def _input_names(booster: Any, feature_names: tuple[str, ...]) -> tuple[str, ...]:
    own = [str(name) for name in booster.feature_name()]
    if own != [_INVENTED_NAME.format(i) for i in range(len(own))]:
        if not feature_names or set(feature_names) == set(own):
            return tuple(own)
        if [name.replace(" ", "_") for name in feature_names] == own:
            return feature_names  # the names LightGBM stored with '_' for spaces
        raise CreateServableRequestInvalidError(
            f"featureNames {list(feature_names)} differ from the booster's own feature names "
            f"{own}; leave featureNames out for this model",
            field=_FEATURE_NAMES_FIELD,
        )
    if feature_names and len(feature_names) != len(own):
        raise CreateServableRequestInvalidError(
            f"the booster has {len(own)} features but {len(feature_names)} featureNames were given",
            field=_FEATURE_NAMES_FIELD,
        )
    if len(set(feature_names)) != len(feature_names):
        raise CreateServableRequestInvalidError(
            "featureNames repeat a name", field=_FEATURE_NAMES_FIELD
        )
    return feature_names


def _input_spec(name: str, categorical: bool) -> FeatureSpec:
    description = (
        "LightGBM categorical feature: send the integer category code"
        if categorical
        else "LightGBM feature"
    )
    return FeatureSpec(name, TensorType.Float64, description=description, accepts_missing=True)


def _plan_outputs(booster: Any, objective: str | None, relative: str) -> BoosterOutputs:
    """The response columns for the booster's objective, probed with one all-missing row."""
    try:
        missing = np.full((1, int(booster.num_feature())), np.nan)
        probe = np.asarray(booster.predict(missing, num_threads=1))
    except Exception as error:  # a booster that loads but cannot score: refuse it now
        raise _invalid(relative, f"it cannot score: {_reason(error)}") from None
    width = 1 if probe.ndim == 1 else int(probe.shape[1])
    kind = _CLASSIFIERS.get(objective or "", "values")
    if kind == "binary" and width != 1:
        kind = "values"
    return BoosterOutputs.of(kind, width, objective or "custom objective")
