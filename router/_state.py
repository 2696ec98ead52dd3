"""Changelogged router state written with explicit changelog partitions.

Faust normally sends a table write to the changelog partition of the *current event*
through its own (non-idempotent) producer buffer. The router handles commands in
batches that mix partitions and must know when each write is acknowledged, so it
writes the changelog records itself, with the router's idempotent producer, in
faust's format (JSON key and value), and names the partition itself: the partition of the command that caused the write. Keys start with the tenant
id, every command of a tenant sits in one partition of the commands topic, and each
changelog has as many partitions as the commands topic — so a tenant's state is in the
changelog partition with the same number as its commands, and faust recovers exactly
that partition for the replica that owns those commands (co-partitioning).

Two tables use this:

* ``dedup`` — ``<tenant>/<space> <idempotency key>`` (``<tenant>/<idempotency key>`` for
  commands published before keys were per workspace) → ``{"c": command id, "s": "p"|"d",
  "t": output topic, "p": output partition, "ts": ms, "k": source partition}``;
  ``p`` = pending (written before the output is sent), ``d`` = done (after it is acked).
* ``usage`` — ``<tenant>/<space>`` → token bucket and daily quota (``router._limits``)
  and ``"k"``, the source partition. :meth:`PartitionedState.sweep_usage` drops entries
  of workspaces that no longer exist and entries at rest, so the table holds only
  workspaces in use, not every workspace ever seen.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from schemas import Command, Limits

from ._limits import at_rest

__all__ = ["PartitionedState", "dedup_keys", "usage_key"]


def dedup_keys(command: Command) -> tuple[str, str]:
    """``command``'s dedup key, in the scope its id names, and the same key's in the other.

    Tenant ids cannot contain '/', so no key is confused across tenants; nor can space
    ids or idempotency keys contain ' ', so a workspace's key (``<tenant>/<space> <key>``)
    is never a tenant-wide one (``<tenant>/<key>``: commands published before keys were
    per workspace, 2026-11-29). The other scope's entry matters during that upgrade: a
    retry can reach the router in one scope after its first send in the other.
    """
    in_space, tenant_wide = _in_space(command), _tenant_wide(command)
    return (in_space, tenant_wide) if command.keyed_per_workspace() else (tenant_wide, in_space)


def _tenant_wide(command: Command) -> str:
    return f"{command.tenant_id}/{command.idempotency_key}"


def _in_space(command: Command) -> str:
    return f"{command.tenant_id}/{command.space_id} {command.idempotency_key}"


def usage_key(tenant_id: str, space_id: str) -> str:
    return f"{tenant_id}/{space_id}"


class PartitionedState:
    """A faust table whose writes are buffered per batch and sent with explicit partitions."""

    def __init__(self, table: Any, topic: str) -> None:
        self.table = table
        self.topic = topic
        self._dirty: dict[str, tuple[int, dict[str, Any] | None]] = {}

    def get(self, key: str) -> dict[str, Any] | None:
        value = self.table.data.get(key)
        return value if isinstance(value, dict) else None

    def put(self, key: str, value: dict[str, Any], partition: int) -> None:
        self.table.data[key] = value
        self._remember_partition(key, partition)
        self._dirty[key] = (partition, value)

    def delete(self, key: str, partition: int) -> None:
        self.table.data.pop(key, None)
        known = getattr(self.table.data, "_key_partition", None)
        if known is not None:
            known.pop(key, None)
        self._dirty[key] = (partition, None)

    def _remember_partition(self, key: str, partition: int) -> None:
        # The memory store drops keys of partitions this replica lost after a rebalance
        # using this map; faust fills it only during recovery.
        known = getattr(self.table.data, "_key_partition", None)
        if known is not None:
            known[key] = partition

    async def flush(self, producer: AIOKafkaProducer) -> list[asyncio.Future[Any]]:
        """Send every buffered write to the changelog; await the returned futures for acks."""
        dirty, self._dirty = self._dirty, {}
        futures: list[asyncio.Future[Any]] = []
        for key, (partition, value) in dirty.items():
            encoded = None if value is None else orjson.dumps(value)
            futures.append(
                await producer.send(self.topic, encoded, key=orjson.dumps(key), partition=partition)
            )
        return futures

    def items(self) -> Iterator[tuple[str, dict[str, Any]]]:
        for key, value in list(self.table.data.items()):
            if isinstance(value, dict):
                yield key, value

    def sweep_dedup(
        self, window_ms: int, per_tenant: int, total: int | None = None, now_ms: int | None = None
    ) -> int:
        """Drop dedup entries older than the window, the oldest beyond ``per_tenant``, and
        then the oldest of all beyond ``total``, however many tenants there are.

        Returns how many entries were dropped (tombstones are buffered until :meth:`flush`).
        """
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        by_tenant: dict[str, list[tuple[int, str, int]]] = {}
        dropped = 0
        for key, entry in self.items():
            partition = int(entry.get("k", 0))
            if now_ms - int(entry.get("ts", 0)) > window_ms:
                self.delete(key, partition)
                dropped += 1
                continue
            by_tenant.setdefault(key.split("/", 1)[0], []).append(
                (int(entry.get("ts", 0)), key, partition)
            )
        kept: list[tuple[int, str, int]] = []
        for entries in by_tenant.values():
            excess = len(entries) - per_tenant
            if excess > 0:
                entries.sort()
                for _, key, partition in entries[:excess]:
                    self.delete(key, partition)
                    dropped += 1
                entries = entries[excess:]
            kept.extend(entries)
        if total is not None and len(kept) > total:
            kept.sort()
            for _, key, partition in kept[: len(kept) - total]:
                self.delete(key, partition)
                dropped += 1
        return dropped

    def sweep_usage(
        self, limits_for: Callable[[str, str], Limits | None], now: float | None = None
    ) -> int:
        """Drop usage entries of unconfigured workspaces and entries at rest.

        ``limits_for(tenant_id, space_id)`` gives the workspace's limits, or None when it
        is not configured (its commands are refused before their usage is read). An
        entry at rest (bucket full, no quota spent today) equals a missing one. Returns
        how many were dropped (tombstones are buffered until :meth:`flush`).
        """
        now = time.time() if now is None else now
        dropped = 0
        for key, entry in self.items():
            if "k" not in entry:
                continue  # written before entries named their partition
            tenant_id, _, space_id = key.partition("/")
            limits = limits_for(tenant_id, space_id)
            if limits is None or at_rest(entry, limits, now):
                self.delete(key, int(entry["k"]))
                dropped += 1
        return dropped
