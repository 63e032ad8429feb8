"""Safe extraction of zip and tar archives made by the real `zipfile` and `tarfile`."""

from __future__ import annotations

import io
import os
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from forestflow.artifacts.archives import (
    ArchiveFormat,
    ArchiveLimits,
    archive_format,
    extract_archive,
    install_download,
)
from forestflow.artifacts.base import StorageOptions
from forestflow.artifacts.budget import FetchBudget
from forestflow.artifacts.trees import MAX_ENTRIES
from forestflow.errors import ArtifactTooLarge, CreateServableRequestInvalidError
from tests.integration.artifacts.conftest import link_member, make_tar, make_zip

SOURCE = "http://example.test/model.archive"
FILES = {"model.onnx": b"\x08\x01onnx", "sub/dir/notes.txt": b"hello", "bin/run.sh": b"#!/bin/sh\n"}


def tree(directory: Path) -> dict[str, bytes]:
    """Every file under `directory` (relative path → bytes), symlinks as `-> target`."""
    found: dict[str, bytes] = {}
    for path in sorted(directory.rglob("*")):
        name = path.relative_to(directory).as_posix()
        if path.is_symlink():
            found[name] = f"-> {os.readlink(path)}".encode()
        elif path.is_file():
            found[name] = path.read_bytes()
    return found


def budget_in(directory: Path, max_bytes: int = 4 * 1024**3) -> FetchBudget:
    """A fetch's budget that allows `max_bytes`, measuring free space where `directory` is."""
    return FetchBudget.start(StorageOptions(max_artifact_bytes=max_bytes), directory, SOURCE)


def refused(
    archive: Path, kind: ArchiveFormat, target: Path, max_entries: int = MAX_ENTRIES
) -> str:
    """Extract `archive`, expect a 422 naming `path`, and return its message."""
    limits = ArchiveLimits(max_entries=max_entries)
    with pytest.raises(CreateServableRequestInvalidError) as caught:
        extract_archive(
            archive, target, kind, source=SOURCE, budget=budget_in(archive.parent), limits=limits
        )
    assert caught.value.field == "path"
    assert SOURCE in caught.value.message
    return caught.value.message


def too_large(archive: Path, kind: ArchiveFormat, target: Path, max_bytes: int) -> None:
    """Extract `archive` with a limit of `max_bytes`: a 413 naming the setting."""
    budget = budget_in(archive.parent, max_bytes)
    with pytest.raises(ArtifactTooLarge) as caught:
        extract_archive(archive, target, kind, source=SOURCE, budget=budget)
    assert caught.value.status == 413
    assert caught.value.field == "path"
    assert (
        f"limit of {max_bytes} bytes (setting storage.max_artifact_bytes)" in caught.value.message
    )


def zip_with_mode(path: Path, name: str, data: bytes, mode: int) -> Path:
    """A zip with one entry whose Unix mode (file type included) is `mode`."""
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = mode << 16
    with zipfile.ZipFile(path, "w") as bundle:
        bundle.writestr("model.onnx", b"model")
        bundle.writestr(info, data)
    return path


