"""Copying an untrusted directory tree: regular files only, links kept inside, bytes counted.

Used for local artifacts (`LocalFetcher`) and for the part of an unpacked archive that
`artifact_path` selects. The tree is walked first without following anything, and every
problem is refused with a 422 naming the file before a byte is copied:

- a symbolic link whose target leaves `link_root` (checked on the link's text, then on
  where it really leads), a dangling link, a link loop;
- anything but regular files and directories: devices, FIFOs, sockets, and anything
  under /proc, /sys or /dev;
- an entry that cannot be read (a directory that cannot be listed, a file that cannot
  be opened or read).

A link to a file or directory inside `link_root` is copied as what it points to. The
total size is checked against the budget before copying, and every chunk is counted
while copying, so a file that grows while it is copied is cut off too. Files are opened
without following links and must still be the file that was checked.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from forestflow.artifacts.budget import CHUNK, FetchBudget
from forestflow.errors import CreateServableRequestInvalidError

MAX_ENTRIES = 100_000
"""Limit on the number of entries of one artifact (a directory tree or an archive)."""
SPECIAL_ROOTS = ("/proc", "/sys", "/dev")
"""Kernel and device file systems: nothing under them is ever part of an artifact."""

NameOf = Callable[[tuple[str, ...]], str]
"""How a refusal names the entry at a relative path (quoted, as the client knows it)."""


def inside(path: str, root: str) -> bool:
    """Whether the absolute, normalised `path` is `root` or under it."""
    return os.path.commonpath([root, path]) == root


def special_place(real: str) -> bool:
    """Whether the real path `real` lies under /proc, /sys or /dev."""
    return any(inside(real, root) for root in SPECIAL_ROOTS)


def tree_bytes(directory: Path, *, skip: str | None = None) -> int:
    """Bytes of the files under `directory` (links not followed; entries that vanish
    meanwhile are skipped), leaving out its top-level entry named `skip`."""
    total = 0
    pending = [os.fspath(directory)]
    while pending:
        current = pending.pop()
        try:
            with os.scandir(current) as listing:
                entries = list(listing)
        except OSError:
            continue
        for entry in entries:
            if skip is not None and current == os.fspath(directory) and entry.name == skip:
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    pending.append(entry.path)
                else:
                    total += entry.stat(follow_symlinks=False).st_size
            except OSError:
                continue
    return total


@dataclass(frozen=True, slots=True)
class _Entry:
    """One thing to create: where it goes, what to read, and what it was when checked."""

    relative: tuple[str, ...]
    real: str
    is_dir: bool
    size: int = 0
    identity: tuple[int, int] = (0, 0)
    executable: bool = False


class TreeCopy:
    """One checked, counted copy of a tree (or of one file) into a destination."""

    def __init__(
        self,
        budget: FetchBudget,
        *,
        link_root: Path,
        name_of: NameOf,
        field: str = "path",
        max_entries: int = MAX_ENTRIES,
    ) -> None:
        self.budget = budget
        self.link_root = os.path.realpath(link_root)
        self.name_of = name_of
        self.field = field
        self.max_entries = max_entries
        self._entries: list[_Entry] = []
        self._planned = 0

    def copy_tree(self, source: Path, destination: Path) -> None:
        """Copy the content of directory `source` into the existing `destination`."""
        real = os.path.realpath(source)
        if special_place(real):
            raise self.refuse((), "is a special file system (under /proc, /sys or /dev)")
        self._walk(real, (), frozenset({real}))
        self._copy(destination)

    def copy_file(self, source: Path, target: Path) -> None:
        """Copy the single file `source` to `target` (named `()` in refusals)."""
        self._visit(os.fspath(source), ())
        self._copy(target.parent, rename={(): target.name})

    def refuse(self, relative: tuple[str, ...], reason: str) -> CreateServableRequestInvalidError:
        """The 422 naming the entry at `relative`."""
        return CreateServableRequestInvalidError(
            f"{self.name_of(relative)} {reason}; refusing to copy it", field=self.field
        )

    # ------------------------------------------------------------------ the walk

    def _walk(self, real_dir: str, relative: tuple[str, ...], stack: frozenset[str]) -> None:
        try:
            with os.scandir(real_dir) as listing:
                names = sorted(entry.name for entry in listing)
        except OSError:
            raise self.refuse(relative, "is a directory that cannot be read") from None
        for name in names:
            self._visit(os.path.join(real_dir, name), (*relative, name), stack)

    def _visit(
        self, path: str, relative: tuple[str, ...], stack: frozenset[str] = frozenset()
    ) -> None:
        self._count()
        try:
            status = os.lstat(path)
        except OSError:
            raise self.refuse(relative, "cannot be read") from None
        real = path
        if stat.S_ISLNK(status.st_mode):
            real, status = self._follow(path, relative)
        if special_place(real):
            raise self.refuse(relative, "is a special file (under /proc, /sys or /dev)")
        if stat.S_ISDIR(status.st_mode):
            if real in stack:
                raise self.refuse(relative, "is a symlink loop")
            self._entries.append(_Entry(relative, real, is_dir=True))
            self._walk(real, relative, stack | {real})
        elif stat.S_ISREG(status.st_mode):
            self._plan_file(relative, real, status)
        else:
            raise self.refuse(relative, "is a device file, FIFO or socket, not a regular file")

    def _follow(self, path: str, relative: tuple[str, ...]) -> tuple[str, os.stat_result]:
        """Where the link at `path` leads, which must exist inside `link_root`."""
        written = os.readlink(path)
        lexical = os.path.normpath(os.path.join(os.path.dirname(path), written))
        outside = "is a symlink to a place outside the artifact"
        if not inside(lexical, self.link_root):
            raise self.refuse(relative, outside)
        real = os.path.realpath(path)
        try:
            status = os.stat(real)
        except OSError as error:
            reason = "is a symlink loop" if error.errno == errno.ELOOP else "is a dangling symlink"
            raise self.refuse(relative, reason) from None
        if not inside(real, self.link_root):
            raise self.refuse(relative, outside)
        return real, status

    def _plan_file(self, relative: tuple[str, ...], real: str, status: os.stat_result) -> None:
        self._planned += status.st_size
        self.budget.check_size(self.budget.written + self._planned)
        self._entries.append(
            _Entry(
                relative,
                real,
                is_dir=False,
                size=status.st_size,
                identity=(status.st_dev, status.st_ino),
                executable=bool(status.st_mode & stat.S_IXUSR),
            )
        )

    def _count(self) -> None:
        if len(self._entries) >= self.max_entries:
            raise CreateServableRequestInvalidError(
                f"{self.name_of(())} has more than {self.max_entries} entries; refusing to copy it",
                field=self.field,
            )
        self.budget.check_deadline()

    # ------------------------------------------------------------------ the copy

    def _copy(self, destination: Path, rename: dict[tuple[str, ...], str] | None = None) -> None:
        self.budget.expect(self._planned)
        for entry in self._entries:
            name = (rename or {}).get(entry.relative)
            target = destination / name if name else destination.joinpath(*entry.relative)
            if entry.is_dir:
                target.mkdir(parents=True, exist_ok=True)
            else:
                self._copy_file(entry, target)

    def _copy_file(self, entry: _Entry, target: Path) -> None:
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            descriptor = os.open(entry.real, flags)
        except OSError:
            raise self.refuse(entry.relative, "cannot be read") from None
        with os.fdopen(descriptor, "rb") as source:
            opened = os.fstat(descriptor)
            if (opened.st_dev, opened.st_ino) != entry.identity:
                raise self.refuse(entry.relative, "changed while it was being copied")
            target.parent.mkdir(parents=True, exist_ok=True)
            with target.open("wb") as out:
                while chunk := self._read(source, entry):
                    self.budget.add(len(chunk))
                    out.write(chunk)
        target.chmod(0o755 if entry.executable else 0o644)

    def _read(self, source: IO[bytes], entry: _Entry) -> bytes:
        try:
            return source.read(CHUNK)
        except OSError:
            raise self.refuse(entry.relative, "cannot be read") from None
