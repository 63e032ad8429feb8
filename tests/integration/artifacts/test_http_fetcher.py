"""`HttpFetcher` against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import ipaddress
import logging
import shutil
import socket
import sys
import time
import zipfile
from pathlib import Path

import pytest

from forestflow.artifacts.base import StorageOptions, fetcher_for
from forestflow.artifacts.hosts import HostCheck, IPAddress, is_non_public
from forestflow.artifacts.http import DownloadProgress, HttpFetcher
from forestflow.errors import (
    ArtifactTooLarge,
    CreateServableRequestInvalidError,
    InsufficientStorage,
)
from tests.integration.artifacts.conftest import (
    MODEL_BYTES,
    MODEL_TREE,
    FileServer,
    free_port,
    make_tar,
    make_zip,
    model_dir,
    tree,
)


@pytest.fixture
def served(http_files: FileServer, tmp_path: Path) -> FileServer:
    """The server, holding model.onnx, model.zip, model.tar.gz (top dir `energy/`), junk."""
    root = http_files.root
    (root / "model.onnx").write_bytes(MODEL_BYTES)
    source = model_dir(tmp_path / "src" / "energy")
    make_zip(root / "model.zip", MODEL_TREE)
    members = [(f"energy/{name}", data) for name, data in tree(source).items()]
    make_tar(root / "model.tar.gz", [("LICENSE", b"apache"), *members])
    make_tar(root / "model.tar", list(MODEL_TREE.items()), gz=False)
    (root / "empty.onnx").write_bytes(b"")
    (root / "corrupt.zip").write_bytes(b"PK\x03\x04 this is not really a zip")
    make_zip(root / "evil.zip", {"model.onnx": b"m", "../evil.txt": b"evil"})
    return http_files


def fetch(
    location: str, destination: Path, artifact_path: str | None = None, timeout: float = 10
) -> None:
    # the test servers listen on loopback: allowed here, refused by default (TestHostCheck)
    fetcher = fetcher_for(location, StorageOptions(timeout_s=timeout, allow_private_hosts=True))
    assert isinstance(fetcher, HttpFetcher)
    fetcher.fetch(location, artifact_path, destination)


def refused(location: str, destination: Path, artifact_path: str | None = None, **kw: float) -> str:
    with pytest.raises(CreateServableRequestInvalidError) as caught:
        fetch(location, destination, artifact_path, **kw)
    assert caught.value.field == ("artifactPath" if artifact_path else "path")
    # a partly extracted archive may remain: the cache deletes the directory on failure
    assert not list(destination.glob(".forestflow-*")), "no temporary download is left behind"
    return caught.value.message


class TestDownloads:
    def test_single_file_is_saved_under_its_name(
        self, served: FileServer, destination: Path
    ) -> None:
        fetch(served.url("model.onnx"), destination)
        assert tree(destination) == {"model.onnx": MODEL_BYTES}

    @pytest.mark.parametrize("name", ["model.zip", "model.tar"])
    def test_archive_is_extracted(self, served: FileServer, destination: Path, name: str) -> None:
        fetch(served.url(name), destination)
        assert tree(destination) == MODEL_TREE

    def test_artifact_path_selects_a_directory_of_the_archive(
        self, served: FileServer, destination: Path
    ) -> None:
        fetch(served.url("model.tar.gz"), destination, artifact_path="energy")
        assert tree(destination) == MODEL_TREE

    def test_tar_gz_without_artifact_path_keeps_its_layout(
        self, served: FileServer, destination: Path
    ) -> None:
        fetch(served.url("model.tar.gz"), destination)
        assert sorted(tree(destination)) == ["LICENSE", "energy/README.md", "energy/model.onnx"]

    def test_https_is_registered_for_the_same_fetcher(self) -> None:
        fetcher = fetcher_for("https://example.test/m.zip", StorageOptions())
        assert isinstance(fetcher, HttpFetcher)

    def test_redirects_are_followed(self, served: FileServer, destination: Path) -> None:
        fetch(served.url("redirect/model.zip"), destination)
        assert tree(destination) == MODEL_TREE

    def test_content_disposition_names_the_download(
        self, served: FileServer, destination: Path
    ) -> None:
        fetch(served.url("attachment/model.zip?filename=../bundle.zip"), destination)
        assert tree(destination) == MODEL_TREE

    def test_content_type_decides_for_a_name_without_suffix(
        self, served: FileServer, destination: Path
    ) -> None:
        fetch(served.url("blob?file=model.tar.gz&type=application/gzip"), destination, "energy")
        assert tree(destination) == MODEL_TREE

    def test_big_download_logs_progress(
        self, http_files: FileServer, destination: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        (http_files.root / "big.bin").write_bytes(b"\0" * (20 * 1024 * 1024))
        with caplog.at_level(logging.INFO, logger="forestflow.artifacts.http"):
            fetch(http_files.url("big.bin"), destination)
        progress = [r.getMessage() for r in caplog.records if "%" in r.getMessage()]
        assert len(progress) == 10
        assert progress[-1].endswith("100% (20971520 of 20971520 bytes)")
        assert any(
            "downloaded" in r.getMessage() and "20971520 bytes" in r.getMessage()
            for r in caplog.records
        )
        assert (destination / "big.bin").stat().st_size == 20 * 1024 * 1024


class TestFailures:
    def test_404_says_the_status(self, served: FileServer, destination: Path) -> None:
        url = served.url("missing.onnx")
        assert refused(url, destination) == f"could not fetch {url}: HTTP 404 Not Found"

    def test_credentials_in_the_url_are_not_repeated(
        self, served: FileServer, destination: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        url = served.url("missing.onnx").replace("://", "://alice:s3cret@")
        caplog.set_level(logging.INFO, logger="forestflow.artifacts.http")

        message = refused(url, destination)

        assert "s3cret" not in message
        assert "://***@" in message
        assert "HTTP 404" in message
        assert "s3cret" not in caplog.text

    def test_404_after_a_redirect_names_both_urls(
        self, served: FileServer, destination: Path
    ) -> None:
        message = refused(served.url("redirect/missing.zip"), destination)
        assert f"(redirected to {served.url('missing.zip')}): HTTP 404" in message

    def test_connection_refused_names_no_port_or_system_error(self, destination: Path) -> None:
        url = f"http://127.0.0.1:{free_port()}/model.onnx"
        assert refused(url, destination) == f"could not fetch {url}: connection failed"

    def test_stopped_server(self, served: FileServer, destination: Path) -> None:
        url = served.url("model.onnx")
        served.stop()
        assert refused(url, destination) == f"could not fetch {url}: connection failed"

    def test_timeout(self, http_files: FileServer, destination: Path) -> None:
        url = http_files.url("hang")
        message = refused(url, destination, timeout=0.3)
        assert message == f"could not fetch {url}: timed out (storage.timeout_s = 0.3 s)"

    def test_empty_body(self, served: FileServer, destination: Path) -> None:
        url = served.url("empty.onnx")
        assert refused(url, destination) == f"{url} answered with an empty body"

    def test_body_cut_off(self, served: FileServer, destination: Path) -> None:
        url = served.url("cut/model.onnx")
        assert refused(url, destination) == f"could not fetch {url}: the connection was cut off"

    def test_corrupt_archive(self, served: FileServer, destination: Path) -> None:
        url = served.url("corrupt.zip")
        assert (
            refused(url, destination) == f"{url} is not a valid zip archive: File is not a zip file"
        )

    def test_path_traversal_in_the_archive(self, served: FileServer, destination: Path) -> None:
        message = refused(served.url("evil.zip"), destination)
        assert "archive entry '../evil.txt' would be written outside the destination" in message
        assert not (destination.parent / "evil.txt").exists()

    def test_directory_url(self, served: FileServer, destination: Path) -> None:
        url = served.url("")
        assert refused(url, destination).startswith(f"{url} names a directory, not a file")

    def test_artifact_path_missing_from_the_archive(
        self, served: FileServer, destination: Path
    ) -> None:
        message = refused(served.url("model.zip"), destination, artifact_path="nope")
        assert message == f"artifact_path 'nope' is not in the archive {served.url('model.zip')}"

    def test_artifact_path_on_a_single_file(self, served: FileServer, destination: Path) -> None:
        assert "applies to archives only" in refused(served.url("model.onnx"), destination, "sub")

    def test_invalid_url(self, destination: Path) -> None:
        assert "is not a valid HTTP(S) URL" in refused("http:///model.onnx", destination)

    def test_missing_httpx_names_the_extra(
        self, served: FileServer, destination: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setitem(sys.modules, "httpx", None)  # as if it were not installed
        message = refused(served.url("model.onnx"), destination)
        assert "pip install 'forestflow[http]'" in message


class TestDownloadProgress:
    def test_unknown_size_logs_every_interval(self, caplog: pytest.LogCaptureFixture) -> None:
        now = [0.0]
        progress = DownloadProgress("u", None, interval_s=5.0, clock=lambda: now[0])
        with caplog.at_level(logging.INFO, logger="forestflow.artifacts.http"):
            for _ in range(12):
                now[0] += 1.0
                progress.advance(100)
        assert [r.getMessage() for r in caplog.records] == [
            "downloading u: 500 bytes so far",
            "downloading u: 1000 bytes so far",
        ]

    def test_small_known_size_logs_no_steps(self, caplog: pytest.LogCaptureFixture) -> None:
        progress = DownloadProgress("u", 1000)
        with caplog.at_level(logging.INFO, logger="forestflow.artifacts.http"):
            progress.advance(1000)
        assert caplog.records == []


def zip_bomb(path: Path, unpacked_bytes: int) -> Path:
    """A zip of one file of `unpacked_bytes` zeros: a few KB that unpack to megabytes."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as bundle:
        bundle.writestr("model.onnx", b"\0" * unpacked_bytes)
    return path


