"""`FetchBudget`: bytes, free space and deadline of one fetch, on the real disk."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

import pytest

from forestflow.artifacts.base import StorageOptions
from forestflow.artifacts.budget import FetchBudget, disk_full
from forestflow.errors import (
    ArtifactTooLarge,
    CreateServableRequestInvalidError,
    InsufficientStorage,
)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def budget(directory: Path, clock: Clock | None = None, **limits: float) -> FetchBudget:
    options = {"max_bytes": 1000, "reserve_bytes": 0, "deadline_s": 10.0, **limits}
    return FetchBudget(
        max_bytes=int(options["max_bytes"]),
        reserve_bytes=int(options["reserve_bytes"]),
        deadline_s=options["deadline_s"],
        directory=directory,
        source="http://example.test/m.zip",
        clock=clock or Clock(),
    )


class TestSize:
    def test_bytes_up_to_the_limit_are_fine(self, tmp_path: Path) -> None:
        counted = budget(tmp_path)
        counted.expect(1000)
        counted.add(600)
        counted.add(400)
        assert counted.written == 1000

    def test_one_byte_over_is_a_413(self, tmp_path: Path) -> None:
        counted = budget(tmp_path)
        counted.add(1000)
        with pytest.raises(ArtifactTooLarge) as caught:
            counted.add(1)
        assert caught.value.status == 413
        assert caught.value.message == (
            "the artifact exceeds the limit of 1000 bytes (setting storage.max_artifact_bytes)"
        )

    def test_a_declared_size_is_refused_before_writing(self, tmp_path: Path) -> None:
        counted = budget(tmp_path)
        counted.add(10)
        with pytest.raises(ArtifactTooLarge):
            counted.expect(991)
        assert counted.written == 10

    def test_a_stage_counts_on_its_own_with_the_same_deadline(self, tmp_path: Path) -> None:
        clock = Clock()
        download = budget(tmp_path, clock)
        download.add(900)
        unpacked = download.stage()
        unpacked.add(1000)
        clock.now += 11
        with pytest.raises(CreateServableRequestInvalidError, match="fetch_deadline_s"):
            unpacked.check_deadline()

    def test_the_options_set_the_limits(self, tmp_path: Path) -> None:
        options = StorageOptions(
            max_artifact_bytes=5, free_space_reserve_bytes=7, fetch_deadline_s=3
        )
        started = FetchBudget.start(options, tmp_path, "s3://b/k")
        assert (started.max_bytes, started.reserve_bytes, started.deadline_s) == (5, 7, 3)


class TestDeadline:
    def test_passing_the_deadline_is_a_422_naming_the_setting(self, tmp_path: Path) -> None:
        clock = Clock()
        counted = budget(tmp_path, clock, deadline_s=2.5)
        clock.now += 2.5
        counted.add(1)  # exactly at the deadline: still in time
        assert counted.remaining_s == 0
        clock.now += 0.1
        with pytest.raises(CreateServableRequestInvalidError) as caught:
            counted.add(1)
        assert caught.value.status == 422
        assert caught.value.field == "path"
        assert caught.value.message == (
            "could not fetch http://example.test/m.zip: took longer than "
            "storage.fetch_deadline_s (2.5 s)"
        )


class TestFreeSpace:
    def test_a_reserve_larger_than_the_free_space_is_a_507(self, tmp_path: Path) -> None:
        free = shutil.disk_usage(tmp_path).free
        counted = budget(tmp_path, reserve_bytes=free + 2**30)
        with pytest.raises(InsufficientStorage) as caught:
            counted.expect(1)
        assert caught.value.status == 507
        assert "bytes free, and fetches must leave" in caught.value.message
        assert "(setting storage.free_space_reserve_bytes)" in caught.value.message

    def test_a_declared_size_counts_against_the_reserve(self, tmp_path: Path) -> None:
        free = shutil.disk_usage(tmp_path).free
        counted = budget(tmp_path, max_bytes=2**62, reserve_bytes=free // 2)
        counted.check_free_space()
        with pytest.raises(InsufficientStorage):
            counted.expect(free)

    def test_a_full_disk_while_writing_is_a_507(self, tmp_path: Path) -> None:
        counted = budget(tmp_path)
        # /dev/full answers every write with ENOSPC, as a full disk does
        with (
            pytest.raises(InsufficientStorage) as caught,
            counted.guard(),
            Path("/dev/full").open("wb", buffering=0) as full,
        ):
            full.write(b"model")
        assert "storage.free_space_reserve_bytes" in caught.value.message

    def test_other_errors_pass_through(self, tmp_path: Path) -> None:
        with pytest.raises(FileNotFoundError), budget(tmp_path).guard():
            (tmp_path / "missing").read_bytes()

    def test_disk_full_is_found_behind_a_wrapping_error(self) -> None:
        outer = RuntimeError("download failed")
        outer.__cause__ = OSError(errno.EDQUOT, "Disk quota exceeded")
        assert disk_full(outer)
        assert not disk_full(OSError(errno.EACCES, "Permission denied"))
