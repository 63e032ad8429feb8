"""H2O MOJO flavor: score an H2O-3 MOJO in process with h2o-genmodel, through JPype.

The genmodel classes run in the process's one JVM (`forestflow.flavors.h2o_jvm`), started
on the first H2O load; nothing is started per request.

Inputs are the MOJO's own columns, matched by name (a MOJO lists its enum columns first;
the order never matters): an enum (categorical) column is a `String` input whose
`domain` lists its levels, a numeric column a `Float64` input. Every input accepts
missing values (`null`, or the field left out), as H2O does. Values are converted as
H2O's `EasyPredictModelWrapper` does with `setConvertUnknownCategoricalLevelsToNa(true)`
and `setConvertInvalidNumbersToNa(true)`: a level outside the domain is NA, like a
missing value (the level `x` also matches a domain entry `<column>.x`, as genmodel's
`EnumEncoder` allows).

Outputs, per model category:
- Regression → one `Float64` column `Regression` (the original ForestFlow's field name);
- Binomial, Multinomial, Ordinal → `label` (`String`, the predicted class; a binomial model
  applies its own default threshold, as genmodel does) and one `Float64` column per class,
  named by the class (`proba_<class>` for every class when a class is called `label`);
- Clustering → one `Int32` column `Clustering` (the cluster index, as the original);
- AnomalyDetection → `Float64` columns `score` (mean path length) and `normalizedScore`,
  plus `Bool` `isAnomaly` when the model was trained with a contamination threshold.
Other categories (AutoEncoder, DimReduction, WordEmbedding, ...) are refused at load.
A MOJO trained with an offset column takes it as one more `Float64` input, which is
required (no missing values): genmodel adds it to the model's linear predictor.

Scoring. For MOJOs with H2O's default categorical encoding (nearly all), the rows are
built in numpy the way genmodel's row converter builds them (enum → domain index, NaN for
missing or unknown) and each is scored by `GenModel.score0`: one JPype call per row, no
Java object per cell. MOJOs with another encoding, and GAM MOJOs, go through
`EasyPredictModelWrapper` row by row (exact, slower). Deep Learning MOJOs are not
thread-safe in genmodel: their calls are serialised.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from forestflow.domain.frame import Column, Frame, TensorType
from forestflow.domain.signature import FeatureSpec, ModelSignature
from forestflow.errors import CreateServableRequestInvalidError
from forestflow.flavors.base import Flavor, LoadedModel, LoadPolicy, resolve_inside
from forestflow.flavors.h2o_jvm import Genmodel, genmodel

log = logging.getLogger(__name__)

_FIELD = "flavor.H2OMojo.mojoPath"
_FEATURE_NAMES_FIELD = "flavor.H2OMojo.featureNames"
_CLASSIFIERS = frozenset({"Binomial", "Multinomial", "Ordinal"})
_SUPPORTED = ("Regression", "Binomial", "Multinomial", "Ordinal", "Clustering", "AnomalyDetection")

Matrix = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class H2OMojoFlavor(Flavor):
    """`{"H2OMojo": {"mojoPath": "model.zip", "version": "3.46.0.11"}}`: an H2O-3 MOJO."""

    mojo_path: str
    version: str | None = None  # the H2O version that made the MOJO; informational
    feature_names: tuple[str, ...] = ()

    def load(self, directory: Path, policy: LoadPolicy) -> H2OMojoModel:
        """Read the MOJO (a `.zip`, or its unpacked directory) and work out its signature.

        Any `policy` allows it: genmodel reads the MOJO's files as data (no Java
        deserialization, no classes named by the artifact).
        """
        path = resolve_inside(directory, self.mojo_path, field=_FIELD)
        java = genmodel()
        mojo = _read_mojo(java, path, self.mojo_path)
        made_by = str(mojo._h2oVersion)
        if self.version and self.version != made_by:
            log.info("MOJO %s was made by H2O %s, not %s", self.mojo_path, made_by, self.version)
        model = H2OMojoModel(java, mojo)
        _check_feature_names(model.signature, self.feature_names)
        return model


class H2OMojoModel(LoadedModel):
    """A MOJO loaded by genmodel, plus the mapping between frames and its rows.

    `row_by_row` forces (True) or forbids (False) scoring through `EasyPredictModelWrapper`
    one row at a time; by default it is used only for MOJOs the fast path cannot build
    rows for (non-default categorical encodings, GAM).
    """

    def __init__(self, java: Genmodel, mojo: Any, *, row_by_row: bool | None = None) -> None:
        category = str(mojo.getModelCategory())
        if category not in _SUPPORTED:
            raise CreateServableRequestInvalidError(
                f"H2O models of category {category} are not supported; supported: "
                f"{', '.join(_SUPPORTED)}",
                field=_FIELD,
            )
        fast = _has_default_encoding(java, mojo)
        columns = _Columns.of(mojo, encoded_by_genmodel=not fast)
        self._outputs = _Outputs.of(mojo, category)
        use_rows = not fast if row_by_row is None else row_by_row
        if use_rows and columns.offset is not None:
            raise CreateServableRequestInvalidError(
                f"the MOJO takes an offset column ({columns.offset!r}) and categorical encoding "
                f"{mojo.getCategoricalEncoding()}: only MOJOs with the default (AUTO) encoding "
                "can take an offset",
                field=_FIELD,
            )
        scorer = _RowDataScorer if use_rows else _RawRowScorer
        self._scorer: _Scorer | None = scorer(java, mojo, columns, self._outputs)
        self.signature = ModelSignature(columns.specs, self._outputs.specs)

    def predict(self, frame: Frame) -> Frame:
        """Score a conformed frame: one prediction row per frame row."""
        if self._scorer is None:
            raise RuntimeError("the H2O model was closed")
        return Frame(self._outputs.columns(self._scorer.score(frame)))

    def close(self) -> None:
        """Drop the MOJO so the JVM can collect it (the JVM itself keeps running)."""
        self._scorer = None


def _check_layout(path: Path, relative: str) -> None:
    # genmodel's own errors for these are unhelpful ("NullPointerException: entry").
    if path.is_dir():
        has_ini = (path / "model.ini").is_file()
        what = "a directory without model.ini"
    elif not zipfile.is_zipfile(path):
        has_ini, what = False, "not a zip archive"
    else:
        try:
            with zipfile.ZipFile(path) as archive:
                has_ini = "model.ini" in archive.namelist()
        except (zipfile.BadZipFile, OSError) as error:
            has_ini, what = False, f"a damaged zip archive ({error})"
        else:
            what = "a zip archive without model.ini"
    if not has_ini:
        raise CreateServableRequestInvalidError(
            f"{relative!r} is {what}: not an H2O MOJO", field=_FIELD
        )


def _read_mojo(java: Genmodel, path: Path, relative: str) -> Any:
    _check_layout(path, relative)
    try:
        return java.mojo_model.load(str(path))
    except java.java_error as error:
        thrown: Any = error  # a java.lang.Throwable
        message = str(thrown.getMessage() or "").replace(str(path), relative).strip()
        reason = message.splitlines()[0][:300] if message else ""
        kind = str(thrown.getClass().getSimpleName())
        raise CreateServableRequestInvalidError(
            f"{relative!r} is not a valid H2O MOJO ({kind}{': ' + reason if reason else ''})",
            field=_FIELD,
        ) from None


def _has_default_encoding(java: Genmodel, mojo: Any) -> bool:
    # Only with AUTO encoding does genmodel feed score0 one value per column, in column
    # order, enums as domain indices; GAM MOJOs add columns through their own converter.
    return str(mojo.getCategoricalEncoding()) == "AUTO" and not isinstance(
        mojo, java.converter_factory_model
    )


def _check_feature_names(signature: ModelSignature, feature_names: tuple[str, ...]) -> None:
    names = signature.input_names
    if feature_names and set(feature_names) != set(names):
        raise CreateServableRequestInvalidError(
            f"featureNames {list(feature_names)} differ from the MOJO's own columns {names}; "
            "leave featureNames out for this model",
            field=_FEATURE_NAMES_FIELD,
        )


def _strings(values: Any) -> tuple[str, ...] | None:
    return None if values is None else tuple(str(value) for value in values)


@dataclass(frozen=True, slots=True)
class _Columns:
    """The MOJO's input columns: names, enum domains, and where each goes in a raw row."""

    names: tuple[str, ...]
    domains: tuple[tuple[str, ...] | None, ...]
    width: int  # length of the raw row score0 takes
    offset: str | None  # the offset column, passed to score0 apart from the row

    @classmethod
    def of(cls, mojo: Any, *, encoded_by_genmodel: bool) -> _Columns:
        width = int(mojo.nfeatures())
        offset = None if mojo.getOffsetName() is None else str(mojo.getOffsetName())
        if encoded_by_genmodel and mojo.getOrigNames() is not None:
            # Encoded models (one-hot, binary, eigen, ...) take the columns of the training
            # frame; genmodel expands them into the `width` values score0 takes.
            count = int(mojo.getOrigNumCols())
            names = _strings(mojo.getOrigNames()) or ()
            domains = tuple(_strings(d) for d in mojo.getOrigDomainValues() or [None] * count)
            return cls(names[:count], domains[:count], width, offset)
        names = _strings(mojo.getNames()) or ()
        domains = tuple(_strings(mojo.getDomainValues(i)) for i in range(width))
        return cls(names[:width], domains, width, offset)

    @property
    def specs(self) -> tuple[FeatureSpec, ...]:
        offset = (
            (FeatureSpec(self.offset, TensorType.Float64, description="offset"),)
            if self.offset is not None
            else ()
        )
        return *self._feature_specs(), *offset

    def _feature_specs(self) -> tuple[FeatureSpec, ...]:
        return tuple(
            FeatureSpec(name, TensorType.Float64, accepts_missing=True, description="numeric")
            if domain is None
            else FeatureSpec(
                name,
                TensorType.String,
                accepts_missing=True,
                domain=domain,
                description=f"categorical, {len(domain)} levels; others count as missing",
            )
            for name, domain in zip(self.names, self.domains, strict=True)
        )

    def raw_rows(self, frame: Frame) -> Matrix:
        """The rows as score0 takes them: enum → domain index, NaN = missing or unknown."""
        rows = np.full((frame.n_rows, self.width), np.nan)
        for index, (name, domain) in enumerate(zip(self.names, self.domains, strict=True)):
            column = frame[name]
            if domain is None:
                rows[:, index] = column
            else:
                levels = _level_indices(name, domain)
                rows[:, index] = np.fromiter(
                    (levels.get(value, math.nan) for value in column), np.float64, len(column)
                )
        return rows


