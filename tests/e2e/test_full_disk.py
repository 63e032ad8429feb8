"""A full data-directory disk: deploys answer 507, nothing acknowledged is lost, and
deploys work again once space is freed (on a small tmpfs, which needs root)."""

from __future__ import annotations

import errno
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import ServerProcess
from tests.payloads import contract_settings, score_body, serve_body

pytestmark = pytest.mark.e2e

DISK_SIZE = "24m"
# The default reserve (256 MiB) is larger than the whole test disk.
ENV = {"FORESTFLOW_STORAGE__FREE_SPACE_RESERVE_BYTES": str(1024**2)}
CONTRACT = "/samples/energy_output/0"


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A fresh 24 MiB tmpfs, unmounted after the servers on it are stopped."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_SIZE}", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.fail(f"this test mounts a tmpfs and needs root: {mounted.stderr.strip()}")
    yield mount_point
    unmounted = subprocess.run(["umount", str(mount_point)], capture_output=True, check=False)
    if unmounted.returncode != 0:  # still busy: detach it now, the kernel frees it later
        subprocess.run(["umount", "-l", str(mount_point)], check=True)


def fill(path: Path) -> None:
    """Write zeros to `path` until the disk under it has no space left."""
    with path.open("wb", buffering=0) as filler:
        # Ever smaller writes, so that the last partial chunk is filled too.
        for size in (65536, 4096, 512, 1):
            chunk = b"\0" * size
            try:
                while True:
                    filler.write(chunk)
            except OSError as error:
                if error.errno != errno.ENOSPC:
                    raise


def releases(client: httpx.Client) -> set[str]:
    """The releases the contract lists."""
    listed = client.get(f"{CONTRACT}/list")
    assert listed.status_code == 200, listed.text
    return {entry["FQRV"]["releaseVersion"] for entry in listed.json()}


def contracts(client: httpx.Client) -> set[str]:
    """Every contract, as `/org/project/number`."""
    listed = client.get("/contracts/list").json()["Contracts"]["contracts"]
    return {"/{organization}/{project}/{contractNumber}".format(**c) for c in listed}


def assert_serves(client: httpx.Client, acknowledged: set[str]) -> None:
    """Every acknowledged release is listed and scores."""
    assert acknowledged <= releases(client)
    for release in sorted(acknowledged):
        scored = client.post(f"{CONTRACT}/{release}/score", json=score_body())
        assert scored.status_code == 200, (release, scored.text)


def assert_507_or_success(response: httpx.Response, success: int) -> bool:
    """The response is `success` (True) or 507 InsufficientStorageError (False)."""
    assert response.status_code in (success, 507), response.text
    if response.status_code == 507:
        assert "InsufficientStorageError" in response.json(), response.text
    return response.status_code == success


class TestFullDisk:
    def test_deploys_answer_507_and_nothing_acknowledged_is_lost(
        self, disk: Path, server_factory: Callable[..., ServerProcess]
    ) -> None:
        data_dir = disk / "data"
        server = server_factory(data_dir, env=ENV)
        client = server.client
        created = client.post(f"/contract{CONTRACT}", json=contract_settings(keep=20))
        assert created.status_code == 201, created.text
        acknowledged_contracts = {CONTRACT}
        acknowledged: set[str] = set()
        for release in ("v1", "v2", "v3"):
            deployed = client.post("/servable", json=serve_body(release))
            assert deployed.status_code == 201, deployed.text
            acknowledged.add(release)

        filler = disk / "filler"
        fill(filler)
        for release in ("v4", "v5"):
            refused = client.post("/servable", json=serve_body(release))
            assert refused.status_code == 507, refused.text
            assert "InsufficientStorageError" in refused.json()
        # A contract command writes only the state store: it may still fit, or answer 507.
        for number in (1, 2):
            command = client.post(f"/contract/acme/churn/{number}", json=contract_settings())
            if assert_507_or_success(command, 201):
                acknowledged_contracts.add(f"/acme/churn/{number}")
        updated = client.put(CONTRACT, json=contract_settings(keep=21))
        assert_507_or_success(updated, 200)

        assert_serves(client, acknowledged)
        assert releases(client).isdisjoint({"v4", "v5"})  # a 507 left nothing behind
        assert acknowledged_contracts <= contracts(client)

        filler.unlink()
        deployed = client.post("/servable", json=serve_body("v6"))
        assert deployed.status_code == 201, deployed.text
        acknowledged.add("v6")
        created = client.post("/contract/acme/churn/3", json=contract_settings())
        assert created.status_code == 201, created.text
        acknowledged_contracts.add("/acme/churn/3")
        assert_serves(client, acknowledged)

        server.terminate()
        assert not [line for line in server.log if "failed unexpectedly" in line]
        restarted = server_factory(data_dir, env=ENV)
        assert_serves(restarted.client, acknowledged)
        assert acknowledged_contracts <= contracts(restarted.client)
