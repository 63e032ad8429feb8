"""PyFunc flavor: any MLflow `python_function` model, run by `mlflow.pyfunc` in this process.

`{"PyFunc": {"modelPath": ".", "featureNames": [...]}}` — `modelPath` is the MLflow model
directory (the one holding `MLmodel`) relative to the artifact. Loading imports mlflow
(`pip install 'forestflow[mlflow]'`; ≈ 2 s the first time) and calls
`mlflow.pyfunc.load_model`, which imports the model's own code and unpickles its files.

Security: a python_function model is code, so the server refuses it (422, before mlflow
is imported or anything of the model is loaded) unless the operator sets
`security.allow_unsafe_formats` (`LoadPolicy.allow_unsafe_formats`); then deploy only
models from a trusted source. Telemetry is switched off before mlflow is imported.

Inputs come from the MLmodel `signature.inputs`:
- named columns: one input each, typed double → Float64, float → Float32, long → Int64,
  integer → Int32, string → String, boolean → Bool, binary → Bytes; `datetime`, arrays,
  objects, maps and `any` are refused at load. `required: false` columns accept missing
  values; an optional column missing in every row is left out of the DataFrame (MLflow's
  meaning of optional), a partly missing optional integer column is refused (MLflow cannot
  take NA in an integer column). Required columns take no missing values.
- unnamed columns: named by `featureNames`, else the request's fields in request order.
- one tensor `[-1, k]` of a numeric or boolean dtype: its k columns are named by
  `featureNames`, else the request's fields in request order; other tensor layouts are
  refused at load.
- no signature: the request's fields, in request order, as they come.
`predict` hands the model a pandas DataFrame with the columns in signature order and
exactly the signature's dtypes (MLflow enforces its schema strictly: float64 data for a
`float` column is refused), or a numpy matrix for a tensor signature.

Outputs. The model's result becomes response columns: a DataFrame → its columns; a dict →
its keys (a 2-D value `v` → `v_0 … v_<k-1>`); a 1-D array, list or Series → `prediction`;
a 2-D array → `prediction_0 … prediction_<k-1>` (a single column → `prediction`). Strings
and datetimes become String columns. The signature's outputs are described from
`signature.outputs`: named columns by name; one tensor `[-1]`/`[-1, 1]` → `prediction`,
`[-1, k]` → `prediction_0 …`; otherwise none are declared (the result still names them).
"""

from __future__ import annotations

import importlib
import os
import warnings
from collections.abc import Mapping, Sequence
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
from forestflow.flavors.mlflow_model import MLMODEL_FILE, MLmodel, Spec, read_mlmodel

_FIELD = "flavor.PyFunc.modelPath"
_FEATURE_NAMES_FIELD = "flavor.PyFunc.featureNames"

_COLUMN_TYPES: dict[str, TensorType] = {
    "double": TensorType.Float64,
    "float": TensorType.Float32,
    "long": TensorType.Int64,
    "integer": TensorType.Int32,
    "string": TensorType.String,
    "boolean": TensorType.Bool,
    "binary": TensorType.Bytes,
}
_TENSOR_TYPES: dict[str, TensorType] = {
    "float64": TensorType.Float64,
    "float32": TensorType.Float32,
    "float16": TensorType.Float16,
    "int64": TensorType.Int64,
    "int32": TensorType.Int32,
    "int16": TensorType.Int16,
    "int8": TensorType.Int8,
    "bool": TensorType.Bool,
}
_OUTPUT_TENSOR_TYPES = {**_TENSOR_TYPES, "str": TensorType.String, "object": TensorType.String}


@dataclass(frozen=True, slots=True)
class PyFuncFlavor(Flavor):
    """`{"PyFunc": {"modelPath": ".", "featureNames": [...]}}`: an MLflow python_function model."""

    model_path: str = "."
    feature_names: tuple[str, ...] = ()

    def load(self, directory: Path, policy: LoadPolicy) -> PyFuncModel:
        """Read the MLmodel signature, then load the model with `mlflow.pyfunc.load_model`.

        Refused unless `policy.allow_unsafe_formats`: loading runs the model's own code.
        """
        model_dir = resolve_inside(directory, self.model_path, field=_FIELD)
        mlmodel = read_mlmodel(model_dir, field=_FIELD)  # YAML, read safely: no code runs
        if "python_function" not in mlmodel.flavors:
            raise CreateServableRequestInvalidError(
                f"the {MLMODEL_FILE} has no python_function flavor (flavors found: "
                f"{mlmodel.describe_flavors()})",
                field=_FIELD,
            )
        policy.require_unsafe_formats(
            f"{self.model_path!r} is an MLflow python_function model, and python_function "
            "models run their own Python code when loaded",
            field=_FIELD,
        )
        inputs = _plan_inputs(mlmodel, self.feature_names)
        mlflow_pyfunc, pandas = _import_mlflow()
        try:
            model = mlflow_pyfunc.load_model(str(model_dir))
        except Exception as error:  # loading runs the model's own code, which can raise anything
            raise _load_failed(error, model_dir, directory) from None
        return PyFuncModel(model, inputs, _output_specs(mlmodel.outputs), pandas)


