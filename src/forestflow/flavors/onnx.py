"""ONNX flavor: serve a `.onnx` graph with onnxruntime on the CPU.

Inputs. A graph whose inputs are all one column each (`[N]` or `[N, 1]`) names its own
features: one input per graph input, named and typed as in the graph. A graph with one
2-D input `[N, k]` carries no names: they come from `featureNames` (k of them), and
without `featureNames` the model takes the request's fields in request order. Other
layouts (several multi-column inputs, 3-D inputs) are refused at load. Float inputs
accept missing values (NaN) only when the graph has a node that handles NaN (`Imputer`,
`TreeEnsemble*`).

Outputs, each turned into response columns:
- a tensor `[N]` or `[N, 1]` → one column named like the output, except a classifier's
  label output named `output_label` (skl2onnx's default), which becomes `label`; any
  other label output name (e.g. `label`, or a name the author chose) is kept;
- a float tensor `[N, k]` of a classifier with k classes → one column per class, named
  `str(class_label)` (labels from the graph's classifier or ZipMap node); any other
  `[N, k]` tensor → columns `<output>_0` … `<output>_<k-1>`;
- a ZipMap output (`seq(map(...))`, a list of dicts from onnxruntime) → one float column
  per class key, named `str(key)`.
If a class-named column would clash with another output's column, it is named
`<output>_<class>` instead. Float32 outputs stay float32.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterator, Sequence
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

_FIELD = "flavor.ONNX.modelPath"
_FEATURE_NAMES_FIELD = "flavor.ONNX.featureNames"

_ELEMENT_TYPES: dict[str, TensorType] = {
    "tensor(float16)": TensorType.Float16,
    "tensor(float)": TensorType.Float32,
    "tensor(double)": TensorType.Float64,
    "tensor(int8)": TensorType.Int8,
    "tensor(int16)": TensorType.Int16,
    "tensor(int32)": TensorType.Int32,
    "tensor(int64)": TensorType.Int64,
    "tensor(string)": TensorType.String,
    "tensor(bool)": TensorType.Bool,
}
# Unsigned outputs are widened to the next signed type (the wire has no unsigned types);
# unsigned inputs are refused, since casting a negative request value would wrap silently.
_OUTPUT_ONLY_TYPES: dict[str, TensorType] = {
    "tensor(uint8)": TensorType.Int16,
    "tensor(uint16)": TensorType.Int32,
    "tensor(uint32)": TensorType.Int64,
}
_NAN_AWARE_OPS = frozenset(
    {"Imputer", "TreeEnsembleRegressor", "TreeEnsembleClassifier", "TreeEnsemble"}
)
_CLASS_LABEL_ATTRIBUTES = ("classlabels_strings", "classlabels_int64s", "classlabels_ints")
_CONVERTER_LABEL_NAMES = frozenset({"output_label"})
_ZIPMAP_TYPE = re.compile(r"seq\(map\((\w+),\s*(tensor\(\w+\))\)\)")
_ORT_PREFIX = re.compile(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ")


@dataclass(frozen=True, slots=True)
class OnnxFlavor(Flavor):
    """`{"ONNX": {"modelPath": "model.onnx", "featureNames": [...]}}`: an ONNX graph."""

    model_path: str
    feature_names: tuple[str, ...] = ()

    def load(self, directory: Path, policy: LoadPolicy) -> OnnxModel:
        """Open the graph in an onnxruntime session and work out its signature.

        Any `policy` allows it: an ONNX graph is data (protobuf), it runs no code of its own.
        """
        path = resolve_inside(directory, self.model_path, field=_FIELD)
        if not path.is_file():
            raise CreateServableRequestInvalidError(
                f"{self.model_path!r} is a directory, not an ONNX model file", field=_FIELD
            )
        onnx, ort = _import_runtime()
        facts = _GraphFacts.read(onnx, path, self.model_path)
        session = _open_session(ort, path, self.model_path)
        inputs = _plan_inputs(session.get_inputs(), self.feature_names, facts.handles_missing)
        outputs = _plan_outputs(session.get_outputs(), facts.class_labels)
        return OnnxModel(session, inputs, outputs)


class OnnxModel(LoadedModel):
    """An onnxruntime session plus the mapping between frames and graph tensors."""

    def __init__(self, session: Any, inputs: _Inputs, outputs: Sequence[_Output]) -> None:
        self._session = session
        self._inputs = inputs
        self._outputs = tuple(outputs)
        specs = tuple(spec for output in self._outputs for spec in output.specs)
        self.signature = ModelSignature(inputs=inputs.specs, outputs=specs)

    def predict(self, frame: Frame) -> Frame:
        """Run the graph on a conformed frame; one or more columns per graph output."""
        if self._session is None:
            raise RuntimeError("the ONNX model was closed")
        results = self._session.run([o.onnx_name for o in self._outputs], self._inputs.feed(frame))
        columns: dict[str, Column] = {}
        for output, value in zip(self._outputs, results, strict=True):
            columns.update(output.columns(value))
        return Frame(columns)

    def close(self) -> None:
        """Drop the session so onnxruntime frees the graph's memory."""
        self._session = None


