"""The pipeline: build a Command from an authenticated call, publish it durably, answer results.

Idempotency across replicas: the command id is derived from ``(tenant_id, space_id,
idempotency_key)`` (``schemas.command_id_for``: SHA-256, base32, 26 characters; keys are
unique per workspace), so a replay sent to *any* replica
gets the same id. A replica publishes nothing for a replay it recognises: one it
submitted itself (bounded LRU of submitted commands) or whose Result it holds. A replay
that reaches a replica knowing neither (another replica accepted it and it is still
running) is published again under the same id; the router's dedup table (keyed by tenant, workspace
and idempotency key, kept 24 h and at most the tenant's latest 100,000 keys) drops it, so it
still runs once. A replay older than that window is a new command.

Durability: ``submit`` returns only after the broker acknowledged the record
(idempotent producer, ``acks=all``), so a 2xx answer means the command survives a crash
of this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, KafkaTimeoutError
from opentelemetry.trace import SpanKind
from pydantic import ValidationError

from core.errors import KafkaUnavailable
from core.kafka import make_producer, start_client
from core.logs import bind
from core.metrics import Metrics
from core.settings import Settings
from core.telemetry import capture_spans, current_trace_id, inject, tracer
from schemas import (
    COMMAND_SCHEMA_VERSION,
    TASK_CANCEL_KIND,
    Command,
    CommandSource,
    Headers,
    Result,
    TaskCancel,
    command_id_for,
)

from ._bounded import LRU, TokenBuckets
from ._http import ANSWER_MARGIN, time_left
from .contracts import Identity
from .errors import BadRequest, Conflict, IngressError, RateLimited, from_validation
from .results import ResultsFeed

__all__ = ["COMMAND_KIND", "COMMAND_SCHEMA", "KafkaPipeline", "Submission", "command_id_for"]

logger = logging.getLogger(__name__)

COMMAND_SCHEMA = f"switchyard.command.v{COMMAND_SCHEMA_VERSION}"
COMMAND_KIND = "command"
DEFAULT_DEADLINE = timedelta(minutes=5)
MAX_DEADLINE = timedelta(days=1)


@dataclass(slots=True)
class Submission:
    """One call to submit, as the REST batch endpoint collects them."""

    action: str
    arguments: dict[str, Any] = field(default_factory=dict)
    idempotency_key: str | None = None
    deadline: datetime | None = None
    task_ttl: int | None = None  # ms, for a task-augmented MCP call


class KafkaPipeline:
    """Implements :class:`ingress.contracts.Pipeline` on an idempotent Kafka producer."""

    def __init__(
        self,
        settings: Settings,
        results: ResultsFeed,
        *,
        rate_per_second: float = 500.0,
        burst: int = 1_000,
        remember: int = 100_000,
        send_timeout: float = 30.0,
        failing_send_timeout: float = 2.0,
        remember_bytes: int = 128 * 1024 * 1024,
    ) -> None:
        self.settings = settings
        self.results = results
        self.topic = settings.topics.commands
        self._buckets = TokenBuckets(rate_per_second, burst)
        # Commands this replica accepted (answers replays and "pending" polls), as their
        # record bytes: parsed back only for a replay or a poll, and bytes are nothing
        # the garbage collector has to walk (100,000 Command models would be millions
        # of tracked objects).
        # (Past a tenth, a tenant makes room from its own: another's flood cannot make this replica forget
        # yours, whose replays it checks against their arguments and answers as pending.)
        self._submitted: LRU[str, tuple[str, bytes]] = LRU(
            remember, max_bytes=remember_bytes, weigh=lambda kept: len(kept[1]), owner=lambda kept: kept[0]
        )
        results.on_gone.append(self._submitted.pop)
        # Publishes still waiting for the broker: a concurrent replay waits for the same ack.
        self._inflight: dict[str, asyncio.Future[None]] = {}
        self._send_timeout = send_timeout
        # While no publish has been acknowledged since one failed (the broker away), a
        # submit waits this long at most: a client hears 503 in seconds, not after the
        # full publish timeout, and the edge does not fill up with waiting requests.
        # The first acknowledgement (a late one too) ends it.
        self._failing_send_timeout = min(failing_send_timeout, send_timeout)
        self.broker_failing = False
        self.producer: AIOKafkaProducer | None = None
        # One tracer for the process: looking it up per command costs more than the span.
        self._tracer = tracer("switchyard.ingress")
        # Set by the app when the process exposes metrics.
        self.metrics: Metrics | None = None
        # Set by the app: the edge's check of a REST command's action and arguments
        # (identity, command id, action, arguments; ``ingress.actions``), made for new
        # commands only, after the replay checks: a replay is answered as one even if the
        # action changed since. (MCP checks its tools/call before submitting.)
        self.check_action: Callable[[Identity, str, str, dict[str, Any]], object] | None = None

    async def start(self) -> None:
        """Start the producer.

        Raises:
            KafkaUnavailable: the broker cannot be reached.
        """
        producer = make_producer(self.settings, request_timeout_ms=int(self._send_timeout * 1000))
        await start_client(producer, what="ingress producer")
        self.producer = producer

    async def stop(self) -> None:
        if self.producer is not None:
            with contextlib.suppress(KafkaError, OSError, RuntimeError):
                await self.producer.stop()
            self.producer = None

    @property
    def started(self) -> bool:
        return self.producer is not None

    # -- Pipeline protocol -------------------------------------------------------------

    async def submit(
        self,
        identity: Identity,
        action: str,
        arguments: dict[str, Any],
        *,
        source: CommandSource,
        idempotency_key: str | None = None,
        deadline: datetime | None = None,
        task_ttl: int | None = None,
    ) -> tuple[Command, bool]:
        """Publish one command; see :class:`ingress.contracts.Pipeline`.

        Raises:
            RateLimited: the tenant's edge rate limit is exceeded.
            BadRequest: the command is invalid (action name, arguments too deep or large;
                for REST, an action the workspace does not run or arguments its schema refuses).
            Conflict: the idempotency key was used before for a different call.
            KafkaUnavailable: the broker did not acknowledge.
        """
        (outcome,) = await self.submit_many(
            identity,
            [Submission(action, arguments, idempotency_key, deadline, task_ttl)],
            source=source,
        )
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def submit_many(
        self, identity: Identity, items: Sequence[Submission], *, source: CommandSource
    ) -> list[tuple[Command, bool] | IngressError | KafkaUnavailable]:
        """Publish several commands with one round of broker acknowledgements.

        Every record is handed to the producer first and the acknowledgements are awaited
        together, so a batch costs about one linger + one round trip, not one per item.
        Each item succeeds or fails on its own (no all-or-nothing).

        Raises:
            RateLimited: the tenant has fewer tokens left than the batch has new items.
            BadRequest: more items than the bucket ever holds (no wait would let them in).
        """
        if len(items) > self._buckets.burst:
            raise BadRequest(
                f"this batch has {len(items)} items, more than the {self._buckets.burst:g} a tenant "
                "may send at once here; send it in smaller batches"
            )
        # A replay publishes nothing: a retried batch is charged for its new items only
        # (and a request for one token at least), so it is not refused for the first try.
        keyed = [self._keyed(identity, item) for item in items]
        fresh = sum(1 for _, command_id in keyed if not self._replays(identity, command_id))
        self._charge(identity, max(1, fresh))
        # One deadline for the whole batch, not one per item, and within what is left of
        # the request (its body may have taken a while): past the edge's request timeout
        # the answer is a bare 503 that names no key.
        budget = self._publish_budget
        left = time_left(margin=ANSWER_MARGIN)
        # Cut by the request (a slow body), not by the publish budget: such a timeout
        # says nothing of the broker.
        cut = left is not None and left < budget
        if left is not None:
            budget = min(budget, left)
        deadline = asyncio.get_running_loop().time() + budget
        outcomes: list[Any] = [None] * len(items)
        sends: list[tuple[int, Command, asyncio.Future[Any]]] = []
        replays: list[tuple[int, Command, asyncio.Future[None]]] = []
        for index, (item, (key, command_id)) in enumerate(zip(items, keyed, strict=True)):
            try:
                command, inflight, headers = self._prepare(identity, item, source, key, command_id)
            except (IngressError, KafkaUnavailable) as exc:
                outcomes[index] = exc
                continue
            if inflight is not None:
                replays.append((index, command, inflight))  # its first publish is unacknowledged
            elif headers is None:
                outcomes[index] = (command, False)  # replay of a known command
            else:
                if item.task_ttl is not None:
                    headers.append((Headers.TASK_TTL, str(item.task_ttl).encode()))
                try:
                    async with asyncio.timeout_at(deadline):
                        sends.append((index, command, await self._send(command, headers)))
                except KafkaUnavailable as exc:
                    outcomes[index] = exc
                except TimeoutError:  # the producer never took it: nothing was published
                    outcomes[index] = KafkaUnavailable("the producer did not take the command in time")
        for index, command, future in sends:
            outcomes[index] = await self._settle(command, future, deadline, cut=cut)
        for index, command, inflight in replays:
            try:
                async with asyncio.timeout_at(deadline):
                    await asyncio.shield(inflight)
            except KafkaUnavailable as exc:
                outcomes[index] = exc
            except TimeoutError:
                outcomes[index] = KafkaUnavailable("the first publish of this command is not acknowledged yet")
            else:
                outcomes[index] = (command, False)
        return outcomes

    async def wait(self, identity: Identity, command_id: str, timeout: float) -> Result | None:  # noqa: ASYNC109
        return await self.results.wait(
            command_id, timeout, _visible_to(identity), tenant_id=identity.tenant_id
        )

    def peek(self, identity: Identity, command_id: str) -> Result | None:
        return self.results.get(command_id, _visible_to(identity))

    def known(self, identity: Identity, command_id: str) -> Command | None:
        command = self._accepted(command_id)
        if command is None or not _visible_to(identity)(command):
            return None
        owner = (identity.tenant_id, identity.space_id)
        if self.results.owner(command_id) == owner or self.results.forgotten(command_id) == owner:
            return None  # finished: its Result answers, or was forgotten
        return command

    def forgotten(self, identity: Identity, command_id: str) -> bool:
        """Finished, but its Result is no longer held here (for the caller's workspace)."""
        return self.results.forgotten(command_id) == (identity.tenant_id, identity.space_id)

    async def cancel(self, identity: Identity, command_id: str, at: datetime, *, charged: bool = True) -> None:
        """Publish the cancellation of one command (see :meth:`cancel_many`).

        Raises:
            RateLimited: the tenant's edge rate limit is exceeded (a cancellation costs
                what a submit does).
            KafkaUnavailable: the broker did not acknowledge it.
        """
        (outcome,) = await self.cancel_many(identity, [command_id], at, charged=charged)
        if outcome is not None:
            raise outcome

    async def cancel_many(
        self, identity: Identity, command_ids: Sequence[str], at: datetime, *, charged: bool = True
    ) -> list[KafkaUnavailable | None]:
        """Publish a TaskCancel per command, with one round of broker acknowledgements: on
        the cancels topic, which every worker process follows (a command still queued or
        waiting to retry there ends without running), and after the command on the
        commands topic (same key, so the same partition), where every ingress replica
        reads it for the command's MCP task. Each id succeeds (None) or fails on its own.
        Not ``charged``: the cancellation of a call its client gave up on, which the call's
        own submit already paid for (and at most one per call).

        Raises:
            RateLimited: the tenant has fewer tokens left than ids (one each, as submits).
            BadRequest: more ids than the bucket ever holds.
            KafkaUnavailable: the producer is not running.
        """
        if self.producer is None:
            raise KafkaUnavailable("the ingress producer is not running")
        if len(command_ids) > self._buckets.burst:
            raise BadRequest(f"{len(command_ids)} cancellations are more than a tenant may send at once here")
        if charged:
            self._charge(identity, max(1, len(command_ids)))
        deadline = asyncio.get_running_loop().time() + self._publish_budget
        key, stamp = identity.tenant_id.encode(), int(at.timestamp() * 1000)
        outcomes: list[KafkaUnavailable | None] = [None] * len(command_ids)
        acks: list[list[asyncio.Future[Any]]] = []
        away = False
        for index, command_id in enumerate(command_ids):
            cancel = TaskCancel(
                command_id=command_id, tenant_id=identity.tenant_id, space_id=identity.space_id, cancelled_at=at
            )
            headers = Headers.for_command(
                identity.tenant_id, identity.space_id, command_id, kind=TASK_CANCEL_KIND, schema="1"
            )
            value = cancel.to_bytes()
            try:
                async with asyncio.timeout_at(deadline):
                    pair = [
                        await self.producer.send(topic, value=value, key=key, headers=headers, timestamp_ms=stamp)
                        for topic in (self.settings.topics.cancels, self.topic)
                    ]
                for ack in pair:  # read even when nobody waits for it any more (no "never retrieved")
                    ack.add_done_callback(_retrieve)
                acks.append(pair)
            except (KafkaError, OSError, TimeoutError) as exc:
                outcomes[index] = KafkaUnavailable(f"publishing the cancellation failed ({type(exc).__name__})")
                away = away or _broker_away(exc)
                acks.append([])
        for index, sent in enumerate(acks):
            if outcomes[index] is not None:
                continue
            try:
                async with asyncio.timeout_at(deadline):
                    await asyncio.gather(*(asyncio.shield(ack) for ack in sent))
            except (KafkaError, OSError, TimeoutError) as exc:
                outcomes[index] = KafkaUnavailable(f"the broker did not acknowledge the cancellation ({type(exc).__name__})")
                away = away or _broker_away(exc)
        if away:
            self.broker_failing = True
        elif all(outcome is None for outcome in outcomes):
            self.broker_failing = False
        return outcomes

    # -- internals -----------------------------------------------------------------------

    @property
    def _publish_budget(self) -> float:
        """How long a publish may wait for the broker: short while it seems away."""
        return self._failing_send_timeout if self.broker_failing else self._send_timeout

    def _charge(self, identity: Identity, tokens: int) -> None:
        """Take ``tokens`` from the tenant's edge bucket.

        Raises:
            RateLimited: fewer are left.
        """
        wait = self._buckets.take(identity.tenant_id, tokens)
        if wait > 0:
            if self.metrics is not None:
                self.metrics.edge_rate_limited(identity.tenant_id)
            raise RateLimited("request rate limit of this tenant exceeded", retry_after=wait)

    @staticmethod
    def _keyed(identity: Identity, item: Submission) -> tuple[str, str]:
        """The item's idempotency key (generated if it has none) and the command id it gives."""
        key = item.idempotency_key or f"auto-{uuid.uuid4().hex}"
        return key, command_id_for(identity.tenant_id, identity.space_id, key)

    def _prepare(
        self, identity: Identity, item: Submission, source: CommandSource, key: str, command_id: str
    ) -> tuple[Command, asyncio.Future[None] | None, list[tuple[str, bytes]] | None]:
        """``(command, inflight, headers)``: headers only for a new command to publish.

        For a replay, ``inflight`` is the acknowledgement its first publish still awaits.
        """
        known = self._accepted(command_id)
        if known is not None:
            if known.action != item.action or not _same_json(known.arguments, item.arguments):
                raise _reused(command_id)
            return known, self._inflight.get(command_id), None
        result = self.results.get(command_id, _visible_to(identity))
        if result is not None:
            # A Result names the action, not the arguments: a key reused with other
            # arguments only is answered as a replay once the call finished.
            if result.action != item.action:
                raise _reused(command_id)
            return _from_result(result, identity), None, None
        now = datetime.now(UTC)
        deadline = item.deadline or now + DEFAULT_DEADLINE
        deadline = min(deadline, now + MAX_DEADLINE)
        try:
            with capture_spans() as captured:
                with self._tracer.start_as_current_span(
                    f"{self.topic} publish",
                    kind=SpanKind.PRODUCER,
                    attributes={
                        "messaging.system": "kafka",
                        "messaging.operation.type": "publish",
                        "messaging.destination.name": self.topic,
                        "messaging.message.id": command_id,
                        "switchyard.tenant_id": identity.tenant_id,
                        "switchyard.space_id": identity.space_id,
                        "switchyard.action": item.action[:64],
                        "switchyard.source": source.value,
                    },
                ):
                    headers: list[tuple[str, bytes]] = []
                    inject(headers)
                    trace_id = current_trace_id()
            command = Command(
                command_id=command_id,
                tenant_id=identity.tenant_id,
                space_id=identity.space_id,
                user_id=identity.user_id,
                role=identity.role,
                action=item.action,
                arguments=item.arguments,
                idempotency_key=key,
                submitted_at=now,
                deadline=deadline,
                source=source,
                spans=captured,
            )
        except ValidationError as exc:
            raise from_validation(exc) from None
        if source is CommandSource.REST and self.check_action is not None:
            # After the model's validation: the arguments are bounded before a schema
            # looks at them.
            self.check_action(identity, command_id, command.action, command.arguments)
        if logger.isEnabledFor(logging.DEBUG):
            with bind(command_id=command_id, trace_id=trace_id):
                logger.debug("command prepared", extra={"fields": {"action": item.action[:64]}})
        return command, None, headers

    def remembers(self, command_id: str) -> bool:
        """Whether this replica published ``command_id`` (first or as a replay) lately."""
        return command_id in self._submitted

    def _replays(self, identity: Identity, command_id: str) -> bool:
        """Whether ``command_id`` is a command this replica accepted or holds the Result of
        (a cheap look, before the batch is charged; ``_prepare`` decides)."""
        return command_id in self._submitted or self.results.owner(command_id) == (
            identity.tenant_id, identity.space_id,
        )

    def _accepted(self, command_id: str) -> Command | None:
        """A command this replica accepted and still remembers."""
        kept = self._submitted.get(command_id)
        return None if kept is None else Command.from_bytes(kept[1])

    async def _send(self, command: Command, trace: list[tuple[str, bytes]]) -> asyncio.Future[Any]:
        """Hand the record to the producer; its acknowledgement settles the command.

        The acknowledgement is handled by a callback, not by whoever awaits it: a request
        cancelled while it waits (a client that disconnects, the edge timeout) leaves the
        record to be acknowledged or failed all the same, and a concurrent replay waiting
        on the same command is always answered.
        """
        if self.producer is None:
            raise KafkaUnavailable("the ingress producer is not running")
        headers = Headers.for_command(
            command.tenant_id,
            command.space_id,
            command.command_id,
            kind=COMMAND_KIND,
            schema=COMMAND_SCHEMA,
        )
        headers += trace
        # Mark in flight before the first await: a concurrent replay must find it.
        value = command.to_bytes()
        inflight: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._inflight[command.command_id] = inflight
        self._submitted.put(command.command_id, (command.tenant_id, value))
        try:
            ack = await self.producer.send(
                self.topic,
                value=value,
                key=command.tenant_id.encode(),
                headers=headers,
            )
        except (KafkaError, OSError) as exc:
            self._fail(command, inflight, exc)
            raise KafkaUnavailable(f"publishing failed ({type(exc).__name__})") from exc
        except BaseException as exc:
            # Cancelled before the producer took the record: it was never published.
            self._fail(command, inflight, exc, broker_away=False)
            raise
        ack.add_done_callback(lambda done: self._acknowledged(command, inflight, done))
        return ack

    def _acknowledged(
        self, command: Command, inflight: asyncio.Future[None], ack: asyncio.Future[Any]
    ) -> None:
        error = TimeoutError() if ack.cancelled() else ack.exception()
        if error is not None:
            self._fail(command, inflight, error)
            return
        self.broker_failing = False
        if inflight.done():
            return  # given up on (timed out) before the broker answered
        inflight.set_result(None)
        if self._inflight.get(command.command_id) is inflight:
            del self._inflight[command.command_id]
        if self.metrics is not None:
            self.metrics.command_accepted(command)
        if logger.isEnabledFor(logging.INFO):
            with bind(
                tenant_id=command.tenant_id,
                space_id=command.space_id,
                command_id=command.command_id,
            ):
                logger.info("command accepted", extra={"fields": {"action": command.action}})

    async def _settle(
        self, command: Command, ack: asyncio.Future[Any], deadline: float, *, cut: bool = False
    ) -> tuple[Command, bool] | KafkaUnavailable:
        """``cut``: the deadline is the request's, not the publish budget."""
        inflight = self._inflight.get(command.command_id)
        try:
            async with asyncio.timeout_at(deadline):
                # Shielded: a cancelled caller must not cancel the producer's future,
                # whose callback still settles the command.
                await asyncio.shield(ack)
        except (KafkaError, OSError, TimeoutError) as exc:
            if inflight is not None:
                away = not cut if isinstance(exc, TimeoutError) else None
                self._fail(command, inflight, exc, broker_away=away)
            return KafkaUnavailable(f"the broker did not acknowledge ({type(exc).__name__})")
        return command, True

    def _fail(
        self, command: Command, inflight: asyncio.Future[None], exc: BaseException, *, broker_away: bool | None = None
    ) -> None:
        """Forget a publish that did not happen, once, so a retry by the caller publishes
        again instead of "replaying" nothing, and wake any replay waiting on it.
        ``broker_away`` (default: judged from ``exc``) starts the short publish budget."""
        if _broker_away(exc) if broker_away is None else broker_away:
            self.broker_failing = True
        if inflight.done():
            return
        inflight.set_exception(KafkaUnavailable(f"publishing failed ({type(exc).__name__})"))
        inflight.exception()  # retrieved: nobody may be waiting on it
        if self._inflight.get(command.command_id) is inflight:
            del self._inflight[command.command_id]
            self._submitted.pop(command.command_id)
        with bind(tenant_id=command.tenant_id, command_id=command.command_id):
            logger.warning("command not accepted: %s", type(exc).__name__)


def _broker_away(exc: BaseException) -> bool:
    """Whether ``exc`` says the broker cannot be reached or does not answer in time (not
    a refusal of one record: too large, not authorized)."""
    if isinstance(exc, KafkaError):
        return bool(exc.retriable) or isinstance(exc, KafkaTimeoutError)
    return isinstance(exc, (OSError, TimeoutError))


def _retrieve(ack: asyncio.Future[Any]) -> None:
    if not ack.cancelled():
        ack.exception()


def _visible_to(identity: Identity) -> Any:
    def visible(item: Command | Result) -> bool:
        # A command is its tenant's and its workspace's: another workspace's key, even of
        # the same tenant, must not read it.
        return item.tenant_id == identity.tenant_id and item.space_id == identity.space_id

    return visible


def _same_json(a: Any, b: Any) -> bool:
    """Equal as JSON values: Python's ``==`` takes ``True`` for ``1``, JSON does not."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same_json(v, b[k]) for k, v in a.items())
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(_same_json, a, b))
    return bool(a == b)


def _reused(command_id: str) -> Conflict:
    """A 409 for a key of this workspace used before for another call: it names that
    call's command (the caller's own), whose status answers what the key did."""
    error = Conflict("this idempotency key was already used for a different command")
    error.details = {"command_id": command_id}
    return error


def _from_result(result: Result, identity: Identity) -> Command:
    """A Command rebuilt from its final Result, to answer a replay this replica did not accept."""
    return Command(
        command_id=result.command_id,
        tenant_id=result.tenant_id,
        space_id=result.space_id,
        user_id=result.user_id,
        role=identity.role,
        action=result.action,
        idempotency_key=result.idempotency_key,
        submitted_at=result.times.submitted_at,
        deadline=result.times.finished_at,
        source=CommandSource.REST,
    )
