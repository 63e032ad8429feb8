"""Downloaded artifacts: archive detection, safe extraction, and placing a download in the cache.

Archives (`.zip`, `.tar.gz`/`.tgz`, `.tar`) come from untrusted places, so extraction
refuses, with a 422 naming `path`, every entry that could write or point outside the
target directory: absolute paths, `..` components, symbolic links whose target leaves the
archive, hard links to anything but an earlier regular file of the archive, and device
files or FIFOs. Zip bombs are defeated by a limit on the entry count (`ArchiveLimits`)
and by the fetch's `FetchBudget`: the total uncompressed size (`storage.max_artifact_bytes`,
413 above it) and the disk's free space (507) are checked before anything is written, as
the archive declares them, and again while bytes are written.

Symbolic links are created last, after every regular file, so no write ever goes through
one; a link inside a linked directory is refused, and every link is resolved once more at
the end. tar members also pass `tarfile.data_filter` (Python ≥ 3.11.4) as a second check.
"""

from __future__ import annotations

import enum
import gzip
import os
import posixpath
import shutil
import stat
import tarfile
import uuid
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, BinaryIO, cast

from forestflow.artifacts.budget import CHUNK, FetchBudget
from forestflow.artifacts.trees import MAX_ENTRIES, TreeCopy
from forestflow.errors import CreateServableRequestInvalidError

# tar headers (pax, GNU long names) are read whole into memory: refuse absurd ones
_MAX_HEADER_READ = 16 * 1024 * 1024
_GZIP_MAGIC = b"\x1f\x8b"


class ArchiveFormat(enum.StrEnum):
    """The archive formats a remote artifact may come in."""

    ZIP = "zip"
    TAR_GZ = "tar.gz"
    TAR = "tar"


_SUFFIXES = (
    (".tar.gz", ArchiveFormat.TAR_GZ),
    (".tgz", ArchiveFormat.TAR_GZ),
    (".tar", ArchiveFormat.TAR),
    (".zip", ArchiveFormat.ZIP),
)
_CONTENT_TYPES = {
    "application/zip": ArchiveFormat.ZIP,
    "application/x-zip": ArchiveFormat.ZIP,
    "application/x-zip-compressed": ArchiveFormat.ZIP,
    "application/x-tar": ArchiveFormat.TAR,
    "application/x-gtar": ArchiveFormat.TAR_GZ,
    "application/x-tgz": ArchiveFormat.TAR_GZ,
    "application/x-compressed-tar": ArchiveFormat.TAR_GZ,
    "application/gzip": ArchiveFormat.TAR_GZ,
    "application/x-gzip": ArchiveFormat.TAR_GZ,
}


@dataclass(frozen=True, slots=True)
class ArchiveLimits:
    """How many entries one archive may have (its bytes are the fetch's `FetchBudget`'s)."""

    max_entries: int = MAX_ENTRIES


def archive_format(name: str, content_type: str | None = None) -> ArchiveFormat | None:
    """The archive format of a download called `name`, or None for a plain file.

    The name's suffix decides; the Content-Type is consulted only for names without any
    suffix (download endpoints such as `/artifacts/42`), so `model.onnx` served as
    `application/gzip` by an odd server is still saved as a file.
    """
    lowered = name.lower()
    for suffix, kind in _SUFFIXES:
        if lowered.endswith(suffix):
            return kind
    if "." in name or not content_type:
        return None
    return _CONTENT_TYPES.get(content_type.split(";", 1)[0].strip().lower())


def install_download(
    download: Path,
    name: str,
    destination: Path,
    *,
    artifact_path: str | None,
    source: str,
    budget: FetchBudget,
    content_type: str | None = None,
    limits: ArchiveLimits | None = None,
) -> None:
    """Put the downloaded file `download` (inside `destination`) in its place.

    An archive is extracted into `destination`; with `artifact_path`, only that entry of
    the archive (a sub-directory, whose content becomes the artifact root, or a file) is
    kept. Any other file is kept as `destination/name`. `download` is gone afterwards.
    `budget` counts the download; what it unpacks to is counted on a fresh stage of it.
    """
    kind = archive_format(name, content_type)
    if kind is None:
        if artifact_path:
            raise CreateServableRequestInvalidError(
                f"artifact_path {artifact_path!r} applies to archives only, and {source} "
                "is a single file (not .zip, .tar.gz, .tgz or .tar)",
                field="artifactPath",
            )
        download.rename(destination / safe_file_name(name, source))
        return
    unpacked = destination / f".forestflow-unpacked-{uuid.uuid4().hex}"
    try:
        unpacking = budget.stage()
        if not artifact_path:
            extract_archive(
                download, destination, kind, source=source, budget=unpacking, limits=limits
            )
            return
        extract_archive(download, unpacked, kind, source=source, budget=unpacking, limits=limits)
        _select(unpacked, artifact_path, destination, source, budget.stage())
    finally:
        download.unlink(missing_ok=True)
        shutil.rmtree(unpacked, ignore_errors=True)


