"""MLflow models: pick the flavor an MLflow model directory is served with, from its `MLmodel`.

`MLFlowServeRequest` calls `flavor_from_mlmodel(directory)`. The `MLmodel` file is read
with PyYAML; mlflow itself is not imported here (only the PyFunc flavor needs it).

Order of preference — the first flavor of this list that the MLmodel has and the server
can serve wins, whatever the order in the file:

1. `onnx` → `ONNX {modelPath: data}`;
2. `h2o` → `H2OMojo {mojoPath, version: h2o_version}`, only when `data` is (or holds) a
   MOJO (a zip with `model.ini`, or its unpacked directory). MLflow's own h2o flavor saves
   a binary model that needs a running H2O cluster: skipped. `h2o_mojo`, the original
   ForestFlow's name for a MOJO laid out as mlflow.h2o lays out its model (`data` holding
   `h2o.yaml`, whose `model_file` is the MOJO), is read the same way;
3. `xgboost` → `XGBoost {modelPath: data}`, only for `model_class: xgboost.core.Booster`;
   models of the scikit-learn API (`XGBClassifier`, ...) are skipped, python_function
   serves them;
4. `lightgbm` → `LightGBM {modelPath: data}`, only for `lightgbm.basic.Booster` (same rule);
5. `sklearn` → `Sklearn {modelPath: pickled_model, serializationFormat}`. The MLmodel's
   `skops_trusted_types` (what whoever saved the model chose to trust) is ignored, with an
   info log line: only the operator's `security.skops_trusted_types` are trusted;
6. `python_function` → `PyFunc {}` (needs mlflow in the server), except when its
   `loader_module` is `mlflow.h2o`, which would start an H2O cluster inside the server.

The choice does not depend on the server's `LoadPolicy`: a chosen flavor whose format runs
code when loaded (a pickled `sklearn` model, `python_function`) is refused when it loads,
naming the setting `security.allow_unsafe_formats`, rather than skipped. (The safe
flavors are preferred anyway: they come first.)

Native runtimes come first: they need neither mlflow (≈ 2 s and 150 MB to import) nor the
model's Python code, they treat missing values as the library does, and classifiers answer
per-class probabilities. python_function is the fallback that runs anything mlflow can.

Feature names: when `signature.inputs` is a list of named columns, their names are passed
as `featureNames` to ONNX, XGBoost, LightGBM and Sklearn; a model's own names still win
where it has them (ONNX per-feature inputs, `feature_names_in_`, booster names). A
tensor-based signature gives no names. H2O MOJOs always name their columns: none passed.

Errors (`CreateServableRequestInvalidError`, field `path`) name what is wrong and the
flavors found: no MLmodel, YAML that does not parse, no supported flavor (with the reason
each flavor was skipped), a data file the MLmodel names but the artifact lacks. A `data`
entry that is a URI (`s3://…`) is refused: the artifact must hold the model files.
"""

from __future__ import annotations

import importlib
import json
import logging
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from forestflow.errors import CreateServableRequestInvalidError, FlavorUnavailable
from forestflow.flavors.base import Flavor, parse_flavor, resolve_inside

log = logging.getLogger(__name__)

MLMODEL_FILE = "MLmodel"
_FIELD = "path"
_XGBOOST_BOOSTER = "xgboost.core.Booster"
_LIGHTGBM_BOOSTER = "lightgbm.basic.Booster"
_SKLEARN_FORMATS = frozenset({"cloudpickle", "pickle", "skops"})
_MOJO_MARKER = "model.ini"

Spec = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class MLmodel:
    """The parts of an `MLmodel` file the server reads."""

    flavors: Mapping[str, Mapping[str, Any]]
    inputs: tuple[Spec, ...] | None  # signature.inputs; None when the model has no signature
    outputs: tuple[Spec, ...] | None

    @property
    def column_names(self) -> tuple[str, ...]:
        """Input names when the signature lists named columns (not tensors); else ()."""
        specs = self.inputs or ()
        names = tuple(spec.get("name") for spec in specs)
        if any(spec.get("type") == "tensor" for spec in specs) or not all(
            isinstance(name, str) and name for name in names
        ):
            return ()
        return tuple(str(name) for name in names)

    def describe_flavors(self) -> str:
        """The flavor names of the file, for messages."""
        return ", ".join(self.flavors) or "(none)"