def too_large(fetcher: HttpFetcher, url: str, destination: Path, limit: int) -> None:
    with pytest.raises(ArtifactTooLarge) as caught:
        fetcher.fetch(url, None, destination)
    assert caught.value.status == 413
    assert caught.value.field == "path"
    assert f"limit of {limit} bytes (setting storage.max_artifact_bytes)" in caught.value.message
    assert list(destination.iterdir()) == [], "no partial file is left behind"


class TestBounds:
    def test_an_endless_body_is_cut_off_at_the_size_limit(
        self, http_files: FileServer, destination: Path
    ) -> None:
        options = StorageOptions(allow_private_hosts=True, max_artifact_bytes=1024 * 1024)
        too_large(HttpFetcher(options), http_files.url("endless"), destination, 1024 * 1024)

    def test_a_content_length_over_the_limit_is_refused_before_downloading(
        self, served: FileServer, destination: Path
    ) -> None:
        options = StorageOptions(allow_private_hosts=True, max_artifact_bytes=1000)
        assert len(MODEL_BYTES) > 1000
        too_large(HttpFetcher(options), served.url("model.onnx"), destination, 1000)

    def test_a_zip_bomb_is_refused_before_it_is_unpacked(
        self, http_files: FileServer, destination: Path
    ) -> None:
        bomb = zip_bomb(http_files.root / "bomb.zip", 5 * 1024 * 1024)
        assert bomb.stat().st_size < 100_000
        options = StorageOptions(allow_private_hosts=True, max_artifact_bytes=1024 * 1024)
        too_large(HttpFetcher(options), http_files.url("bomb.zip"), destination, 1024 * 1024)

    def test_a_trickling_server_is_cut_off_at_the_deadline(
        self, http_files: FileServer, destination: Path
    ) -> None:
        options = StorageOptions(allow_private_hosts=True, timeout_s=10, fetch_deadline_s=1)
        url = http_files.url("trickle")
        started = time.monotonic()
        with pytest.raises(CreateServableRequestInvalidError) as caught:
            HttpFetcher(options).fetch(url, None, destination)
        assert time.monotonic() - started < 30  # bounded; the trickle alone takes 200 s
        assert caught.value.message == (
            f"could not fetch {url}: took longer than storage.fetch_deadline_s (1 s)"
        )
        assert caught.value.field == "path"
        assert list(destination.iterdir()) == []

    def test_too_little_free_space_is_refused_with_507(
        self, served: FileServer, destination: Path
    ) -> None:
        free = shutil.disk_usage(destination).free
        options = StorageOptions(allow_private_hosts=True, free_space_reserve_bytes=free + 2**30)
        with pytest.raises(InsufficientStorage) as caught:
            HttpFetcher(options).fetch(served.url("model.zip"), None, destination)
        assert caught.value.status == 507
        assert "bytes free" in caught.value.message
        assert "storage.free_space_reserve_bytes" in caught.value.message
        assert list(destination.iterdir()) == []


