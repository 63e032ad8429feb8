"""The process's one JVM, started lazily for the H2O MOJO flavor, and the genmodel classes in it.

JPype can start only one JVM per process and cannot restart it, so the JVM is started on
the first H2O load (never at import, never per request), under a lock, and never shut
down: later loads reuse it. It runs with a modest heap (`-Xmx512m`) and with `-Xrs`, so
the JVM installs no SIGTERM/SIGINT/SIGHUP handlers of its own: without it, SIGTERM would
make the JVM end the process at once instead of letting the server shut down gracefully.

The classes come from the `h2o` Python package: its `backend/bin/h2o.jar` (≈ 280 MB)
holds the standalone `h2o-genmodel.jar` (≈ 5 MB), which is extracted once into
`~/.cache/forestflow/` (named by the big jar's size and mtime, written atomically) and put
on the classpath: the JVM starts faster and uses less memory than with the big jar, which
is used directly when the extraction is not possible.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import shutil
import tempfile
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from forestflow.errors import CreateServableRequestInvalidError, FlavorUnavailable

log = logging.getLogger(__name__)

_FLAVOR = "H2OMojo"
_EXTRA = "h2o"
_GENMODEL_ENTRY = "www/3/h2o-genmodel.jar"
_JVM_OPTIONS = ("-Xmx512m", "-Xrs", "-Djava.awt.headless=true")


@dataclass(frozen=True, slots=True)
class Genmodel:
    """The h2o-genmodel Java classes the flavor uses, loaded in the process's JVM."""

    jpype: ModuleType
    mojo_model: Any  # hex.genmodel.MojoModel
    wrapper: Any  # hex.genmodel.easy.EasyPredictModelWrapper
    row_data: Any  # hex.genmodel.easy.RowData
    converter_factory_model: Any  # hex.genmodel.ConverterFactoryProvidingModel (GAM)
    deep_learning: Any  # hex.genmodel.algos.deeplearning.DeeplearningMojoModel

    @property
    def java_error(self) -> type[Exception]:
        """The Python class of every Java exception (`java.lang.Throwable`)."""
        error: type[Exception] = self.jpype.JException
        return error


class _ProcessJvm:
    """Starts the JVM once per process and hands out the genmodel classes.

    This is module state on purpose: the JVM itself is process-wide (JPype allows one per
    process, for the life of the process), and two servables loading at once must not
    race to start it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._genmodel: Genmodel | None = None

    def genmodel(self) -> Genmodel:
        with self._lock:
            if self._genmodel is None:
                self._genmodel = _start()
            return self._genmodel


_PROCESS_JVM = _ProcessJvm()


def genmodel() -> Genmodel:
    """The genmodel classes, starting the JVM on first use (thread-safe; never stopped).

    Raises `FlavorUnavailable` when `jpype1` or `h2o` is not installed, and
    `CreateServableRequestInvalidError` when no Java runtime is found or it cannot start.
    """
    return _PROCESS_JVM.genmodel()


def _import_jpype() -> ModuleType:
    # Imported on first load, never at module import: `import forestflow` stays light.
    try:
        return importlib.import_module("jpype")
    except ImportError:
        raise FlavorUnavailable(_FLAVOR, _EXTRA, "jpype1") from None


def _h2o_jar() -> Path:
    # find_spec locates the package without importing it (the client pulls in requests etc.).
    spec = importlib.util.find_spec("h2o")
    if spec is None or not spec.submodule_search_locations:
        raise FlavorUnavailable(_FLAVOR, _EXTRA, "h2o")
    jar = Path(next(iter(spec.submodule_search_locations))) / "backend" / "bin" / "h2o.jar"
    if not jar.is_file():
        raise CreateServableRequestInvalidError(
            f"the installed h2o package has no {jar.name} (looked in {jar.parent}); "
            "reinstall it with: pip install 'forestflow[h2o]'"
        )
    return jar


def _genmodel_jar(h2o_jar: Path) -> Path:
    """The small genmodel jar extracted from `h2o_jar` into the cache, else `h2o_jar` itself."""
    try:
        stat = h2o_jar.stat()
        target = (
            Path.home() / ".cache" / "forestflow" / f"h2o-genmodel-{stat.st_size}-"
            f"{stat.st_mtime_ns}.jar"
        )
        if target.is_file():
            return target
        with zipfile.ZipFile(h2o_jar) as archive:
            if _GENMODEL_ENTRY not in archive.namelist():
                return h2o_jar
            target.parent.mkdir(parents=True, exist_ok=True)
            _extract_atomically(archive, _GENMODEL_ENTRY, target)
        return target
    except (OSError, RuntimeError, zipfile.BadZipFile) as error:  # RuntimeError: no home dir
        log.warning("using %s directly: cannot cache h2o-genmodel.jar (%s)", h2o_jar, error)
        return h2o_jar


def _extract_atomically(archive: zipfile.ZipFile, entry: str, target: Path) -> None:
    # A temporary file in the same directory, renamed into place: other processes
    # extracting at the same time never see a half-written jar.
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=target.name, suffix=".part")
    try:
        with os.fdopen(handle, "wb") as sink, archive.open(entry) as source:
            shutil.copyfileobj(source, sink, 1 << 20)
        os.chmod(temporary, 0o644)  # mkstemp makes it private; it is a public library
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _start() -> Genmodel:
    jpype = _import_jpype()
    h2o_jar = _h2o_jar()
    if not jpype.isJVMStarted():
        _start_jvm(jpype, _genmodel_jar(h2o_jar))
    try:
        return Genmodel(
            jpype=jpype,
            mojo_model=jpype.JClass("hex.genmodel.MojoModel"),
            wrapper=jpype.JClass("hex.genmodel.easy.EasyPredictModelWrapper"),
            row_data=jpype.JClass("hex.genmodel.easy.RowData"),
            converter_factory_model=jpype.JClass("hex.genmodel.ConverterFactoryProvidingModel"),
            deep_learning=jpype.JClass("hex.genmodel.algos.deeplearning.DeeplearningMojoModel"),
        )
    except TypeError:  # JPype's "Class ... is not found"
        # Only possible when something else started this process's JVM without our jar.
        raise CreateServableRequestInvalidError(
            "this process's JVM was started by another component without the H2O genmodel "
            "classes on its classpath, and a JVM cannot be restarted; serve H2O models from a "
            "process where ForestFlow starts the JVM"
        ) from None


def _start_jvm(jpype: ModuleType, jar: Path) -> None:
    try:
        jvm_path = jpype.getDefaultJVMPath()
    except jpype.JVMNotFoundException:
        raise CreateServableRequestInvalidError(
            "flavor H2OMojo needs a Java runtime (Java 11 or newer) and none was found; "
            "install one, or set JAVA_HOME to it"
        ) from None
    try:
        # interrupt=False: Ctrl-C stays Python's, like every other signal (see -Xrs).
        jpype.startJVM(*_JVM_OPTIONS, jvmpath=jvm_path, classpath=[str(jar)], interrupt=False)
    except (OSError, RuntimeError) as error:
        # OSError(0, "JVM DLL not found: ...") would read "[Errno 0] JVM DLL not found: ..."
        text = (error.strerror if isinstance(error, OSError) else None) or str(error)
        reason = text.strip().splitlines()[0][:300] if text.strip() else ""
        raise CreateServableRequestInvalidError(
            f"the Java runtime at {jvm_path} could not start ({reason or type(error).__name__}); "
            "flavor H2OMojo needs Java 11 or newer: install one, or set JAVA_HOME to it"
        ) from None
    log.info("started the JVM for H2O MOJOs (%s, classpath %s)", jvm_path, jar)