def safe_file_name(name: str, source: str) -> str:
    """`name` if it is one plain path component; else a 422 naming `path`."""
    if name in ("", ".", "..") or any(char in name for char in "/\\\x00"):
        raise CreateServableRequestInvalidError(
            f"cannot name the file downloaded from {source}: {name!r} is not a file name; "
            "point path at a file or an archive (.zip, .tar.gz, .tgz, .tar)",
            field="path",
        )
    return name


def extract_archive(
    archive: Path,
    destination: Path,
    kind: ArchiveFormat,
    *,
    source: str,
    budget: FetchBudget,
    limits: ArchiveLimits | None = None,
) -> None:
    """Extract `archive` into `destination` (created if needed), refusing unsafe entries.

    `source` names the archive in error messages (the location the client gave); every
    byte written is counted against `budget`.
    """
    extraction = _Extraction(destination, source, limits or ArchiveLimits(), budget)
    destination.mkdir(parents=True, exist_ok=True)
    try:
        if kind is ArchiveFormat.ZIP:
            _extract_zip(archive, extraction)
        else:
            _extract_tar(archive, extraction)
    except (zipfile.BadZipFile, tarfile.ReadError, EOFError, zlib.error, gzip.BadGzipFile) as error:
        raise CreateServableRequestInvalidError(
            f"{source} is not a valid {kind} archive: {str(error) or type(error).__name__}",
            field="path",
        ) from None
    except (NotImplementedError, RuntimeError) as error:  # unsupported compression, encrypted
        raise CreateServableRequestInvalidError(
            f"{source} cannot be extracted: {error}", field="path"
        ) from None
    except (FileExistsError, IsADirectoryError, NotADirectoryError) as error:
        raise CreateServableRequestInvalidError(
            f"{source} has conflicting entries: {error.strerror}: "
            f"{Path(error.filename or '').name!r}",
            field="path",
        ) from None
    extraction.make_links()


