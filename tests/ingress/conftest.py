"""Fixtures of the ingress tests (reused by the MCP and end-to-end tests).

- ``harness``: the real ingress app on 127.0.0.1:<free port> for this test's topic
  prefix, Kafka clients started and the config directory caught up
  (:class:`ingress.testing.IngressHarness`; admin token ``harness.admin_token``).
- ``acme`` / ``beta``: two tenants, each with workspace ``sales`` holding the ``echo``
  action and an API key (``.headers`` carries ``Authorization: Bearer sy_...``).
- ``responder``: a fake router+worker answering every command with an echo Result on the
  real results topic (:class:`ingress.testing.FakeResponder`).
- ``no_unexpected_errors`` (autouse): fails a test in which the ingress answered a 500.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator

import pytest

from core.settings import Settings
from ingress.testing import FakeResponder, IngressHarness, TenantHandle, unique_id


@pytest.fixture
async def harness(settings: Settings) -> AsyncIterator[IngressHarness]:
    async with IngressHarness(settings) as running:
        yield running


@pytest.fixture
async def acme(harness: IngressHarness) -> TenantHandle:
    return await harness.add_tenant(unique_id("acme"), "sales")


@pytest.fixture
async def beta(harness: IngressHarness) -> TenantHandle:
    return await harness.add_tenant(unique_id("beta"), "sales")


@pytest.fixture
async def responder(harness: IngressHarness) -> AsyncIterator[FakeResponder]:
    async with harness.responder() as running:
        yield running


@pytest.fixture(autouse=True)
def no_unexpected_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="ingress")
    yield
    unexpected = [
        r for r in caplog.records
        if r.name.startswith("ingress") and r.levelno >= logging.ERROR
    ]
    assert not unexpected, [r.getMessage() for r in unexpected]