def _level_indices(name: str, domain: tuple[str, ...]) -> dict[object, float]:
    # genmodel's EnumEncoder looks a level up as given, then as "<column>.<level>".
    indices: dict[object, float] = {level: float(i) for i, level in enumerate(domain)}
    prefix = f"{name}."
    for i, level in enumerate(domain):
        if level.startswith(prefix):
            indices.setdefault(level[len(prefix) :], float(i))
    return indices


@dataclass(frozen=True, slots=True)
class _Outputs:
    """The response columns of one model category, read from score0's `preds` rows."""

    category: str
    specs: tuple[FeatureSpec, ...]
    classes: tuple[str, ...]
    width: int  # length of score0's preds

    @classmethod
    def of(cls, mojo: Any, category: str) -> _Outputs:
        width = int(mojo.getPredsSize(mojo.getModelCategory()))
        if category in _CLASSIFIERS:
            classes = _strings(mojo.getDomainValues(mojo.getResponseIdx()))
            classes = classes or ("0", "1")  # quasibinomial: genmodel's labels
            return cls(category, _class_specs(classes), classes, width)
        specs: tuple[FeatureSpec, ...]
        if category == "Regression":
            specs = (FeatureSpec("Regression", TensorType.Float64, description="predicted value"),)
        elif category == "Clustering":
            specs = (FeatureSpec("Clustering", TensorType.Int32, description="cluster index"),)
        else:
            specs = _anomaly_specs(width)
        return cls(category, specs, (), width)

    def columns(self, preds: Matrix) -> dict[str, Column]:
        if self.category == "Regression":
            return {"Regression": preds[:, 0]}
        if self.category == "Clustering":
            return {"Clustering": preds[:, 0].astype(np.int32)}
        if self.category == "AnomalyDetection":
            # score0 gives [normalizedScore, score], behind an anomaly flag when there is one
            flag = {"isAnomaly": preds[:, 0] == 1} if self.width == 3 else {}
            first = self.width - 2
            return {**flag, "score": preds[:, first + 1], "normalizedScore": preds[:, first]}
        labels = np.array(self.classes, dtype=object)[preds[:, 0].astype(np.intp)]
        columns: dict[str, Column] = {"label": labels}
        columns.update((spec.name, preds[:, i]) for i, spec in enumerate(self.specs[1:], 1))
        return columns


