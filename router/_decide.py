"""Deciding one command: its route (connector, operation, mapped arguments) or rejection.

Pure in-memory work on the router's state (workspace config, usage counters); the
batch around it (``router._route``) makes the outcome durable and sends it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from opentelemetry.trace import SpanKind

from core.errors import CommandError, PermanentError
from core.logs import bind
from core.telemetry import capture_spans, current_trace_id, extract, inject, span
from schemas import (
    Command,
    ErrorCode,
    ErrorInfo,
    Headers,
    Result,
    ResultStatus,
    StageTimes,
    Topics,
    fields_from_command,
)
from schemas._limits import check_json_bounds
from schemas.trace import MAX_SPANS

from ._compose import Route, routed_bytes
from ._config_view import ConfigView
from ._limits import admit
from ._resolve import ActionCache, resolve
from ._state import PartitionedState, usage_key

__all__ = ["KIND_RESULT", "KIND_ROUTED", "Decisions", "Outgoing", "headers_list"]

# Logged as the router's, as before this module was split out of it.
logger = logging.getLogger("router._route")

KIND_ROUTED = "routed"
KIND_RESULT = "result"


@dataclass(slots=True)
class Outgoing:
    topic: str
    partition: int
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]
    command_id: str
    rejected: ErrorCode | None
    # For the metrics counted once the output is acked (see Router.metrics).
    tenant_id: str = ""
    space_id: str = ""
    connector: str = ""
    waited: float = 0.0


def headers_list(message: Any) -> list[tuple[str, bytes]]:
    raw = getattr(message, "headers", None) or ()
    if isinstance(raw, dict):
        raw = raw.items()
    return [(k, v) for k, v in raw if isinstance(k, str) and isinstance(v, bytes | bytearray)]


class Decisions:
    """The per-command half of :class:`router._route.Router` (a mixin: state is the router's)."""

    topics: Topics
    config: ConfigView
    cache: ActionCache
    usage: PartitionedState
    partitions: dict[str, list[int]]

    def partition_for(self, topic: str, key: bytes) -> int:
        raise NotImplementedError

    def _decide(
        self,
        event: Any,
        command: Command,
        now: float,
        now_dt: datetime,
        *,
        charged: bool = False,
        used_by: str | None = None,
        unreadable: bool = False,
    ) -> Outgoing:
        """Route or reject ``command``; ``charged``: its usage was counted by an earlier
        decision of this same command whose output was never sent (a replay after a
        crash), so it is not counted again; ``used_by``: the command that used its
        idempotency key in the other scope (an upgrade's transition), which rejects it;
        ``unreadable``: the record held more than this router reads (``Command.known_part``)."""
        partition = event.message.partition
        parent = extract(headers_list(event.message))
        key = command.tenant_id.encode()
        routed: Route | None = None
        # The rejection as data, not the exception: kept in this frame, which is on its
        # traceback, it would make a reference cycle holding the whole batch's frames.
        rejection: ErrorInfo | None = None
        attributes = {
            "messaging.system": "kafka",
            "messaging.operation.type": "process",
            "messaging.destination.name": self.topics.commands,
            "messaging.destination.partition.id": str(partition),
            "messaging.kafka.offset": int(event.message.offset),
            "switchyard.tenant_id": command.tenant_id,
            "switchyard.space_id": command.space_id,
            "switchyard.command_id": command.command_id,
            "switchyard.action": command.action,
        }
        with (
            capture_spans() as captured,
            span(
                "router.route", kind=SpanKind.CONSUMER, context=parent, attributes=attributes
            ) as current,
        ):
            try:
                if unreadable:
                    raise PermanentError(
                        ErrorCode.INTERNAL,
                        "the router could not read this command whole (a field it does not "
                        "know); it was not run",
                    )
                if used_by is not None:
                    # No code of its own: ingresses and consumers of before read only the
                    # codes they know, and this happens while they still run. Nor the
                    # other command's id: it may be another workspace's.
                    raise PermanentError(
                        ErrorCode.INVALID_ARGUMENTS,
                        "this idempotency key was used in the last 24 h by another command "
                        "of this tenant, across the change to keys per workspace "
                        "(2026-11-29), so this one is not run; use a new key for a new call",
                    )
                routed = self._resolve(command, partition, now, now_dt, charged=charged)
                current.set_attribute("switchyard.connector", routed.connector)
            except CommandError as exc:
                rejection = exc.to_info()
                current.set_attribute("switchyard.rejected", str(exc.code))
            topic = self.topics.connector(routed.connector) if routed else self.topics.results
            headers = Headers.for_command(
                command.tenant_id,
                command.space_id,
                command.command_id,
                kind=KIND_ROUTED if routed else KIND_RESULT,
                schema="1",
            )
            inject(headers)
            trace_id = current_trace_id()
        if routed is not None:
            headers.append((Headers.CONCURRENCY, str(routed.concurrency).encode()))
            payload = routed_bytes(event.value, command, routed, captured, now_dt)
        else:
            spans = [*command.spans, *captured][-MAX_SPANS:]
            assert rejection is not None
            with bind(
                tenant_id=command.tenant_id, command_id=command.command_id, trace_id=trace_id
            ):
                logger.info("command rejected", extra={"fields": {"code": str(rejection.code)}})
            # The action's connector and operation when the workspace names them, so a
            # consumer counting per connector sees its rejections too (rate limits,
            # invalid arguments, a disabled action).
            workspace = self.config.get(command.tenant_id, command.space_id)
            action = workspace.action(command.action) if workspace is not None else None
            payload = Result(
                **fields_from_command(command),
                status=ResultStatus.REJECTED,
                connector=action.connector if action is not None else None,
                operation=action.operation if action is not None else None,
                error=rejection,
                attempts=0,
                times=StageTimes(submitted_at=command.submitted_at, finished_at=now_dt),
                trace_id=trace_id,
                spans=spans,
            ).to_bytes()
        return Outgoing(
            topic=topic,
            partition=self.partition_for(topic, key),
            key=key,
            value=payload,
            headers=headers,
            command_id=command.command_id,
            rejected=None if routed else (rejection.code if rejection else ErrorCode.INTERNAL),
            tenant_id=command.tenant_id,
            space_id=command.space_id,
            connector=routed.connector if routed else "",
            waited=now - command.submitted_at.timestamp(),
        )

    def _resolve(
        self, command: Command, partition: int, now: float, now_dt: datetime, *, charged: bool = False
    ) -> Route:
        workspace = self.config.get(command.tenant_id, command.space_id)
        try:
            resolution = resolve(command, workspace, now_dt, self.cache)
        except CommandError:
            raise
        except Exception:
            # Resolving is pure: what raises here is this command's (a workspace nothing
            # foresaw, a bug), and failing the batch would stop the router on every
            # replay of it. The command gets its one final Result instead.
            logger.exception("resolving command %s failed", command.command_id)
            raise PermanentError(ErrorCode.INTERNAL, "the router could not resolve this command") from None
        assert workspace is not None
        action = resolution.action
        if self.topics.connector(action.connector) not in self.partitions:
            raise PermanentError(
                ErrorCode.CONNECTOR_DISABLED,
                f"connector {action.connector!r} is not run by this deployment",
            )
        resolved = resolution.resolved_arguments
        try:
            if not isinstance(resolved, dict):
                raise ValueError("the mapping must produce a JSON object")
            check_json_bounds(resolved)
        except ValueError as exc:
            raise PermanentError(
                ErrorCode.MAPPING_FAILED, f"mapped arguments are not valid: {str(exc)[:200]}"
            ) from None
        # Every part is validated already (the command when parsed, the action and
        # connector options with the workspace, the mapped arguments just above), so
        # the routed record is composed without a second validation pass
        # (``router._compose``).
        routed = Route(
            connector=action.connector,
            operation=action.operation,
            resolved_arguments=resolved,
            connector_options=workspace.connectors[action.connector],
            concurrency=workspace.limits.concurrency,
        )
        if charged:
            return routed
        ukey = usage_key(command.tenant_id, command.space_id)
        state, rejection = admit(self.usage.get(ukey), workspace.limits, now)
        state["k"] = partition  # where the sweep writes its tombstone
        self.usage.put(ukey, state, partition)
        if rejection is not None:
            raise rejection
        return routed
