"""The examples of the docs are what the server accepts, and answer what the docs show.

docs/storage.md and docs/flavors.md: every ```json block and every `curl -d` body must be
valid JSON (with `$PWD` standing for the repository root, as the docs are run from there).
Serve requests — the body of a `POST /servable`, or a JSON block that is one — go through
the REST API's own parsing (`endpoints._serve_request`) and must be what their section
documents: the storage protocol of `path`, the request type, the flavor, the FQRV of the
answer shown after it. Score bodies go through the BASIC API's parser. Finally the worked
examples that need nothing but this repository are run, command by command, against an
in-process server, and the answers the docs show must be the ones it gives.

docs/protocols/*.md, one page per standard protocol (docs/protocols.md links them): every
```bash and ```python block is copy-paste code, run as written — in the repository root,
in document order, against one fresh `forestflow serve` process per page, its ports
standing for 8090 and 8091. Each shell command must print what the comment lines right
under it show (or, for a block's last command, the ```json block right after the block);
each python block, run in its own interpreter, must print what the comment lines right
under its `print(` lines show. A comment after a blank line is prose. Numbers may be
shown rounded; any other fence is refused, so no example escapes the run.
docs/migrating.md is run the same way.

Last, every relative link of README.md and docs/ leads to a file, and to a heading of it.
"""

from __future__ import annotations

import math
import re
import shlex
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import pytest

from forestflow.api.rest.converters import parse_inference_request
from forestflow.api.rest.endpoints import _serve_request
from forestflow.app import create_app
from forestflow.artifacts.base import StorageOptions, fetcher_for, protocol_of
from forestflow.config import Settings
from forestflow.control.serve_request import BasicServeRequest, MLFlowServeRequest, ServeRequest
from forestflow.domain.codec import encode
from forestflow.domain.fqrv import FQRV, Contract
from forestflow.errors import CreateServableRequestInvalidError
from forestflow.flavors.base import parse_flavor
from forestflow.testing import FakeClock
from tests.e2e.conftest import ServerProcess, free_port

REPO = Path(__file__).resolve().parents[2]
STORAGE = REPO / "docs" / "storage.md"
FLAVORS = REPO / "docs" / "flavors.md"

# The section of each worked example, and the storage protocol its `path` must have.
STORAGE_PROTOCOLS = {
    "Local files": "file",
    "HTTP(S)": "http",
    "S3": "s3",
    "Git": "git",
    "MLflow Model Registry": "models",
}
# The section of each flavor's worked example, and the flavor its BasicServeRequest names.
FLAVOR_SECTIONS = {
    "ONNX": "ONNX",
    "Sklearn": "Sklearn",
    "H2OMojo": "H2OMojo",
    "XGBoost": "XGBoost",
    "LightGBM": "LightGBM",
    "PyFunc": "PyFunc",
}
MLFLOW_SECTION = "MLflow models"
# What the docs say the server picks for each MLflow model directory they deploy.
MLFLOW_CHOICES = {"logreg_iris_pipeline": "Sklearn", "xgb_breast_cancer_booster": "XGBoost"}
# Sections whose commands need nothing outside this repository: run for real.
RUNNABLE = [(FLAVORS, section) for section in [*FLAVOR_SECTIONS, MLFLOW_SECTION]] + [
    (STORAGE, "Local files")
]
ANSWERS = ("Prediction", "ServableCreatedSuccessfully", "CreateServableRequestInvalidError")
SERVABLE_PATH = re.compile(r"/servable(?:/([^/]+)/([^/]+)/(\d+)/([^/]+))?")
SCORE_PATH = re.compile(r"/[^/]+/[^/]+/\d+(?:/[^/]+)?/score")


# ------------------------------------------------------------------ reading the docs


@dataclass(frozen=True)
class Item:
    """A JSON block, or one curl command of a bash block, in document order."""

    doc: str
    section: str  # the nearest heading above it, without its #s
    line: int
    body: Any  # the JSON block, or the curl's -d body (None without one)
    method: str | None = None  # None for a JSON block
    url: str | None = None

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line} ({self.section})"

    @property
    def is_curl(self) -> bool:
        return self.method is not None

    @property
    def is_serve_request(self) -> bool:
        if self.is_curl:
            return SERVABLE_PATH.fullmatch(urlsplit(self.url or "").path) is not None
        body = self.body
        wrapped = (
            isinstance(body, dict) and len(body) == 1 and next(iter(body)) in ServeRequest.registry
        )
        return wrapped or (isinstance(body, dict) and "path" in body)

    def url_fqrv(self) -> FQRV | None:
        """The FQRV of a `/servable/{org}/{project}/{n}/{release}` URL."""
        match = SERVABLE_PATH.fullmatch(urlsplit(self.url or "").path)
        if match is None or match[1] is None:
            return None
        return FQRV(Contract(match[1], match[2], int(match[3])), match[4])