class TestRoundTrips:
    def test_zip(self, tmp_path: Path) -> None:
        archive = make_zip(tmp_path / "a.zip", {**FILES, "empty/": b""})
        extract_archive(
            archive, tmp_path / "out", ArchiveFormat.ZIP, source=SOURCE, budget=budget_in(tmp_path)
        )
        assert tree(tmp_path / "out") == FILES
        assert (tmp_path / "out" / "empty").is_dir()

    @pytest.mark.parametrize("gz", [True, False])
    def test_tar(self, tmp_path: Path, gz: bool) -> None:
        archive = make_tar(tmp_path / "a.tar", list(FILES.items()), gz=gz)
        kind = ArchiveFormat.TAR_GZ if gz else ArchiveFormat.TAR
        extract_archive(archive, tmp_path / "out", kind, source=SOURCE, budget=budget_in(tmp_path))
        assert tree(tmp_path / "out") == FILES

    def test_tar_keeps_inner_links_and_copies_hard_links(self, tmp_path: Path) -> None:
        members = [
            ("data/model.onnx", b"model"),
            link_member("current", "data"),
            link_member("data/alias.onnx", "model.onnx"),
            link_member("copy.onnx", "data/model.onnx", hard=True),
        ]
        extract_archive(
            make_tar(tmp_path / "a.tgz", members),
            tmp_path / "out",
            ArchiveFormat.TAR_GZ,
            source=SOURCE,
            budget=budget_in(tmp_path),
        )
        out = tmp_path / "out"
        assert (out / "current" / "model.onnx").read_bytes() == b"model"
        assert (out / "data" / "alias.onnx").read_bytes() == b"model"
        assert not (out / "copy.onnx").is_symlink()
        assert (out / "copy.onnx").read_bytes() == b"model"

    def test_executable_bit_is_kept_and_setuid_dropped(self, tmp_path: Path) -> None:
        info = tarfile.TarInfo("run.sh")
        info.size, info.mode = 3, 0o4777
        archive = tmp_path / "a.tar"
        with tarfile.open(archive, "w") as tar:
            tar.addfile(info, io.BytesIO(b"abc"))
        extract_archive(
            archive, tmp_path / "out", ArchiveFormat.TAR, source=SOURCE, budget=budget_in(tmp_path)
        )
        mode = stat.S_IMODE((tmp_path / "out" / "run.sh").stat().st_mode)
        assert mode == 0o755

    def test_a_tar_gz_declared_as_tar_is_still_read(self, tmp_path: Path) -> None:
        archive = make_tar(tmp_path / "a.tar", list(FILES.items()), gz=True)
        extract_archive(
            archive, tmp_path / "out", ArchiveFormat.TAR, source=SOURCE, budget=budget_in(tmp_path)
        )
        assert tree(tmp_path / "out") == FILES


class TestPathTraversal:
    @pytest.mark.parametrize("name", ["../evil.txt", "sub/../../evil.txt", "..\\evil.txt"])
    def test_zip_dot_dot(self, tmp_path: Path, name: str) -> None:
        archive = make_zip(tmp_path / "a.zip", {"model.onnx": b"m", name: b"evil"})
        message = refused(archive, ArchiveFormat.ZIP, tmp_path / "out" / "inner")
        assert f"archive entry {name!r} would be written outside" in message
        assert not list(tmp_path.rglob("evil.txt"))

    def test_tar_dot_dot(self, tmp_path: Path) -> None:
        archive = make_tar(tmp_path / "a.tgz", [("model.onnx", b"m"), ("../evil.txt", b"evil")])
        message = refused(archive, ArchiveFormat.TAR_GZ, tmp_path / "out" / "inner")
        assert "'../evil.txt' would be written outside the destination" in message
        assert not list(tmp_path.rglob("evil.txt"))

    @pytest.mark.parametrize("name", ["/tmp/evil.txt", "C:/evil.txt", "\\evil.txt"])
    def test_zip_absolute(self, tmp_path: Path, name: str) -> None:
        archive = make_zip(tmp_path / "a.zip", {name: b"evil"})
        assert "has an absolute path" in refused(archive, ArchiveFormat.ZIP, tmp_path / "out")

    def test_tar_absolute(self, tmp_path: Path) -> None:
        archive = make_tar(tmp_path / "a.tar", [(str(tmp_path / "evil.txt"), b"evil")], gz=False)
        assert "has an absolute path" in refused(archive, ArchiveFormat.TAR, tmp_path / "out")
        assert not (tmp_path / "evil.txt").exists()