def _class_specs(classes: tuple[str, ...]) -> tuple[FeatureSpec, ...]:
    names = [f"proba_{c}" for c in classes] if "label" in classes else list(classes)
    probabilities = tuple(
        FeatureSpec(name, TensorType.Float64, description=f"probability of class {value!r}")
        for name, value in zip(names, classes, strict=True)
    )
    return (FeatureSpec("label", TensorType.String, description="predicted class"), *probabilities)


def _anomaly_specs(width: int) -> tuple[FeatureSpec, ...]:
    flag = (FeatureSpec("isAnomaly", TensorType.Bool, description="above the threshold"),)
    return (
        *(flag if width == 3 else ()),
        FeatureSpec("score", TensorType.Float64, description="mean path length"),
        FeatureSpec("normalizedScore", TensorType.Float64, description="higher = more anomalous"),
    )


class _Scorer(ABC):
    """Turns a conformed frame into score0's `preds`, one row per frame row."""

    def __init__(self, java: Genmodel, mojo: Any, columns: _Columns, outputs: _Outputs) -> None:
        self._java = java
        self._mojo = mojo
        self._columns = columns
        self._outputs = outputs
        # genmodel documents every MOJO as thread-safe except Deep Learning ones.
        self._lock: contextlib.AbstractContextManager[object] = (
            threading.Lock() if isinstance(mojo, java.deep_learning) else contextlib.nullcontext()
        )

    @abstractmethod
    def score(self, frame: Frame) -> Matrix:
        """score0's `preds` for every row of `frame`, as an (n_rows, width) array."""


