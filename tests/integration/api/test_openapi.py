"""The OpenAPI document behind /docs and /openapi.json tells the truth (issue 10, scope 5)."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import iter_route_contexts
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from starlette.routing import BaseRoute, Match

from forestflow.api.openinference.route_docs import INFER_2D
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


PROTOCOLS = {
    "Open Inference Protocol": "forestflow.api.openinference.",
    "MLflow scoring": "forestflow.api.mlflow_scoring.",
    "GraphPipe": "forestflow.api.graphpipe.",
}
"""The other protocols' routes: their tag, and the module that registers them."""
HARNESSES = {
    "forestflow.api.openinference.": "oip_harness_factory",
    "forestflow.api.mlflow_scoring.": "mlflow_harness_factory",
    "forestflow.api.graphpipe.": "graphpipe_harness_factory",
}
"""The in-process harness of each protocol's own suite (its clients' answers are recorded)."""


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

    def test_operation_ids_are_unique_names_a_client_generator_can_use(
        self, document: dict[str, Any]
    ) -> None:
        ids = [op["operationId"] for item in document["paths"].values() for op in item.values()]
        assert len(ids) == len(set(ids))
        assert all(re.fullmatch(r"[a-z][a-z0-9_]*", i) for i in ids), ids
        # named by the routes, not made up by the framework from the path and method
        assert not [i for i in ids if i.endswith(("_get", "_post", "_put", "_delete"))]
        assert {"infer", "infer_versions", "update_policy_policy", "score_servable"} <= set(ids)

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