class TestLinks:
    @pytest.mark.parametrize(
        ("target", "reason"),
        [("/etc/passwd", "an absolute path"), ("../../secret", "outside the archive")],
    )
    def test_tar_symlink_escaping_is_refused(
        self, tmp_path: Path, target: str, reason: str
    ) -> None:
        archive = make_tar(
            tmp_path / "a.tgz", [("m.onnx", b"m"), link_member("model.onnx", target)]
        )
        message = refused(archive, ArchiveFormat.TAR_GZ, tmp_path / "out")
        assert f"is a symlink to {target!r}, {reason}" in message

    def test_link_resolving_outside_through_another_link_is_refused(self, tmp_path: Path) -> None:
        (tmp_path / "secret").write_text("secret")
        # "up" points to the root; "x" → "up/../secret" is lexically "secret", really ../secret
        members = [link_member("x", "up/../secret"), link_member("up", ".")]
        archive = make_tar(tmp_path / "a.tgz", members)
        message = refused(archive, ArchiveFormat.TAR_GZ, tmp_path / "out")
        assert "'x' is a symlink to 'up/../secret', outside the archive" in message

    def test_entry_written_through_a_symlinked_directory_is_refused(self, tmp_path: Path) -> None:
        members = [link_member("lib", "sub"), link_member("lib/x", "../f"), ("sub/f", b"f")]
        archive = make_tar(tmp_path / "a.tgz", members)
        message = refused(archive, ArchiveFormat.TAR_GZ, tmp_path / "out")
        assert "'lib/x' lies inside a symlinked directory" in message

    def test_hard_link_outside_is_refused(self, tmp_path: Path) -> None:
        (tmp_path / "secret").write_text("secret")
        archive = make_tar(tmp_path / "a.tgz", [link_member("x", "../secret", hard=True)])
        message = refused(archive, ArchiveFormat.TAR_GZ, tmp_path / "out")
        assert "'x' is a hard link to '../secret', outside the archive" in message
        assert not (tmp_path / "out" / "x").exists()

    def test_hard_link_to_a_missing_member_is_refused(self, tmp_path: Path) -> None:
        archive = make_tar(tmp_path / "a.tgz", [link_member("x", "nothing", hard=True)])
        message = refused(archive, ArchiveFormat.TAR_GZ, tmp_path / "out")
        assert "is a hard link to 'nothing', not an earlier file of it" in message

    def test_zip_symlink_escaping_is_refused(self, tmp_path: Path) -> None:
        archive = zip_with_mode(
            tmp_path / "a.zip", "link", b"../../etc/passwd", stat.S_IFLNK | 0o777
        )
        message = refused(archive, ArchiveFormat.ZIP, tmp_path / "out")
        assert "'link' is a symlink to '../../etc/passwd', outside the archive" in message

    def test_zip_symlink_inside_is_created(self, tmp_path: Path) -> None:
        archive = zip_with_mode(
            tmp_path / "a.zip", "alias.onnx", b"model.onnx", stat.S_IFLNK | 0o777
        )
        extract_archive(
            archive, tmp_path / "out", ArchiveFormat.ZIP, source=SOURCE, budget=budget_in(tmp_path)
        )
        assert tree(tmp_path / "out") == {"alias.onnx": b"-> model.onnx", "model.onnx": b"model"}


class TestSpecialFiles:
    def test_tar_device_and_fifo_are_refused(self, tmp_path: Path) -> None:
        for kind in (tarfile.CHRTYPE, tarfile.FIFOTYPE):
            device = tarfile.TarInfo("dev")
            device.type = kind
            archive = make_tar(tmp_path / f"a{kind!r}.tgz", [device])
            message = refused(archive, ArchiveFormat.TAR_GZ, tmp_path / "out")
            assert "'dev' is a device file, FIFO or socket" in message

    def test_zip_device_is_refused(self, tmp_path: Path) -> None:
        archive = zip_with_mode(tmp_path / "a.zip", "dev", b"", stat.S_IFCHR | 0o600)
        assert "is a device file" in refused(archive, ArchiveFormat.ZIP, tmp_path / "out")


