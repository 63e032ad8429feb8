"""The S3 location forms: ours (`s3://bucket/prefix`) and the original ForestFlow's
(`s3::http(s)://host[:port]/bucket/prefix bucket=<bucket> [region=<region>]`)."""

from __future__ import annotations

import pytest

from forestflow.artifacts.s3_locations import (
    S3Location,
    parent_location,
    parse_s3_location,
    same_endpoint,
)
from forestflow.errors import MalformedRequest


class TestOurForm:
    @pytest.mark.parametrize(
        ("location", "bucket", "key"),
        [
            ("s3://models/energy", "models", "energy"),
            ("s3://models/energy/", "models", "energy/"),
            ("s3://models", "models", ""),
            ("s3://models/my model/v1", "models", "my model/v1"),  # keys as written
        ],
    )
    def test_bucket_and_key(self, location: str, bucket: str, key: str) -> None:
        assert parse_s3_location(location) == S3Location(bucket, key)

    def test_options_name_the_region(self) -> None:
        parsed = parse_s3_location("s3://models/energy region=eu-west-1 bucket=models")
        assert parsed == S3Location("models", "energy", region="eu-west-1")


class TestTheOriginalsForm:
    def test_the_bucket_in_the_path_is_path_style(self) -> None:
        parsed = parse_s3_location(
            "s3::http://minio.example:9000/models bucket=models region=us-east-1"
        )
        assert parsed == S3Location("models", "", "http://minio.example:9000", "us-east-1", "path")
        assert parsed.host == ("minio.example", 9000)

    def test_the_path_after_the_bucket_is_the_prefix(self) -> None:
        parsed = parse_s3_location("s3::https://minio.example/models/energy/v1 bucket=models")
        assert (parsed.key, parsed.endpoint_url) == ("energy/v1", "https://minio.example")
        assert parsed.host == ("minio.example", 443)

    def test_the_bucket_not_in_the_path_is_virtual_hosted(self) -> None:
        parsed = parse_s3_location(
            "s3::https://s3.us-west-2.amazonaws.com/energy region=us-west-2 bucket=models"
        )
        assert parsed == S3Location(
            "models", "energy", "https://s3.us-west-2.amazonaws.com", "us-west-2", "virtual"
        )
        assert parsed.host == ("models.s3.us-west-2.amazonaws.com", 443)

    def test_a_virtual_hosted_name_is_taken_apart(self) -> None:
        parsed = parse_s3_location("s3::https://models.s3.amazonaws.com/energy bucket=models")
        assert parsed == S3Location("models", "energy", "https://s3.amazonaws.com", None, "virtual")

    @pytest.mark.parametrize(
        ("url", "endpoint"),
        [
            ("http://127.0.0.1:9000", "http://127.0.0.1:9000"),
            ("http://[::1]:9000/", "http://[::1]:9000"),
            ("http://localhost:9000", "http://localhost:9000"),
        ],
    )
    def test_an_address_is_addressed_path_style(self, url: str, endpoint: str) -> None:
        parsed = parse_s3_location(f"s3::{url} bucket=models")
        assert parsed == S3Location("models", "", endpoint, None, "path")

    def test_spaces_around_the_options(self) -> None:
        parsed = parse_s3_location("  s3::http://10.0.0.5/models/m \t bucket=models  ")
        assert (parsed.bucket, parsed.key) == ("models", "m")


class TestMalformed:
    @pytest.mark.parametrize(
        ("location", "reason"),
        [
            ("s3::http://minio:9000/models", "bucket=<bucket> is missing"),
            ("s3::http://minio/models bucket = models", "expected name=value options"),
            ("s3::ftp://minio/models bucket=models", "an http:// or https:// URL with a host"),
            ("s3::http:///models bucket=models", "an http:// or https:// URL with a host"),
            ("s3::http://minio:99999/m bucket=models", "the URL is not valid"),
            ("s3::http://minio/m?v=1 bucket=models", "may not have a query"),
            ("s3::http://minio/m bucket=Models", "bucket='Models' is not an S3 bucket name"),
            ("s3::http://minio/m bucket=ab", "bucket='ab' is not an S3 bucket name"),
            ("s3::http://minio/m bucket=models region=US_EAST", "is not a region name"),
            ("s3::http://minio/m bucket=models bucket=models", "bucket= is given twice"),
            ("s3::http://minio/m bucket=models acl=private", "unknown option 'acl'"),
            ("s3://models/m bucket=other", "names the bucket after s3://"),
            ("s3:///models", "it names no bucket"),
        ],
    )
    def test_a_400_naming_path_that_shows_the_form(self, location: str, reason: str) -> None:
        with pytest.raises(MalformedRequest) as raised:
            parse_s3_location(location)
        error = raised.value
        assert (error.status, error.field) == (400, "path")
        assert reason in error.message
        assert error.message.endswith(
            "Expected s3://bucket/prefix, or the original ForestFlow's form "
            "s3::http(s)://host[:port][/bucket][/prefix] bucket=<bucket> [region=<region>]"
        )

    def test_credentials_in_the_url_are_refused_and_not_repeated(self) -> None:
        with pytest.raises(MalformedRequest) as raised:
            parse_s3_location("s3::http://key:secret@minio/models bucket=models")
        assert "credentials do not go in the URL" in raised.value.message
        assert "secret" not in raised.value.message


def test_same_endpoint_compares_scheme_host_and_port() -> None:
    assert same_endpoint("http://Minio:80", "http://minio/")
    assert same_endpoint("https://s3.example", "https://s3.example:443")
    assert not same_endpoint("http://minio:9000", "http://minio:9001")
    assert not same_endpoint("http://minio", "https://minio")
    assert not same_endpoint("http://minio", None)


class TestParentLocation:
    """An MLFlowServeRequest's `path` may name the `MLmodel` file: its directory is fetched."""

    @pytest.mark.parametrize(
        ("location", "parent"),
        [
            ("s3://models/energy/MLmodel", "s3://models/energy"),
            ("s3://models/MLmodel", "s3://models"),
            (
                "s3::http://10.0.0.5:9000/models/energy/MLmodel bucket=models region=us-east-1",
                "s3::http://10.0.0.5:9000/models/energy bucket=models region=us-east-1",
            ),
            (
                "s3::https://s3.amazonaws.com/energy/MLmodel bucket=models",
                "s3::https://s3.amazonaws.com/energy bucket=models",
            ),
        ],
    )
    def test_the_key_s_last_part_is_dropped(self, location: str, parent: str) -> None:
        assert parent_location(location, "MLmodel") == parent
        assert parse_s3_location(parent).key == parse_s3_location(location).key[: -len("/MLmodel")]

    @pytest.mark.parametrize(
        "location",
        [
            "s3://models/energy",
            "s3://models/energy/MLmodel.bak",
            "s3://MLmodel",  # the bucket, not a key
            "s3::http://10.0.0.5:9000/models bucket=models",
        ],
    )
    def test_other_locations_are_left_alone(self, location: str) -> None:
        assert parent_location(location, "MLmodel") is None
