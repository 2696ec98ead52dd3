"""The fault suites' load generator: clients that keep submitting through restarts."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from ingress.pipeline import command_id_for

__all__ = ["Load"]


@dataclass
class Load:
    """Clients submitting ``total`` commands through ``POST /v1/commands:batch``.

    Every item carries an idempotency key (``<tag>-<n>``); a client whose request fails
    (connection refused or reset, 5xx, an item answered 503) sends the same batch again,
    as a real client would, at most ``attempts`` times. Only items answered 2xx count as
    accepted.
    """

    url: str
    keys: Mapping[str, str]  # tenant id → API key (of its workspace `space`)
    total: int
    batch: int = 10
    clients: int = 3
    pace: float = 0.05  # seconds between one client's batches: keeps the load going a while
    attempts: int = 200
    space: str = "main"
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    accepted: dict[str, str] = field(default_factory=dict)  # command id → tenant
    attempted: dict[str, str] = field(default_factory=dict)
    failed_requests: int = 0
    resent_items: int = 0

    def merged(self, other: Load) -> Load:
        """One load holding both loads' commands and counters (for one scenario's counts)."""
        both = Load(self.url, {**self.keys, **other.keys}, self.total + other.total)
        both.accepted = {**self.accepted, **other.accepted}
        both.attempted = {**self.attempted, **other.attempted}
        both.failed_requests = self.failed_requests + other.failed_requests
        both.resent_items = self.resent_items + other.resent_items
        return both

    async def run(self) -> None:
        """Submit everything.

        Raises:
            AssertionError: a batch was still refused after ``attempts`` tries, or an item
                was refused with a 4xx (the load itself is wrong).
        """
        batches = iter(range(0, self.total, self.batch))
        tenants = itertools.cycle(self.keys)
        async with aiohttp.ClientSession() as session:
            await asyncio.gather(*(self._client(session, batches, tenants) for _ in range(self.clients)))

    async def _client(self, session: aiohttp.ClientSession, batches: Any, tenants: Any) -> None:
        for start in batches:
            tenant = next(tenants)
            numbers = range(start, min(start + self.batch, self.total))
            pending = {f"{self.tag}-{n}": n for n in numbers}
            for key in pending:
                self.attempted[command_id_for(tenant, self.space, key)] = tenant
            for attempt in range(self.attempts):
                if attempt:
                    self.resent_items += len(pending)
                    await asyncio.sleep(min(0.5, 0.05 * attempt))
                pending = await self._send(session, tenant, pending)
                if not pending:
                    break
            else:
                raise AssertionError(f"{len(pending)} commands still refused after {self.attempts} tries")
            await asyncio.sleep(self.pace)

    async def _send(self, session: aiohttp.ClientSession, tenant: str, pending: dict[str, int]) -> dict[str, int]:
        body = {"items": [{"action": "daily_summary", "idempotency_key": key,
                           "arguments": {"summary": f"fault load {n}"}} for key, n in pending.items()]}
        try:
            async with session.post(
                f"{self.url}/v1/commands:batch", data=orjson.dumps(body),
                headers={"Authorization": f"Bearer {self.keys[tenant]}", "Content-Type": "application/json"},
                timeout=aiohttp.ClientTimeout(total=45),
            ) as response:
                raw = await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError):
            self.failed_requests += 1
            return pending
        if status >= 500:
            self.failed_requests += 1
            return pending
        assert status == 200, (status, raw[:300])
        left: dict[str, int] = {}
        for key, item in zip(pending, orjson.loads(raw)["items"], strict=True):
            if item["status_code"] < 300:
                self.accepted[item["command_id"]] = tenant
            elif item["status_code"] == 503:
                left[key] = pending[key]
            else:
                raise AssertionError(f"item refused: {item}")
        return left