@dataclass
class _Extraction:
    """One extraction in progress: its checks, its byte budget and its deferred links."""

    destination: Path
    source: str
    limits: ArchiveLimits
    budget: FetchBudget
    entries: int = 0
    links: list[tuple[tuple[str, ...], str, str]] = field(default_factory=list)

    def refuse(self, entry: str, reason: str) -> CreateServableRequestInvalidError:
        """The 422 for an unsafe entry."""
        return CreateServableRequestInvalidError(
            f"{self.source}: archive entry {entry!r} {reason}; refusing to extract it",
            field="path",
        )

    def count(self, entries: int = 1) -> None:
        """Count more entries against the limit."""
        self.entries += entries
        if self.entries > self.limits.max_entries:
            raise CreateServableRequestInvalidError(
                f"{self.source} has more than {self.limits.max_entries} entries; "
                "refusing it as a possible archive bomb",
                field="path",
            )

    def reserve(self, size: int) -> None:
        """Account for `size` more bytes written; over the limit → 413."""
        self.budget.add(size)

    def check_room(self, size: int) -> None:
        """Refuse (413, 507) when `size` more bytes would not fit, before writing them."""
        self.budget.expect(size)

    def parts(self, name: str) -> tuple[str, ...]:
        """The path components of entry `name`; absolute or `..` paths are refused."""
        if "\x00" in name:
            raise self.refuse(name, "has a NUL character in its name")
        posix = name.replace("\\", "/")
        if posix.startswith("/") or (len(posix) > 1 and posix[1] == ":" and posix[0].isalpha()):
            raise self.refuse(name, "has an absolute path")
        parts = tuple(part for part in posix.split("/") if part not in ("", "."))
        if ".." in parts:
            raise self.refuse(name, "would be written outside the destination ('..' in its path)")
        return parts

    def hard_link_parts(self, name: str, link_target: str) -> tuple[str, ...]:
        """The path components of a hard link's target, which must stay in the archive."""
        try:
            return self.parts(link_target)
        except CreateServableRequestInvalidError:
            raise self.refuse(
                name, f"is a hard link to {link_target!r}, outside the archive"
            ) from None

    def path(self, parts: tuple[str, ...]) -> Path:
        """Where the entry with `parts` goes."""
        return self.destination.joinpath(*parts)

    def write(self, stream: IO[bytes], parts: tuple[str, ...], executable: bool) -> None:
        """Copy `stream` to the entry's file, counting every byte against the limit."""
        target = self.path(parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("wb") as out:
            while chunk := stream.read(CHUNK):
                self.reserve(len(chunk))
                out.write(chunk)
        target.chmod(0o755 if executable else 0o644)

    def defer_link(self, name: str, parts: tuple[str, ...], link_target: str) -> None:
        """Check a symbolic link's target lexically and remember it for `make_links`."""
        if not link_target or "\x00" in link_target:
            raise self.refuse(name, "is a symlink without a valid target")
        if link_target.startswith("/"):
            raise self.refuse(name, f"is a symlink to {link_target!r}, an absolute path")
        joined = posixpath.normpath(posixpath.join(*parts[:-1], link_target))
        if joined == ".." or joined.startswith("../"):
            raise self.refuse(name, f"is a symlink to {link_target!r}, outside the archive")
        self.links.append((parts, link_target, name))

    def make_links(self) -> None:
        """Create the deferred symbolic links, then check where each really points."""
        linked = {parts for parts, _, _ in self.links}
        for parts, link_target, name in self.links:
            if any(parts[:i] in linked for i in range(1, len(parts))):
                raise self.refuse(name, "lies inside a symlinked directory")
            target = self.path(parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.symlink(link_target, target)
            except FileExistsError:
                raise self.refuse(name, "is a symlink over another entry") from None
        root = os.path.realpath(self.destination)
        for parts, link_target, name in self.links:
            resolved = os.path.realpath(self.path(parts))
            if os.path.commonpath([root, resolved]) != root:
                raise self.refuse(name, f"is a symlink to {link_target!r}, outside the archive")


def _extract_zip(archive: Path, extraction: _Extraction) -> None:
    with zipfile.ZipFile(archive) as bundle:
        infos = bundle.infolist()
        # the central directory first: a bomb is refused before a byte is written
        extraction.count(len(infos))
        extraction.check_room(sum(info.file_size for info in infos))
        for info in infos:
            _extract_zip_entry(bundle, info, extraction)


def _extract_zip_entry(bundle: zipfile.ZipFile, info: zipfile.ZipInfo, ex: _Extraction) -> None:
    parts = ex.parts(info.filename)
    mode = info.external_attr >> 16 if info.create_system == 3 else 0  # 3 = Unix
    kind = stat.S_IFMT(mode)
    if not parts:
        return
    if info.is_dir() or kind == stat.S_IFDIR:
        ex.path(parts).mkdir(parents=True, exist_ok=True)
    elif kind == stat.S_IFLNK:
        with bundle.open(info) as stream:
            link_target = stream.read(4096).decode("utf-8", errors="replace")
        ex.defer_link(info.filename, parts, link_target)
    elif kind not in (0, stat.S_IFREG):
        raise ex.refuse(info.filename, "is a device file, FIFO or socket")
    else:
        with bundle.open(info) as stream:
            ex.write(stream, parts, executable=bool(mode & stat.S_IXUSR))


def _extract_tar(archive: Path, extraction: _Extraction) -> None:
    with _decompressed(archive) as stream, tarfile.open(fileobj=stream, mode="r:") as tar:
        while (member := tar.next()) is not None:
            _extract_tar_member(tar, member, extraction)


def _extract_tar_member(tar: tarfile.TarFile, member: tarfile.TarInfo, ex: _Extraction) -> None:
    ex.count()
    parts = ex.parts(member.name)
    if not parts:
        return
    # our own checks first (their messages are the clearer ones), then tarfile's
    if member.issym():
        ex.defer_link(member.name, parts, member.linkname)
    elif member.islnk():
        ex.hard_link_parts(member.name, member.linkname)
    elif not (member.isdir() or member.isreg()):
        raise ex.refuse(member.name, "is a device file, FIFO or socket")
    data_filter = getattr(tarfile, "data_filter", None)  # Python ≥ 3.11.4
    if data_filter is not None:
        try:
            data_filter(member, str(ex.destination))
        except tarfile.FilterError as error:
            raise ex.refuse(member.name, f"is unsafe ({error})") from None
    if member.isdir():
        ex.path(parts).mkdir(parents=True, exist_ok=True)
    elif member.islnk():
        _copy_hard_link(member, parts, ex)
    elif member.isreg():
        ex.check_room(member.size)  # the declared size, before reading the data
        stream = tar.extractfile(member)
        assert stream is not None  # regular members always have data
        with stream:
            ex.write(stream, parts, executable=bool(member.mode & stat.S_IXUSR))


def _copy_hard_link(member: tarfile.TarInfo, parts: tuple[str, ...], ex: _Extraction) -> None:
    # a copy, not a link: the archive's files stay independent of each other
    source = ex.path(ex.hard_link_parts(member.name, member.linkname))
    if source.is_symlink() or not source.is_file():
        raise ex.refuse(
            member.name, f"is a hard link to {member.linkname!r}, not an earlier file of it"
        )
    ex.check_room(source.stat().st_size)
    ex.reserve(source.stat().st_size)
    target = ex.path(parts)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    shutil.copymode(source, target)


@contextmanager
def _decompressed(archive: Path) -> Iterator[IO[bytes]]:
    with archive.open("rb") as raw:
        compressed = raw.read(2) == _GZIP_MAGIC
        raw.seek(0)
        inner: BinaryIO = cast(BinaryIO, gzip.GzipFile(fileobj=raw)) if compressed else raw
        with inner:
            yield cast(IO[bytes], _HeaderCap(inner))


class _HeaderCap:
    """A tar stream that refuses any single read larger than a sane tar header.

    tarfile reads pax and GNU long-name headers whole into memory; data is read in
    chunks. Without this, one forged header could make the server allocate gigabytes.
    """

    def __init__(self, inner: BinaryIO) -> None:
        self._inner = inner

    def read(self, size: int = -1) -> bytes:
        """Read at most `size` bytes (which must be bounded)."""
        if size < 0 or size > _MAX_HEADER_READ:
            raise tarfile.ReadError(f"a tar header or block of {size} bytes is too large")
        return self._inner.read(size)

    def seek(self, offset: int, whence: int = 0) -> int:
        """Move within the decompressed stream."""
        return self._inner.seek(offset, whence)

    def tell(self) -> int:
        """The position within the decompressed stream."""
        return self._inner.tell()


def _select(
    unpacked: Path, artifact_path: str, destination: Path, source: str, budget: FetchBudget
) -> None:
    """Move (or copy, counting against `budget`) the `artifact_path` entry of an unpacked
    archive into `destination`."""
    parts = PurePosixPath(artifact_path.replace("\\", "/")).parts
    if not parts or artifact_path.startswith(("/", "\\")) or ".." in parts:
        raise CreateServableRequestInvalidError(
            f"artifact_path {artifact_path!r} must be a relative path inside the archive",
            field="artifactPath",
        )
    selected = unpacked.joinpath(*parts)
    root = unpacked.resolve()
    real = selected.resolve()
    if not selected.exists() or (real != root and root not in real.parents):
        raise CreateServableRequestInvalidError(
            f"artifact_path {artifact_path!r} is not in the archive {source}",
            field="artifactPath",
        )
    copy = TreeCopy(
        budget,
        link_root=unpacked,
        name_of=lambda relative: f"{source}: archive entry {'/'.join(parts + relative)!r}",
        field="artifactPath",
    )
    if real.is_file():
        copy.copy_file(real, destination / parts[-1])
        return
    if any(path.is_symlink() for path in real.rglob("*")):
        # links may point elsewhere in the archive: copy what they point to instead
        # (each copy counted: many links to one big directory must not multiply it)
        copy.copy_tree(real, destination)
        return
    for child in real.iterdir():
        child.rename(destination / child.name)