def read_mlmodel(directory: Path, *, field: str = _FIELD) -> MLmodel:
    """Parse `directory/MLmodel`; a missing or malformed file raises naming the problem."""
    path = directory / MLMODEL_FILE
    if not path.is_file():
        raise CreateServableRequestInvalidError(
            f"no {MLMODEL_FILE} file at the root of the artifact: an MLflow model directory "
            "holds one (deploy a BasicServeRequest with a flavor for other artifacts)",
            field=field,
        )
    yaml = _import_yaml()
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
        raise CreateServableRequestInvalidError(
            f"{MLMODEL_FILE} is not valid YAML ({type(error).__name__}: {reason})", field=field
        ) from None
    flavors = content.get("flavors") if isinstance(content, dict) else None
    if not isinstance(flavors, dict) or not flavors:
        raise CreateServableRequestInvalidError(
            f"{MLMODEL_FILE} has no 'flavors' mapping; is it an MLflow model?", field=field
        )
    signature = content.get("signature")
    signature = signature if isinstance(signature, dict) else {}
    return MLmodel(
        flavors={
            str(name): conf if isinstance(conf, dict) else {} for name, conf in flavors.items()
        },
        inputs=_schema(signature.get("inputs"), "inputs", field),
        outputs=_schema(signature.get("outputs"), "outputs", field),
    )


def flavor_from_mlmodel(directory: Path) -> Flavor:
    """The first flavor of the MLmodel in `directory` this server supports (see module doc)."""
    mlmodel = read_mlmodel(directory)
    skipped: list[str] = []
    for name, choose in _PREFERENCE:
        conf = mlmodel.flavors.get(name)
        if conf is None:
            continue
        try:
            choice = choose(directory, conf, mlmodel)
        except CreateServableRequestInvalidError as error:
            raise CreateServableRequestInvalidError(
                f"{error.message} (flavors in the {MLMODEL_FILE}: {mlmodel.describe_flavors()})",
                field=_FIELD,
            ) from None
        if isinstance(choice, Flavor):
            return choice
        skipped.append(f"{name} ({choice})")
    unknown = [f"{name} (not supported)" for name in mlmodel.flavors if name not in _CHOOSERS]
    raise CreateServableRequestInvalidError(
        f"the {MLMODEL_FILE} has no flavor this server can serve; flavors found: "
        f"{'; '.join(skipped + unknown)}. Supported, in order of preference: "
        "onnx, h2o or h2o_mojo (MOJO only), xgboost (Booster), lightgbm (Booster), sklearn, "
        "python_function",
        field=_FIELD,
    )


def _import_yaml() -> ModuleType:
    # Imported on first use, never at module import: `import forestflow` stays light.
    try:
        return importlib.import_module("yaml")
    except ImportError:
        raise FlavorUnavailable("MLflow models", "mlflow", "pyyaml") from None


def _schema(text: object, part: str, field: str) -> tuple[Spec, ...] | None:
    # MLflow writes each half of the signature as a JSON string inside the YAML.
    if text is None:
        return None
    try:
        specs = json.loads(text) if isinstance(text, str) else text
    except json.JSONDecodeError as error:
        raise CreateServableRequestInvalidError(
            f"{MLMODEL_FILE} signature.{part} is not valid JSON ({error.msg})", field=field
        ) from None
    if not isinstance(specs, list) or not all(isinstance(spec, dict) for spec in specs):
        raise CreateServableRequestInvalidError(
            f"{MLMODEL_FILE} signature.{part} is not a list of column or tensor specs",
            field=field,
        )
    return tuple(specs)


def _data_path(directory: Path, conf: Mapping[str, Any], key: str, flavor: str) -> str:
    """The relative path of a flavor's model file, checked to exist inside the artifact."""
    value = conf.get(key)
    if not isinstance(value, str) or not value:
        raise CreateServableRequestInvalidError(
            f"{MLMODEL_FILE} flavor {flavor!r} has no {key!r} entry naming its model file",
            field=_FIELD,
        )
    if "://" in value or value.startswith("/"):
        raise CreateServableRequestInvalidError(
            f"{MLMODEL_FILE} flavor {flavor!r} names its model file by an absolute location "
            f"{value!r}; only paths relative to the model directory are supported",
            field=_FIELD,
        )
    try:
        resolve_inside(directory, value, field=_FIELD)
    except CreateServableRequestInvalidError as error:
        raise CreateServableRequestInvalidError(
            f"{MLMODEL_FILE} flavor {flavor!r}: {error.message}", field=_FIELD
        ) from None
    return value


