"""Real remote stores on 127.0.0.1: an HTTP file server (a thread), `git daemon` and
moto's S3 server.

The moto server checks credentials: after a bootstrap with authentication off (an IAM
user `reader` allowed `s3:*`, a user `nobody` with no permission) it switches on IAM
authentication through `/moto-api/reset-auth`, so wrong keys, wrong secrets and missing
permissions are refused as AWS would (`InvalidAccessKeyId`, `SignatureDoesNotMatch`,
`AccessDenied`). The fetcher runs in this process and reads boto3's default credential
chain, so the tests hand it credentials through environment variables (`aws_env`).
"""

from __future__ import annotations

import contextlib
import io
import json
import socket
import subprocess
import sys
import tarfile
import threading
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from forestflow.artifacts.base import StorageOptions

START_TIMEOUT_S = 60.0
REGION = "us-east-1"
ENERGY_MODEL = Path(__file__).resolve().parents[3] / "examples" / "energy_output" / "model.onnx"
MODEL_BYTES = ENERGY_MODEL.read_bytes()
MODEL_TREE = {"README.md": b"energy output model\n", "model.onnx": MODEL_BYTES}


def tree(directory: Path) -> dict[str, bytes]:
    """Every file under `directory`: relative path → bytes."""
    return {
        path.relative_to(directory).as_posix(): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


TrustingOptions = Callable[..., StorageOptions]


@pytest.fixture(scope="session")
def trusting(tmp_path_factory: pytest.TempPathFactory) -> TrustingOptions:
    """`StorageOptions(**overrides)` that trust the tests' own artifacts: local paths under
    pytest's temporary directories, servers on loopback."""
    roots = (tmp_path_factory.getbasetemp(),)

    def options(**overrides: Any) -> StorageOptions:
        return StorageOptions(**{"local_roots": roots, "allow_private_hosts": True, **overrides})

    return options


@pytest.fixture
def destination(tmp_path: Path) -> Path:
    """An empty directory to fetch into, placed as the cache places its incoming copies."""
    target = tmp_path / "cache" / "incoming"
    target.mkdir(parents=True)
    return target


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ----------------------------------------------------------------------------- archives


def make_zip(path: Path, entries: dict[str, bytes]) -> Path:
    """A zip holding `entries` (name → bytes), names written exactly as given."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as bundle:
        for name, data in entries.items():
            bundle.writestr(name, data)
    return path


def make_tar(
    path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]], gz: bool = True
) -> Path:
    """A tar (gzip-compressed unless `gz` is False) of (name, bytes) files and raw TarInfos."""
    with tarfile.open(path, "w:gz" if gz else "w") as tar:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tar.addfile(member)
            else:
                name, data = member
                info = tarfile.TarInfo(name)
                info.size = len(data)
                info.mode = 0o644
                tar.addfile(info, io.BytesIO(data))
    return path


def link_member(name: str, target: str, *, hard: bool = False) -> tarfile.TarInfo:
    """A tar symlink (or hard link) member."""
    info = tarfile.TarInfo(name)
    info.type = tarfile.LNKTYPE if hard else tarfile.SYMTYPE
    info.linkname = target
    return info


def model_dir(root: Path) -> Path:
    """A model directory: the energy-output ONNX model plus a README."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "model.onnx").write_bytes(ENERGY_MODEL.read_bytes())
    (root / "README.md").write_text("energy output model\n")
    return root


# ----------------------------------------------------------------------------- HTTP


class _Handler(SimpleHTTPRequestHandler):
    """Files from the server's root, plus a few routes that misbehave on purpose.

    - `/hang` accepts the request and never answers (until the server stops);
    - `/redirect/<path>` answers 302 to `/<path>`;
    - `/blob?file=<name>&type=<content type>` serves a file under a name without suffix;
    - `/attachment/<path>?filename=<name>` adds a Content-Disposition filename;
    - `/cut/<path>` promises the whole file but sends only its first bytes;
    - `/redirect-to?url=<url>` answers 302 to any URL;
    - `/endless` sends a chunked body of zeros that never ends;
    - `/trickle` promises 1000 bytes and sends one every 0.2 s.

    Every request's path is recorded in `server.requests`.
    """

    server: FileServer._Server

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = {key: values[0] for key, values in parse_qs(url.query).items()}
        self.server.requests.append(self.path)
        if url.path == "/hang":
            self.server.release.wait(START_TIMEOUT_S)
        elif url.path == "/redirect-to":
            self.send_response(302)
            self.send_header("Location", query["url"])
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif url.path in ("/endless", "/trickle"):
            self._send_forever(endless=url.path == "/endless")
        elif url.path.startswith("/redirect/"):
            self.send_response(302)
            self.send_header("Location", url.path.removeprefix("/redirect"))
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif url.path == "/blob":
            self._send(self.server.root / query["file"], {"Content-Type": query["type"]})
        elif url.path.startswith("/attachment/"):
            disposition = f'attachment; filename="{query["filename"]}"'
            headers = {"Content-Disposition": disposition}
            self._send(self.server.root / url.path.removeprefix("/attachment/"), headers)
        elif url.path.startswith("/cut/"):
            data = (self.server.root / url.path.removeprefix("/cut/")).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.close_connection = True
        else:
            super().do_GET()

    def _send_forever(self, *, endless: bool) -> None:
        """Send until the client hangs up or the server stops."""
        self.send_response(200)
        if endless:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", "1000")
        self.end_headers()
        chunk = b"\0" * 65536
        framed = b"%x\r\n%s\r\n" % (len(chunk), chunk)
        self.close_connection = True
        try:
            while not self.server.release.is_set():
                if endless:
                    self.wfile.write(framed)
                else:
                    self.wfile.write(b"\0")
                    self.wfile.flush()
                    self.server.release.wait(0.2)  # the trickle's pace, not a test's sleep
        except OSError:  # the client hung up: what the tests expect of it
            return

    def _send(self, path: Path, headers: dict[str, str]) -> None:
        data = path.read_bytes()
        self.send_response(200)
        for name, value in {"Content-Length": str(len(data)), **headers}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: pytest output is not the place for access logs."""


class FileServer:
    """A `ThreadingHTTPServer` on 127.0.0.1 serving the directory `root`."""

    class _Server(ThreadingHTTPServer):
        root: Path
        release: threading.Event
        requests: list[str]

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

        def handler(*args: Any) -> _Handler:
            return _Handler(*args, directory=str(root))

        self._server = self._Server(("127.0.0.1", 0), handler)
        self._server.root = root
        self._server.release = threading.Event()
        self._server.requests = []
        self.requests = self._server.requests
        self.port = int(self._server.server_address[1])
        # a short poll interval: shutdown() waits for the loop to notice
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        self.running = True

    def url(self, path: str) -> str:
        """The URL of `path` on this server."""
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}"

    def stop(self) -> None:
        """Stop serving and free the port (idempotent)."""
        if not self.running:
            return
        self.running = False
        self._server.release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


@pytest.fixture
def http_files(tmp_path: Path) -> Iterator[FileServer]:
    server = FileServer(tmp_path / "www")
    yield server
    server.stop()


# ----------------------------------------------------------------------------- Git


class GitDaemon:
    """`git daemon` on 127.0.0.1 serving every repository under `root` over git://."""

    def __init__(self, root: Path, log_path: Path) -> None:
        self.root = root
        self.port = free_port()
        self._log = log_path.open("w")
        self._log_path = log_path
        self.proc = subprocess.Popen(
            [
                "git",
                "daemon",
                "--reuseaddr",
                "--export-all",
                "--informative-errors",
                f"--base-path={root}",
                "--listen=127.0.0.1",
                f"--port={self.port}",
                str(root),
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self._wait_until_listening()

    def _wait_until_listening(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while self.proc.poll() is None and time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
            except OSError:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(timeout=0.05)  # a bounded wait on the process, not a sleep
            else:
                return
        self.stop()
        raise AssertionError(f"git daemon did not start; log:\n{self._log_path.read_text()}")

    def url(self, repository: Path, tag: str) -> str:
        """The git:// location of `repository` (under the root) at `tag`."""
        return f"git://127.0.0.1:{self.port}/{repository.relative_to(self.root).as_posix()}#{tag}"

    def stop(self) -> None:
        """Terminate the daemon."""
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
        self._log.close()


# ----------------------------------------------------------------------------- S3


@dataclass(frozen=True)
class AwsKey:
    """An access key pair."""

    key_id: str
    secret: str


class MotoServer:
    """`python -m moto.server` on a free port, with IAM authentication switched on."""

    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._log = log_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-p", str(self.port), "-H", "127.0.0.1"],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self._log_path = log_path
        self._wait_until_listening()
        self.reader, self.nobody = self._bootstrap()

    def _wait_until_listening(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while self.proc.poll() is None and time.monotonic() < deadline:
            try:
                httpx.get(f"{self.endpoint}/moto-api/data.json", timeout=0.5)
            except httpx.TransportError:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(timeout=0.05)  # a bounded wait on the process, not a sleep
            else:
                return
        self.stop()
        raise AssertionError(f"moto did not start; log:\n{self._log_path.read_text()}")

    def _bootstrap(self) -> tuple[AwsKey, AwsKey]:
        anonymous = AwsKey("bootstrap", "bootstrap")
        iam = self.client(anonymous, "iam")
        keys = []
        for user, allowed in (("reader", True), ("nobody", False)):
            iam.create_user(UserName=user)
            if allowed:
                policy = {
                    "Version": "2012-10-17",
                    "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
                }
                iam.put_user_policy(
                    UserName=user, PolicyName="s3", PolicyDocument=json.dumps(policy)
                )
            created = iam.create_access_key(UserName=user)["AccessKey"]
            keys.append(AwsKey(created["AccessKeyId"], created["SecretAccessKey"]))
        # from now on every request must be signed by a known key with the permission
        httpx.post(f"{self.endpoint}/moto-api/reset-auth", content=b"0").raise_for_status()
        return keys[0], keys[1]

    def client(self, key: AwsKey, service: str = "s3") -> Any:
        """A boto3 client for this server signed with `key`."""
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=key.key_id,
            aws_secret_access_key=key.secret,
        )

    def stop(self) -> None:
        """Terminate the server."""
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
        self._log.close()


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    server = MotoServer(tmp_path_factory.mktemp("moto") / "moto.log")
    yield server
    server.stop()


def use_aws_key(monkeypatch: pytest.MonkeyPatch, key: AwsKey, home: Path) -> None:
    """Make boto3's default chain in this process find `key`, and nothing else."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key.key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key.secret)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    # never ask an instance-metadata service: there is none here
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(home / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(home / "aws-credentials"))
    # one attempt: the unreachable-endpoint tests need no retry back-off
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)


class Bucket:
    """A fresh bucket on the moto server, written to with the `reader` key."""

    def __init__(self, server: MotoServer) -> None:
        self.server = server
        self.name = f"models-{uuid.uuid4().hex[:12]}"
        self.client = server.client(server.reader)
        self.client.create_bucket(Bucket=self.name)

    def url(self, key: str = "") -> str:
        """`s3://bucket/key`."""
        return f"s3://{self.name}/{key}"

    def put(self, key: str, data: bytes, content_type: str | None = None) -> None:
        """Upload one object."""
        extra = {"ContentType": content_type} if content_type else {}
        self.client.put_object(Bucket=self.name, Key=key, Body=data, **extra)

    def upload_dir(self, directory: Path, prefix: str) -> list[str]:
        """Upload every file under `directory` below `prefix/`; return the keys."""
        keys = []
        for path in sorted(p for p in directory.rglob("*") if p.is_file()):
            key = f"{prefix}/{path.relative_to(directory).as_posix()}"
            self.put(key, path.read_bytes())
            keys.append(key)
        return keys

    def delete_all(self) -> None:
        """Delete every object of the bucket."""
        listed = self.client.list_objects_v2(Bucket=self.name).get("Contents", [])
        for obj in listed:
            self.client.delete_object(Bucket=self.name, Key=obj["Key"])


@pytest.fixture
def bucket(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Bucket:
    use_aws_key(monkeypatch, moto_server.reader, tmp_path)
    return Bucket(moto_server)