class _RawRowScorer(_Scorer):
    """Rows built in numpy, then `GenModel.score0(row, preds)`: one JPype call per row."""

    def score(self, frame: Frame) -> Matrix:
        jpype = self._java.jpype
        rows = jpype.JArray.of(self._columns.raw_rows(frame))
        preds = jpype.JArray.of(np.zeros((frame.n_rows, self._outputs.width)))
        score0 = self._mojo.score0
        offsets = None if self._columns.offset is None else frame[self._columns.offset].tolist()
        with self._lock:
            for i in range(frame.n_rows):  # score0 fills preds[i] in place
                if offsets is None:
                    score0(rows[i], preds[i])
                else:
                    score0(rows[i], offsets[i], preds[i])
        return np.asarray(preds, dtype=np.float64)


class _RowDataScorer(_Scorer):
    """`EasyPredictModelWrapper.predict(RowData)` per row: genmodel converts every value."""

    def __init__(self, java: Genmodel, mojo: Any, columns: _Columns, outputs: _Outputs) -> None:
        super().__init__(java, mojo, columns, outputs)
        config = (
            java.wrapper.Config()
            .setModel(mojo)
            .setConvertUnknownCategoricalLevelsToNa(True)
            .setConvertInvalidNumbersToNa(True)
        )
        self._wrapper = java.wrapper(config)

    def score(self, frame: Frame) -> Matrix:
        jpype = self._java.jpype
        cells = [
            (name, frame[name].tolist(), jpype.JDouble if domain is None else jpype.JString)
            for name, domain in zip(self._columns.names, self._columns.domains, strict=True)
        ]
        preds = np.zeros((frame.n_rows, self._outputs.width))
        with self._lock:
            for i in range(frame.n_rows):
                row = self._java.row_data()
                for name, values, box in cells:
                    value = values[i]
                    if not _is_missing(value):  # a missing value is a key left out
                        row.put(name, box(value))
                predicted = self._preds(self._wrapper.predict(row))
                preds[i, : len(predicted)] = predicted
        return preds

    def _preds(self, prediction: Any) -> Sequence[float]:
        # The wrapper's prediction objects, back into score0's preds layout.
        category = self._outputs.category
        if category == "Regression":
            return [prediction.value]
        if category == "Clustering":
            return [prediction.cluster]
        if category == "AnomalyDetection":
            return list(prediction.toPreds())
        return [prediction.labelIndex, *prediction.classProbabilities]


def _is_missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
