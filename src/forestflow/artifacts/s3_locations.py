"""The forms of an S3 location: ours, `s3://bucket/key-or-prefix`, and the original's.

The original ForestFlow named an S3-compatible store's endpoint, bucket and region in
`path` itself:

    s3::http(s)://host[:port][/bucket][/prefix] bucket=<bucket> [region=<region>]

(`s3://…` instead of `s3::http(s)://…` named no endpoint). Mapped here:

- the endpoint is the URL's `scheme://host[:port]`, and the store is addressed as the
  original addressed it: path-style (`http://host/bucket/key`) when the URL's path starts
  with the bucket, virtual-hosted (`http://bucket.host/key`) otherwise — except for a host
  that is an IP address or `localhost`, which can only be addressed path-style, and a host
  that already starts with `<bucket>.`, which is the virtual-hosted name itself;
- what the URL's path holds after the bucket is the key or prefix, as in
  `s3://bucket/key-or-prefix` (the original ignored it and took the flavor's file name as
  the key: with `/bucket` alone the whole bucket is the artifact, and the flavor's
  `mojoPath` or `modelPath` is the key, as it was);
- `region=` is the client's region; without it boto3's default chain decides.

`bucket=` and `region=` may come in either order. A malformed location is a 400 naming
`path` that shows the expected form. An endpoint named in `path` is the requester's
choice, not the operator's: the fetcher checks its host like an HTTP(S) URL's, unless it
is `storage.s3_endpoint_url` itself.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from forestflow.artifacts.base import redact_credentials
from forestflow.errors import MalformedRequest

ORIGINAL_FORM = "s3::http(s)://host[:port][/bucket][/prefix] bucket=<bucket> [region=<region>]"
_OPTIONS = re.compile(r"(?P<url>\S+)(?P<options>(?:\s+[A-Za-z_]+=\S*)+)\s*")
# S3's bucket naming rules: 3 to 63 lowercase letters, digits, dots and hyphens, starting
# and ending with a letter or digit
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_REGION = re.compile(r"[a-z0-9-]+")
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class S3Location:
    """Where an S3 location points: a bucket, a key (an object, or a prefix; "" is the
    whole bucket) and, for the original's form, the endpoint, region and addressing."""

    bucket: str
    key: str
    endpoint_url: str | None = None
    """`scheme://host[:port]`, or None for the server's `storage.s3_endpoint_url`."""
    region: str | None = None
    """None: boto3's default chain (`AWS_DEFAULT_REGION`, `~/.aws/config`)."""
    addressing_style: str | None = None
    """"path" or "virtual" for an endpoint named in the location; None: boto3's choice."""

    @property
    def host(self) -> tuple[str, int] | None:
        """The host and port a fetch connects to, for an endpoint named in the location."""
        if self.endpoint_url is None:
            return None
        parts = urlsplit(self.endpoint_url)
        host = parts.hostname or ""
        if self.addressing_style == "virtual":
            host = f"{self.bucket}.{host}"
        return host, parts.port or _DEFAULT_PORTS[parts.scheme]


def parse_s3_location(location: str) -> S3Location:
    """The bucket, key and (original form) endpoint of `location`; a 400 naming `path`
    when it is malformed."""
    original = location.strip().startswith("s3::")
    matched = _OPTIONS.fullmatch(location.strip())
    if matched is None:
        if original:
            missing = len(location.split()) == 1
            raise _malformed(
                location,
                "bucket=<bucket> is missing" if missing else "expected name=value options",
            )
        return _ours(location)
    url, options = matched["url"], _options(location, matched["options"])
    if original:
        return _endpoint_form(location, url[len("s3::") :], options)
    return _bucket_form(location, url, options)


def parent_location(location: str, name: str) -> str | None:
    """`location` with the last part of its key dropped, when that part is `name`
    (`s3://b/m/MLmodel` → `s3://b/m`, options kept); else None."""
    key = parse_s3_location(location).key
    if key != name and not key.endswith("/" + name):
        return None
    text = location.strip()
    matched = _OPTIONS.fullmatch(text)
    url, options = (matched["url"], matched["options"]) if matched else (text, "")
    return url[: -len(name) - 1] + options


