"""Which remote hosts a fetch may reach: public addresses only, unless the operator allows more.

A deploy request names a URL, and the server fetches it: without a check, anyone who may
deploy could make the server read its own admin ports, a cloud metadata service or any
host of the internal network, and tell open ports from closed ones by the error. So a
host whose name resolves to any non-global address (private, loopback, link-local,
shared, multicast, reserved, unspecified; IPv4-mapped IPv6 addresses count as their
IPv4 address) is refused before a connection is made, unless
`storage.allow_private_hosts` is set. Every address the name resolves to is checked,
on every redirect; the HTTP fetcher also checks the address it actually connected to.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from forestflow.errors import CreateServableRequestInvalidError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Sequence[IPAddress]]


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to (a literal address resolves to itself)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]


def is_non_public(address: IPAddress) -> bool:
    """Whether `address` is anything but a public unicast address."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return not address.is_global or address.is_multicast


@dataclass(frozen=True, slots=True)
class HostCheck:
    """Refuses hosts with non-public addresses unless `allow_private`.

    `resolver` and `forbidden` are seams: tests treat one loopback address as public to
    follow a redirect from an "allowed" real server to a refused one.
    """

    allow_private: bool = False
    resolver: Resolver = field(default=resolve)
    forbidden: Callable[[IPAddress], bool] = field(default=is_non_public)

    def check(
        self, url: str, host: str, port: int, *, must_resolve: bool = True
    ) -> list[IPAddress]:
        """Refuse `host` (of `url`, named in the message) when it resolves to a
        forbidden address; a name that does not resolve is refused when `must_resolve`.

        Returns the addresses checked (none when private hosts are allowed).
        """
        if self.allow_private:
            return []
        try:
            addresses = list(self.resolver(host, port))
        except (OSError, UnicodeError, ValueError):
            addresses = []
        if not addresses and must_resolve:
            raise CreateServableRequestInvalidError(
                f"could not fetch {url}: the host name does not resolve", field="path"
            )
        if any(self.forbidden(address) for address in addresses):
            raise self.refusal(url)
        return addresses

    def check_peer(self, url: str, address: str) -> None:
        """Refuse the connection `url` was fetched over when its peer is forbidden."""
        if self.allow_private:
            return
        try:
            peer = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return  # not an IP connection (a Unix socket): nothing to check
        if self.forbidden(peer):
            raise self.refusal(url)

    @staticmethod
    def refusal(url: str) -> CreateServableRequestInvalidError:
        """The 422 for a host that resolves to a non-public address."""
        return CreateServableRequestInvalidError(
            f"could not fetch {url}: the host resolves to a private or loopback address "
            "(setting storage.allow_private_hosts)",
            field="path",
        )
