"""The S3 fetcher: `s3://bucket/key-or-prefix` on AWS or any S3-compatible store, and the
original ForestFlow's `s3::http(s)://host[:port]/bucket/prefix bucket=<bucket> [region=…]`
(see `forestflow.artifacts.s3_locations`).

- When the key names an object, that object is downloaded; an archive (.zip, .tar.gz,
  .tgz, .tar) is extracted safely and `artifact_path` then selects a sub-directory of it,
  as for HTTP(S) (see `forestflow.artifacts.http`).
- Otherwise the key is a "directory" prefix: every object under `prefix/` (or under
  `prefix/artifact_path/` when `artifact_path` is given) is downloaded, keeping its path
  relative to the prefix. Keys that would land outside the destination (`..`, `//`) are
  refused.

The endpoint is `StorageOptions.s3_endpoint_url` (None = boto3's default, which honours
`AWS_ENDPOINT_URL`), or the one the original's form names; credentials, region (unless the
location names one) and retries come from boto3's default chain (environment variables,
`~/.aws`, instance roles). A malformed location is a 400 naming `path`; other failures are
a 422 naming `path`. The configured endpoint is the operator's, so it is not subject to
`storage.allow_private_hosts`; an endpoint the location names is checked as an HTTP(S)
URL's host is (`hosts.HostCheck`), unless it is the configured one. The fetch's
`FetchBudget` bounds the objects' declared sizes before they are downloaded, and every
chunk as it arrives (size 413, free space 507, deadline 422).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import Any

from forestflow.artifacts.archives import install_download
from forestflow.artifacts.base import ArtifactFetcher
from forestflow.artifacts.budget import FetchBudget
from forestflow.artifacts.hosts import HostCheck
from forestflow.artifacts.http import DownloadProgress
from forestflow.artifacts.s3_locations import (
    S3Location,
    parent_location,
    parse_s3_location,
    same_endpoint,
)
from forestflow.errors import CreateServableRequestInvalidError

log = logging.getLogger(__name__)

_CREDENTIAL_ERRORS = ("InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken")
_DENIED = ("AccessDenied", "AllAccessDisabled", "403")
_MISSING = ("404", "NoSuchKey", "NotFound")


class S3Fetcher(ArtifactFetcher):
    """One object (a file or an archive), or every object under a prefix, from S3."""

    def fetch_within(
        self, location: str, artifact_path: str | None, destination: Path, budget: FetchBudget
    ) -> None:
        """Download `location` into `destination`."""
        where = parse_s3_location(location)
        self._check_endpoint(location, where)
        boto3, botocore = _boto3()
        bucket = where.bucket
        client = self._client(boto3, botocore, budget, where)
        job = _S3Download(client, location, bucket, destination, budget)
        try:
            job.run(where.key, artifact_path)
        except botocore.exceptions.BotoCoreError as error:
            raise _transport_error(botocore, location, client, error) from None
        except botocore.exceptions.ClientError as error:
            raise _client_error(location, bucket, error) from None
        except (FileExistsError, IsADirectoryError, NotADirectoryError) as error:
            # "a" and "a/b" both objects: a file cannot also be a directory
            raise CreateServableRequestInvalidError(
                f"{location} has keys that are both a file and a directory: "
                f"{Path(error.filename or '').name!r}",
                field="path",
            ) from None

    def directory_of(self, location: str, name: str) -> str | None:
        """The location without its key's last part when that part is `name`."""
        return parent_location(location, name)

    def _check_endpoint(self, location: str, where: S3Location) -> None:
        """Refuse an endpoint named in the location whose host is not public (unless private
        hosts are allowed, or it is the operator's own `storage.s3_endpoint_url`)."""
        host = where.host
        if host is None or same_endpoint(where.endpoint_url, self.options.s3_endpoint_url):
            return
        HostCheck(allow_private=self.options.allow_private_hosts).check(location, *host)

    def _client(
        self, boto3: ModuleType, botocore: ModuleType, budget: FetchBudget, where: S3Location
    ) -> Any:
        timeout = max(0.001, min(self.options.timeout_s, budget.remaining_s))
        s3_config = {"addressing_style": where.addressing_style} if where.addressing_style else None
        config = botocore.config.Config(connect_timeout=timeout, read_timeout=timeout, s3=s3_config)
        try:
            return boto3.session.Session().client(
                "s3",
                endpoint_url=where.endpoint_url or self.options.s3_endpoint_url,
                region_name=where.region,
                config=config,
            )
        except (botocore.exceptions.BotoCoreError, ValueError) as error:
            raise CreateServableRequestInvalidError(
                f"cannot set up the S3 client: {error}", field="path"
            ) from None