class PyFuncModel(LoadedModel):
    """An `mlflow.pyfunc.PyFuncModel` plus the mapping between frames and its input."""

    def __init__(
        self, model: Any, inputs: _Inputs, outputs: tuple[FeatureSpec, ...], pandas: Any
    ) -> None:
        self._model = model
        self._inputs = inputs
        self._pandas = pandas
        self.signature = ModelSignature(inputs.named_specs, outputs)

    def predict(self, frame: Frame) -> Frame:
        """Build the model input from a conformed frame, predict, turn the result into columns."""
        if self._model is None:
            raise RuntimeError("the PyFunc model was closed")
        if not self.signature.inputs:
            frame = self._inputs.conform_by_position(frame)
        result = self._model.predict(self._inputs.model_input(frame, self._pandas))
        return Frame(_result_columns(result, self._pandas))

    def close(self) -> None:
        """Drop the model so its memory can be freed."""
        self._model = None


def _import_mlflow() -> tuple[Any, ModuleType]:
    # MLflow sends usage telemetry unless told not to; it reads this variable, and it has no
    # API for it. Set only when the operator has not chosen, right before the first import.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    try:
        pandas = importlib.import_module("pandas")
        with warnings.catch_warnings():
            # mlflow warns at import about type hints of its own GenAI classes ("Any type hint
            # is inferred as AnyType"): nothing an operator can act on. This runs once per
            # process (later imports are cached), so the global filter swap is brief.
            warnings.filterwarnings("ignore", message=r".*AnyType", category=UserWarning)
            mlflow_pyfunc = importlib.import_module("mlflow.pyfunc")
    except ImportError as error:
        missing = "pandas" if error.name == "pandas" else "mlflow-skinny"
        raise FlavorUnavailable("PyFunc", "mlflow", missing) from None
    return mlflow_pyfunc, pandas


def _load_failed(
    error: Exception, model_dir: Path, root: Path
) -> CreateServableRequestInvalidError:
    # One line, without the server's absolute paths.
    text = str(error).replace(str(model_dir), ".").replace(str(root.resolve()), ".").strip()
    reason = text.splitlines()[0][:300] if text else ""
    return CreateServableRequestInvalidError(
        f"mlflow could not load the python_function model ({type(error).__name__}"
        f"{': ' + reason if reason else ''})",
        field=_FIELD,
    )


@dataclass(frozen=True, slots=True)
class _Inputs:
    """How request fields become the model's input: a typed DataFrame or a numpy matrix."""

    specs: tuple[FeatureSpec, ...]  # per input column; names empty when taken by position
    required: tuple[bool, ...] = ()
    tensor: TensorType | None = None  # the dtype of a single 2-D tensor input
    typed: bool = True  # False without a signature: columns go to the model as they come

    @property
    def named_specs(self) -> tuple[FeatureSpec, ...]:
        """The signature's inputs; empty when the model takes request fields by position."""
        return self.specs if self.specs and self.specs[0].name else ()

    def conform_by_position(self, frame: Frame) -> Frame:
        """Name the model's columns after the request's fields, in request order, and cast."""
        if not self.specs:
            return frame
        if len(frame.names) != len(self.specs):
            raise InferenceRequestInvalidError(
                f"the model takes {len(self.specs)} unnamed inputs, so it takes the request's "
                f"fields in request order; the request has {len(frame.names)} fields. Give "
                "featureNames at deploy time to match fields by name",
                field="schema",
            )
        named = tuple(replace(s, name=n) for s, n in zip(self.specs, frame.names, strict=True))
        return conform(frame, ModelSignature(named, outputs=()))

    def model_input(self, frame: Frame, pandas: Any) -> Any:
        """The value `model.predict` receives."""
        if self.tensor is not None:
            return np.column_stack([frame[name] for name in frame.names]).astype(
                self.tensor.dtype, copy=False
            )
        if not self.typed:  # strings stay object columns, as MLflow's own string type has them
            return pandas.DataFrame(
                {name: pandas.Series(frame[name], dtype=frame[name].dtype) for name in frame.names}
            )
        columns: dict[str, Any] = {}
        for name, spec, required in zip(frame.names, self.specs, self.required, strict=True):
            column = _input_series(frame[name], spec, required, name, pandas)
            if column is not None:
                columns[name] = column
        return pandas.DataFrame(columns, index=pandas.RangeIndex(frame.n_rows))