def _import_runtime() -> tuple[ModuleType, ModuleType]:
    # Imported on first load, never at module import: `import forestflow` stays light.
    modules = []
    for name in ("onnx", "onnxruntime"):
        try:
            modules.append(importlib.import_module(name))
        except ImportError:
            raise FlavorUnavailable("ONNX", "onnx", name) from None
    return modules[0], modules[1]


def _invalid_model(
    relative: str, error: Exception, path: Path
) -> CreateServableRequestInvalidError:
    # Keep the client message to one line without the server's absolute paths.
    text = _ORT_PREFIX.sub("", str(error).replace(str(path), relative)).strip()
    reason = text.splitlines()[0][:300] if text else type(error).__name__
    return CreateServableRequestInvalidError(
        f"{relative!r} is not a valid ONNX model: {reason}", field=_FIELD
    )


def _open_session(ort: ModuleType, path: Path, relative: str) -> Any:
    options = ort.SessionOptions()
    # The server scores several models at once from a thread pool: one thread per run
    # keeps them from oversubscribing the CPUs.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises pybind classes derived from Exception only
        raise _invalid_model(relative, error, path) from None


@dataclass(frozen=True, slots=True)
class _GraphFacts:
    """What the signature needs from the graph itself (onnxruntime does not expose nodes)."""

    handles_missing: bool
    class_labels: tuple[str | int, ...] | None

    @classmethod
    def read(cls, onnx: ModuleType, path: Path, relative: str) -> _GraphFacts:
        try:
            # External tensor data is not needed to read the nodes; onnxruntime loads it.
            model = onnx.load(str(path), load_external_data=False)
        except Exception as error:  # protobuf DecodeError, OSError, onnx's own errors
            raise _invalid_model(relative, error, path) from None
        nodes = [
            *_walk(model.graph, onnx),
            *(node for function in model.functions for node in function.node),
        ]
        handles_missing = any(node.op_type in _NAN_AWARE_OPS for node in nodes)
        zipmaps = [node for node in nodes if node.op_type == "ZipMap"]
        return cls(handles_missing, _class_labels(zipmaps or nodes, onnx))


def _walk(graph: Any, onnx: ModuleType) -> Iterator[Any]:
    for node in graph.node:
        yield node
        for attribute in node.attribute:  # If/Loop/Scan bodies
            if attribute.type == onnx.AttributeProto.GRAPH:
                yield from _walk(attribute.g, onnx)
            elif attribute.type == onnx.AttributeProto.GRAPHS:
                for subgraph in attribute.graphs:
                    yield from _walk(subgraph, onnx)


def _class_labels(nodes: Sequence[Any], onnx: ModuleType) -> tuple[str | int, ...] | None:
    for node in nodes:
        for attribute in node.attribute:
            if attribute.name in _CLASS_LABEL_ATTRIBUTES:
                values = onnx.helper.get_attribute_value(attribute)
                return tuple(v.decode() if isinstance(v, bytes) else int(v) for v in values)
    return None


def _shape(arg: Any) -> list[int | str | None]:
    return list(arg.shape) if arg.shape is not None else []


def _is_one_column(arg: Any) -> bool:
    shape = _shape(arg)
    return len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)


def _input_type(arg: Any) -> TensorType:
    tensor_type = _ELEMENT_TYPES.get(arg.type)
    if tensor_type is None:
        supported = ", ".join(_ELEMENT_TYPES)
        raise CreateServableRequestInvalidError(
            f"ONNX input {arg.name!r} has type {arg.type}; supported input types: {supported}",
            field=_FIELD,
        )
    return tensor_type


@dataclass(frozen=True, slots=True)
class _PerFeatureInputs:
    """One graph input per feature: feed each conformed column under its own name."""

    specs: tuple[FeatureSpec, ...]
    two_d: tuple[bool, ...]

    def feed(self, frame: Frame) -> dict[str, Column]:
        return {
            spec.name: np.ascontiguousarray(frame[spec.name], dtype=spec.type.dtype).reshape(
                (-1, 1) if two_d else (-1,)
            )
            for spec, two_d in zip(self.specs, self.two_d, strict=True)
        }