class TestCorruptArchives:
    def test_not_a_zip(self, tmp_path: Path) -> None:
        archive = tmp_path / "a.zip"
        archive.write_bytes(b"<html>not found</html>")
        message = refused(archive, ArchiveFormat.ZIP, tmp_path / "out")
        assert message == f"{SOURCE} is not a valid zip archive: File is not a zip file"

    def test_truncated_tar_gz(self, tmp_path: Path) -> None:
        whole = make_tar(tmp_path / "a.tgz", [("model.onnx", os.urandom(200_000))]).read_bytes()
        (tmp_path / "cut.tgz").write_bytes(whole[: len(whole) // 2])
        message = refused(tmp_path / "cut.tgz", ArchiveFormat.TAR_GZ, tmp_path / "out")
        assert f"{SOURCE} is not a valid tar.gz archive: " in message

    def test_gzip_that_is_no_tar(self, tmp_path: Path) -> None:
        import gzip

        (tmp_path / "a.tgz").write_bytes(gzip.compress(b"just some text, no tar header" * 40))
        message = refused(tmp_path / "a.tgz", ArchiveFormat.TAR_GZ, tmp_path / "out")
        assert f"{SOURCE} is not a valid tar.gz archive: " in message

    def test_forged_huge_tar_header_is_refused(self, tmp_path: Path) -> None:
        info = tarfile.TarInfo("x")
        info.type = tarfile.XHDTYPE  # a pax header claiming 1 GiB
        info.size = 1 << 30
        raw = info.tobuf(format=tarfile.USTAR_FORMAT)
        (tmp_path / "a.tar").write_bytes(raw + b"\0" * 1024)
        message = refused(tmp_path / "a.tar", ArchiveFormat.TAR, tmp_path / "out")
        assert "too large" in message


class TestLimits:
    def test_zip_over_the_size_limit_is_refused_before_writing(self, tmp_path: Path) -> None:
        archive = make_zip(tmp_path / "a.zip", {"a": b"0" * 600, "b": b"0" * 600})
        too_large(archive, ArchiveFormat.ZIP, tmp_path / "out", max_bytes=1000)
        assert tree(tmp_path / "out") == {}

    def test_tar_over_the_size_limit_is_refused(self, tmp_path: Path) -> None:
        archive = make_tar(tmp_path / "a.tgz", [("a", b"0" * 600), ("b", b"0" * 600)])
        too_large(archive, ArchiveFormat.TAR_GZ, tmp_path / "out", max_bytes=1000)
        assert tree(tmp_path / "out") == {"a": b"0" * 600}

    def test_hard_link_copies_count_toward_the_limit(self, tmp_path: Path) -> None:
        members = [("a", b"0" * 600), link_member("b", "a", hard=True)]
        archive = make_tar(tmp_path / "a.tgz", members)
        too_large(archive, ArchiveFormat.TAR_GZ, tmp_path / "out", max_bytes=1000)

    @pytest.mark.parametrize("kind", [ArchiveFormat.ZIP, ArchiveFormat.TAR_GZ])
    def test_too_many_entries(self, tmp_path: Path, kind: ArchiveFormat) -> None:
        entries = {f"f{i}": b"" for i in range(4)}
        archive = (
            make_zip(tmp_path / "a.zip", entries)
            if kind is ArchiveFormat.ZIP
            else make_tar(tmp_path / "a.tgz", list(entries.items()))
        )
        message = refused(archive, kind, tmp_path / "out", max_entries=3)
        assert "has more than 3 entries" in message

    def test_at_the_limits_is_fine(self, tmp_path: Path) -> None:
        archive = make_zip(tmp_path / "a.zip", {"a": b"0" * 500, "b": b"0" * 500})
        limits = ArchiveLimits(max_entries=2)
        budget = budget_in(tmp_path, max_bytes=1000)
        extract_archive(
            archive,
            tmp_path / "out",
            ArchiveFormat.ZIP,
            source=SOURCE,
            budget=budget,
            limits=limits,
        )
        assert sorted(tree(tmp_path / "out")) == ["a", "b"]


class TestArchiveFormat:
    @pytest.mark.parametrize(
        ("name", "content_type", "expected"),
        [
            ("model.zip", None, ArchiveFormat.ZIP),
            ("MODEL.TAR.GZ", None, ArchiveFormat.TAR_GZ),
            ("model.tgz", "text/html", ArchiveFormat.TAR_GZ),
            ("model.tar", None, ArchiveFormat.TAR),
            ("model.onnx", "application/zip", None),
            ("download", "application/zip; charset=binary", ArchiveFormat.ZIP),
            ("download", "application/gzip", ArchiveFormat.TAR_GZ),
            ("download", "application/x-tar", ArchiveFormat.TAR),
            ("download", "application/octet-stream", None),
            ("download", None, None),
        ],
    )
    def test_name_then_content_type(
        self, name: str, content_type: str | None, expected: ArchiveFormat | None
    ) -> None:
        assert archive_format(name, content_type) == expected


class TestInstallDownload:
    def test_plain_file_is_kept_under_its_name(self, tmp_path: Path) -> None:
        download = tmp_path / ".part"
        download.write_bytes(b"model")
        install_download(
            download,
            "model.onnx",
            tmp_path,
            artifact_path=None,
            source=SOURCE,
            budget=budget_in(tmp_path),
        )
        assert tree(tmp_path) == {"model.onnx": b"model"}

    def test_artifact_path_selects_a_sub_directory(self, tmp_path: Path) -> None:
        destination = tmp_path / "dest"
        destination.mkdir()
        download = make_zip(
            destination / ".part", {"top.txt": b"t", **{f"m/{k}": v for k, v in FILES.items()}}
        )
        install_download(
            download,
            "a.zip",
            destination,
            artifact_path="m/",
            source=SOURCE,
            budget=budget_in(tmp_path),
        )
        assert tree(destination) == FILES

    def test_artifact_path_with_links_copies_what_they_point_to(self, tmp_path: Path) -> None:
        destination = tmp_path / "dest"
        destination.mkdir()
        members = [
            ("shared/model.onnx", b"model"),
            link_member("m/model.onnx", "../shared/model.onnx"),
        ]
        download = make_tar(destination / ".part", members)
        install_download(
            download,
            "a.tgz",
            destination,
            artifact_path="m",
            source=SOURCE,
            budget=budget_in(tmp_path),
        )
        assert tree(destination) == {"model.onnx": b"model"}
        assert not (destination / "model.onnx").is_symlink()

    def test_artifact_path_with_a_link_loop_is_refused(self, tmp_path: Path) -> None:
        destination = tmp_path / "dest"
        destination.mkdir()
        members = [("m/model.onnx", b"model"), link_member("m/loop", ".")]
        download = make_tar(destination / ".part", members)
        with pytest.raises(CreateServableRequestInvalidError, match="'m/loop' is a symlink loop"):
            install_download(
                download,
                "a.tgz",
                destination,
                artifact_path="m",
                source=SOURCE,
                budget=budget_in(tmp_path),
            )

    def test_artifact_path_naming_a_file(self, tmp_path: Path) -> None:
        download = make_zip(tmp_path / ".part", FILES)
        install_download(
            download,
            "a.zip",
            tmp_path,
            artifact_path="sub/dir/notes.txt",
            source=SOURCE,
            budget=budget_in(tmp_path),
        )
        assert tree(tmp_path) == {"notes.txt": b"hello"}

    @pytest.mark.parametrize(
        ("artifact_path", "message"),
        [
            ("missing", "artifact_path 'missing' is not in the archive"),
            ("../m", "must be a relative path inside the archive"),
            ("/etc", "must be a relative path inside the archive"),
        ],
    )
    def test_bad_artifact_path(self, tmp_path: Path, artifact_path: str, message: str) -> None:
        destination = tmp_path / "dest"
        destination.mkdir()
        download = make_zip(destination / ".part", FILES)
        with pytest.raises(CreateServableRequestInvalidError, match=message) as caught:
            install_download(
                download,
                "a.zip",
                destination,
                artifact_path=artifact_path,
                source=SOURCE,
                budget=budget_in(tmp_path),
            )
        assert caught.value.field == "artifactPath"
        assert tree(destination) == {}

    def test_artifact_path_on_a_plain_file(self, tmp_path: Path) -> None:
        download = tmp_path / ".part"
        download.write_bytes(b"model")
        with pytest.raises(CreateServableRequestInvalidError, match="applies to archives only"):
            install_download(
                download,
                "model.onnx",
                tmp_path,
                artifact_path="m",
                source=SOURCE,
                budget=budget_in(tmp_path),
            )

    @pytest.mark.parametrize("name", ["", "..", "a\\b"])
    def test_unusable_file_name(self, tmp_path: Path, name: str) -> None:
        download = tmp_path / ".part"
        download.write_bytes(b"model")
        with pytest.raises(CreateServableRequestInvalidError, match="is not a file name"):
            install_download(
                download,
                name,
                tmp_path,
                artifact_path=None,
                source=SOURCE,
                budget=budget_in(tmp_path),
            )
