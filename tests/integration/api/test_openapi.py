"""The OpenAPI document behind /docs and /openapi.json tells the truth (issue 10, scope 5)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import iter_route_contexts
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from starlette.routing import BaseRoute, Match

from forestflow.api.rest.route_docs import README_DEPLOY, README_SCORE
from forestflow.app import App
from tests.integration.api.conftest import LAST, Answered, Harness, HarnessFactory

ROOT = Path(__file__).resolve().parents[3]
METHODS = ("get", "put", "post", "delete")
# the routes that read a JSON body, and the status of their success answer
BODIES = {
    ("post", "/contract/{organization}/{project}/{contract_number}"): 201,
    ("put", "/{organization}/{project}/{contract_number}"): 200,
    ("post", "/servable"): 201,
    ("post", "/servable/{organization}/{project}/{contract_number}/{release_version}"): 201,
    ("put", "/{organization}/{project}/{contract_number}/{release_version}/policy-settings"): 200,
    ("put", "/{organization}/{project}/{contract_number}/{release_version}/policy"): 200,
    ("put", "/{organization}/{project}/{contract_number}/{release_version}/logging-settings"): 200,
    ("put", "/{organization}/{project}/{contract_number}/{release_version}/logging"): 200,
    ("post", "/{organization}/{project}/{contract_number}/score"): 200,
    ("post", "/{organization}/{project}/{contract_number}/{release_version}/score"): 200,
    ("put", "/{organization}/{project}/{contract_number}/{release_version}/metrics"): 200,
    ("post", "/{organization}/{project}/{contract_number}/feedback"): 200,
    ("post", "/admin/tokens"): 201,
}
OPEN = {"/health/live", "/health/ready"}  # no token, no readiness


Document = dict[str, Any]


def operations(document: Document) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, path, operation) of the BASIC API: the routes of `forestflow.api.rest` and
    the app's health routes (the other protocols' routes are declared by their modules)."""
    basic = document["x-basic"]
    return [
        (method, path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if f"{method} {path}" in basic
    ]


NOT_YET_DECLARED = (
    "forestflow.api.openinference.",
    "forestflow.api.mlflow_scoring.",
    "forestflow.api.graphpipe.",
)
"""Modules whose routes do not declare their answers yet, TODO(#10): the Open Inference
Protocol's `/v2` routes (answered 400/401/404/415 in this suite) and the MLflow scoring and
GraphPipe routes, each in its own protocol's error form."""


def flat_routes(app: App) -> list[BaseRoute]:
    """The app's routes in matching order, those of included routers in their place (the
    framework keeps an included router as one route of the app)."""
    return [context.original_route for context in iter_route_contexts(app.api.routes)]


def validator(document: dict[str, Any], schema: dict[str, Any]) -> Draft202012Validator:
    """A validator of `schema` whose `#/components/...` references are the document's."""
    return Draft202012Validator({**schema, "components": document["components"]})


def body_schema(document: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    schema: dict[str, Any] = document["paths"][path][method]["requestBody"]["content"][
        "application/json"
    ]["schema"]
    return schema


def quickstart_bodies() -> list[Any]:
    """The JSON bodies of the README's quickstart, the shell's `$PWD` filled in."""
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- quickstart:start -->(.*?)<!-- quickstart:end -->", readme, re.S)
    assert block
    bodies = re.findall(
        r"-d '(.*?)'(?:\n|$)", block.group(1).replace("'\"$PWD\"'", str(ROOT)), re.S
    )
    return [json.loads(body) for body in bodies]


@pytest.fixture
async def document(harness: Harness) -> dict[str, Any]:
    """The document as served, with the BASIC API's operations listed under `x-basic`."""
    response = await harness.client.get("/openapi.json")
    assert response.status_code == 200
    found: Document = response.json()
    basic = found["x-basic"] = []
    for route in flat_routes(harness.app):
        module = getattr(getattr(route, "endpoint", None), "__module__", "")
        if module.startswith("forestflow.api.rest.") or module == "forestflow.app":
            basic += [f"{m.lower()} {route.path_format}" for m in getattr(route, "methods", ())]
    return found


class TestDocument:
    def test_is_valid_openapi(self, document: dict[str, Any]) -> None:
        validate(document)
        assert document["openapi"].startswith("3.")

    def test_every_body_route_declares_its_body_and_real_success(
        self, document: dict[str, Any]
    ) -> None:
        found = {(m, p): op for m, p, op in operations(document)}
        for (method, path), status in BODIES.items():
            operation = found[(method, path)]
            assert operation["requestBody"]["required"] is True, (method, path)
            assert operation["requestBody"]["content"]["application/json"]["examples"]
            assert str(status) in operation["responses"], (method, path)
            assert {"413", "415", "422", "400"} <= set(operation["responses"]), (method, path)
        with_body = [(m, p) for m, p, op in operations(document) if "requestBody" in op]
        assert sorted(with_body) == sorted(BODIES)

    def test_every_route_declares_the_shared_errors(self, document: dict[str, Any]) -> None:
        for method, path, operation in operations(document):
            statuses = set(operation["responses"])
            successes = [s for s in statuses if s.startswith("2")]
            assert len(successes) == 1, (method, path)
            assert {"400", "500"} <= statuses, (method, path)
            if path not in OPEN:
                assert {"401", "403"} <= statuses, (method, path)
            if path not in OPEN and path != "/metrics":
                assert "503" in statuses, (method, path)
            if "{" in path:
                assert "422" in statuses, (method, path)

    def test_errors_have_the_servers_body_not_the_frameworks(
        self, document: dict[str, Any]
    ) -> None:
        text = json.dumps(document)
        assert "HTTPValidationError" not in text
        assert "ValidationError" not in document["components"]["schemas"]
        unknown = {"UnknownContract": {"errorMessage": "unknown contract a.b.0", "StatusCode": 404,
                                       "contract": {"organization": "a", "project": "b",
                                                    "contractNumber": 0}}}  # fmt: skip
        check = validator(document, {"$ref": "#/components/schemas/Error"})
        check.validate(unknown)
        assert not check.is_valid({"detail": [{"loc": ["body"], "msg": "x", "type": "y"}]})

    def test_writes_declare_a_full_disk(self, document: dict[str, Any]) -> None:
        writes = [(m, p) for m, p, _ in operations(document) if m in ("put", "delete")]
        for method, path in writes:
            if not path.endswith("/score"):
                assert "507" in document["paths"][path][method]["responses"], (method, path)

    def test_every_reference_resolves(self, document: dict[str, Any]) -> None:
        names = set(re.findall(r'"#/components/schemas/([^"]+)"', json.dumps(document)))
        assert names <= set(document["components"]["schemas"])


class TestExamples:
    def test_readme_bodies_validate_against_the_declared_schemas(
        self, document: dict[str, Any]
    ) -> None:
        contract, deploy, score = quickstart_bodies()
        targets = [
            (contract, "post", "/contract/{organization}/{project}/{contract_number}"),
            (deploy, "post", "/servable"),
            (score, "post", "/{organization}/{project}/{contract_number}/score"),
        ]
        for body, method, path in targets:
            validator(document, body_schema(document, method, path)).validate(body)
        # the examples /docs offers are the README's (the path relative to the repository)
        assert {**deploy, "path": "examples/energy_output"} == README_DEPLOY
        assert score == README_SCORE

    def test_the_schemas_refuse_what_the_server_refuses(self, document: dict[str, Any]) -> None:
        deploy = validator(document, body_schema(document, "post", "/servable"))
        assert not deploy.is_valid({**README_DEPLOY, "flavour": {"ONNX": {"modelPath": "m"}}})
        assert not deploy.is_valid({**README_DEPLOY, "flavor": {"Pickle": {"modelPath": "m"}}})
        without_release = {"contract": README_DEPLOY["fqrv"]["contract"]}
        assert not deploy.is_valid({**README_DEPLOY, "fqrv": without_release})
        score = validator(
            document,
            body_schema(document, "post", "/{organization}/{project}/{contract_number}/score"),
        )
        assert not score.is_valid({**README_SCORE, "datum": []})

    def test_every_declared_example_validates(self, document: dict[str, Any]) -> None:
        checked = 0
        for _method, _path, operation in operations(document):
            for response in operation["responses"].values():
                media = response.get("content", {}).get("application/json", {})
                if "example" in media:
                    validator(document, media["schema"]).validate(media["example"])
                    checked += 1
            if "requestBody" in operation:
                media = operation["requestBody"]["content"]["application/json"]
                for example in media.get("examples", {}).values():
                    validator(document, media["schema"]).validate(example["value"])
                    checked += 1
        assert checked > 100

    async def test_swagger_try_it_out_deploys_and_scores_the_readme_model(
        self, harness: Harness, document: dict[str, Any], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """What Swagger UI sends: the first example of each body, the parameters' examples."""
        monkeypatch.chdir(ROOT)  # `make run` serves from the repository, as the README does

        def first_example(method: str, path: str) -> Any:
            examples = document["paths"][path][method]["requestBody"]["content"][
                "application/json"
            ]["examples"]
            return next(iter(examples.values()))["value"]

        def url(path: str, method: str) -> str:
            for parameter in document["paths"][path][method].get("parameters", []):
                path = path.replace("{" + parameter["name"] + "}", str(parameter["example"]))
            return path

        steps = [
            ("post", "/contract/{organization}/{project}/{contract_number}", 201),
            ("post", "/servable", 201),
            ("post", "/{organization}/{project}/{contract_number}/score", 200),
            ("post", "/{organization}/{project}/{contract_number}/{release_version}/score", 200),
        ]
        for method, path, status in steps:
            response = await harness.client.request(
                method, url(path, method), json=first_example(method, path)
            )
            assert response.status_code == status, response.text
            schema = document["paths"][path][method]["responses"][str(status)]["content"]
            validator(document, schema["application/json"]["schema"]).validate(response.json())


async def test_every_answered_status_is_declared(
    harness_factory: HarnessFactory, answered: list[Answered]
) -> None:
    """Every (route, status) the harness clients received in this session is declared.

    Runs after every other test (see the hook in conftest.py); an answer to a path that
    matches no route (404 `NotFound`, 405) belongs to no operation and is not checked.
    """
    assert LAST == "test_every_answered_status_is_declared"
    received = list(answered)
    app = (await harness_factory()).app
    document = app.api.openapi()
    undeclared: dict[tuple[str, str, int], str] = {}
    matched = 0
    for method, path, status in received:
        scope = {"type": "http", "method": method, "path": path, "root_path": ""}
        route = next((r for r in flat_routes(app) if r.matches(scope)[0] is Match.FULL), None)
        template = getattr(route, "path_format", None)
        if template is None or not getattr(route, "include_in_schema", False):
            continue
        if getattr(route, "endpoint", None).__module__.startswith(NOT_YET_DECLARED):
            continue
        matched += 1
        declared = document["paths"][template][method.lower()]["responses"]
        if str(status) not in declared:
            undeclared.setdefault((method, template, status), path)
    # the routes are found (the check is not vacuous) whenever a test called the API
    assert matched or all(path == "/openapi.json" for _, path, _ in received)
    assert not undeclared, "\n".join(
        f"{m} {t} answered {s} (e.g. {p}), not declared" for (m, t, s), p in undeclared.items()
    )