@dataclass(frozen=True, slots=True)
class _MatrixInput:
    """One 2-D graph input: stack the features as its columns (by name, or request order)."""

    onnx_name: str
    specs: tuple[FeatureSpec, ...]
    column: FeatureSpec  # type and missing-value policy of every column
    width: int | None

    def feed(self, frame: Frame) -> dict[str, Column]:
        if not self.specs:
            frame = self._conform_unnamed(frame)
        names = [spec.name for spec in self.specs] or frame.names
        return {self.onnx_name: frame.matrix(names, self.column.type.dtype)}

    def _conform_unnamed(self, frame: Frame) -> Frame:
        if self.width is not None and len(frame.names) != self.width:
            raise InferenceRequestInvalidError(
                f"the model expects {self.width} features and carries no feature names, so it "
                f"takes the request's fields in request order; the request has "
                f"{len(frame.names)} fields. Give featureNames at deploy time to match fields "
                "by name",
                field="schema",
            )
        specs = tuple(replace(self.column, name=name) for name in frame.names)
        return conform(frame, ModelSignature(inputs=specs, outputs=()))


_Inputs = _PerFeatureInputs | _MatrixInput


def _plan_inputs(args: Sequence[Any], feature_names: tuple[str, ...], nan_ok: bool) -> _Inputs:
    if (
        len(args) == 1
        and len(_shape(args[0])) == 2
        and (feature_names or not _is_one_column(args[0]))
    ):
        return _matrix_input(args[0], feature_names, nan_ok)
    if not all(_is_one_column(arg) for arg in args):
        layout = ", ".join(f"{arg.name!r} {_shape(arg)}" for arg in args)
        raise CreateServableRequestInvalidError(
            f"unsupported ONNX input layout ({layout}): the graph must have one input per "
            "feature ([N] or [N, 1]) or a single 2-D input [N, k]",
            field=_FIELD,
        )
    names = [arg.name for arg in args]
    if feature_names and set(feature_names) != set(names):
        raise CreateServableRequestInvalidError(
            f"featureNames {list(feature_names)} differ from the model's own input names "
            f"{names}; leave featureNames out for this model",
            field=_FEATURE_NAMES_FIELD,
        )
    specs = tuple(
        _input_spec(arg.name, _input_type(arg), nan_ok, f"ONNX input {arg.type} {_shape(arg)}")
        for arg in args
    )
    return _PerFeatureInputs(specs, tuple(len(_shape(arg)) == 2 for arg in args))


def _matrix_input(arg: Any, feature_names: tuple[str, ...], nan_ok: bool) -> _MatrixInput:
    width = _shape(arg)[1]
    known_width = width if isinstance(width, int) else None
    if feature_names and known_width is not None and len(feature_names) != known_width:
        raise CreateServableRequestInvalidError(
            f"ONNX input {arg.name!r} has {known_width} columns but {len(feature_names)} "
            "featureNames were given",
            field=_FEATURE_NAMES_FIELD,
        )
    if len(set(feature_names)) != len(feature_names):
        raise CreateServableRequestInvalidError(
            "featureNames repeat a name", field=_FEATURE_NAMES_FIELD
        )
    tensor_type = _input_type(arg)
    specs = tuple(
        _input_spec(name, tensor_type, nan_ok, f"column {i} of ONNX input {arg.name!r}")
        for i, name in enumerate(feature_names)
    )
    column = _input_spec("", tensor_type, nan_ok, f"a column of ONNX input {arg.name!r}")
    return _MatrixInput(arg.name, specs, column, known_width)


def _input_spec(name: str, tensor_type: TensorType, nan_ok: bool, description: str) -> FeatureSpec:
    return FeatureSpec(
        name, tensor_type, description=description, accepts_missing=nan_ok and tensor_type.is_float
    )


@dataclass(frozen=True, slots=True)
class _Output:
    """How one graph output becomes response columns."""

    onnx_name: str
    specs: tuple[FeatureSpec, ...]
    zipmap_keys: tuple[str | int, ...] | None = None  # dict keys, in column order
    dynamic_width: bool = False  # [N, ?] with no class labels: name columns at run time

    def columns(self, value: Any) -> dict[str, Column]:
        if self.zipmap_keys is not None:
            dtype = self.specs[0].type.dtype
            return {
                spec.name: np.fromiter((row[key] for row in value), dtype, count=len(value))
                for spec, key in zip(self.specs, self.zipmap_keys, strict=True)
            }
        array = _as_output(np.asarray(value), self.specs[0].type)
        if array.ndim == 1 or (array.ndim == 2 and array.shape[1] == 1 and len(self.specs) == 1):
            return {self.specs[0].name: array.reshape(-1)}
        if self.dynamic_width:
            return {f"{self.onnx_name}_{i}": array[:, i] for i in range(array.shape[1])}
        if array.ndim != 2 or array.shape[1] != len(self.specs):
            raise RuntimeError(
                f"ONNX output {self.onnx_name!r} has shape {array.shape}, "
                f"expected [N, {len(self.specs)}]"
            )
        return {spec.name: array[:, i] for i, spec in enumerate(self.specs)}


