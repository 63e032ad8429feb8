"""`HttpFetcher` against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

from forestflow.artifacts.base import StorageOptions, fetcher_for
from forestflow.artifacts.http import DownloadProgress, HttpFetcher, connect_error_message
from forestflow.errors import CreateServableRequestInvalidError
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
    fetcher = fetcher_for(location, StorageOptions(timeout_s=timeout))
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
        assert refused(url, destination) == f"GET {url} answered HTTP 404 File not found"

    def test_credentials_in_the_url_are_not_repeated(
        self, served: FileServer, destination: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        url = served.url("missing.onnx").replace("://", "://alice:s3cret@")
        caplog.set_level(logging.INFO, logger="forestflow.artifacts.http")

        message = refused(url, destination)

        assert "s3cret" not in message
        assert "://***@" in message
        assert "answered HTTP 404" in message
        assert "s3cret" not in caplog.text

    def test_404_after_a_redirect_names_both_urls(
        self, served: FileServer, destination: Path
    ) -> None:
        message = refused(served.url("redirect/missing.zip"), destination)
        assert f"(redirected to {served.url('missing.zip')}) answered HTTP 404" in message

    def test_connection_refused(self, destination: Path) -> None:
        port = free_port()
        message = refused(f"http://127.0.0.1:{port}/model.onnx", destination)
        assert message.startswith(f"cannot connect to 127.0.0.1:{port}: connection refused")

    def test_stopped_server(self, served: FileServer, destination: Path) -> None:
        url = served.url("model.onnx")
        served.stop()
        assert "connection refused" in refused(url, destination)

    def test_timeout(self, http_files: FileServer, destination: Path) -> None:
        url = http_files.url("hang")
        message = refused(url, destination, timeout=0.3)
        assert message == f"timed out after 0.3 s downloading {url} (ReadTimeout)"

    def test_empty_body(self, served: FileServer, destination: Path) -> None:
        url = served.url("empty.onnx")
        assert refused(url, destination) == f"{url} answered with an empty body"

    def test_body_cut_off(self, served: FileServer, destination: Path) -> None:
        url = served.url("cut/model.onnx")
        assert refused(url, destination).startswith(f"the download of {url} was cut off: ")

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


class TestConnectErrorMessage:
    # DNS is not exercised for real: a lookup would leave this machine
    @pytest.mark.parametrize(
        ("reason", "start"),
        [
            ("[Errno -2] Name or service not known", "cannot resolve host 'h.test:80' (DNS"),
            ("[Errno -3] Temporary failure in name resolution", "cannot resolve host"),
            ("[Errno 111] Connection refused", "cannot connect to h.test:80: connection refused"),
            ("[Errno 113] No route to host", "cannot reach host h.test:80: [Errno 113]"),
        ],
    )
    def test_says_what_happened(self, reason: str, start: str) -> None:
        assert connect_error_message("h.test:80", reason).startswith(start)


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
