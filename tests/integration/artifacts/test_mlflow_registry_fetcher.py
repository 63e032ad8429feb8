"""MlflowRegistryFetcher against a real `mlflow server` on 127.0.0.1 (started once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest

from forestflow.artifacts.base import StorageOptions, fetcher_for
from forestflow.artifacts.mlflow_registry import MlflowRegistryFetcher, MlflowRunFetcher
from forestflow.errors import ArtifactTooLarge, CreateServableRequestInvalidError
from tests.integration.artifacts.conftest import free_port, tree
from tests.mlflow_server import MlflowServer
from tests.payloads import EXAMPLES, FIXTURES

MLFLOW_ONNX_MODEL = FIXTURES / "mlflow" / "onnx" / "gbr_powerplant_onnx"
ENERGY_OUTPUT = EXAMPLES / "energy_output"
MODEL_NAME = "powerplant-fetcher"


@pytest.fixture(scope="module")
def registered(mlflow_server: MlflowServer) -> MlflowServer:
    """Version 1 = the MLflow ONNX fixture, version 2 = the energy_output example (@champion)."""
    assert mlflow_server.register(MODEL_NAME, MLFLOW_ONNX_MODEL) == "1"
    assert mlflow_server.register(MODEL_NAME, ENERGY_OUTPUT) == "2"
    mlflow_server.client.set_registered_model_alias(MODEL_NAME, "champion", "2")
    return mlflow_server


def fetcher_of(server: MlflowServer) -> MlflowRegistryFetcher:
    return MlflowRegistryFetcher(StorageOptions(mlflow_tracking_uri=server.uri, timeout_s=10))


class TestMlflowRegistryFetch:
    def test_fetch_by_version_copies_the_model_version(
        self, registered: MlflowServer, destination: Path
    ) -> None:
        fetcher_of(registered).fetch(f"models:/{MODEL_NAME}/1", None, destination)
        assert tree(destination) == tree(MLFLOW_ONNX_MODEL)
        assert [p.name for p in destination.parent.iterdir()] == ["incoming"]

    def test_fetch_by_alias_copies_the_version_it_points_to(
        self, registered: MlflowServer, destination: Path
    ) -> None:
        fetcher_of(registered).fetch(f"models:/{MODEL_NAME}@champion", None, destination)
        assert tree(destination) == tree(ENERGY_OUTPUT)

    def test_artifact_path_keeps_only_that_file(
        self, registered: MlflowServer, destination: Path
    ) -> None:
        fetcher_of(registered).fetch(f"models:/{MODEL_NAME}/1", "/model.onnx", destination)
        assert tree(destination) == {"model.onnx": (MLFLOW_ONNX_MODEL / "model.onnx").read_bytes()}

    def test_tracking_uri_defaults_to_the_mlflow_environment_variable(
        self, registered: MlflowServer, destination: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", registered.uri)
        fetcher = MlflowRegistryFetcher(StorageOptions())
        fetcher.fetch(f"models:/{MODEL_NAME}/2", None, destination)
        assert tree(destination) == tree(ENERGY_OUTPUT)

    def test_the_registry_gives_no_fqrv(self) -> None:
        fetcher = fetcher_for(f"models:/{MODEL_NAME}/1", StorageOptions())
        assert isinstance(fetcher, MlflowRegistryFetcher)
        assert fetcher.fqrv_hint(f"models:/{MODEL_NAME}/1") is None


class TestMlflowRegistryRefusals:
    @pytest.mark.parametrize(
        ("location", "detail"),
        [
            (f"models:/{MODEL_NAME}/9", f"Model Version (name={MODEL_NAME}, version=9) not found"),
            ("models:/no-such-model/1", "Model Version (name=no-such-model, version=1) not found"),
            (f"models:/{MODEL_NAME}@no-such-alias", "Registered model alias no-such-alias not"),
        ],
    )
    def test_unknown_model_version_or_alias_is_refused(
        self, registered: MlflowServer, destination: Path, location: str, detail: str
    ) -> None:
        with pytest.raises(CreateServableRequestInvalidError) as refused:
            fetcher_of(registered).fetch(location, None, destination)
        assert refused.value.field == "path"
        assert refused.value.message.startswith(
            f"{location} not found in the MLflow registry at {registered.uri}: "
        )
        assert detail in refused.value.message
        assert list(destination.iterdir()) == []

    @pytest.mark.parametrize("artifact_path", ["no-such-file.onnx", "../other", "."])
    def test_bad_artifact_path_is_refused(
        self, registered: MlflowServer, destination: Path, artifact_path: str
    ) -> None:
        with pytest.raises(CreateServableRequestInvalidError) as refused:
            fetcher_of(registered).fetch(f"models:/{MODEL_NAME}/1", artifact_path, destination)
        assert refused.value.field == "artifactPath"
        assert list(destination.iterdir()) == []

    @pytest.mark.parametrize(
        "location",
        ["models:/", f"models:/{MODEL_NAME}", f"models:/{MODEL_NAME}/latest", "models://x/1"],
    )
    def test_malformed_locations_are_refused(self, destination: Path, location: str) -> None:
        fetcher = MlflowRegistryFetcher(StorageOptions(mlflow_tracking_uri="http://127.0.0.1:1"))
        with pytest.raises(CreateServableRequestInvalidError) as refused:
            fetcher.fetch(location, None, destination)
        assert refused.value.message == (
            f"{location!r}: use models:/<name>/<version> or models:/<name>@<alias>"
        )

    def test_an_unreachable_server_is_refused_at_once(self, destination: Path) -> None:
        uri = f"http://user:s3cret@127.0.0.1:{free_port()}"
        fetcher = MlflowRegistryFetcher(StorageOptions(mlflow_tracking_uri=uri, timeout_s=5))
        with pytest.raises(CreateServableRequestInvalidError) as refused:
            fetcher.fetch("models:/anything/1", None, destination)
        assert refused.value.field == "path"
        assert refused.value.message == (
            f"MLflow tracking server http://***@127.0.0.1:{uri.rsplit(':', 1)[1]} is "
            "unreachable: ConnectionError"
        )

    def test_without_a_tracking_uri_deploys_are_refused(
        self, destination: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
        with pytest.raises(CreateServableRequestInvalidError) as refused:
            MlflowRegistryFetcher(StorageOptions()).fetch("models:/m/1", None, destination)
        assert refused.value.message.startswith(
            "models:/ and runs:/ locations need an MLflow tracking server, and none is configured"
        )


class TestMlflowRegistryBounds:
    def test_a_model_version_over_the_size_limit_is_refused(
        self, registered: MlflowServer, destination: Path
    ) -> None:
        options = StorageOptions(mlflow_tracking_uri=registered.uri, max_artifact_bytes=1000)
        with pytest.raises(ArtifactTooLarge) as refused:
            MlflowRegistryFetcher(options).fetch(f"models:/{MODEL_NAME}/1", None, destination)
        assert refused.value.status == 413
        assert list(destination.iterdir()) == []

    def test_the_fetch_deadline_ends_the_download(
        self, registered: MlflowServer, destination: Path
    ) -> None:
        # the download runs in a child process that needs far longer than this to start
        options = StorageOptions(mlflow_tracking_uri=registered.uri, fetch_deadline_s=0.001)
        with pytest.raises(CreateServableRequestInvalidError) as refused:
            MlflowRegistryFetcher(options).fetch(f"models:/{MODEL_NAME}/1", None, destination)
        assert refused.value.message == (
            f"could not fetch models:/{MODEL_NAME}/1: took longer than "
            "storage.fetch_deadline_s (0.001 s)"
        )
        assert list(destination.iterdir()) == []


def run_of(server: MlflowServer, version: str) -> str:
    """The id of the run that logged the registered version."""
    run_id: str = server.client.get_model_version(MODEL_NAME, version).run_id
    return run_id


class TestMlflowRunFetch:
    def test_a_runs_location_copies_the_runs_artifacts_and_is_pinned_as_it_is(
        self, registered: MlflowServer, destination: Path
    ) -> None:
        location = f"runs:/{run_of(registered, '1')}/model"
        fetcher = fetcher_for(location, StorageOptions(mlflow_tracking_uri=registered.uri))
        assert isinstance(fetcher, MlflowRunFetcher)

        pinned = fetcher.fetch(location, None, destination)

        assert tree(destination) == tree(MLFLOW_ONNX_MODEL)
        assert pinned == location

    def test_an_artifact_path_inside_the_run(
        self, registered: MlflowServer, destination: Path
    ) -> None:
        location = f"runs:/{run_of(registered, '2')}/model"
        fetcher = MlflowRunFetcher(StorageOptions(mlflow_tracking_uri=registered.uri))
        fetcher.fetch(location, "model.onnx", destination)
        assert tree(destination) == {"model.onnx": (ENERGY_OUTPUT / "model.onnx").read_bytes()}

    def test_an_unknown_run_is_refused_naming_the_tracking_server(
        self, registered: MlflowServer, destination: Path
    ) -> None:
        fetcher = MlflowRunFetcher(StorageOptions(mlflow_tracking_uri=registered.uri))
        with pytest.raises(CreateServableRequestInvalidError) as refused:
            fetcher.fetch("runs:/0123456789abcdef/model", None, destination)
        assert refused.value.field == "path"
        assert refused.value.message.startswith(
            f"runs:/0123456789abcdef/model not found in the MLflow tracking server at "
            f"{registered.uri}: "
        )
        assert list(destination.iterdir()) == []

    @pytest.mark.parametrize(
        "location", ["runs:/", "runs:/abc", "runs:/abc/", "runs:/abc/../x", "runs:/a b/model"]
    )
    def test_malformed_locations_are_refused(self, destination: Path, location: str) -> None:
        fetcher = MlflowRunFetcher(StorageOptions(mlflow_tracking_uri="http://127.0.0.1:1"))
        with pytest.raises(CreateServableRequestInvalidError) as refused:
            fetcher.fetch(location, None, destination)
        assert refused.value.message == (
            f"{location!r}: use runs:/<run_id>/<artifact path>, such as runs:/<run_id>/model"
        )