def _build(name: str, body: dict[str, Any]) -> Flavor:
    # Through the registry by wire name, so the flavor modules load only when chosen.
    return parse_flavor({name: body}, path="flavor")


def _with_names(body: dict[str, Any], mlmodel: MLmodel) -> dict[str, Any]:
    names = mlmodel.column_names
    return {**body, "featureNames": list(names)} if names else body


def _onnx(directory: Path, conf: Mapping[str, Any], mlmodel: MLmodel) -> Flavor | str:
    path = _data_path(directory, conf, "data", "onnx")
    return _build("ONNX", _with_names({"modelPath": path}, mlmodel))


def _h2o(directory: Path, conf: Mapping[str, Any], mlmodel: MLmodel) -> Flavor | str:
    data = _data_path(directory, conf, "data", "h2o")
    mojo = _find_mojo(directory.resolve(), directory.resolve() / data)
    if mojo is None:
        return "a binary H2O model, not a MOJO: it needs a running H2O cluster"
    body: dict[str, Any] = {"mojoPath": mojo}
    version = conf.get("h2o_version")
    if isinstance(version, str):
        body["version"] = version
    return _build("H2OMojo", body)


def _find_mojo(root: Path, data: Path) -> str | None:
    """The MOJO under `data`, relative to `root`: a zip with `model.ini`, or its directory."""
    candidates = [data]
    if data.is_dir():
        candidates.append(data / _h2o_model_file(data))
        candidates.extend(sorted(data.glob("*.zip")))
    for candidate in candidates:
        if _is_mojo(candidate):
            return candidate.relative_to(root).as_posix()
    return None


def _h2o_model_file(directory: Path) -> str:
    # mlflow.h2o writes h2o.yaml beside the model, naming the file in `model_file`.
    settings = directory / "h2o.yaml"
    if not settings.is_file():
        return ""
    yaml = _import_yaml()
    try:
        content = yaml.safe_load(settings.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError):
        return ""
    model_file = content.get("model_file") if isinstance(content, dict) else None
    return model_file if isinstance(model_file, str) and "/" not in model_file else ""


def _is_mojo(path: Path) -> bool:
    if path.is_dir():
        return (path / _MOJO_MARKER).is_file()
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return _MOJO_MARKER in archive.namelist()


def _booster(wire_name: str, booster_class: str) -> Chooser:
    flavor = wire_name.lower()

    def choose(directory: Path, conf: Mapping[str, Any], mlmodel: MLmodel) -> Flavor | str:
        model_class = conf.get("model_class", booster_class)
        if model_class != booster_class:
            return f"{model_class} is the scikit-learn API, served through python_function"
        path = _data_path(directory, conf, "data", flavor)
        return _build(wire_name, _with_names({"modelPath": path}, mlmodel))

    return choose


def _sklearn(directory: Path, conf: Mapping[str, Any], mlmodel: MLmodel) -> Flavor | str:
    serialization = conf.get("serialization_format")
    if serialization is not None and serialization not in _SKLEARN_FORMATS:
        return f"serialization format {serialization!r} is not supported"
    path = _data_path(directory, conf, "pickled_model", "sklearn")
    trusted = conf.get("skops_trusted_types")
    if trusted:
        # Trust is the operator's to give, not the model author's (docs/flavors.md).
        log.info(
            "%s lists skops_trusted_types %s: ignored, the server trusts only the types of "
            "its setting security.skops_trusted_types",
            MLMODEL_FILE,
            trusted,
        )
    body: dict[str, Any] = {"modelPath": path}
    if serialization is not None:
        body["serializationFormat"] = serialization
    return _build("Sklearn", _with_names(body, mlmodel))


def _python_function(directory: Path, conf: Mapping[str, Any], mlmodel: MLmodel) -> Flavor | str:
    if conf.get("loader_module") == "mlflow.h2o":
        return "its loader mlflow.h2o starts an H2O cluster inside the server"
    return _build("PyFunc", {})


Chooser = Callable[[Path, Mapping[str, Any], MLmodel], "Flavor | str"]

_PREFERENCE: tuple[tuple[str, Chooser], ...] = (
    ("onnx", _onnx),
    ("h2o", _h2o),
    ("h2o_mojo", _h2o),
    ("xgboost", _booster("XGBoost", _XGBOOST_BOOSTER)),
    ("lightgbm", _booster("LightGBM", _LIGHTGBM_BOOSTER)),
    ("sklearn", _sklearn),
    ("python_function", _python_function),
)
_CHOOSERS = frozenset(name for name, _ in _PREFERENCE)