def _as_output(array: Column, tensor_type: TensorType) -> Column:
    if tensor_type in (TensorType.String, TensorType.Bytes) or array.dtype == tensor_type.dtype:
        return array
    return array.astype(tensor_type.dtype)


def _plan_outputs(args: Sequence[Any], class_labels: tuple[str | int, ...] | None) -> list[_Output]:
    # In a classifier graph, the first one-column output typed like the class labels is
    # the predicted label.
    label_type = None
    if class_labels:
        label_type = TensorType.String if isinstance(class_labels[0], str) else TensorType.Int64
    outputs: list[_Output] = []
    for arg in args:
        taken = {spec.name for output in outputs for spec in output.specs}
        if arg.type.startswith("seq(map("):
            outputs.append(_zipmap_output(arg, class_labels, taken))
            continue
        is_label = (
            label_type is not None
            and _is_one_column(arg)
            and _ELEMENT_TYPES.get(arg.type) is label_type
        )
        outputs.append(_tensor_output(arg, class_labels, taken, is_label=is_label))
        label_type = None if is_label else label_type
    names = [spec.name for output in outputs for spec in output.specs]
    if len(set(names)) != len(names):  # a response column would silently hide another
        raise CreateServableRequestInvalidError(
            f"the ONNX outputs give clashing column names {names}", field=_FIELD
        )
    return outputs


def _output_type(arg: Any, type_name: str) -> TensorType:
    tensor_type = _ELEMENT_TYPES.get(type_name) or _OUTPUT_ONLY_TYPES.get(type_name)
    if tensor_type is None:
        raise CreateServableRequestInvalidError(
            f"ONNX output {arg.name!r} has unsupported type {arg.type}", field=_FIELD
        )
    return tensor_type


def _zipmap_output(arg: Any, labels: tuple[str | int, ...] | None, taken: set[str]) -> _Output:
    match = _ZIPMAP_TYPE.fullmatch(arg.type.replace(" ", ""))
    if match is None or labels is None:
        raise CreateServableRequestInvalidError(
            f"ONNX output {arg.name!r} of type {arg.type} has no class labels in the graph",
            field=_FIELD,
        )
    value_type = _output_type(arg, match.group(2))
    specs = _class_specs(arg.name, labels, value_type, taken)
    return _Output(arg.name, specs, zipmap_keys=labels)


def _tensor_output(
    arg: Any, labels: tuple[str | int, ...] | None, taken: set[str], *, is_label: bool
) -> _Output:
    tensor_type = _output_type(arg, arg.type)
    shape = _shape(arg)
    description = f"ONNX output {arg.name!r} {arg.type} {shape}"
    if _is_one_column(arg):
        name = "label" if is_label and arg.name in _CONVERTER_LABEL_NAMES else arg.name
        return _Output(arg.name, (FeatureSpec(name, tensor_type, description=description),))
    if len(shape) != 2:
        raise CreateServableRequestInvalidError(
            f"ONNX output {arg.name!r} has shape {shape}; supported: [N], [N, 1], [N, k]",
            field=_FIELD,
        )
    width = shape[1]
    if labels and tensor_type.is_float and (width == len(labels) or not isinstance(width, int)):
        return _Output(arg.name, _class_specs(arg.name, labels, tensor_type, taken))
    if not isinstance(width, int):
        spec = FeatureSpec(
            arg.name, tensor_type, (-1, -1), f"{description}: columns {arg.name}_<i>"
        )
        return _Output(arg.name, (spec,), dynamic_width=True)
    specs = tuple(
        FeatureSpec(f"{arg.name}_{i}", tensor_type, description=f"column {i} of {description}")
        for i in range(width)
    )
    return _Output(arg.name, specs)


def _class_specs(
    output: str, labels: tuple[str | int, ...], tensor_type: TensorType, taken: set[str]
) -> tuple[FeatureSpec, ...]:
    names = [str(label) for label in labels]
    if taken & set(names):
        names = [f"{output}_{name}" for name in names]
    return tuple(
        FeatureSpec(name, tensor_type, description=f"probability of class {name!r} ({output})")
        for name in names
    )