def same_endpoint(first: str | None, second: str | None) -> bool:
    """Whether two endpoint URLs name the same scheme, host and port."""
    if first is None or second is None:
        return False
    return _origin(first) == _origin(second)


def _origin(url: str) -> tuple[str, str, int | None] | None:
    try:
        parts = urlsplit(url.strip())
        scheme = parts.scheme.lower()
        return scheme, parts.hostname or "", parts.port or _DEFAULT_PORTS.get(scheme)
    except ValueError:
        return None


def _ours(location: str) -> S3Location:
    """`s3://bucket/key` → bucket and key; keys are taken as written, not URL-decoded."""
    _, _, rest = location.partition("://")
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise _malformed(location, "it names no bucket")
    return S3Location(bucket, key)


def _options(location: str, text: str) -> dict[str, str]:
    """`bucket=` and `region=`, each at most once, checked."""
    options: dict[str, str] = {}
    for word in text.split():
        name, _, value = word.partition("=")
        if name not in ("bucket", "region"):
            raise _malformed(location, f"unknown option {name!r}; the options are bucket, region")
        if name in options:
            raise _malformed(location, f"{name}= is given twice")
        pattern = _BUCKET if name == "bucket" else _REGION
        if not pattern.fullmatch(value):
            what = (
                "an S3 bucket name (3 to 63 lowercase letters, digits, dots and hyphens)"
                if name == "bucket"
                else "a region name such as us-east-1"
            )
            raise _malformed(location, f"{name}={value!r} is not {what}")
        options[name] = value
    return options


def _bucket_form(location: str, url: str, options: dict[str, str]) -> S3Location:
    """`s3://bucket/prefix bucket=bucket region=…`: the server's endpoint, the given region."""
    ours = _ours(url)
    bucket = options.get("bucket", ours.bucket)
    if bucket != ours.bucket:
        raise _malformed(
            location,
            f"an s3:// URL names the bucket after s3:// ({ours.bucket!r}, not bucket={bucket}); "
            "to name an endpoint, write s3::http(s)://host/… bucket=…",
        )
    return S3Location(bucket, ours.key, region=options.get("region"))


def _endpoint_form(location: str, url: str, options: dict[str, str]) -> S3Location:
    """`s3::http(s)://host[:port]/… bucket=… [region=…]`."""
    bucket = options.get("bucket")
    if bucket is None:
        raise _malformed(location, "bucket=<bucket> is missing")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise _malformed(location, f"the URL is not valid ({error})") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise _malformed(location, "after s3:: comes an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise _malformed(
            location,
            "credentials do not go in the URL: the server uses the AWS credential chain "
            "(AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, a profile, an instance role)",
        )
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise _malformed(location, "the URL may not have a query (?…) or a fragment (#…)")
    host = parts.hostname
    netloc = f"[{host}]" if ":" in host else host
    netloc += f":{port}" if port is not None else ""
    segments = parts.path.split("/")[1:] if parts.path.startswith("/") else []
    region = options.get("region")
    if segments and segments[0] == bucket:
        return S3Location(bucket, "/".join(segments[1:]), f"{scheme}://{netloc}", region, "path")
    key = "/".join(segments)
    if host.startswith(bucket + "."):
        endpoint = f"{scheme}://{netloc[len(bucket) + 1 :]}"
        return S3Location(bucket, key, endpoint, region, "virtual")
    style = "path" if _ip_or_localhost(host) else "virtual"
    return S3Location(bucket, key, f"{scheme}://{netloc}", region, style)


def _ip_or_localhost(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _malformed(location: str, reason: str) -> MalformedRequest:
    return MalformedRequest(
        f"malformed S3 location {redact_credentials(location)!r}: {reason}. Expected "
        f"s3://bucket/prefix, or the original ForestFlow's form {ORIGINAL_FORM}",
        field="path",
    )
