"""Deploys from HTTP(S) and S3 through the REST API, then restarts after the remote is gone.

Real servers on 127.0.0.1: an HTTP file server (a thread) and moto's S3 server (a
subprocess that checks credentials). A deployed model must keep serving from the local
artifact cache once its remote copy has disappeared and the server restarted; a deploy
that fails must answer a 422 saying why and leave nothing in the cache.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.integration.api.conftest import Harness, HarnessFactory
from tests.integration.artifacts.conftest import (
    ENERGY_MODEL,
    AwsKey,
    Bucket,
    FileServer,
    MotoServer,
    free_port,
    make_tar,
    make_zip,
    model_dir,
    use_aws_key,
)
from tests.payloads import POWERPLANT_FEATURES, POWERPLANT_ROWS, prediction_values, serve_body

BASE = "/samples/energy_output/0"
ONNX = {"ONNX": {"modelPath": "model.onnx"}}


def expected_predictions() -> list[float]:
    """What onnxruntime itself predicts for the test rows."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(ENERGY_MODEL), providers=["CPUExecutionProvider"])
    columns = np.array(POWERPLANT_ROWS, dtype=np.float32).T
    feeds = {
        name: column.reshape(-1, 1)
        for name, column in zip(POWERPLANT_FEATURES, columns, strict=True)
    }
    (prediction,) = session.run(["prediction"], feeds)
    return [float(value) for value in prediction.ravel()]


EXPECTED = expected_predictions()


@pytest.fixture
def web(tmp_path: Path) -> Iterator[FileServer]:
    """An HTTP server holding the model as a file, a zip and a tar.gz (under `energy/`)."""
    server = FileServer(tmp_path / "www")
    source = model_dir(tmp_path / "src" / "energy")
    (server.root / "model.onnx").write_bytes(ENERGY_MODEL.read_bytes())
    files = {path.name: path.read_bytes() for path in source.iterdir()}
    make_zip(server.root / "model.zip", files)
    make_tar(server.root / "model.tar.gz", [(f"energy/{n}", data) for n, data in files.items()])
    (server.root / "corrupt.zip").write_bytes(b"PK\x03\x04 truncated nonsense")
    make_tar(server.root / "evil.tar.gz", [("model.onnx", b"m"), ("../evil.txt", b"evil")])
    yield server
    server.stop()


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    server = MotoServer(tmp_path_factory.mktemp("moto") / "moto.log")
    yield server
    server.stop()