@dataclass(frozen=True, slots=True)
class _S3Download:
    """One fetch: the client, the location as given, its bucket, the destination and
    the fetch's budget."""

    client: Any
    location: str
    bucket: str
    destination: Path
    budget: FetchBudget

    def run(self, key: str, artifact_path: str | None) -> None:
        """Fetch the object `key`, else the objects under `key[/artifact_path]/`."""
        head = self._head(key)
        if head is not None:
            self._fetch_object(key, head, artifact_path)
            return
        parts = (part.strip("/") for part in (key, artifact_path or ""))
        prefix = "/".join(part for part in parts if part)
        if artifact_path and (sub_head := self._head(prefix)) is not None:
            self._fetch_object(prefix, sub_head, None)
            return
        self._fetch_prefix(prefix)

    def _head(self, key: str) -> dict[str, Any] | None:
        """The object's metadata, or None when `key` is not an object (maybe a prefix)."""
        if not key or key.endswith("/"):
            return None
        try:
            head: dict[str, Any] = self.client.head_object(Bucket=self.bucket, Key=key)
        except Exception as error:
            code = _code(error)
            # 403 as well: without s3:ListBucket a missing key answers 403, and listing
            # next gives the precise reason (wrong credentials, no such bucket, ...)
            if code in _MISSING or code == "403":
                return None
            raise
        return head

    def _fetch_object(self, key: str, head: dict[str, Any], artifact_path: str | None) -> None:
        url = f"s3://{self.bucket}/{key}"
        size = int(head.get("ContentLength", 0))
        if size == 0:
            raise CreateServableRequestInvalidError(f"{url} is an empty object", field="path")
        self.budget.expect(size)
        download = self.destination / f".forestflow-download-{uuid.uuid4().hex}"
        try:
            progress = DownloadProgress(url, size)
            self.client.download_file(
                self.bucket, key, str(download), Callback=self._counting(progress)
            )
            progress.finish()
            install_download(
                download,
                PurePosixPath(key).name,
                self.destination,
                artifact_path=artifact_path,
                source=self.location,
                budget=self.budget,
                content_type=head.get("ContentType"),
            )
        finally:
            download.unlink(missing_ok=True)

    def _fetch_prefix(self, prefix: str) -> None:
        listed = prefix + "/" if prefix else ""
        url = f"s3://{self.bucket}/{listed}"
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=listed
        )
        listing = [
            (obj["Key"], int(obj["Size"])) for page in pages for obj in page.get("Contents", [])
        ]
        # "folder" markers (keys ending in "/", as consoles create) become empty directories
        folders = [key for key, _ in listing if key.endswith("/") and key != listed]
        objects = [(key, size) for key, size in listing if not key.endswith("/")]
        if not objects:
            raise CreateServableRequestInvalidError(
                f"no objects under {url} (nor an object s3://{self.bucket}/{prefix})",
                field="path",
            )
        targets = [(key, self._target(key, listed)) for key, _ in objects]
        total = sum(size for _, size in objects)
        self.budget.expect(total)
        for folder in folders:
            self._target(folder, listed).mkdir(parents=True, exist_ok=True)
        progress = DownloadProgress(url, total)
        for key, target in targets:
            target.parent.mkdir(parents=True, exist_ok=True)
            self.client.download_file(
                self.bucket, key, str(target), Callback=self._counting(progress)
            )
        progress.finish()
        log.info("fetched %d objects from %s", len(objects), url)

    def _counting(self, progress: DownloadProgress) -> Callable[[int], None]:
        """boto3's progress callback: count each chunk against the budget, then log.

        An error raised here ends the transfer, and boto3 raises it from `download_file`.
        """

        def advance(size: int) -> None:
            self.budget.add(size)
            progress.advance(size)

        return advance

    def _target(self, key: str, listed: str) -> Path:
        """Where object `key` goes under the destination; keys escaping it are refused."""
        relative = key[len(listed) :]
        parts = relative.split("/")
        if relative.startswith("/") or ".." in parts or "\x00" in relative:
            raise CreateServableRequestInvalidError(
                f"{self.location}: object key {key!r} would be written outside the artifact "
                "directory; refusing to fetch it",
                field="path",
            )
        return self.destination.joinpath(*(part for part in parts if part not in ("", ".")))


def _boto3() -> tuple[ModuleType, ModuleType]:
    try:
        import boto3  # noqa: PLC0415 - optional dependency, imported on first use
        import botocore.config  # noqa: PLC0415
        import botocore.exceptions  # noqa: PLC0415
    except ImportError:
        raise CreateServableRequestInvalidError(
            "s3:// locations need the 'boto3' package, which is not installed; "
            "install it with: pip install 'forestflow[s3]'",
            field="path",
        ) from None
    return boto3, botocore


def _code(error: Exception) -> str:
    response = getattr(error, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def _client_error(
    location: str, bucket: str, error: Exception
) -> CreateServableRequestInvalidError:
    code = _code(error)
    detail = str(response_message(error) or code)
    if code == "NoSuchBucket":
        message = f"S3 bucket {bucket!r} does not exist ({location})"
    elif code in _CREDENTIAL_ERRORS:
        message = f"wrong S3 credentials for {location}: {code}: {detail}"
    elif code in _DENIED:
        message = (
            f"access denied to {location}: wrong S3 credentials or no permission to read it "
            f"({code}: {detail})"
        )
    else:
        message = f"S3 error on {location}: {code}: {detail}"
    return CreateServableRequestInvalidError(message, field="path")


def response_message(error: Exception) -> str | None:
    """The `Message` S3 sent with an error, if any."""
    response = getattr(error, "response", None) or {}
    message = response.get("Error", {}).get("Message")
    return str(message) if message else None


def _transport_error(
    botocore: ModuleType, location: str, client: Any, error: Exception
) -> CreateServableRequestInvalidError:
    endpoint = client.meta.endpoint_url
    exceptions = botocore.exceptions
    if isinstance(error, exceptions.ConnectTimeoutError | exceptions.ReadTimeoutError):
        message = f"the S3 endpoint {endpoint} timed out fetching {location}: {error}"
    elif isinstance(error, exceptions.EndpointConnectionError):
        message = f"cannot reach the S3 endpoint {endpoint}: {error}"
    elif isinstance(error, exceptions.NoCredentialsError | exceptions.PartialCredentialsError):
        message = (
            f"no usable S3 credentials for {location} ({error}); set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, a profile in ~/.aws, or an instance role"
        )
    elif isinstance(error, exceptions.ParamValidationError):
        message = f"{location} is not a valid S3 location: {error}"
    else:
        message = f"fetching {location} from {endpoint} failed: {type(error).__name__}: {error}"
    return CreateServableRequestInvalidError(message, field="path")
