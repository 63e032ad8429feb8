"""Score bodies from rows, serve requests and artifact locations, as the client builds them."""

from __future__ import annotations

from pathlib import Path

import pytest

from forestflow.client import BasicServeRequest, MLFlowServeRequest, score_body
from forestflow.client._requests import artifact_location


class TestScoreBody:
    def test_rows_as_dicts_are_grouped_by_the_type_of_their_values(self) -> None:
        body = score_body(
            [{"name": "a", "hp": 1.5, "level": 3}, {"name": "b", "hp": 2, "level": None}],
            configs={"gameid": "g1"},
        )

        assert body == {
            "schema": [
                {"type": "String", "fields": ["name"]},
                {"type": "Float64", "fields": ["hp"]},
                {"type": "Int64", "fields": ["level"]},
            ],
            "datum": [
                {"tensors": [{"String": {"data": ["a"]}}, {"Float64": {"data": [1.5]}},
                             {"Int64": {"data": [3]}}]},
                {"tensors": [{"String": {"data": ["b"]}}, {"Float64": {"data": [2]}},
                             {"Int64": {"data": [None]}}]},
            ],
            "configs": {"gameid": "g1"},
        }  # fmt: skip

    def test_rows_as_lists_are_named_by_features_and_typed_by_a_schema(self) -> None:
        schema = [{"type": "Float32", "fields": ["y", "x"]}]

        body = score_body([[1, 2]], features=["x", "y"], schema=schema)

        assert body["datum"] == [{"tensors": [{"Float32": {"data": [2, 1]}}]}]

    def test_bytes_go_as_base64_and_an_all_missing_column_as_floats(self) -> None:
        body = score_body([{"b": b"\x00\x01", "m": None}])

        assert body["schema"] == [
            {"type": "Bytes", "fields": ["b"]},
            {"type": "Float64", "fields": ["m"]},
        ]
        assert body["datum"][0]["tensors"][0] == {"Bytes": {"data": ["AAE="]}}

    @pytest.mark.parametrize(
        ("rows", "features", "message"),
        [
            ([], None, "no rows"),
            ([[1, 2]], None, "need `features`"),
            ([[1, 2]], ["x"], "2 values for 1 features"),
            ([{"x": 1}, {"x": "one"}], None, "mixes value types"),
        ],
    )
    def test_rows_that_make_no_request_are_refused(
        self, rows: list, features: list[str] | None, message: str
    ) -> None:
        with pytest.raises(ValueError, match=message):
            score_body(rows, features=features)


class TestServeRequests:
    def test_a_basic_request_names_every_field_it_is_given(self) -> None:
        request = BasicServeRequest(
            "s3://bucket/models/m",
            {"ONNX": {"modelPath": "model.onnx"}},
            fqrv="samples/energy_output/0/v1",
            artifact_path="sub",
            servable_settings={"loggingSettings": {"logLevel": "NONE"}},
        )

        assert request.to_json() == {
            "path": "s3://bucket/models/m",
            "fqrv": {
                "contract": {
                    "organization": "samples",
                    "project": "energy_output",
                    "contractNumber": 0,
                },
                "releaseVersion": "v1",
            },
            "artifactPath": "sub",
            "servableSettings": {"loggingSettings": {"logLevel": "NONE"}},
            "flavor": {"ONNX": {"modelPath": "model.onnx"}},
        }

    def test_an_mlflow_request_names_no_flavor(self) -> None:
        body = MLFlowServeRequest("models:/energy/3").to_json()

        assert body == {"path": "models:/energy/3"}

    @pytest.mark.parametrize(
        "location",
        [
            "file:///models/m",
            "https://example.com/m.tar.gz",
            "s3://bucket/m",
            "git@github.com:org/project.git#v0.v1",
            "models:/energy@champion",
            "/abs/models/m",
        ],
    )
    def test_uris_and_absolute_paths_go_as_they_are(self, location: str) -> None:
        assert artifact_location(location) == location

    def test_a_relative_path_is_made_absolute_here(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.chdir(tmp_path)

        assert artifact_location("models/m") == str(tmp_path / "models" / "m")
        assert artifact_location(Path("m")) == str(tmp_path / "m")