def _input_series(
    column: Column, spec: FeatureSpec, required: bool, name: str, pandas: Any
) -> Any | None:
    """One DataFrame column in the signature's exact dtype; None to leave it out."""
    missing = _missing_mask(column)
    if not required and missing.all():
        return None  # an optional column absent from the request: MLflow accepts its absence
    if spec.type.is_integer and missing.any():
        raise InferenceRequestInvalidError(
            f"missing value in row {int(np.argmax(missing))}: MLflow cannot take a missing "
            f"value in an {spec.type.value} column; send a value in every row, or leave the "
            "field out of the request altogether (it is optional)",
            field=name,
        )
    if spec.type.dtype == object or (spec.type is TensorType.Bool and missing.any()):
        return pandas.Series(column, dtype=object)
    return pandas.Series(column.astype(spec.type.dtype, copy=False))


def _missing_mask(column: Column) -> Column:
    if column.dtype.kind == "f":
        return np.isnan(column)
    if column.dtype == object:
        return np.array([value is None for value in column], dtype=bool)
    return np.zeros(len(column), dtype=bool)


def _plan_inputs(mlmodel: MLmodel, feature_names: tuple[str, ...]) -> _Inputs:
    if len(set(feature_names)) != len(feature_names):
        raise CreateServableRequestInvalidError(
            "featureNames repeat a name", field=_FEATURE_NAMES_FIELD
        )
    specs = mlmodel.inputs
    if not specs:
        return _Inputs(specs=(), typed=False)
    if any(spec.get("type") == "tensor" for spec in specs):
        return _tensor_inputs(specs, feature_names)
    columns = tuple(_column_spec(spec) for spec in specs)
    required = tuple(spec.get("required", True) is not False for spec in specs)
    names = mlmodel.column_names or feature_names
    if names and len(names) != len(columns):
        raise CreateServableRequestInvalidError(
            f"the signature has {len(columns)} unnamed columns but {len(names)} featureNames "
            "were given",
            field=_FEATURE_NAMES_FIELD,
        )
    if names:
        columns = tuple(replace(c, name=n) for c, n in zip(columns, names, strict=True))
    return _Inputs(columns, required)


def _column_spec(spec: Spec) -> FeatureSpec:
    kind = spec.get("type")
    name = str(spec.get("name") or "")
    tensor_type = _COLUMN_TYPES.get(kind) if isinstance(kind, str) else None
    if tensor_type is None:
        label = f"column {name!r}" if name else "an unnamed column"
        raise CreateServableRequestInvalidError(
            f"the signature's {label} has the MLflow type {kind!r}, which the PyFunc flavor "
            f"does not serve; supported column types: {', '.join(_COLUMN_TYPES)}",
            field=_FIELD,
        )
    optional = spec.get("required", True) is False
    return FeatureSpec(
        "", tensor_type, description=f"MLflow {kind} column", accepts_missing=optional
    )


def _tensor_inputs(specs: Sequence[Spec], feature_names: tuple[str, ...]) -> _Inputs:
    tensor = specs[0].get("tensor-spec") if len(specs) == 1 else None
    shape = tensor.get("shape") if isinstance(tensor, Mapping) else None
    dtype = tensor.get("dtype") if isinstance(tensor, Mapping) else None
    tensor_type = _TENSOR_TYPES.get(dtype) if isinstance(dtype, str) else None
    width = shape[1] if isinstance(shape, list) and len(shape) == 2 else None
    if tensor_type is None or not isinstance(width, int) or width < 1 or specs[0].get("name"):
        layout = ", ".join(
            f"{spec.get('name') or 'tensor'} {_tensor_layout(spec)}" for spec in specs
        )
        raise CreateServableRequestInvalidError(
            f"unsupported tensor signature ({layout}): the PyFunc flavor takes one unnamed "
            f"2-D tensor [-1, k] of {', '.join(_TENSOR_TYPES)}, or named columns",
            field=_FIELD,
        )
    if feature_names and len(feature_names) != width:
        raise CreateServableRequestInvalidError(
            f"the signature's tensor has {width} columns but {len(feature_names)} featureNames "
            "were given",
            field=_FEATURE_NAMES_FIELD,
        )
    names = feature_names or ("",) * width
    column = f"a column of the model's {dtype} tensor input"
    specs_out = tuple(FeatureSpec(name, tensor_type, description=column) for name in names)
    return _Inputs(specs_out, (True,) * width, tensor=tensor_type)


