"""OAuth refresh (RFC 6749 §6) against the emulator's token endpoint, used by Gmail."""

from __future__ import annotations

import time
import traceback
import uuid
from typing import Any

import aiohttp
import pytest

from core.errors import PermanentError, RetryableError
from schemas import ErrorCode
from workers.connectors import ConnectorCall, CredentialsExpired
from workers.connectors.gmail import GmailConnector
from workers.connectors.oauth import expired, refresh, token_url_for
from workers.emulators import RunningEmulator

ARGS = {"to": "ops@example.com", "subject": "Daily", "body": "All green."}


def oauth_credentials(emulator: RunningEmulator, tenant: str = "acme") -> dict[str, Any]:
    creds = {
        "access_token": f"CANARY-access-{uuid.uuid4().hex}",
        "refresh_token": f"CANARY-refresh-{uuid.uuid4().hex}",
        "client_id": "switchyard-client",
        "client_secret": f"CANARY-secret-{uuid.uuid4().hex}",
    }
    emulator.state.add_token(
        {
            "connector": "gmail",
            "tenant": tenant,
            "token": creds["access_token"],
            "refresh_token": creds["refresh_token"],
            "client_id": creds["client_id"],
            "client_secret": creds["client_secret"],
        }
    )
    return creds


def gmail_call(
    emulator: RunningEmulator, session: aiohttp.ClientSession, creds: dict[str, Any]
) -> ConnectorCall:
    return ConnectorCall(
        tenant_id="acme",
        operation="users.messages.send",
        arguments=ARGS,
        credentials=creds,
        base_url=emulator.base_url,
        idempotency_key=uuid.uuid4().hex,
        session=session,
        timeout=5.0,
    )


async def test_a_401_is_cured_by_one_refresh_at_the_emulators_token_endpoint(
    emulator: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    creds = oauth_credentials(emulator)
    emulator.state.add_fault({"connector": "gmail", "tenant": "acme", "kind": "expire_token"})
    with pytest.raises(CredentialsExpired):
        await GmailConnector().execute(gmail_call(emulator, session, creds))
    url = token_url_for(GmailConnector, emulator.base_url, creds)
    assert url == f"{emulator.base_url}/oauth/token"
    before = time.time()
    renewed = await refresh(session, url, creds)
    assert renewed["access_token"] != creds["access_token"]
    assert renewed["refresh_token"] == creds["refresh_token"]
    assert before + 3500 <= renewed["expires_at"] <= time.time() + 3600
    output = await GmailConnector().execute(gmail_call(emulator, session, renewed))
    assert len(output["id"]) == 16
    statuses = [(c["connector"], c["tenant"], c["status"]) for c in emulator.state.calls]
    assert statuses == [("gmail", None, 401), ("oauth", "acme", 200), ("gmail", "acme", 200)]
    # The old token stays expired.
    with pytest.raises(CredentialsExpired):
        await GmailConnector().execute(gmail_call(emulator, session, creds))


async def test_a_passed_expires_at_raises_credentials_expired_without_a_request(
    emulator: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    creds = {**oauth_credentials(emulator), "expires_at": int(time.time()) - 1}
    assert expired(creds)
    with pytest.raises(CredentialsExpired):
        await GmailConnector().execute(gmail_call(emulator, session, creds))
    assert not emulator.state.calls


def test_expired_uses_a_leeway_and_ignores_missing_expiry() -> None:
    assert expired({"expires_at": 1_000}, now=990, leeway=30)
    assert not expired({"expires_at": 1_000}, now=900, leeway=30)
    assert not expired({}, now=10**12)


async def test_a_revoked_refresh_token_is_permanent_and_names_only_the_oauth_error(
    emulator: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    creds = oauth_credentials(emulator)
    emulator.state.add_fault({"connector": "oauth", "kind": "expire_token"})
    url = f"{emulator.base_url}/oauth/token"
    for _ in range(2):  # revoked for good, not only for one call
        with pytest.raises(PermanentError) as caught:
            await refresh(session, url, creds)
        assert caught.value.code is ErrorCode.CREDENTIALS_INVALID
        assert "invalid_grant" in caught.value.message
        rendered = "".join(traceback.format_exception(caught.value)) + repr(caught.value)
        assert all(value not in rendered for value in creds.values() if "CANARY" in value)


async def test_a_wrong_client_secret_is_refused_as_invalid_client(
    emulator: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    creds = {**oauth_credentials(emulator), "client_secret": "not-it"}
    with pytest.raises(PermanentError) as caught:
        await refresh(session, f"{emulator.base_url}/oauth/token", creds)
    assert (
        caught.value.code is ErrorCode.CREDENTIALS_INVALID
        and "invalid_client" in caught.value.message
    )


@pytest.mark.parametrize(
    ("kind", "code"),
    [("429", ErrorCode.UPSTREAM_RATE_LIMITED), ("500", ErrorCode.UPSTREAM_UNAVAILABLE)],
)
async def test_token_endpoint_overload_is_retryable(
    kind: str, code: ErrorCode, emulator: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    creds = oauth_credentials(emulator)
    emulator.state.add_fault({"connector": "oauth", "kind": kind})
    with pytest.raises(RetryableError) as caught:
        await refresh(session, f"{emulator.base_url}/oauth/token", creds)
    assert caught.value.code is code
    assert (await refresh(session, f"{emulator.base_url}/oauth/token", creds))["access_token"]


async def test_refresh_needs_the_refresh_token_and_client_fields(
    emulator: RunningEmulator, session: aiohttp.ClientSession
) -> None:
    with pytest.raises(PermanentError) as caught:
        await refresh(session, f"{emulator.base_url}/oauth/token", {"access_token": "x"})
    assert caught.value.code is ErrorCode.CREDENTIALS_MISSING
    assert not emulator.state.calls


def test_token_url_prefers_the_emulator_then_the_stored_url_then_googles() -> None:
    stored = {"token_url": "https://login.example.com/token"}
    assert (
        token_url_for(GmailConnector, "http://127.0.0.1:9/", stored)
        == "http://127.0.0.1:9/oauth/token"
    )
    assert (
        token_url_for(GmailConnector, GmailConnector.default_base_url, stored)
        == stored["token_url"]
    )
    assert (
        token_url_for(GmailConnector, GmailConnector.default_base_url, {})
        == "https://oauth2.googleapis.com/token"
    )