def items(doc: Path) -> list[Item]:
    """Every JSON block and curl command of `doc`, in order, with the section it is in."""
    found: list[Item] = []
    section = ""
    lines = doc.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.startswith("#"):
            section = line.lstrip("#").strip()
        elif line.startswith("```"):
            language = line[3:].strip()
            end = next(i for i in range(index + 1, len(lines)) if lines[i].startswith("```"))
            text = "\n".join(lines[index + 1 : end])
            where = (doc.name, section, index + 2)
            if language == "json":
                found.append(Item(*where, body=_json(text, f"{doc.name}:{index + 2}")))
            elif language == "bash":
                found.extend(_curls(text, *where))
            index = end
        index += 1
    return found


def _json(text: str, where: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as error:
        pytest.fail(f"{where}: not valid JSON: {error}")


def _commands(text: str) -> Iterator[list[str]]:
    """The shell commands of a bash block as argument lists (quotes may span lines)."""
    pending = ""
    for line in text.replace("\\\n", " ").splitlines():
        pending = f"{pending}\n{line}" if pending else line
        try:
            words = shlex.split(pending, comments=True)
        except ValueError:  # an open quote: the command goes on
            continue
        pending = ""
        if words:
            yield words
    assert not pending, f"unterminated shell command: {pending[:80]}"


def _curls(text: str, doc: str, section: str, line: int) -> list[Item]:
    found = []
    for words in _commands(text):
        if words[0] != "curl":
            continue
        method, url, body = "GET", None, None
        arguments = iter(words[1:])
        for word in arguments:
            if word in ("-X", "--request"):
                method = next(arguments)
            elif word in ("-d", "--data", "--data-raw"):
                method = "POST" if method == "GET" else method
                raw = next(arguments).replace("$PWD", str(REPO))
                assert "$" not in raw, f"{doc}:{line}: a shell variable the test cannot expand"
                body = _json(raw, f"{doc}:{line} curl body")
            elif word in ("-H", "--header", "-w", "--write-out"):
                next(arguments)
            elif word.startswith("http"):
                url = word
        assert url is not None, f"{doc}:{line}: a curl command without a URL"
        found.append(Item(doc, section, line, body, method=method, url=url))
    return found


def serve_request(item: Item) -> ServeRequest:
    """The request the REST API makes of the item's body (and URL)."""
    try:
        return _serve_request(item.body, item.url_fqrv())
    except CreateServableRequestInvalidError as error:
        pytest.fail(f"{item.where}: the server refuses this serve request: {error.describe()}")


def local_directory(path: str) -> Path:
    """The local directory a `file://` or plain `path` names (relative: to the repository)."""
    parts = urlsplit(path)
    local = Path(parts.path) if parts.scheme == "file" else Path(path)
    return local if local.is_absolute() else REPO / local


def answer_after(doc_items: list[Item], index: int) -> Any | None:
    """The answer block shown right after item `index`, in its section, if any."""
    following = doc_items[index + 1] if index + 1 < len(doc_items) else None
    if following is None or following.is_curl or following.section != doc_items[index].section:
        return None
    body = following.body
    return body if isinstance(body, dict) and next(iter(body), None) in ANSWERS else None


def assert_known_block(item: Item) -> None:
    """A JSON block is a serve request, a flavor, a score request or an answer."""
    body = item.body
    assert isinstance(body, dict), f"{item.where}: expected a JSON object"
    assert body, f"{item.where}: an empty JSON object"
    if item.is_serve_request:
        serve_request(item)
    elif set(body) == {"flavor"}:
        parse_flavor(body["flavor"])
    elif "schema" in body:
        parse_inference_request(body)
    else:
        assert len(body) == 1, f"{item.where}: unrecognised JSON example"
        assert next(iter(body)) in ANSWERS, f"{item.where}: unrecognised JSON example"


# ------------------------------------------------------------------ parsing


@pytest.mark.parametrize("doc", [STORAGE, FLAVORS], ids=lambda doc: doc.name)
class TestEveryExampleParses:
    def test_json_blocks_are_requests_or_answers(self, doc: Path) -> None:
        blocks = [item for item in items(doc) if not item.is_curl]
        assert blocks
        for item in blocks:
            assert_known_block(item)

    def test_curl_bodies_are_serve_or_score_requests(self, doc: Path) -> None:
        commands = [item for item in items(doc) if item.is_curl]
        assert commands
        for item in commands:
            assert item.method == "POST", item.where
            if item.is_serve_request:
                serve_request(item)
            else:
                assert SCORE_PATH.fullmatch(urlsplit(item.url or "").path), item.where
                assert parse_inference_request(item.body).n_rows > 0

    def test_urls_are_the_make_run_server(self, doc: Path) -> None:
        for item in items(doc):
            if item.is_curl:
                assert (item.url or "").startswith("http://127.0.0.1:8090/"), item.where

    def test_a_served_answer_names_the_fqrv_the_request_deploys(self, doc: Path) -> None:
        doc_items = items(doc)
        checked = 0
        for index, item in enumerate(doc_items):
            answer = answer_after(doc_items, index)
            if not item.is_serve_request or answer is None:
                continue
            if "ServableCreatedSuccessfully" in answer:
                request = serve_request(item)
                fetcher = fetcher_for(request.path, StorageOptions())
                fqrv = request.fqrv or fetcher.fqrv_hint(request.path)
                assert fqrv is not None, item.where
                assert answer["ServableCreatedSuccessfully"]["fqrv"] == encode(fqrv), item.where
                checked += 1
        assert checked or doc == FLAVORS


class TestStorageExamples:
    def test_one_worked_example_per_protocol(self) -> None:
        requests: dict[str, list[Item]] = {}
        for item in items(STORAGE):
            if item.is_curl and item.is_serve_request:
                requests.setdefault(item.section, []).append(item)
        assert sorted(requests) == sorted(STORAGE_PROTOCOLS)
        for section, protocol in STORAGE_PROTOCOLS.items():
            (item,) = requests[section]
            assert protocol_of(serve_request(item).path) == protocol, item.where

    def test_local_examples_name_directories_of_this_repository(self) -> None:
        for item in items(STORAGE):
            if item.is_serve_request:
                path = serve_request(item).path
                if protocol_of(path) == "file":
                    assert local_directory(path).is_dir(), item.where

    def test_the_unsupported_scheme_error_is_the_server_s(self) -> None:
        errors = [
            item
            for item in items(STORAGE)
            if item.section == "Errors" and "CreateServableRequestInvalidError" in item.body
        ]
        (item,) = errors
        text = STORAGE.read_text(encoding="utf-8")
        (location,) = re.findall(r'"path": "(ftp://[^"]+)"`', text)
        with pytest.raises(CreateServableRequestInvalidError) as raised:
            fetcher_for(location, StorageOptions())
        documented = item.body["CreateServableRequestInvalidError"]
        assert documented["errorMessage"] == raised.value.describe()
        assert documented["field"] == raised.value.field == "path"
        assert documented["StatusCode"] == raised.value.status == 422


class TestFlavorExamples:
    def test_one_worked_example_per_flavor(self) -> None:
        requests: dict[str, list[Item]] = {}
        for item in items(FLAVORS):
            if item.is_curl and item.is_serve_request:
                requests.setdefault(item.section, []).append(item)
        assert sorted(requests) == sorted([*FLAVOR_SECTIONS, MLFLOW_SECTION])
        for section, flavor in FLAVOR_SECTIONS.items():
            (item,) = requests[section]
            request = serve_request(item)
            assert isinstance(request, BasicServeRequest), item.where
            assert type(request.flavor).wire_name == flavor, item.where
            (fields,) = encode(request.flavor).values()
            model = fields.get("modelPath") or fields["mojoPath"]
            directory = local_directory(request.path)
            assert (directory / model).exists(), f"{item.where}: no {model} in {directory}"

    def test_mlflow_examples_deploy_the_flavor_the_docs_name(self) -> None:
        mlflow = [item for item in items(FLAVORS) if item.section == MLFLOW_SECTION]
        requests = [serve_request(item) for item in mlflow if item.is_serve_request]
        wrapped = [item for item in mlflow if not item.is_curl and item.is_serve_request]
        assert len(requests) == 2
        assert [next(iter(item.body)) for item in wrapped] == ["MLFlowServeRequest"]
        for request in requests:
            assert isinstance(request, MLFlowServeRequest)
            directory = local_directory(request.path)
            chosen = request.resolve_flavor(directory)
            assert type(chosen).wire_name == MLFLOW_CHOICES[directory.name]

    def test_a_request_without_flavor_is_an_mlflow_serve_request(self) -> None:
        # the docs rely on this: a bare body without "flavor" is an MLFlowServeRequest
        body = {
            "path": "x",
            "fqrv": {
                "contract": {"organization": "a", "project": "b", "contractNumber": 0},
                "releaseVersion": "v1",
            },
        }
        assert isinstance(_serve_request(body), MLFlowServeRequest)
        assert isinstance(_serve_request({**body, "flavor": "PyFunc"}), BasicServeRequest)


# ------------------------------------------------------------------ running


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process server on a fresh data directory, as `make run` starts it, with pickles
    allowed and the skops types of the MLflow example trusted: the Sklearn, PyFunc and MLflow
    examples say to turn those settings on."""
    settings = Settings(
        data_dir=tmp_path / "data",
        seed=7,
        security={
            "allow_unsafe_formats": True,
            "skops_trusted_types": ["sklearn.tree._tree.Tree"],
        },
    )
    app = create_app(settings, clock=FakeClock())
    await app.start(periodic=False)
    assert app.ready, app.startup_error
    transport = httpx.ASGITransport(app=app.asgi)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
        yield http
    await app.shutdown()


def assert_close(documented: Any, actual: Any, where: str) -> None:
    """`documented` is `actual` with keys left out and numbers rounded."""
    if isinstance(documented, dict):
        assert isinstance(actual, dict), where
        for key, value in documented.items():
            assert key in actual, f"{where}: {key!r} is not in the answer"
            assert_close(value, actual[key], f"{where}.{key}")
    elif isinstance(documented, list):
        assert isinstance(actual, list), where
        assert len(actual) == len(documented), where
        for i, (want, got) in enumerate(zip(documented, actual, strict=True)):
            assert_close(want, got, f"{where}[{i}]")
    elif isinstance(documented, float) or (
        isinstance(documented, int) and isinstance(actual, float)
    ):
        assert math.isclose(documented, actual, rel_tol=1e-3, abs_tol=1e-4), (
            f"{where}: documented {documented}, the server answers {actual}"
        )
    else:
        assert documented == actual, f"{where}: documented {documented!r}, got {actual!r}"


@pytest.mark.parametrize(
    ("doc", "section"), RUNNABLE, ids=[f"{doc.name}:{section}" for doc, section in RUNNABLE]
)
class TestWorkedExamplesRun:
    async def test_commands_answer_as_documented(
        self, client: httpx.AsyncClient, doc: Path, section: str
    ) -> None:
        doc_items = items(doc)
        ran = 0
        for index, item in enumerate(doc_items):
            if item.section != section or not item.is_curl:
                continue
            target = urlsplit(item.url or "").path
            response = await client.request(item.method or "GET", target, json=item.body)
            assert response.status_code in (200, 201), f"{item.where}: {response.text}"
            answer = answer_after(doc_items, index)
            if answer is not None:
                assert_close(answer, response.json(), item.where)
            ran += 1
        assert ran


# ------------------------------------------------------------------ the protocol pages

PROTOCOLS_INDEX = REPO / "docs" / "protocols.md"
PROTOCOL_PAGES = sorted((REPO / "docs" / "protocols").glob("*.md"))
# run as written, as the protocol pages are
RUN_AS_WRITTEN = [*PROTOCOL_PAGES, REPO / "docs" / "migrating.md"]
PROTOCOL_PAGE_NAMES = {"open-inference.md", "mlflow-scoring.md", "graphpipe.md"}
RUN = ("bash", "python")
SHOWN = ("json", "text")
# the ports of the `make run` server; 5000 is `mlflow models serve`'s, named as what a base
# URL was before it pointed at ForestFlow
DOC_PORTS = {"8090": "http", "8091": "grpc", "5000": None}
HOST_PORT = re.compile(r"\b(?:localhost|127\.0\.0\.1|0\.0\.0\.0):(\d+)")
NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


@dataclass(frozen=True)
class Block:
    """A fenced code block of a page."""

    language: str
    line: int  # the line of its first line of code
    code: str


@dataclass
class Command:
    """One shell command of a bash block, and the answer shown for it."""

    text: str
    line: int
    answer: list[str]


def blocks_of(doc: Path) -> list[Block]:
    found = []
    lines = doc.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        if lines[index].startswith("```"):
            end = next(i for i in range(index + 1, len(lines)) if lines[i].startswith("```"))
            code = "\n".join(lines[index + 1 : end]) + "\n"
            found.append(Block(lines[index][3:].strip(), index + 2, code))
            index = end
        index += 1
    return found


def shell_commands(block: Block) -> list[Command]:
    """The commands of a bash block (continuation lines and quotes spanning lines joined),
    each with the comment lines right under it: what it prints. A comment after a blank
    line is prose."""
    commands: list[Command] = []
    pending: list[str] = []
    answering = False
    for offset, line in enumerate(block.code.splitlines()):
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            if stripped and answering:
                commands[-1].answer.append(stripped[1:].strip())
            answering = answering and bool(stripped)
            continue
        pending.append(line)
        text = "\n".join(pending)
        if text.endswith("\\"):
            continue
        try:
            shlex.split(text, comments=True)
        except ValueError:  # an open quote: the command goes on
            continue
        commands.append(Command(text, block.line + offset - len(pending) + 1, []))
        pending, answering = [], True
    assert not pending, f"line {block.line}: unterminated shell command"
    return commands


def printed_lines(block: Block) -> list[str]:
    """What a python block shows it prints: the comment lines right under a `print(` line."""
    shown: list[str] = []
    after_print = False
    for line in block.code.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            if after_print:
                shown.append(stripped[1:].strip())
        else:
            after_print = "print(" in line
    return shown


def assert_same_text(documented: str, actual: str, where: str) -> None:
    """The same text, numbers equal to the precision shown (whitespace aside)."""

    def tokens(text: str) -> list[str]:
        return re.findall(rf"{NUMBER.pattern}|\S", text)

    shown, got = tokens(documented), tokens(actual)
    message = f"{where}: documented\n  {documented}\nthe server's\n  {actual}"
    assert len(shown) == len(got), message
    for want, have in zip(shown, got, strict=True):
        if NUMBER.fullmatch(want) and NUMBER.fullmatch(have):
            assert math.isclose(float(want), float(have), rel_tol=1e-4, abs_tol=1e-6), message
        else:
            assert want == have, message


def assert_same_json(documented: Any, actual: Any, where: str) -> None:
    """The same JSON value: the same keys, numbers equal to the precision shown."""
    if isinstance(documented, dict):
        assert isinstance(actual, dict), where
        assert list(documented) == list(actual), f"{where}: keys {list(actual)}"
        for key, value in documented.items():
            assert_same_json(value, actual[key], f"{where}.{key}")
    elif isinstance(documented, list):
        assert isinstance(actual, list), where
        assert len(documented) == len(actual), f"{where}: {actual}"
        for i, (want, got) in enumerate(zip(documented, actual, strict=True)):
            assert_same_json(want, got, f"{where}[{i}]")
    elif isinstance(documented, float | int) and not isinstance(documented, bool):
        assert isinstance(actual, float | int), where
        assert not isinstance(actual, bool), where
        assert math.isclose(documented, actual, rel_tol=1e-4, abs_tol=1e-6), (
            f"{where}: documented {documented}, the server answers {actual}"
        )
    else:
        assert documented == actual, f"{where}: documented {documented!r}, got {actual!r}"


def assert_answer(documented: str, actual: str, where: str) -> None:
    try:
        shown, got = orjson.loads(documented), orjson.loads(actual)
    except orjson.JSONDecodeError:
        assert_same_text(documented, actual, where)
    else:
        assert_same_json(shown, got, where)


class DocServer(ServerProcess):
    """A `forestflow serve` process as `make run` starts one, on free ports, gRPC included."""

    def __init__(self, data_dir: Path) -> None:
        self.grpc_port = free_port()
        super().__init__(data_dir, {"FORESTFLOW_SERVER__GRPC_PORT": str(self.grpc_port)})

    def runnable(self, code: str) -> str:
        """`code` aimed at this server's ports instead of 8090 and 8091."""
        ports = {"8090": self.port, "8091": self.grpc_port}
        return HOST_PORT.sub(
            lambda match: match[0].replace(match[1], str(ports.get(match[1], match[1]))), code
        )


def run_bash(server: DocServer, commands: list[Command]) -> list[str]:
    """Run a block's commands in one shell, in the repository root; what each printed."""
    separator = "\x1e"
    script = "".join(f"{server.runnable(command.text)}\nprintf '\\036'\n" for command in commands)
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr}"
    return [output.strip("\n") for output in done.stdout.split(separator)[:-1]]


