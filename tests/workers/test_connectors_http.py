"""The HTTP/webhook connector: allow-list, reserved headers, idempotency, bounded replies."""

from __future__ import annotations

import ssl
import uuid
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from jsonschema import Draft202012Validator
from yarl import URL

from core.errors import PermanentError, RetryableError
from schemas import ErrorCode
from workers.connectors import ConnectorCall
from workers.connectors._http import request, upstream_session
from workers.connectors.http import MAX_OUTPUT_BYTES, HttpConnector, host_allowed
from workers.emulators import EmulatorState, RunningEmulator, run_emulator


def http_call(
    emulator: RunningEmulator,
    session: aiohttp.ClientSession,
    arguments: dict[str, Any],
    *,
    allowed: tuple[str, ...] | None = None,
    credentials: dict[str, Any] | None = None,
    key: str | None = None,
) -> ConnectorCall:
    return ConnectorCall(
        tenant_id="acme",
        operation="request",
        arguments=arguments,
        credentials=credentials or {},
        base_url="",
        idempotency_key=key or uuid.uuid4().hex,
        session=session,
        timeout=5.0,
        allowed_hosts=allowed if allowed is not None else (f"127.0.0.1:{emulator.port}",),
    )


@pytest.mark.parametrize(
    "allowed",
    [(), ("127.0.0.1",), ("127.0.0.2:{port}",), ("*.0.0.1:{port}",), ("localhost:{port}",)],
)
async def test_a_host_off_the_allow_list_is_refused_without_a_request(
    allowed: tuple[str, ...], emulator: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    entries = tuple(entry.format(port=emulator.port) for entry in allowed)
    call = http_call(emulator, session, {"url": f"{emulator.base_url}/hooks/x"}, allowed=entries)
    with pytest.raises(PermanentError) as caught:
        await HttpConnector().execute(call)
    assert caught.value.code is ErrorCode.HOST_NOT_ALLOWED
    assert not emulator.state.calls
    async with session.get(f"{emulator.base_url}/_emulator/calls") as response:
        assert (await response.json())["calls"] == []


@pytest.mark.parametrize(
    ("url", "entries", "allowed"),
    [
        ("https://api.example.com/x", ["api.example.com"], True),
        ("https://API.Example.com./x", ["api.example.com"], True),
        ("https://api.example.com:8443/x", ["api.example.com"], False),
        ("https://api.example.com:8443/x", ["api.example.com:8443"], True),
        ("http://api.example.com/x", ["api.example.com:443"], False),
        ("https://a.hooks.example/x", ["*.hooks.example"], True),
        ("https://a.b.hooks.example/x", ["*.hooks.example"], True),
        ("https://hooks.example/x", ["*.hooks.example"], False),
        ("https://evilhooks.example/x", ["*.hooks.example"], False),
        ("https://api.example.com.evil.net/x", ["api.example.com"], False),
        ("http://[::1]:8080/x", ["[::1]:8080"], True),
        ("http://[::1]/x", ["::1"], True),
        ("ftp://api.example.com/x", ["api.example.com"], False),
    ],
)
def test_allow_list_entries_match_exact_hosts_ports_and_wildcard_subdomains(
    url: str, entries: list[str], allowed: bool
) -> None:
    assert host_allowed(URL(url), entries) is allowed


@pytest.mark.parametrize(
    "header", ["Authorization", "authorization", "Host", "Idempotency-Key", "X-Api-Key"]
)
async def test_caller_headers_cannot_override_credentials_or_transport_headers(
    header: str, emulator: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    call = http_call(
        emulator,
        session,
        {"url": f"{emulator.base_url}/hooks/x", "headers": {header: "attacker"}},
        credentials={"header_name": "X-Api-Key", "header_value": "secret-value"},
    )
    with pytest.raises(PermanentError) as caught:
        await HttpConnector().execute(call)
    assert caught.value.code is ErrorCode.INVALID_ARGUMENTS
    assert "secret-value" not in str(caught.value) and "attacker" not in str(caught.value)
    assert not emulator.state.calls


async def test_the_same_idempotency_key_has_one_side_effect_and_replays_the_first_reply(
    emulator: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    arguments = {"url": f"{emulator.base_url}/hooks/orders", "method": "PUT", "json": {"n": 1}}
    outputs = [
        await HttpConnector().execute(http_call(emulator, session, arguments, key="order-7"))
        for _ in range(3)
    ]
    await HttpConnector().execute(http_call(emulator, session, arguments, key="order-8"))
    assert outputs[0] == outputs[1] == outputs[2]
    assert outputs[0]["json"]["method"] == "PUT" and outputs[0]["json"]["json"] == {"n": 1}
    async with session.get(f"{emulator.base_url}/_emulator/effects?connector=http") as response:
        effects = await response.json()
    assert effects == {"effects": {"order-7": 1, "order-8": 1}, "total": 2}
    assert [c["summary"].get("replayed", False) for c in emulator.state.calls] == [
        False,
        True,
        True,
        False,
    ]


async def test_without_dedup_the_emulator_counts_every_delivery_as_an_effect(
    session: aiohttp.ClientSession,
) -> None:
    async with run_emulator(EmulatorState(dedup=())) as emulator:
        arguments = {"url": f"{emulator.base_url}/hooks/orders", "json": {}}
        for _ in range(2):
            await HttpConnector().execute(http_call(emulator, session, arguments, key="k"))
        assert emulator.state.effects == {"http": {"k": 2}}


async def test_header_credentials_and_bearer_tokens_are_sent(
    emulator: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    emulator.state.add_token({"connector": "http", "token": "hook-token", "tenant": "acme"})
    call = http_call(
        emulator,
        session,
        {"url": f"{emulator.base_url}/hooks/a"},
        credentials={"bearer_token": "hook-token"},
    )
    assert (await HttpConnector().execute(call))["status"] == 200
    assert emulator.state.calls[-1]["tenant"] == "acme"


async def test_text_replies_are_returned_bounded_and_flagged_truncated(
    emulator: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    small = await HttpConnector().execute(
        http_call(
            emulator,
            session,
            {"url": f"{emulator.base_url}/hooks/a?text=1&size=10", "method": "GET"},
        )
    )
    assert small == {"status": 200, "text": "ok " + "x" * 10, "truncated": False}
    large = await HttpConnector().execute(
        http_call(emulator, session, {"url": f"{emulator.base_url}/hooks/a?size=200000"})
    )
    assert large["status"] == 200 and large["truncated"] is True
    assert len(large["text"].encode()) == MAX_OUTPUT_BYTES
    fits = Draft202012Validator(HttpConnector.operations["request"].output_schema or {"not": {}})
    assert fits.is_valid(small) and fits.is_valid(large)


async def test_a_url_with_userinfo_is_refused(
    emulator: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    url = f"http://user:pw@127.0.0.1:{emulator.port}/hooks/a"
    with pytest.raises(PermanentError) as caught:
        await HttpConnector().execute(http_call(emulator, session, {"url": url}))
    assert caught.value.code is ErrorCode.INVALID_ARGUMENTS
    assert "pw" not in str(caught.value)
    assert not emulator.state.calls


async def test_a_409_for_a_key_still_in_progress_is_retried_not_final(
    emulator: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    # draft-ietf-httpapi-idempotency-key-header: a retry whose first request is still
    # being processed gets 409, the one error to retry unchanged. It failed for good.
    emulator.state.add_fault({"connector": "http", "kind": "409", "count": 1})
    call = http_call(emulator, session, {"url": f"{emulator.base_url}/hooks/x", "json": {}})
    with pytest.raises(RetryableError) as caught:
        await HttpConnector().execute(call)
    assert caught.value.http_status == 409


@pytest.mark.parametrize(
    "headers",
    [{"X-Token": "v\n"}, {"X-Token\n": "v"}, {"X-A": "a\x00b"}, {"X-A": "a\x0bb"}, {"X-A": "a\x7f"}],
    ids=["value", "name", "nul", "vertical-tab", "del"],
)
async def test_a_header_with_a_control_character_is_refused_before_any_request(
    headers: dict[str, str], emulator: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    # The compiled check refused "v\n" but Python's "$" matches before a final newline,
    # so the Python check found no error and the value was sent (aiohttp then raised a
    # bare ValueError: the command failed as a crash of the worker).
    call = http_call(emulator, session, {"url": f"{emulator.base_url}/hooks/x", "headers": headers})
    with pytest.raises(PermanentError) as caught:
        await HttpConnector().execute(call)
    assert caught.value.code is ErrorCode.INVALID_ARGUMENTS
    assert not emulator.state.calls


async def test_a_request_aiohttp_refuses_to_write_is_invalid_arguments_not_a_crash(
    emulator: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    # Any header value aiohttp will not write (the schema covers the known ones) ends the
    # command as refused arguments, not as a crash of the worker; nothing was sent.
    with pytest.raises(PermanentError) as caught:
        await request(
            session, "POST", f"{emulator.base_url}/hooks/x", what="http test",
            request_timeout=5.0, headers={"X-A": "a\x00b"},
        )
    assert caught.value.code is ErrorCode.INVALID_ARGUMENTS and "\x00" not in caught.value.message
    assert not emulator.state.calls


async def test_the_pools_session_carries_no_cookie_from_one_call_to_the_next() -> None:
    # One session serves every tenant of a pool: a cookie one tenant's receiver sets must
    # not ride on another tenant's call (aiohttp keeps cookies of named hosts by default).
    seen: list[str | None] = []

    async def set_cookie(request: web.Request) -> web.Response:
        response = web.Response(text="set")
        response.set_cookie("session", "TENANT_A_SESSION")
        return response

    async def echo(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Cookie"))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/set", set_cookie)
    app.router.add_post("/hook", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        for session in (aiohttp.ClientSession(), upstream_session(4)):
            async with session:
                for path in ("/set", "/hook"):
                    await request(
                        session, "POST", f"http://localhost:{port}{path}", what="t",
                        request_timeout=5.0, headers={},
                    )
    finally:
        await runner.cleanup()
    assert seen == ["session=TENANT_A_SESSION", None]  # the plain session's, then the pool's


async def test_a_refused_certificate_stays_a_retryable_unavailable_upstream() -> None:
    # aiohttp's certificate error is a ValueError too (ssl.CertificateError): it must not
    # read as arguments aiohttp refused to write (a permanent invalid_arguments).
    key = SimpleNamespace(host="hooks.example", port=443, is_ssl=True, ssl=True)
    refused = aiohttp.ClientConnectorCertificateError(key, ssl.SSLCertVerificationError("self-signed certificate"))

    class Refusing:
        def request(self, *args: Any, **kwargs: Any) -> Any:
            raise refused

    with pytest.raises(RetryableError) as caught:
        await request(Refusing(), "POST", "https://hooks.example/x", what="http test",  # type: ignore[arg-type]
                      request_timeout=5.0, headers={})  # fmt: skip
    assert caught.value.code is ErrorCode.UPSTREAM_UNAVAILABLE
