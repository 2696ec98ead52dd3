"""Host names in the HTTP connector's allow-lists reach public addresses only.

An allowed name that resolves (or rebinds) to loopback, a private network or a cloud
metadata address must not be connected to, unless the operator lists that network.
"""

from __future__ import annotations

import ipaddress
import socket
import uuid

import aiohttp
import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from core.errors import PermanentError
from core.settings import load_settings
from schemas import ErrorCode
from workers.connectors import ConnectorCall
from workers.connectors._addresses import AddressNotAllowed, PublicAddressResolver, address_allowed
from workers.connectors.http import HttpConnector
from workers.emulators import RunningEmulator

LOOPBACK = ipaddress.ip_network("127.0.0.0/8")


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1",
        "0.0.0.0", "255.255.255.255", "224.0.0.1", "::1", "::", "fe80::1", "fe80::1%eth0",
        "fd00::1", "ff02::1", "::ffff:127.0.0.1", "::ffff:169.254.169.254",
        "2002:7f00:1::1",  # 6to4 carrying 127.0.0.1
        "64:ff9b::a9fe:a9fe",  # NAT64 to 169.254.169.254
        "2001:0:4136:e378:8000:63bf:f5ff:fffe",  # Teredo to client 10.0.0.1
        "64:ff9b:1::a9fe:a9fe",  # NAT64's local-use prefix (RFC 8215) to the metadata address
        "::7f00:1", "::ffff:0:7f00:1", "fec0::1",  # IPv4-compatible, -translated; site-local
        "not-an-address",
    ],
)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert not address_allowed(address)


@pytest.mark.parametrize("address", ["8.8.8.8", "93.184.216.34", "2606:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert address_allowed(address)


def test_a_listed_network_is_allowed_and_nothing_beside_it() -> None:
    assert address_allowed("127.0.0.1", [LOOPBACK])
    assert address_allowed("::ffff:127.0.0.2", [LOOPBACK])
    assert not address_allowed("::1", [LOOPBACK])
    assert not address_allowed("10.0.0.1", [LOOPBACK])


class _Answers(AbstractResolver):
    def __init__(self, *addresses: str) -> None:
        self.addresses = addresses
        self.closed = False

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            {"hostname": host, "host": a, "port": port, "family": family, "proto": 0, "flags": 0}
            for a in self.addresses
        ]

    async def close(self) -> None:
        self.closed = True


async def test_the_resolver_keeps_only_allowed_addresses() -> None:
    inner = _Answers("10.0.0.7", "93.184.216.34", "169.254.169.254")
    resolver = PublicAddressResolver(inner=inner)
    assert [r["host"] for r in await resolver.resolve("hooks.example", 443)] == ["93.184.216.34"]
    with pytest.raises(AddressNotAllowed):
        await PublicAddressResolver(inner=_Answers("127.0.0.1", "::1")).resolve("hooks.example", 443)
    await resolver.close()
    assert inner.closed


def _call(emulator: RunningEmulator, session: aiohttp.ClientSession) -> ConnectorCall:
    return ConnectorCall(
        tenant_id="acme", operation="request",
        arguments={"url": f"http://localhost:{emulator.port}/hooks/x", "json": {"a": 1}},
        credentials={}, base_url="", idempotency_key=uuid.uuid4().hex, session=session,
        timeout=5.0, allowed_hosts=(f"localhost:{emulator.port}",),
    )


async def test_an_allowed_name_resolving_to_loopback_is_refused_without_a_request(
    emulator: RunningEmulator,
) -> None:
    connector = aiohttp.TCPConnector(resolver=PublicAddressResolver())
    async with aiohttp.ClientSession(connector=connector) as session:
        with pytest.raises(PermanentError) as caught:
            await HttpConnector().execute(_call(emulator, session))
    assert caught.value.code is ErrorCode.HOST_NOT_ALLOWED
    assert "127.0.0.1" not in str(caught.value)
    assert not emulator.state.calls


async def test_a_network_the_operator_lists_is_reached(emulator: RunningEmulator) -> None:
    connector = aiohttp.TCPConnector(resolver=PublicAddressResolver([LOOPBACK]))
    async with aiohttp.ClientSession(connector=connector) as session:
        output = await HttpConnector().execute(_call(emulator, session))
    assert output["status"] == 200
    assert [c["path"] for c in emulator.state.calls] == ["/hooks/x"]


def test_private_networks_are_read_from_the_environment() -> None:
    settings = load_settings({"SWITCHYARD_HTTP_PRIVATE_NETWORKS": "10.0.0.0/8, fd00::/8"})
    assert [str(n) for n in settings.http_private_networks] == ["10.0.0.0/8", "fd00::/8"]
    assert load_settings({}).http_private_networks == ()
    with pytest.raises(ValueError, match="http_private_networks"):
        load_settings({"SWITCHYARD_HTTP_PRIVATE_NETWORKS": "10.0.0.1/8"})