def run_python(server: DocServer, block: Block) -> str:
    """Run a python block in a fresh interpreter, in the repository root; what it printed."""
    done = subprocess.run(
        [sys.executable, "-c", server.runnable(block.code)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture
def doc_server(tmp_path: Path) -> Iterator[DocServer]:
    """A fresh server, nothing deployed: each page deploys what it uses."""
    server = DocServer(tmp_path / "data")
    try:
        server.start()
        yield server
    finally:
        server.close()


def test_every_protocol_has_a_page_the_index_links() -> None:
    assert {page.name for page in PROTOCOL_PAGES} == PROTOCOL_PAGE_NAMES
    index = PROTOCOLS_INDEX.read_text(encoding="utf-8")
    for page in PROTOCOL_PAGES:
        assert f"](protocols/{page.name})" in index, page.name


@pytest.mark.parametrize("page", RUN_AS_WRITTEN, ids=lambda page: page.name)
class TestProtocolPages:
    def test_code_blocks_are_run_or_shown(self, page: Path) -> None:
        blocks = blocks_of(page)
        for block in blocks:
            assert block.language in RUN + SHOWN, (
                f"{page.name}:{block.line}: a ```{block.language} block is neither run "
                f"({', '.join(RUN)}) nor an answer ({', '.join(SHOWN)})"
            )
        assert {"bash", "python"} <= {block.language for block in blocks}

    def test_examples_use_the_make_run_ports(self, page: Path) -> None:
        for block in blocks_of(page):
            if block.language in RUN:
                for port in HOST_PORT.findall(block.code):
                    assert port in DOC_PORTS, f"{page.name}:{block.line}: port {port}"

    def test_examples_run_as_written_and_answer_as_shown(
        self, page: Path, doc_server: DocServer
    ) -> None:
        """Every bash and python block, in order, against one fresh server: each command
        answers what is shown under it (or in the JSON block right after its block), each
        python block prints what is shown under its print calls."""
        blocks = blocks_of(page)
        answered: set[int] = set()
        for index, block in enumerate(blocks):
            where = f"{page.name}:{block.line}"
            if block.language == "bash":
                commands = shell_commands(block)
                following = blocks[index + 1] if index + 1 < len(blocks) else None
                last = commands[-1] if commands else None
                if last and not last.answer and following and following.language == "json":
                    last.answer = [following.code.strip()]
                    answered.add(index + 1)
                outputs = run_bash(doc_server, commands)
                assert len(outputs) == len(commands), where
                for command, output in zip(commands, outputs, strict=True):
                    at = f"{page.name}:{command.line}"
                    assert command.answer, f"{at}: show what the command answers under it"
                    assert_answer("\n".join(command.answer), output, at)
            elif block.language == "python":
                shown = printed_lines(block)
                assert shown, f"{where}: show what the example prints under its print calls"
                printed = [line for line in run_python(doc_server, block).splitlines() if line]
                assert len(printed) == len(shown), f"{where}: printed {printed}"
                for i, (want, got) in enumerate(zip(shown, printed, strict=True)):
                    assert_same_text(want, got, f"{where}, printed line {i + 1}")
        for index, block in enumerate(blocks):
            if block.language == "json":
                assert index in answered, (
                    f"{page.name}:{block.line}: a JSON block no command answers"
                )


# ------------------------------------------------------------------ links between the docs

LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchors(doc: Path) -> set[str]:
    """The anchors of a page's headings, as GitHub makes them."""
    text = re.sub(r"```.*?```", "", doc.read_text(encoding="utf-8"), flags=re.DOTALL)
    headings = [
        line.lstrip("#").strip().lower() for line in text.splitlines() if line.startswith("#")
    ]
    return {re.sub(r"[^\w\- ]", "", heading).replace(" ", "-") for heading in headings}


@pytest.mark.parametrize(
    "doc",
    [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))],
    ids=lambda doc: str(doc.relative_to(REPO)),
)
def test_links_between_the_docs_resolve(doc: Path) -> None:
    text = re.sub(r"```.*?```", "", doc.read_text(encoding="utf-8"), flags=re.DOTALL)
    for target in LINK.findall(text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        linked = (doc.parent / path).resolve() if path else doc
        assert linked.exists(), f"{doc.relative_to(REPO)}: {target} does not exist"
        if anchor and linked.suffix == ".md":
            assert anchor in anchors(linked), f"{doc.relative_to(REPO)}: no heading for {target}"
