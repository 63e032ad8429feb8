"""Content hashes of artifact copies: what a deploy recorded is what a restart serves.

The digest covers every regular file under the copy — its path relative to the root and
its bytes — in sorted order, so it changes when a file is added, removed, renamed or
altered, and not when only timestamps or permissions do.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

ALGORITHM = "sha256"
_CHUNK = 1024 * 1024


def artifact_digest(root: Path) -> str:
    """`sha256:<hex>` of the files under `root` (a directory, or one file)."""
    total = hashlib.sha256()
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
    for path in files:
        name = path.relative_to(root).as_posix() if root.is_dir() else path.name
        encoded = name.encode()
        total.update(len(encoded).to_bytes(8, "big") + encoded)
        content = hashlib.sha256()
        with path.open("rb") as stream:
            while chunk := stream.read(_CHUNK):
                content.update(chunk)
        total.update(content.digest())
    return f"{ALGORITHM}:{total.hexdigest()}"
