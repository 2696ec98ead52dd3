"""Where a tenant-chosen host name may lead: public addresses, and networks the operator names.

The generic HTTP connector calls URLs that tenants choose, on hosts the workspace's
allow-list names. A name is not an address: an allowed name that resolves (or rebinds,
between two lookups) to a loopback, private or link-local address would reach the
cluster's own services or a cloud metadata endpoint. :class:`PublicAddressResolver`
sits under the pool's HTTP client, so the addresses it returns are the only ones a
connection is made to: no window between a check and the connect.

An address is public when :mod:`ipaddress` calls it global, it is not multicast, it is in
no block that carries an IPv4 address some other way (NAT64's local-use prefix,
IPv4-compatible, IPv4-translated) or is deprecated (site-local), and an IPv4 address
carried inside an IPv6 one (mapped, 6to4, Teredo, NAT64's well-known prefix) is public too.
IP literals in a URL never reach a resolver: they are allowed only when the allow-list
names that exact address, which is the operator's choice.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

__all__ = ["AddressNotAllowed", "PublicAddressResolver", "address_allowed"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# NAT64's well-known prefix (RFC 6052): the last 32 bits are the IPv4 address reached.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
# Never public, whatever the Python patch level's is_global says: NAT64's local-use
# prefix (RFC 8215, the IPv4 address anywhere in it), IPv4-compatible and IPv4-translated
# addresses (RFC 4291, RFC 2765) and the deprecated site-local block (RFC 3879).
_NEVER_PUBLIC = tuple(
    ipaddress.IPv6Network(block) for block in ("64:ff9b:1::/48", "::/96", "::ffff:0:0:0/96", "fec0::/10")
)


class AddressNotAllowed(OSError):
    """Every address a host name resolved to is one the pool may not connect to."""

    def __init__(self, host: str) -> None:
        super().__init__(f"{host!r} resolves to no address the pool may reach")
        self.host = host


def _embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    found = [address.ipv4_mapped, address.sixtofour]
    if address.teredo is not None:
        found.extend(address.teredo)
    if address in _NAT64:
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return [item for item in found if item is not None]


def _public(address: IPAddress) -> bool:
    if not address.is_global or address.is_multicast:
        return False
    if isinstance(address, ipaddress.IPv6Address):
        if any(address in block for block in _NEVER_PUBLIC):
            return False
        return all(_public(inner) for inner in _embedded_ipv4(address))
    return True


def address_allowed(text: str, networks: Iterable[IPNetwork] = ()) -> bool:
    """Whether the pool may connect to ``text``: public, or inside one of ``networks``."""
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])  # drop an IPv6 zone
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if any(address.version == net.version and address in net for net in networks):
        return True
    return _public(address)


class PublicAddressResolver(AbstractResolver):
    """aiohttp resolver that keeps only the addresses :func:`address_allowed` permits.

    Raises :class:`AddressNotAllowed` (an ``OSError``, which aiohttp wraps in
    ``ClientConnectorDNSError``) when none is left.
    """

    def __init__(self, networks: Iterable[IPNetwork] = (), inner: AbstractResolver | None = None) -> None:
        self._networks = tuple(networks)
        self._inner = inner if inner is not None else DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        kept = [entry for entry in found if address_allowed(entry["host"], self._networks)]
        if not kept:
            raise AddressNotAllowed(host)
        return kept

    async def close(self) -> None:
        await self._inner.close()