def protocol_operations(document: Document) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(tag, method, path, operation) of the other protocols' routes."""
    return [
        (operation["tags"][0], method, path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if operation.get("tags", [""])[0] in PROTOCOLS
    ]


def schemas_of(media: dict[str, Any]) -> list[str]:
    """The component names a media type's schema is (one of)."""
    schema = media.get("schema", {})
    return [s.get("$ref", "").rsplit("/", 1)[-1] for s in schema.get("anyOf", [schema])]


def template_of(app: App, method: str, path: str) -> str:
    """The path template of the route that serves `method path`."""
    scope = {"type": "http", "method": method, "path": path, "root_path": ""}
    route = next(r for r in flat_routes(app) if r.matches(scope)[0] is Match.FULL)
    return str(getattr(route, "path_format", ""))


def check_answer(harness: Harness, document: Document, response: Any) -> None:
    """`response` has a declared status, media type and headers, and its JSON validates."""
    method, path = response.request.method, response.request.url.path
    template = template_of(harness.app, method, path)
    declared = document["paths"][template][method.lower()]["responses"]
    status = str(response.status_code)
    assert status in declared, (method, template, status, response.text)
    media = response.headers["content-type"].split(";")[0]
    assert media in declared[status]["content"], (method, template, status, media)
    schema = declared[status]["content"][media].get("schema")
    if media == "application/json" and schema is not None:
        validator(document, schema).validate(response.json())
    headers = declared[status].get("headers", {})
    assert {n.lower() for n, h in headers.items() if h["required"]} <= set(response.headers)


@pytest.fixture
async def readme_model(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> Harness:
    """The README's model deployed (its path relative to the repository)."""
    monkeypatch.chdir(ROOT)
    response = await harness.client.post("/servable", json=README_DEPLOY)
    assert response.status_code == 201, response.text
    return harness


class TestProtocols:
    """The Open Inference Protocol's, MLflow's and GraphPipe's routes declare themselves."""

    def test_every_route_has_its_protocols_tag_and_answers(
        self, harness: Harness, document: Document
    ) -> None:
        found = {(m, p): (tag, op) for tag, m, p, op in protocol_operations(document)}
        counted = dict.fromkeys(PROTOCOLS, 0)
        for route in flat_routes(harness.app):
            module = getattr(getattr(route, "endpoint", None), "__module__", "")
            tag = next((t for t, prefix in PROTOCOLS.items() if module.startswith(prefix)), None)
            for method in getattr(route, "methods", ()) if tag else ():
                assert found[(method.lower(), getattr(route, "path_format", ""))][0] == tag
                counted[tag] += 1
        assert counted == {"Open Inference Protocol": 9, "MLflow scoring": 8, "GraphPipe": 2}
        errors = {"Open Inference Protocol": "OipError", "MLflow scoring": "MlflowError"}
        for (method, path), (tag, operation) in found.items():
            responses = operation["responses"]
            assert {"200", "400", "500"} <= set(responses), (method, path)
            if not path.startswith("/v2/health/"):
                assert {"401", "403"} <= set(responses), (method, path)
                form = errors.get(tag, "GraphPipeError")
                for media in responses["401"]["content"].values():
                    assert schemas_of(media) == [form], (method, path)
            assert ("requestBody" in operation) is (method == "post"), (method, path)

    def test_bodies_in_every_media_type_the_routes_read(self, document: Document) -> None:
        infer = document["paths"]["/v2/models/{model_name}/infer"]["post"]
        invocations = document["paths"]["/{organization}/{project}/{contract_number}/invocations"]
        gp = document["paths"]["/{organization}/{project}/{contract_number}/gp"]["post"]
        assert set(infer["requestBody"]["content"]) == {
            "application/json",
            "application/octet-stream",
        }
        assert set(infer["responses"]["200"]["content"]) == {
            "application/json",
            "application/octet-stream",
        }
        assert "Inference-Header-Content-Length" in {p["name"] for p in infer["parameters"]}
        body = invocations["post"]["requestBody"]["content"]
        assert set(body) == {"application/json", "text/csv"}
        json_body = body["application/json"]
        assert {next(iter(e["value"])) for e in json_body["examples"].values()} == {
            "dataframe_split", "dataframe_records", "inputs", "instances"
        }  # fmt: skip
        assert "application/octet-stream" in gp["requestBody"]["content"]
        assert set(gp["responses"]["200"]["content"]) == {"application/octet-stream"}

    def test_every_example_validates(self, document: Document) -> None:
        checked = 0
        for _tag, _method, _path, operation in protocol_operations(document):
            contents = [r.get("content", {}) for r in operation["responses"].values()]
            for content in [*contents, operation.get("requestBody", {}).get("content", {})]:
                for media in content.values():
                    values = [e["value"] for e in media.get("examples", {}).values()]
                    for value in values + ([media["example"]] if "example" in media else []):
                        validator(document, media["schema"]).validate(value)
                        checked += 1
        assert checked > 100

    def test_the_request_schemas_refuse_what_the_server_refuses(self, document: Document) -> None:
        infer = validator(document, {"$ref": "#/components/schemas/OipInferRequest"})
        assert infer.is_valid(INFER_2D)
        assert not infer.is_valid({**INFER_2D, "extra": 1})
        assert not infer.is_valid({**INFER_2D, "inputs": []})
        assert not infer.is_valid({"inputs": [{**INFER_2D["inputs"][0], "datatype": "FLOAT"}]})
        payload = validator(document, {"$ref": "#/components/schemas/MlflowPayload"})
        assert payload.is_valid({"inputs": [[1, 2]], "params": {"reqid": "1"}})
        assert not payload.is_valid({"inputs": [[1, 2]], "instances": [[1, 2]]})
        assert not payload.is_valid({"params": {"reqid": "1"}})

    async def test_oip_answers_are_as_declared(
        self, readme_model: Harness, document: Document
    ) -> None:
        client, model = readme_model.client, "/v2/models/samples.energy_output.0"
        infer = document["paths"]["/v2/models/{model_name}/infer"]["post"]
        examples = infer["requestBody"]["content"]["application/json"]["examples"]
        head = json.dumps({"inputs": [{"name": "m", "datatype": "FP64", "shape": [1, 4],
                                       "parameters": {"binary_data_size": 32}}],
                           "parameters": {"binary_data_output": True}}).encode()  # fmt: skip
        binary = head + struct.pack("<4d", 33.2, 60.5, 1010.7, 30)
        answers = [
            *[await client.get(p) for p in ("/v2", "/v2/health/live", "/v2/health/ready")],
            *[
                await client.get(model + p)
                for p in ("", "/ready", "/versions/v1", "/versions/v1/ready")
            ],
            *[await client.post(model + "/infer", json=e["value"]) for e in examples.values()],
            await client.post(model + "/versions/v1/infer", json=examples["two_d"]["value"]),
            await client.post(
                model + "/infer",
                content=binary,
                headers={"Inference-Header-Content-Length": str(len(head))},
            ),
            await client.get("/v2/models/samples.nothing.0/ready"),
            await client.post(model + "/infer", json={"inputs": []}),
            await client.post(
                model + "/infer", content=b"{}", headers={"Content-Type": "text/plain"}
            ),
            await client.get("/v2/models/nothing", headers={"Host": "evil.example"}),
        ]
        statuses = [r.status_code for r in answers]
        assert statuses == [200] * 11 + [404, 400, 415, 400], statuses
        assert answers[10].headers["content-type"] == "application/octet-stream"
        for response in answers:
            check_answer(readme_model, document, response)

    async def test_mlflow_answers_are_as_declared(
        self, readme_model: Harness, document: Document
    ) -> None:
        client, contract = readme_model.client, "/samples/energy_output/0"
        route = document["paths"]["/{organization}/{project}/{contract_number}/invocations"]
        bodies = route["post"]["requestBody"]["content"]
        csv = next(iter(bodies["text/csv"]["examples"].values()))["value"]
        answers = [
            *[
                await client.post(contract + "/invocations", json=e["value"])
                for e in bodies["application/json"]["examples"].values()
            ],
            await client.post(
                contract + "/v1/invocations", content=csv, headers={"Content-Type": "text/csv"}
            ),
            *[await client.get(contract + p) for p in ("/ping", "/health", "/v1/ping", "/version")],
            await client.post("/samples/nothing/0/invocations", json={"inputs": [[1, 2, 3, 4]]}),
            await client.get(contract + "/v9/health"),
            await client.post(contract + "/invocations", json={"inputs": [[1, 2]]}),
            await client.get("/sam%20ples/energy_output/0/ping"),
        ]
        statuses = [r.status_code for r in answers]
        assert statuses == [200] * 9 + [404, 404, 400, 400], statuses
        assert answers[5].content == b"\n"
        for response in answers:
            check_answer(readme_model, document, response)

    async def test_graphpipe_answers_are_as_declared(
        self, readme_model: Harness, document: Document
    ) -> None:
        client = readme_model.client
        answers = [
            await client.post("/samples/energy_output/0/gp", content=b"not a flatbuffer"),
            await client.post(
                "/samples/energy_output/0/v1/gp",
                content=b"",
                headers={"Content-Type": "text/plain"},
            ),
            await client.post("/sam%20ples/energy_output/0/gp", content=b""),
        ]
        assert [r.status_code for r in answers] == [400, 415, 422]
        for response in answers:
            check_answer(readme_model, document, response)


async def test_every_answered_status_is_declared(
    harness_factory: HarnessFactory, answered: list[Answered], request: pytest.FixtureRequest
) -> None:
    """Every (route, status) the harness clients received in this session is declared:
    the BASIC API's, and those of the other protocols' suites run in the same session.

    Runs after every other test (see the hook in conftest.py); an answer to a path that
    matches no route (404 `NotFound`, 405) belongs to no operation and is not checked.
    """
    assert LAST == "test_every_answered_status_is_declared"
    received = list(answered)
    app = (await harness_factory()).app
    document = app.api.openapi()
    undeclared: dict[tuple[str, str, int], str] = {}
    matched: dict[str, int] = {}
    for method, path, status in received:
        scope = {"type": "http", "method": method, "path": path, "root_path": ""}
        route = next((r for r in flat_routes(app) if r.matches(scope)[0] is Match.FULL), None)
        template = getattr(route, "path_format", None)
        if template is None or not getattr(route, "include_in_schema", False):
            continue
        module = getattr(route, "endpoint", None).__module__
        matched[module] = matched.get(module, 0) + 1
        declared = document["paths"][template][method.lower()]["responses"]
        if str(status) not in declared:
            undeclared.setdefault((method, template, status), path)
    # the routes are found (the check is not vacuous) whenever a test called the API, and
    # a protocol's routes whenever its own suite's in-process tests ran
    assert matched or all(path == "/openapi.json" for _, path, _ in received)
    used = {name for item in request.session.items for name in getattr(item, "fixturenames", ())}
    for prefix, fixture in HARNESSES.items():
        if fixture in used:
            assert any(module.startswith(prefix) for module in matched), (prefix, matched)
    assert not undeclared, "\n".join(
        f"{m} {t} answered {s} (e.g. {p}), not declared" for (m, t, s), p in undeclared.items()
    )
