"""`S3Fetcher` against moto's S3 server on 127.0.0.1, with credentials checked."""

from __future__ import annotations

import shutil
import sys
import zipfile
from pathlib import Path

import pytest

from forestflow.artifacts.base import StorageOptions, fetcher_for
from forestflow.artifacts.s3 import S3Fetcher
from forestflow.errors import (
    ArtifactTooLarge,
    CreateServableRequestInvalidError,
    InsufficientStorage,
    MalformedRequest,
)
from tests.integration.artifacts.conftest import (
    MODEL_BYTES,
    MODEL_TREE,
    AwsKey,
    Bucket,
    MotoServer,
    free_port,
    make_tar,
    make_zip,
    model_dir,
    tree,
    use_aws_key,
)


@pytest.fixture(autouse=True)
def reader_env(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The fetcher finds the `reader` key in the environment (tests may switch keys)."""
    use_aws_key(monkeypatch, moto_server.reader, tmp_path)


@pytest.fixture(scope="module")
def models(moto_server: MotoServer, tmp_path_factory: pytest.TempPathFactory) -> Bucket:
    """A bucket with a model directory, an object, archives and a decoy sibling prefix.

    Shared by the module: tests that add objects use keys no other test reads.
    """
    tmp_path = tmp_path_factory.mktemp("s3-models")
    bucket = Bucket(moto_server)
    source = model_dir(tmp_path / "energy")
    bucket.upload_dir(source, "models/energy")
    bucket.put("models/energy2/other.onnx", b"not this one")
    bucket.put("models/energy/sub/", b"")  # a "folder" marker, as consoles create
    bucket.put("single/model.onnx", MODEL_BYTES)
    bucket.put("archives/model.zip", make_zip(tmp_path / "m.zip", MODEL_TREE).read_bytes())
    members = [(f"energy/{name}", data) for name, data in MODEL_TREE.items()]
    bucket.put("archives/model.tar.gz", make_tar(tmp_path / "m.tgz", members).read_bytes())
    bucket.put("archives/42", (tmp_path / "m.zip").read_bytes(), content_type="application/zip")
    return bucket


def fetch(
    location: str, destination: Path, endpoint: str | None, artifact_path: str | None = None
) -> None:
    fetcher = fetcher_for(location, StorageOptions(s3_endpoint_url=endpoint, timeout_s=5))
    assert isinstance(fetcher, S3Fetcher)
    fetcher.fetch(location, artifact_path, destination)


def refused(
    location: str, destination: Path, endpoint: str, artifact_path: str | None = None
) -> str:
    with pytest.raises(CreateServableRequestInvalidError) as caught:
        fetch(location, destination, endpoint, artifact_path)
    assert caught.value.field == "path"
    assert not list(destination.glob(".forestflow-*")), "no temporary download is left behind"
    return caught.value.message


class TestDownloads:
    def test_single_object(self, models: Bucket, destination: Path) -> None:
        fetch(models.url("single/model.onnx"), destination, models.server.endpoint)
        assert tree(destination) == {"model.onnx": MODEL_BYTES}

    @pytest.mark.parametrize("key", ["models/energy", "models/energy/"])
    def test_directory_prefix(self, models: Bucket, destination: Path, key: str) -> None:
        fetch(models.url(key), destination, models.server.endpoint)
        assert tree(destination) == MODEL_TREE
        assert (destination / "sub").is_dir()

    def test_artifact_path_below_a_prefix(self, models: Bucket, destination: Path) -> None:
        fetch(models.url("models"), destination, models.server.endpoint, artifact_path="energy")
        assert tree(destination) == MODEL_TREE

    def test_artifact_path_naming_an_object(self, models: Bucket, destination: Path) -> None:
        fetch(
            models.url("archives"), destination, models.server.endpoint, artifact_path="model.zip"
        )
        assert tree(destination) == MODEL_TREE

    def test_zip_object_is_extracted(self, models: Bucket, destination: Path) -> None:
        fetch(models.url("archives/model.zip"), destination, models.server.endpoint)
        assert tree(destination) == MODEL_TREE

    def test_tar_gz_object_with_artifact_path(self, models: Bucket, destination: Path) -> None:
        url = models.url("archives/model.tar.gz")
        fetch(url, destination, models.server.endpoint, artifact_path="energy")
        assert tree(destination) == MODEL_TREE

    def test_content_type_marks_an_archive_without_suffix(
        self, models: Bucket, destination: Path
    ) -> None:
        fetch(models.url("archives/42"), destination, models.server.endpoint)
        assert tree(destination) == MODEL_TREE

    def test_whole_bucket(self, bucket: Bucket, destination: Path) -> None:
        bucket.put("model.onnx", MODEL_BYTES)
        bucket.put("meta/info.txt", b"info")
        fetch(f"s3://{bucket.name}", destination, bucket.server.endpoint)
        assert tree(destination) == {"model.onnx": MODEL_BYTES, "meta/info.txt": b"info"}

    def test_endpoint_from_the_aws_environment(
        self, models: Bucket, destination: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("AWS_ENDPOINT_URL", models.server.endpoint)
        fetch(models.url("single/model.onnx"), destination, endpoint=None)
        assert tree(destination) == {"model.onnx": MODEL_BYTES}


class TestFailures:
    def test_no_such_bucket(self, moto_server: MotoServer, destination: Path) -> None:
        message = refused("s3://no-such-bucket-here/models", destination, moto_server.endpoint)
        assert (
            message
            == "S3 bucket 'no-such-bucket-here' does not exist (s3://no-such-bucket-here/models)"
        )

    def test_no_objects_under_the_prefix(self, models: Bucket, destination: Path) -> None:
        message = refused(models.url("models/ener"), destination, models.server.endpoint)
        assert message.startswith(f"no objects under s3://{models.name}/models/ener/")

    def test_empty_object(self, models: Bucket, destination: Path) -> None:
        models.put("single/empty.onnx", b"")
        url = models.url("single/empty.onnx")
        assert refused(url, destination, models.server.endpoint) == f"{url} is an empty object"

    def test_corrupt_archive(self, models: Bucket, destination: Path) -> None:
        models.put("archives/bad.tgz", b"\x1f\x8b\x08 not really gzip")
        url = models.url("archives/bad.tgz")
        message = refused(url, destination, models.server.endpoint)
        assert message.startswith(f"{url} is not a valid tar.gz archive: ")

    @pytest.mark.parametrize("key", ["evil1/../../outside.txt", "evil2//etc/passwd"])
    def test_keys_escaping_the_destination(
        self, models: Bucket, destination: Path, key: str
    ) -> None:
        prefix = key.split("/", 1)[0]
        models.put(f"{prefix}/model.onnx", MODEL_BYTES)
        models.put(key, b"evil")
        message = refused(models.url(prefix), destination, models.server.endpoint)
        assert f"object key {key!r} would be written outside the artifact directory" in message
        assert not (destination.parent / "outside.txt").exists()

    @pytest.mark.parametrize(
        ("which", "code"),
        [("wrong-id", "InvalidAccessKeyId"), ("wrong-secret", "SignatureDoesNotMatch")],
    )
    def test_wrong_credentials(
        self,
        models: Bucket,
        destination: Path,
        monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path,
        which: str,
        code: str,
    ) -> None:
        reader = models.server.reader
        key = (
            AwsKey("AKIAWRONGWRONGWRONG1", "x")
            if which == "wrong-id"
            else AwsKey(reader.key_id, "x")
        )
        use_aws_key(monkeypatch, key, tmp_path)
        url = models.url("models/energy")
        message = refused(url, destination, models.server.endpoint)
        assert message.startswith(f"wrong S3 credentials for {url}: {code}: ")

    def test_no_permission(
        self, models: Bucket, destination: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        use_aws_key(monkeypatch, models.server.nobody, tmp_path)
        url = models.url("single/model.onnx")
        message = refused(url, destination, models.server.endpoint)
        assert message.startswith(f"access denied to {url}: wrong S3 credentials or no permission")
        assert "AccessDenied" in message

    def test_endpoint_unreachable(self, bucket: Bucket, destination: Path) -> None:
        endpoint = f"http://127.0.0.1:{free_port()}"
        message = refused(bucket.url("models/energy"), destination, endpoint)
        assert message.startswith(f"cannot reach the S3 endpoint {endpoint}: ")

    def test_location_without_bucket(self, bucket: Bucket, destination: Path) -> None:
        with pytest.raises(MalformedRequest) as caught:
            fetch("s3:///models", destination, bucket.server.endpoint)
        assert (caught.value.status, caught.value.field) == (400, "path")
        assert caught.value.message.startswith(
            "malformed S3 location 's3:///models': it names no bucket."
        )

    def test_missing_boto3_names_the_extra(
        self, bucket: Bucket, destination: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setitem(sys.modules, "boto3", None)  # as if it were not installed
        message = refused(bucket.url("m"), destination, bucket.server.endpoint)
        assert "pip install 'forestflow[s3]'" in message


class TestBounds:
    def fetcher(self, endpoint: str, **limits: int) -> S3Fetcher:
        return S3Fetcher(StorageOptions(s3_endpoint_url=endpoint, timeout_s=5, **limits))

    @pytest.mark.parametrize("key", ["single/model.onnx", "models/energy"])
    def test_objects_over_the_limit_are_refused_before_downloading(
        self, models: Bucket, destination: Path, key: str
    ) -> None:
        fetcher = self.fetcher(models.server.endpoint, max_artifact_bytes=1000)
        with pytest.raises(ArtifactTooLarge) as caught:
            fetcher.fetch(models.url(key), None, destination)
        assert caught.value.status == 413
        assert list(destination.iterdir()) == []

    def test_a_zip_bomb_is_refused(self, models: Bucket, destination: Path, tmp_path: Path) -> None:
        bomb = tmp_path / "bomb.zip"
        with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as bundle:
            bundle.writestr("model.onnx", b"\0" * (5 * 1024 * 1024))
        models.put("bounds/bomb.zip", bomb.read_bytes())
        fetcher = self.fetcher(models.server.endpoint, max_artifact_bytes=1024 * 1024)
        with pytest.raises(ArtifactTooLarge):
            fetcher.fetch(models.url("bounds/bomb.zip"), None, destination)
        assert list(destination.iterdir()) == []

    def test_too_little_free_space(self, models: Bucket, destination: Path) -> None:
        reserve = shutil.disk_usage(destination).free + 2**30
        fetcher = self.fetcher(models.server.endpoint, free_space_reserve_bytes=reserve)
        with pytest.raises(InsufficientStorage):
            fetcher.fetch(models.url("models/energy"), None, destination)
        assert list(destination.iterdir()) == []


class TestTheOriginalsForm:
    """`s3::http(s)://host[:port]/bucket[/prefix] bucket=<bucket> [region=<region>]`: the
    endpoint comes from the location, not from the server's settings."""

    @staticmethod
    def original(bucket: Bucket, prefix: str = "") -> str:
        path = f"{bucket.name}/{prefix}" if prefix else bucket.name
        return f"s3::{bucket.server.endpoint}/{path} bucket={bucket.name} region=us-east-1"

    @staticmethod
    def fetch(location: str, destination: Path, **options: object) -> None:
        settings = {"timeout_s": 5, "allow_private_hosts": True, **options}
        fetcher = fetcher_for(location, StorageOptions(**settings))  # type: ignore[arg-type]
        assert isinstance(fetcher, S3Fetcher)
        fetcher.fetch(location, None, destination)

    def test_a_prefix_after_the_bucket(self, models: Bucket, destination: Path) -> None:
        self.fetch(self.original(models, "models/energy"), destination)
        assert tree(destination) == MODEL_TREE

    def test_the_bucket_alone_is_the_whole_bucket(self, bucket: Bucket, destination: Path) -> None:
        # the original took the flavor's mojoPath as the key: it is found at the same place
        bucket.put("model.zip", b"a MOJO")
        bucket.put("meta/info.txt", b"info")
        self.fetch(self.original(bucket), destination)
        assert tree(destination) == {"model.zip": b"a MOJO", "meta/info.txt": b"info"}

    def test_the_endpoint_is_not_the_configured_one(
        self, models: Bucket, destination: Path
    ) -> None:
        elsewhere = f"http://127.0.0.1:{free_port()}"
        self.fetch(
            self.original(models, "single/model.onnx"), destination, s3_endpoint_url=elsewhere
        )
        assert tree(destination) == {"model.onnx": MODEL_BYTES}

    def test_a_private_endpoint_needs_the_setting(self, models: Bucket, destination: Path) -> None:
        with pytest.raises(CreateServableRequestInvalidError) as caught:
            self.fetch(
                self.original(models, "models/energy"), destination, allow_private_hosts=False
            )
        assert caught.value.field == "path"
        assert "(setting storage.allow_private_hosts)" in caught.value.message
        assert list(destination.iterdir()) == []

    def test_the_configured_endpoint_is_the_operator_s(
        self, models: Bucket, destination: Path
    ) -> None:
        self.fetch(
            self.original(models, "models/energy"),
            destination,
            allow_private_hosts=False,
            s3_endpoint_url=models.server.endpoint,
        )
        assert tree(destination) == MODEL_TREE

    def test_the_bounds_apply(self, models: Bucket, destination: Path) -> None:
        with pytest.raises(ArtifactTooLarge):
            self.fetch(self.original(models, "models/energy"), destination, max_artifact_bytes=1000)
        assert list(destination.iterdir()) == []

    def test_a_malformed_location_is_refused_before_any_request(
        self, models: Bucket, destination: Path
    ) -> None:
        location = f"s3::{models.server.endpoint}/{models.name} region=us-east-1"
        with pytest.raises(MalformedRequest) as caught:
            self.fetch(location, destination)
        assert (caught.value.status, caught.value.field) == (400, "path")
        assert "bucket=<bucket> is missing" in caught.value.message
