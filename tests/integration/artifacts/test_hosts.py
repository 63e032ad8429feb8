"""`HostCheck`: which addresses a fetch may reach."""

from __future__ import annotations

import ipaddress

import pytest

from forestflow.artifacts.hosts import HostCheck, IPAddress, is_non_public, resolve
from forestflow.errors import CreateServableRequestInvalidError

URL = "http://models.example.test/m.onnx"


def resolving_to(*addresses: str) -> HostCheck:
    def resolver(host: str, port: int) -> list[IPAddress]:
        return [ipaddress.ip_address(address) for address in addresses]

    return HostCheck(resolver=resolver)


class TestNonPublic:
    @pytest.mark.parametrize(
        "address",
        [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "169.254.169.254",  # cloud metadata services
            "100.64.0.1",  # carrier-grade NAT
            "0.0.0.0",
            "224.0.0.1",
            "240.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fc00::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ],
    )
    def test_refused(self, address: str) -> None:
        assert is_non_public(ipaddress.ip_address(address))

    @pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700::1111", "::ffff:8.8.8.8"])
    def test_allowed(self, address: str) -> None:
        assert not is_non_public(ipaddress.ip_address(address))


class TestHostCheck:
    def test_public_addresses_pass_and_are_returned(self) -> None:
        checked = resolving_to("8.8.8.8", "2606:4700::1111").check(URL, "h", 80)
        assert [str(address) for address in checked] == ["8.8.8.8", "2606:4700::1111"]

    def test_one_private_address_among_public_ones_is_refused(self) -> None:
        with pytest.raises(CreateServableRequestInvalidError) as caught:
            resolving_to("8.8.8.8", "192.168.0.10").check(URL, "h", 80)
        assert caught.value.message == (
            f"could not fetch {URL}: the host resolves to a private or loopback address "
            "(setting storage.allow_private_hosts)"
        )
        assert caught.value.field == "path"

    def test_allowing_private_hosts_checks_nothing(self) -> None:
        assert (
            HostCheck(allow_private=True, resolver=resolving_to("10.0.0.1").resolver).check(
                URL, "h", 80
            )
            == []
        )

    def test_an_unresolvable_name_may_be_left_to_the_client(self) -> None:
        assert resolving_to().check(URL, "h", 22, must_resolve=False) == []
        with pytest.raises(CreateServableRequestInvalidError, match="does not resolve"):
            resolving_to().check(URL, "h", 22)

    def test_the_peer_is_checked(self) -> None:
        check = HostCheck()
        check.check_peer(URL, "8.8.8.8")
        with pytest.raises(CreateServableRequestInvalidError, match="private or loopback"):
            check.check_peer(URL, "fe80::1%eth0")

    def test_literal_addresses_resolve_to_themselves(self) -> None:
        assert resolve("127.0.0.1", 80) == [ipaddress.ip_address("127.0.0.1")]
        with pytest.raises(CreateServableRequestInvalidError):
            HostCheck().check(URL, "127.0.0.1", 80)
