"""``switchyard worker``: arguments, and refusing to start without a way into Vault."""

from __future__ import annotations

import argparse
import asyncio
from types import SimpleNamespace

import pytest
from aiokafka.errors import KafkaConnectionError

from core.errors import ConfigurationError
from core.settings import load_settings
from core.vault import AppRoleCredentials, TokenFile
from workers import command
from workers.command import pool_ready


def test_worker_command_parses_its_options():
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    args = parser.parse_args(["--connector", "slack", "--concurrency", "8", "--tenant-concurrency", "2",
                              "--retry-tier-delays", "0.2,0.5"])
    assert (args.connector, args.concurrency, args.tenant_concurrency) == ("slack", 8, 2)
    assert command._tier_delays(args.retry_tier_delays) == (0.2, 0.5)


def test_unknown_connector_is_refused():
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    with pytest.raises(SystemExit):
        parser.parse_args(["--connector", "fax"])


def test_bad_tier_delays_are_refused():
    with pytest.raises(ValueError):
        command._tier_delays("1,2,3,4")
    with pytest.raises(ValueError):
        command._tier_delays("soon")


def test_the_pool_logs_in_with_its_approle_or_else_the_agents_token_file(monkeypatch: pytest.MonkeyPatch):
    settings = load_settings({"VAULT_ADDR": "http://127.0.0.1:1"})
    for name in ("SWITCHYARD_VAULT_ROLE_ID", "SWITCHYARD_VAULT_SECRET_ID", "SWITCHYARD_VAULT_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(f"{name}_SLACK", raising=False)
    with pytest.raises(ConfigurationError, match="SWITCHYARD_VAULT_TOKEN_FILE"):
        command._pool_vault(settings, "slack")
    monkeypatch.setenv("SWITCHYARD_VAULT_TOKEN_FILE", "/vault/secrets/token")
    pool = command._pool_vault(settings, "slack")
    assert pool._approle == TokenFile("/vault/secrets/token")
    pool.close()
    monkeypatch.setenv("SWITCHYARD_VAULT_ROLE_ID_SLACK", "role")
    monkeypatch.setenv("SWITCHYARD_VAULT_SECRET_ID_SLACK", "secret")
    pool = command._pool_vault(settings, "slack")
    assert pool._approle == AppRoleCredentials("role", "secret")
    pool.close()


def test_the_instance_id_comes_from_the_environment_when_not_given():
    pod = "sy-switchyard-worker-slack-7d9f8c6b5-x2x4q"
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    plain = parser.parse_args(["--connector", "slack"])
    given = parser.parse_args(["--connector", "slack", "--instance-id", "w-1"])
    from_env = load_settings({"SWITCHYARD_INSTANCE_ID": pod})
    assert command._instance(plain, from_env) == {"instance_id": pod}
    assert command._instance(given, from_env) == {"instance_id": "w-1"}  # the option wins
    assert command._instance(plain, load_settings({})) == {}
    with pytest.raises(ValueError, match="instance_id"):
        load_settings({"SWITCHYARD_INSTANCE_ID": "two words"})


class _Admin:
    def __init__(self, answer: str) -> None:
        self.answer = answer
        self.asked = 0

    async def describe_cluster(self) -> dict[str, object]:
        self.asked += 1
        if self.answer == "hang":  # a frozen broker: the request is never answered
            await asyncio.Event().wait()
        if self.answer == "refuse":
            raise KafkaConnectionError("no broker")
        return {"brokers": [{"node_id": 1}]}


async def test_readiness_asks_a_broker_each_time_not_only_whether_the_pool_started():
    # An SRE review froze the broker for 90 s: the router's /readyz went 503 within 2 s,
    # the workers' kept answering "kafka": true (it only checked that the pool started).
    for answer, ready in (("ok", True), ("hang", None), ("refuse", None)):
        pool = SimpleNamespace(consumer=object(), _stopping=asyncio.Event(), admin=_Admin(answer))
        check = pool_ready(pool)  # type: ignore[arg-type]
        if ready:
            assert await check() is True
        else:
            with pytest.raises((TimeoutError, KafkaConnectionError)):
                await asyncio.wait_for(check(), 0.5)  # serve_health bounds each check (2 s)
        assert pool.admin.asked == 1
    stopping = SimpleNamespace(consumer=object(), _stopping=asyncio.Event(), admin=_Admin("ok"))
    stopping._stopping.set()
    assert await pool_ready(stopping)() is False  # type: ignore[arg-type]