def loopback_1_is_public(address: IPAddress) -> bool:
    """`is_non_public`, except that 127.0.0.1 passes: the test servers' address plays an
    allowed public host, and any other loopback address a private one."""
    return address != ipaddress.ip_address("127.0.0.1") and is_non_public(address)


class TestHostCheck:
    @pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::ffff:127.0.0.1]"])
    def test_loopback_hosts_are_refused_by_default(
        self, served: FileServer, destination: Path, host: str
    ) -> None:
        url = served.url("model.onnx").replace("127.0.0.1", host)
        with pytest.raises(CreateServableRequestInvalidError) as caught:
            HttpFetcher(StorageOptions()).fetch(url, None, destination)
        assert caught.value.field == "path"
        assert caught.value.message == (
            f"could not fetch {url}: the host resolves to a private or loopback address "
            "(setting storage.allow_private_hosts)"
        )
        assert served.requests == [], "nothing was sent to the host"
        assert list(destination.iterdir()) == []

    def test_every_address_of_a_name_is_checked(self, destination: Path) -> None:
        def resolver(host: str, port: int) -> list[IPAddress]:
            return [ipaddress.ip_address("203.0.113.7"), ipaddress.ip_address("10.1.2.3")]

        hosts = HostCheck(resolver=resolver)
        url = "http://models.example.test/model.onnx"
        with pytest.raises(CreateServableRequestInvalidError, match="private or loopback"):
            HttpFetcher(StorageOptions(), hosts=hosts).fetch(url, None, destination)

    def test_a_name_that_does_not_resolve(self, destination: Path) -> None:
        def resolver(host: str, port: int) -> list[IPAddress]:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

        url = "http://models.example.test/model.onnx"
        with pytest.raises(CreateServableRequestInvalidError) as caught:
            HttpFetcher(StorageOptions(), hosts=HostCheck(resolver=resolver)).fetch(
                url, None, destination
            )
        assert caught.value.message == f"could not fetch {url}: the host name does not resolve"

    def test_a_redirect_to_a_private_host_is_refused(
        self, served: FileServer, destination: Path
    ) -> None:
        fetcher = HttpFetcher(StorageOptions(), hosts=HostCheck(forbidden=loopback_1_is_public))
        fetcher.fetch(served.url("model.zip"), None, destination)  # 127.0.0.1 is allowed
        assert tree(destination) == MODEL_TREE
        again = destination.parent / "again"
        again.mkdir()
        target = f"http://127.0.0.2:{served.port}/model.zip"
        url = served.url(f"redirect-to?url={target}")

        with pytest.raises(CreateServableRequestInvalidError) as caught:
            fetcher.fetch(url, None, again)

        assert caught.value.message == (
            f"could not fetch {url}: the host resolves to a private or loopback address "
            "(setting storage.allow_private_hosts)"
        )
        assert served.requests[-1] == f"/redirect-to?url={target}"
        assert list(again.iterdir()) == []

    def test_the_connected_peer_is_checked_too(self, served: FileServer, destination: Path) -> None:
        # the name resolves to a public address for the check, but the connection lands
        # on loopback: what a DNS answer that changes between the two would do
        def resolver(host: str, port: int) -> list[IPAddress]:
            return [ipaddress.ip_address("203.0.113.7")]

        url = served.url("model.onnx").replace("127.0.0.1", "localhost")
        fetcher = HttpFetcher(StorageOptions(), hosts=HostCheck(resolver=resolver))
        with pytest.raises(CreateServableRequestInvalidError, match="private or loopback"):
            fetcher.fetch(url, None, destination)
        assert list(destination.iterdir()) == []