def _tensor_layout(spec: Spec) -> str:
    """A tensor spec as `dtype[shape]`, for messages."""
    tensor = spec.get("tensor-spec")
    if not isinstance(tensor, Mapping):
        return str(spec.get("type"))
    return f"{tensor.get('dtype')}{tensor.get('shape')}"


def _output_specs(specs: tuple[Spec, ...] | None) -> tuple[FeatureSpec, ...]:
    if not specs:
        return ()
    if all(spec.get("type") != "tensor" and spec.get("name") for spec in specs):
        return tuple(
            FeatureSpec(str(spec["name"]), _COLUMN_TYPES.get(spec["type"], TensorType.String))
            for spec in specs
        )
    tensor = specs[0].get("tensor-spec") if len(specs) == 1 else None
    return _tensor_output_specs(tensor) if isinstance(tensor, Mapping) else ()


def _tensor_output_specs(tensor: Mapping[str, Any]) -> tuple[FeatureSpec, ...]:
    shape = tensor.get("shape")
    tensor_type = _OUTPUT_TENSOR_TYPES.get(str(tensor.get("dtype")))
    if tensor_type is None or not isinstance(shape, list) or len(shape) not in (1, 2):
        return ()
    width = shape[1] if len(shape) == 2 else 1
    if not isinstance(width, int) or width < 1:
        return ()
    if width == 1:
        return (FeatureSpec("prediction", tensor_type),)
    return tuple(FeatureSpec(f"prediction_{i}", tensor_type) for i in range(width))


def _result_columns(result: Any, pandas: Any) -> dict[str, Column]:
    """The model's result as response columns (see the module doc for the naming)."""
    if isinstance(result, pandas.DataFrame):
        return {str(name): _output_column(values, pandas) for name, values in result.items()}
    if isinstance(result, Mapping):
        columns: dict[str, Column] = {}
        for key, value in result.items():
            columns.update(_array_columns(str(key), _output_column(value, pandas)))
        return columns
    return _array_columns("prediction", _output_column(result, pandas))


def _array_columns(name: str, values: Column) -> dict[str, Column]:
    if values.ndim == 1:
        return {name: values}
    if values.ndim == 2 and values.shape[1] == 1:
        return {name: values[:, 0]}
    if values.ndim == 2:
        return {f"{name}_{i}": values[:, i] for i in range(values.shape[1])}
    raise TypeError(f"the model returned a {values.ndim}-D result for {name!r}; expected 1-D/2-D")


def _output_column(values: Any, pandas: Any) -> Column:
    """A result (Series, array, list) as a numpy column the transports can encode."""
    if isinstance(values, pandas.Series):
        values = _series_values(values, pandas)
    column = np.asarray(values)
    kind = column.dtype.kind
    if kind in "Mm":  # datetimes and durations travel as ISO strings
        column = column.astype(str)
        kind = "U"
    if kind in "US":
        return column.astype(object)
    return column


def _series_values(series: Any, pandas: Any) -> Any:
    types = pandas.api.types
    dtype = series.dtype
    if isinstance(dtype, pandas.CategoricalDtype):
        series = series.astype(object)
    elif types.is_bool_dtype(dtype) and series.hasnans:
        return series.astype(object).where(series.notna(), None).to_numpy(dtype=object)
    elif types.is_numeric_dtype(dtype) and types.is_extension_array_dtype(dtype):
        # nullable Int64/Float64: NaN for missing, the numpy dtype otherwise
        if series.hasnans:
            return series.to_numpy(dtype=np.float64, na_value=np.nan)
        return series.to_numpy(dtype=dtype.numpy_dtype)
    if types.is_string_dtype(series.dtype) or series.dtype == object:
        return series.astype(object).where(series.notna(), None).to_numpy(dtype=object)
    return series.to_numpy()
