"""The emulator app over real HTTP: tokens, vendor error shapes, faults, logs, CLI."""

from __future__ import annotations

import asyncio
import base64
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from switchyard.stack._procs import free_port
from workers.emulators import RunningEmulator
from workers.emulators.command import add_arguments, load_tokens

SLACK = "/api/chat.postMessage"


async def post(
    session: aiohttp.ClientSession, url: str, body: Any, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    async with session.post(url, data=orjson.dumps(body), headers=headers or {}) as response:
        return response.status, await response.json(content_type=None)


async def get(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url) as response:
        assert response.status == 200
        return await response.json()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_tokens_registered_over_http_resolve_to_their_tenant_in_the_call_log(
    emulator: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    base = emulator.base_url
    tokens = [
        {"connector": "slack", "token": "CANARY-a", "tenant": "acme"},
        {"connector": "slack", "token": "CANARY-b", "tenant": "beta"},
    ]
    assert (await post(session, f"{base}/_emulator/tokens", {"tokens": tokens}))[0] == 200
    for token in ("CANARY-a", "CANARY-b", "CANARY-a"):
        status, body = await post(
            session, base + SLACK, {"channel": "#x", "text": "t"}, bearer(token)
        )
        assert status == 200 and body["ok"] is True
    acme = (await get(session, f"{base}/_emulator/calls?tenant=acme"))["calls"]
    assert [c["tenant"] for c in acme] == ["acme", "acme"]
    everything = await get(session, f"{base}/_emulator/calls?connector=slack")
    assert len(everything["calls"]) == 3
    assert b"CANARY" not in orjson.dumps(everything)
    assert (await get(session, f"{base}/_emulator/calls?connector=gmail"))["calls"] == []
    since = acme[0]["seq"]
    later = (await get(session, f"{base}/_emulator/calls?since={since}"))["calls"]
    assert [c["tenant"] for c in later] == ["beta", "acme"]


@pytest.mark.parametrize(
    ("path", "status", "shape"),
    [
        (SLACK, 200, {"ok": False, "error": "invalid_auth"}),
        ("/gmail/v1/users/me/messages/send", 401, {"status": "UNAUTHENTICATED"}),
        ("/v1/pages", 401, {"object": "error", "code": "unauthorized"}),
        ("/rest/api/3/issue", 401, {"errors": {}}),
        ("/repos/o/r/issues", 401, {"message": "Bad credentials"}),
        ("/hooks/x", 401, {"error": "emulated 401"}),
    ],
)
async def test_each_vendor_refuses_an_unknown_token_in_its_own_shape(
    path: str,
    status: int,
    shape: dict[str, Any],
    emulator: RunningEmulator,
    session: aiohttp.ClientSession,
) -> None:
    got_status, body = await post(session, emulator.base_url + path, {}, bearer("unknown"))
    assert got_status == status
    flat = body.get("error") if isinstance(body.get("error"), dict) else body
    assert {key: flat[key] for key in shape} == shape


async def test_a_fault_applies_to_exactly_the_next_n_matching_calls(
    emulator: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    base = emulator.base_url
    emulator.state.add_token({"connector": "slack", "token": "a", "tenant": "acme"})
    emulator.state.add_token({"connector": "slack", "token": "b", "tenant": "beta"})
    fault = {"connector": "slack", "tenant": "acme", "kind": "429", "count": 3, "retry_after": 2}
    assert (await post(session, f"{base}/_emulator/faults", fault))[0] == 200
    message = {"channel": "#x", "text": "t"}
    beta = [(await post(session, base + SLACK, message, bearer("b")))[0] for _ in range(2)]
    acme = []
    for _ in range(4):
        async with session.post(
            base + SLACK, data=orjson.dumps(message), headers=bearer("a")
        ) as response:
            acme.append((response.status, response.headers.get("Retry-After")))
    assert beta == [200, 200]
    assert acme == [(429, "2"), (429, "2"), (429, "2"), (200, None)]
    assert (await get(session, f"{base}/_emulator/faults"))["faults"] == []


async def test_a_latency_fault_delays_the_reply(
    emulator: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    emulator.state.add_token({"connector": "slack", "token": "a", "tenant": "acme"})
    emulator.state.add_fault({"kind": "latency", "latency_ms": 200})
    started = time.monotonic()
    status, _ = await post(
        session, emulator.base_url + SLACK, {"channel": "#x", "text": "t"}, bearer("a")
    )
    assert status == 200 and time.monotonic() - started >= 0.2


@pytest.mark.parametrize(
    "fault",
    [
        {"kind": "explode"},
        {"kind": "429", "count": 0},
        {"kind": "latency", "latency_ms": -1},
        {"kind": "429", "retry_after": "x"},
    ],
)
async def test_malformed_faults_are_refused(
    fault: dict[str, Any], emulator: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    assert (await post(session, f"{emulator.base_url}/_emulator/faults", fault))[0] == 400
    assert emulator.state.faults == []


async def test_malformed_token_entries_are_refused(
    emulator: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    status, body = await post(
        session, f"{emulator.base_url}/_emulator/tokens", {"connector": "slack", "token": "x"}
    )
    assert status == 400 and "tenant" in body["error"]


async def test_reset_forgets_calls_effects_and_faults_and_optionally_tokens(
    emulator: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    base = emulator.base_url
    emulator.state.add_token({"connector": "slack", "token": "a", "tenant": "acme"})
    headers = {**bearer("a"), "Idempotency-Key": "k1"}
    await post(session, base + SLACK, {"channel": "#x", "text": "t"}, headers)
    emulator.state.add_fault({"kind": "500"})
    assert (await get(session, f"{base}/_emulator/effects"))["effects"] == {"k1": 1}
    await post(session, f"{base}/_emulator/reset", {})
    assert (await get(session, f"{base}/_emulator/calls"))["calls"] == []
    assert (await get(session, f"{base}/_emulator/effects")) == {"effects": {}, "total": 0}
    assert emulator.state.faults == []
    assert (await post(session, base + SLACK, {"channel": "#x", "text": "t"}, bearer("a")))[1][
        "ok"
    ] is True
    await post(session, f"{base}/_emulator/reset", {"tokens": True})
    assert (await post(session, base + SLACK, {"channel": "#x", "text": "t"}, bearer("a")))[1][
        "ok"
    ] is False


async def test_vendor_validation_mirrors_the_real_apis(
    emulator: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    base = emulator.base_url
    for connector in ("notion", "jira", "github", "gmail"):
        emulator.state.add_token({"connector": connector, "token": "t", "tenant": "acme"})
    parent = {"parent": {"page_id": "59833787-2cf9-4fdf-8782-e53db20768a5"}, "properties": {}}
    status, body = await post(session, f"{base}/v1/pages", parent, bearer("t"))
    assert (status, body["code"]) == (400, "missing_version")
    jira = {
        "fields": {
            "project": {"key": "PROJ"},
            "summary": "s",
            "issuetype": {"name": "Task"},
            "description": "plain",
        }
    }
    basic = {"Authorization": "Basic " + base64.b64encode(b"bot@example.com:t").decode()}
    status, body = await post(session, f"{base}/rest/api/3/issue", jira, basic)
    assert status == 400 and "description" in body["errors"]
    async with session.post(
        f"{base}/repos/o/r/issues",
        data=b'{"title":"x"}',
        headers=bearer("t"),
        skip_auto_headers=["User-Agent"],
    ) as response:
        assert response.status == 403
    status, body = await post(
        session, f"{base}/repos/o/r/issues", {"body": "no title"}, bearer("t")
    )
    assert (status, body["message"]) == (422, "Validation Failed")
    status, body = await post(
        session, f"{base}/gmail/v1/users/me/messages/send", {"raw": "!!"}, bearer("t")
    )
    assert (status, body["error"]["status"]) == (400, "INVALID_ARGUMENT")


async def test_the_token_endpoint_speaks_only_the_refresh_token_grant(
    emulator: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    emulator.state.add_token(
        {"connector": "gmail", "token": "a", "tenant": "acme", "refresh_token": "r"}
    )
    url = f"{emulator.base_url}/oauth/token"
    async with session.post(url, data={"grant_type": "password", "refresh_token": "r"}) as response:
        assert (response.status, (await response.json())["error"]) == (
            400,
            "unsupported_grant_type",
        )
    async with session.post(
        url, data={"grant_type": "refresh_token", "refresh_token": "nope"}
    ) as response:
        assert (response.status, (await response.json())["error"]) == (400, "invalid_grant")
    async with session.post(
        url, data={"grant_type": "refresh_token", "refresh_token": "r"}
    ) as response:
        token = (await response.json())["access_token"]
        assert response.headers["Cache-Control"] == "no-store"
    status, body = await post(
        session,
        f"{emulator.base_url}/gmail/v1/users/me/messages/send",
        {"raw": "VG86IGFAZXhhbXBsZS5jb20KCmhp"},
        bearer(token),
    )
    assert status == 200 and body["labelIds"] == ["SENT"]


async def test_the_emulator_serves_a_thousand_concurrent_calls_and_counts_each_effect(
    emulator: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    emulator.state.add_token({"connector": "slack", "token": "a", "tenant": "acme"})
    limit = asyncio.Semaphore(50)

    async def one(index: int) -> int:
        async with limit:
            headers = {**bearer("a"), "Idempotency-Key": f"k{index}"}
            return (
                await post(
                    session, emulator.base_url + SLACK, {"channel": "#x", "text": "t"}, headers
                )
            )[0]

    async with asyncio.timeout(60):
        statuses = await asyncio.gather(*(one(i) for i in range(1000)))
    assert statuses == [200] * 1000
    effects = await get(session, f"{emulator.base_url}/_emulator/effects?connector=slack")
    assert effects["total"] == 1000 and len(effects["effects"]) == 1000


def test_the_command_parses_its_arguments_and_loads_tokens(tmp_path: Path) -> None:
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--port", "8999", "--tokens", str(tmp_path / "t.json")])
    assert (args.host, args.port, args.no_dedup) == ("127.0.0.1", 8999, False)
    entries = [{"connector": "slack", "token": "x", "tenant": "acme"}]
    (tmp_path / "list.json").write_bytes(orjson.dumps(entries))
    (tmp_path / "obj.json").write_bytes(orjson.dumps({"tokens": entries}))
    (tmp_path / "bad.json").write_bytes(b'{"tokens": 3}')
    assert load_tokens(tmp_path / "list.json") == load_tokens(tmp_path / "obj.json") == entries
    with pytest.raises(ValueError):
        load_tokens(tmp_path / "bad.json")


async def test_switchyard_emulators_serves_the_configured_tokens_on_its_port(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    tokens = tmp_path / "tokens.json"
    tokens.write_bytes(
        orjson.dumps([{"connector": "slack", "token": "CANARY-cli", "tenant": "acme"}])
    )
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "switchyard.cli",
        "emulators",
        "--port",
        str(port),
        "--tokens",
        str(tokens),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with asyncio.timeout(30):
            while True:  # bounded by the timeout above
                try:
                    async with session.get(f"{base}/_emulator/health") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.05)
        status, body = await post(
            session, base + SLACK, {"channel": "#x", "text": "t"}, bearer("CANARY-cli")
        )
        assert status == 200 and body["ok"] is True
        assert (await get(session, f"{base}/_emulator/calls"))["calls"][0]["tenant"] == "acme"
    finally:
        process.terminate()
        output, _ = await asyncio.wait_for(process.communicate(), 30)
    assert b"CANARY" not in output