@pytest.fixture
def models(moto: MotoServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Bucket:
    """A fresh bucket holding the model directory under `models/energy/`; reader key in env."""
    use_aws_key(monkeypatch, moto.reader, tmp_path)
    bucket = Bucket(moto)
    bucket.upload_dir(model_dir(tmp_path / "s3src"), "models/energy")
    return bucket


async def assert_scores(harness: Harness) -> None:
    body = {
        "schema": [{"type": "Float64", "fields": POWERPLANT_FEATURES}],
        "datum": [{"tensors": [{"Float64": {"data": row}}]} for row in POWERPLANT_ROWS],
    }
    scored = await harness.client.post(f"{BASE}/score", json=body)
    assert scored.status_code == 200, scored.text
    assert scored.json()["Prediction"]["servableFQRV"] == "samples.energy_output.0.v1"
    got = [row[0] for row in prediction_values(scored.json())]
    np.testing.assert_allclose(got, EXPECTED, rtol=1e-6)


async def deploy_remove_restart(
    harness_factory: HarnessFactory,
    data_dir: Path,
    body: dict[str, Any],
    remove_remote: Callable[[], Awaitable[None] | None],
    **settings: Any,
) -> Harness:
    """Deploy `body`, score, remove the remote, restart on `data_dir`; return the new server."""
    first = await harness_factory(data_dir=data_dir, **settings)
    deployed = await first.client.post("/servable", json=body)
    assert deployed.status_code == 201, deployed.text
    await assert_scores(first)
    removed = remove_remote()
    if removed is not None:
        await removed
    await first.app.shutdown()
    second = await harness_factory(data_dir=data_dir, **settings)
    listed = (await second.client.get(f"{BASE}/list")).json()
    assert [item["FQRV"]["releaseVersion"] for item in listed] == ["v1"]
    await assert_scores(second)
    return second


def cached(data_dir: Path) -> dict[str, bytes]:
    """The files of servable v1's artifact copy."""
    root = data_dir / "artifacts" / "servables" / "samples" / "energy_output" / "0" / "v1"
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def files_under(root: Path, pattern: str = "*") -> list[Path]:
    """The files below `root` matching `pattern`."""
    return [path for path in root.rglob(pattern) if path.is_file()]


class TestHttpDeploys:
    @pytest.mark.parametrize(
        ("name", "artifact_path", "files"),
        [
            ("model.onnx", None, ["model.onnx"]),
            ("model.zip", None, ["README.md", "model.onnx"]),
            ("model.tar.gz", "energy", ["README.md", "model.onnx"]),
        ],
    )
    async def test_deploy_then_serve_from_the_cache_once_the_remote_is_gone(
        self,
        harness_factory: HarnessFactory,
        web: FileServer,
        tmp_path: Path,
        name: str,
        artifact_path: str | None,
        files: list[str],
    ) -> None:
        body = serve_body("v1", path=web.url(name), flavor=ONNX)
        if artifact_path:
            body["artifact_path"] = artifact_path
        data_dir = tmp_path / "data"
        await deploy_remove_restart(harness_factory, data_dir, body, web.stop)
        assert not web.running
        assert sorted(cached(data_dir)) == files
        assert cached(data_dir)["model.onnx"] == ENERGY_MODEL.read_bytes()


class TestS3Deploys:
    async def test_deploy_then_serve_from_the_cache_once_the_objects_are_gone(
        self, harness_factory: HarnessFactory, models: Bucket, tmp_path: Path
    ) -> None:
        body = serve_body("v1", path=models.url("models/energy"), flavor=ONNX)
        data_dir = tmp_path / "data"
        storage = {"s3_endpoint_url": models.server.endpoint, "timeout_s": 5}
        await deploy_remove_restart(
            harness_factory, data_dir, body, models.delete_all, storage=storage
        )
        assert models.client.list_objects_v2(Bucket=models.name).get("KeyCount") == 0
        assert sorted(cached(data_dir)) == ["README.md", "model.onnx"]


class TestBadRemoteDeploys:
    async def assert_refused(self, harness: Harness, path: str, expected: str) -> None:
        response = await harness.client.post(
            "/servable", json=serve_body("v1", path=path, flavor=ONNX)
        )
        assert response.status_code == 422, response.text
        error = response.json()["CreateServableRequestInvalidError"]
        assert error["field"] == "path"
        assert expected in error["errorMessage"]
        data_dir = harness.app.settings.data_dir
        assert files_under(data_dir / "artifacts") == []
        assert (await harness.client.get("/health/ready")).status_code == 200
        contracts = (await harness.client.get("/contracts/list")).json()
        assert contracts == {"Contracts": {"contracts": []}}

    async def test_unreachable_host(self, harness: Harness) -> None:
        port = free_port()
        url = f"http://127.0.0.1:{port}/model.onnx"
        # the answer does not tell a closed port from a missing host (no network detail)
        await self.assert_refused(harness, url, f"could not fetch {url}: connection failed")

    async def test_missing_path(self, harness: Harness, web: FileServer) -> None:
        url = web.url("models/missing.onnx")
        await self.assert_refused(harness, url, f"could not fetch {url}: HTTP 404 Not Found")

    async def test_corrupt_archive(self, harness: Harness, web: FileServer) -> None:
        url = web.url("corrupt.zip")
        await self.assert_refused(harness, url, f"{url} is not a valid zip archive: ")

    async def test_path_traversal(self, harness: Harness, web: FileServer, tmp_path: Path) -> None:
        expected = "archive entry '../evil.txt' would be written outside the destination"
        await self.assert_refused(harness, web.url("evil.tar.gz"), expected)
        assert files_under(tmp_path, "evil.txt") == []

    async def test_wrong_s3_credentials(
        self,
        harness_factory: HarnessFactory,
        models: Bucket,
        monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path,
    ) -> None:
        use_aws_key(monkeypatch, AwsKey(models.server.reader.key_id, "not-the-secret"), tmp_path)
        harness = await harness_factory(storage={"s3_endpoint_url": models.server.endpoint})
        url = models.url("models/energy")
        await self.assert_refused(
            harness, url, f"wrong S3 credentials for {url}: SignatureDoesNotMatch"
        )
