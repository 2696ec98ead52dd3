"""Running one command: credentials, the connector call, in-process retries, the verdict.

The verdict is data (:class:`Outcome`): the records to produce in the pool's next Kafka
transaction — a final Result, a retry-tier hand-off, and/or a dead letter. Nothing here
touches Kafka, so the pool alone decides when an outcome is durable.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from opentelemetry import context as otel_context
from opentelemetry.trace import SpanKind, Status, StatusCode

from core.errors import CommandError, PermanentError, RetryableError
from core.logs import bind
from core.telemetry import capture_spans, current_trace_id, extract, inject, tracer
from core.vault import TenantSecret
from schemas import ErrorCode, ErrorInfo, Result, ResultStatus, RoutedCommand, SpanRecord, Topics
from schemas.topics import Headers

from ._breaker import CircuitBreakers
from ._credentials import Credentials, CredentialStoreDown, token_expired
from ._results import KIND_DEAD_LETTER, KIND_RESULT, KIND_RETRY, Outgoing, build_result, record_for
from ._retry import Decision, RetryPolicy, Step, decide
from ._scrub import scrub_error, scrub_output
from .connectors._base import (
    CallHeld,
    Connector,
    ConnectorCall,
    CredentialsExpired,
    Doubt,
    held_call,
)

__all__ = [
    "IN_DOUBT_HEADER",
    "Abandoned",
    "CheckFailed",
    "Executor",
    "Job",
    "Outcome",
    "StillOurs",
    "upstream_idempotency_key",
    "upstream_key_for",
]

logger = logging.getLogger(__name__)

# Longest pause between two tries of the credential store while it does not answer.
CREDENTIAL_WAIT_MAX = 5.0
# Failures that say something about this tenant's credentials or API: they feed its breaker.
_BREAKER_CODES = frozenset(
    {
        ErrorCode.CREDENTIALS_MISSING,
        ErrorCode.CREDENTIALS_INVALID,
        ErrorCode.UPSTREAM_UNAVAILABLE,
        ErrorCode.UPSTREAM_TIMEOUT,
        ErrorCode.UPSTREAM_RATE_LIMITED,
    }
)
# Refused here before any request was made (the connector's own argument check, a host
# off the allow-list) or a fault of ours: they say nothing of the upstream's health, so
# they neither close a breaker nor reset its count of failures.
_NO_VERDICT_CODES = frozenset({ErrorCode.INVALID_ARGUMENTS, ErrorCode.HOST_NOT_ALLOWED, ErrorCode.INTERNAL})


# Failures after which the request may still have taken effect upstream: no answer, a
# dropped connection, a server error (Slack: "it's possible some aspect of the operation
# succeeded"). Before the call is made again, the connector may look for that effect.
_AMBIGUOUS_CODES = frozenset({ErrorCode.UPSTREAM_TIMEOUT, ErrorCode.UPSTREAM_UNAVAILABLE})
# How far before the command's submission (ingress clock) an upstream's clock may put an
# attempt's effect.
DOUBT_CLOCK_MARGIN = 60.0
# On a record handed to a retry tier (or parked) while in doubt: its next run checks too.
IN_DOUBT_HEADER = "sy-in-doubt"


# Asked before an in-process retry: may this worker still run the command?
StillOurs = Callable[[], Awaitable[bool]]


class Abandoned(Exception):
    """The command's partition was given away while it waited to retry: its new owner runs it."""


@dataclass(frozen=True, slots=True)
class Job:
    command: RoutedCommand
    headers: Mapping[str, str]
    next_tier: int  # tier a failed attempt goes to: 0 from the connector topic, i+1 from tier i
    # Set when another owner of the record may have started it: the Unix time by which
    # any such attempt had been sent (the partition's assignment here).
    doubt_settled_at: float | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    records: list[Outgoing]
    status: ResultStatus | None  # None: handed to a retry tier, no final Result yet
    result: Result | None = None  # the final Result, for metrics
    # Handed to a retry tier: the error that sent it there and the command's trace.
    handoff_error: ErrorInfo | None = None
    trace_id: str | None = None


def now() -> datetime:
    return datetime.now(UTC)


def upstream_idempotency_key(command: RoutedCommand) -> str:
    """The key sent upstream: stable for every redelivery and retry of one command.

    Derived from the caller's idempotency key (not the command id) so that a client
    resubmitting the same request also maps to the same upstream side effect; hashed
    with the tenant id, and the workspace's where keys are per workspace (commands
    published since 2026-11-29), so two tenants' or workspaces' keys can never collide
    on a shared endpoint (the generic HTTP connector) or in a check for an earlier
    attempt's effect, and of fixed length so it fits every API's limit.
    """
    space = command.space_id if command.keyed_per_workspace() else None
    return upstream_key_for(command.tenant_id, space, command.idempotency_key)


def upstream_key_for(tenant_id: str, space_id: str | None, idempotency_key: str) -> str:
    """:func:`upstream_idempotency_key` from its parts (``space_id`` None: keyed per tenant)."""
    scope = tenant_id if space_id is None else f"{tenant_id}\0{space_id}"
    digest = hashlib.sha256(f"{scope}\0{idempotency_key}".encode()).hexdigest()
    return f"sy-{digest[:40]}"


class Executor:
    """Executes commands of one connector; shared by all of the pool's tasks."""

    def __init__(
        self,
        connector: Connector,
        topics: Topics,
        credentials: Credentials,
        breakers: CircuitBreakers,
        session: aiohttp.ClientSession,
        policy: RetryPolicy,
        *,
        base_url: str,
        timeout: float = 10.0,
    ) -> None:
        self.connector = connector
        self.topics = topics
        self.credentials = credentials
        self.breakers = breakers
        self.session = session
        self.policy = policy
        self.base_url = base_url
        self.timeout = timeout
        self._host = urlsplit(base_url).hostname or ""
        # Told of each command whose earlier attempt's effect was found upstream (metrics).
        self.on_found: Callable[[RoutedCommand], None] | None = None
        # Told how each call of the connector's operation ended, ``(outcome, operation,
        # seconds)``, the outcome "ok" or the error code's value (metrics). Checks for an
        # earlier effect are reads and not counted.
        self.on_call: Callable[[str, str, float], None] | None = None
        # Ids of commands waiting now for the credential store to answer (see _attempts),
        # and the longest pause between two of a command's tries of it.
        self._waiting: set[str] = set()
        self.credential_wait_max = CREDENTIAL_WAIT_MAX
        # Asked before each attempt: whether the command's caller cancelled it (the
        # pool's CancelFeed). A cancelled command ends without another attempt.
        self.cancelled: Callable[[RoutedCommand], bool] | None = None

    async def run(self, job: Job, still_ours: StillOurs | None = None) -> Outcome:
        """Execute ``job`` and return the records that settle this delivery.

        Raises:
            Abandoned: ``still_ours()`` answered False before an in-process retry, or
                between a check for an earlier attempt's effect and the call.
        """
        command = job.command
        started = now()
        with capture_spans() as spans:
            with tracer().start_as_current_span(
                "worker.execute",
                context=extract(job.headers),
                kind=SpanKind.CONSUMER,
                attributes={
                    "messaging.system": "kafka",
                    "messaging.operation.type": "process",
                    "messaging.destination.name": self.topics.connector(self.connector.name),
                    "switchyard.tenant_id": command.tenant_id,
                    "switchyard.command_id": command.command_id,
                    "switchyard.connector": command.connector,
                    "switchyard.operation": command.operation,
                    "switchyard.attempt": command.attempt,
                },
                record_exception=False,
                set_status_on_exception=False,
            ) as worker_span:
                context = otel_context.get_current()
                trace_id = current_trace_id()
                with bind(tenant_id=command.tenant_id, command_id=command.command_id, trace_id=trace_id):
                    verdict = await self._attempts(command, job, still_ours)
                    status_name = verdict.step.value if verdict.status is None else verdict.status.value
                    worker_span.set_attribute("switchyard.outcome", status_name)
                    if verdict.status is not ResultStatus.SUCCEEDED:
                        worker_span.set_status(Status(StatusCode.ERROR, status_name))
        outcome = self._records(job, verdict, started, trace_id, spans, context)
        level = logging.DEBUG if outcome.status is ResultStatus.SUCCEEDED else logging.INFO
        # Checked first: binding the log context per command costs more than the line.
        if logger.isEnabledFor(level):
            with bind(tenant_id=command.tenant_id, command_id=command.command_id, trace_id=trace_id):
                final = outcome.status.value if outcome.status else "handed to a retry tier"
                logger.log(level, "command %s", final, extra={"fields": {"attempts": verdict.attempts}})
        return outcome

    async def _attempts(self, command: RoutedCommand, job: Job, still_ours: StillOurs | None) -> _Verdict:
        next_tier = job.next_tier
        errors = list(command.errors)
        doubt = _first_doubt(command, job)
        key = command.tenant_id
        if command.expired(now()):
            return _Verdict(Step.EXPIRED, errors, None, _expired_info(errors))
        if self._was_cancelled(command):
            return await self._end_cancelled(command, errors, doubt)
        problem = self._check_operation(command)
        if problem is not None:
            return _Verdict(Step.FAIL, [*errors, problem], None, problem)
        failures = 0
        pauses = 0  # waits for the credential store
        probe = 0  # the number of the half-open breaker's one probe while this command holds it
        try:
            while True:
                if not probe:
                    admitted = self.breakers.admit(key)
                    if admitted is None:
                        info = RetryableError(
                            ErrorCode.CIRCUIT_OPEN,
                            f"circuit open for tenant {key} on {self.connector.name}",
                            retry_after=round(self.breakers.retry_after(key), 3),
                        ).to_info()
                        errors.append(info)
                        if self._was_cancelled(command):  # no look through an open breaker
                            return _cancelled(errors, doubt)
                        decision = self._decide(info, failures, next_tier, command, in_process=False)
                        return _Verdict(decision.step, errors, None, info, decision, in_doubt=doubt is not None)
                    # A probe is kept through this command's in-process retries until a verdict.
                    probe = admitted
                secret: list[TenantSecret] = []
                try:
                    output = await self._attempt(command, secret, doubt, still_ours)
                except _DeadlinePassed:
                    # Passed while credentials were read or refreshed, or while an earlier
                    # effect was looked for: the request was not sent, and is not sent late.
                    return _Verdict(Step.EXPIRED, errors, None, _expired_info(errors))
                except _Cancelled:
                    # Cancelled while credentials were read or an earlier effect looked for:
                    # the request was not sent.
                    return _cancelled(errors, doubt)
                except CommandError as exc:
                    if isinstance(exc, CallHeld) and still_ours is not None:
                        # Stopped before its request was written (the loop had stalled):
                        # no attempt, no failure. Again once the group confirms this member.
                        if not await still_ours():
                            raise Abandoned(command.command_id) from None
                        if command.expired(now()):  # the hold outlasted the caller's deadline
                            return _Verdict(Step.EXPIRED, errors, None, _expired_info(errors))
                        if self._was_cancelled(command):
                            return await self._end_cancelled(command, errors, doubt)
                        continue
                    if isinstance(exc, CredentialStoreDown):
                        # Our own infrastructure, not the tenant's API, and nothing was
                        # sent: no attempt is spent and no breaker learns of it. The command
                        # waits here, so a pool whose slots all wait takes no more work,
                        # until the store answers, the deadline passes or the partition moves.
                        pauses += 1
                        self._waiting.add(command.command_id)
                        await asyncio.sleep(min(self.credential_wait_max, 0.5 * 2 ** min(pauses - 1, 10)))
                        if still_ours is not None and not await still_ours():
                            raise Abandoned(command.command_id) from None
                        if command.expired(now()):
                            return _Verdict(Step.EXPIRED, errors, None, _expired_info(errors))
                        if self._was_cancelled(command):
                            return await self._end_cancelled(command, errors, doubt)
                        continue
                    info = scrub_error(exc.to_info(), secret[-1] if secret else None)
                    # A failed check sent nothing: the doubt stays as it was.
                    if info.code in _AMBIGUOUS_CODES and not isinstance(exc, CheckFailed):
                        doubt = _doubt(command, settled_at=time.time())
                else:
                    self.breakers.success(key, probe)
                    probe = 0
                    output = scrub_output(output, secret[-1] if secret else None)
                    return _Verdict(Step.FAIL, errors, output, None, status=ResultStatus.SUCCEEDED)
                failures += 1
                errors.append(info)
                decision = self._decide(info, failures, next_tier, command)
                if decision.step is Step.RETRY_NOW:
                    await asyncio.sleep(decision.delay)
                    if still_ours is not None and not await still_ours():
                        raise Abandoned(command.command_id)
                    if self._was_cancelled(command):
                        if probe:  # the look that follows is no probe of the upstream
                            self.breakers.cancel_probe(key, probe)
                            probe = 0
                        return await self._end_cancelled(command, errors, doubt)
                    continue
                if info.code in _BREAKER_CODES:
                    self.breakers.failure(key, probe)
                    probe = 0
                elif info.code not in _NO_VERDICT_CODES:  # those: no verdict, the probe is freed below
                    self.breakers.success(key, probe)  # the API answered with a verdict on the request itself
                    probe = 0
                if decision.step is not Step.FAIL and self._was_cancelled(command):
                    # Cancelled while the attempt ran: ended now, not handed to a retry tier.
                    return await self._end_cancelled(command, errors, doubt)
                return _Verdict(decision.step, errors, None, info, decision, in_doubt=doubt is not None)
        finally:
            self._waiting.discard(command.command_id)
            # No verdict for the breaker (a fault, a cancellation, a command left to its
            # partition's new owner): free the probe this command holds, or its tenant
            # would wait for that verdict for ever.
            if probe:
                self.breakers.cancel_probe(key, probe)

    def _was_cancelled(self, command: RoutedCommand) -> bool:
        return self.cancelled is not None and self.cancelled(command)

    async def _end_cancelled(self, command: RoutedCommand, errors: list[ErrorInfo], doubt: Doubt | None) -> _Verdict:
        """The verdict on a cancelled command. In doubt (an earlier attempt may have taken
        effect), the connector first looks for that effect, as a retry would: found, the
        command succeeded (its caller must hear that it ran). Not found, the doubt stays:
        a connector's None also stands for "could not tell" (a Notion database without a
        key property, a Slack channel not listed)."""
        if doubt is None or not self.connector.finds_done:
            return _cancelled(errors, doubt)
        secret: TenantSecret | None = None
        try:
            secret = await self.credentials.get(command.tenant_id)
            if self.connector.oauth and token_expired(secret.data):
                secret = await self.credentials.refresh(command.tenant_id, secret)
            timeout = max(0.1, min(self.timeout, (command.deadline - now()).total_seconds()))
            call = self._connector_call(command, secret, timeout, {})
            async with asyncio.timeout(timeout + 1.0 + self.connector.check_wait(doubt)):
                found = await self.connector.find_done(call, doubt)
        except Exception as exc:  # could not look (a held call too): the doubt stays, and the Result says so
            logger.info("could not look for an earlier effect of a cancelled command (%s)", type(exc).__name__)
            return _cancelled(errors, doubt)
        if found is None:
            return _cancelled(errors, doubt)
        if self.on_found is not None:
            self.on_found(command)
        return _Verdict(Step.FAIL, errors, scrub_output(found, secret), None, status=ResultStatus.SUCCEEDED)

    def _connector_call(
        self, command: RoutedCommand, secret: TenantSecret, timeout: float, trace_headers: dict[str, str]
    ) -> ConnectorCall:
        return ConnectorCall(
            tenant_id=command.tenant_id,
            operation=command.operation,
            arguments=command.resolved_arguments,
            credentials=secret.data,
            base_url=self.base_url,
            idempotency_key=upstream_idempotency_key(command),
            session=self.session,
            timeout=timeout,
            allowed_hosts=tuple(command.connector_options.allowed_hosts),
            trace_headers=trace_headers,
        )

    @property
    def waiting_for_credentials(self) -> int:
        """Commands whose last try of the credential store found it down (metrics)."""
        return len(self._waiting)

    def _attempted(self, outcome: str | None, operation: str, seconds: float) -> None:
        if self.on_call is None or outcome is None:
            return
        try:
            self.on_call(outcome, operation, seconds)
        except Exception:  # a metric must never change a command's Result
            logger.exception("reporting a call's outcome failed")

    def _decide(
        self, info: ErrorInfo, failures: int, next_tier: int, command: RoutedCommand, *, in_process: bool = True
    ) -> Decision:
        return decide(
            self.policy,
            retryable=info.retryable,
            retry_after=info.retry_after,
            failures_here=failures,
            next_tier=next_tier,
            now=now(),
            deadline=command.deadline,
            in_process=in_process,
        )

    def _check_operation(self, command: RoutedCommand) -> ErrorInfo | None:
        if command.connector != self.connector.name:
            return PermanentError(
                ErrorCode.INTERNAL, f"command for {command.connector} reached the {self.connector.name} pool"
            ).to_info()
        if command.operation not in self.connector.operations:
            return PermanentError(
                ErrorCode.INVALID_ARGUMENTS, f"{self.connector.name} has no operation {command.operation}"
            ).to_info()
        return None

    async def _attempt(
        self, command: RoutedCommand, used: list[TenantSecret], doubt: Doubt | None,
        still_ours: StillOurs | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        secret = await self.credentials.get(command.tenant_id)
        self._waiting.discard(command.command_id)
        used.append(secret)
        if self.connector.oauth and token_expired(secret.data):
            secret = await self.credentials.refresh(command.tenant_id, secret)
            used.append(secret)
        try:
            return await self._call(command, secret, doubt, still_ours)
        except CredentialsExpired:
            if not self.connector.oauth:
                raise
        # Exactly one refresh and one retry per 401; a second 401 is final.
        secret = await self.credentials.refresh(command.tenant_id, secret)
        used.append(secret)
        try:
            return await self._call(command, secret, doubt, still_ours)
        except CredentialsExpired:
            self.credentials.invalidate(command.tenant_id)
            raise

    async def _call(
        self, command: RoutedCommand, secret: TenantSecret, doubt: Doubt | None, still_ours: StillOurs | None
    ) -> dict[str, Any]:
        name, operation = self.connector.name, command.operation
        remaining = (command.deadline - now()).total_seconds()
        if remaining <= 0:
            raise _DeadlinePassed
        timeout = max(0.1, min(self.timeout, remaining))
        with tracer().start_as_current_span(
            f"upstream.{name}.{operation}",
            kind=SpanKind.CLIENT,
            attributes={"server.address": self._host, "switchyard.connector": name},
            record_exception=False,
            set_status_on_exception=False,
        ) as upstream:
            carrier: list[tuple[str, bytes]] = []
            inject(carrier)
            call = self._connector_call(command, secret, timeout, {k: v.decode() for k, v in carrier})
            try:
                if doubt is not None and self.connector.finds_done:
                    within = timeout + 1.0 + self.connector.check_wait(doubt)
                    found = await self._find_done(call, doubt, within)
                    if found is not None:
                        upstream.set_attribute("switchyard.found_done", True)
                        if self.on_found is not None:
                            self.on_found(command)
                        return found
                    # Fenced again between the check and the act: a check that took long
                    # (a wait for an index) may have outlived the partition's revoke grace,
                    # and the new owner's check may already have run.
                    if still_ours is not None and not await still_ours():
                        raise Abandoned(command.command_id)
                    if command.expired(now()):
                        raise _DeadlinePassed
                # The last look before the request: a cancellation that came while the
                # credentials were read or an earlier effect was looked for.
                if self._was_cancelled(command):
                    raise _Cancelled
                # The connector sets its own request timeout; this bound catches one that does not.
                called = time.perf_counter()
                try:
                    async with asyncio.timeout(timeout + 1.0):
                        output = await self.connector.execute(call)
                except BaseException as exc:
                    self._attempted(_outcome_of(exc), operation, time.perf_counter() - called)
                    raise
                self._attempted("ok", operation, time.perf_counter() - called)
                return output
            except CommandError as exc:
                upstream.set_status(Status(StatusCode.ERROR, exc.code.value))
                upstream.set_attribute("error.type", exc.code.value)
                if exc.http_status is not None:
                    upstream.set_attribute("http.response.status_code", exc.http_status)
                raise
            except TimeoutError:
                upstream.set_status(Status(StatusCode.ERROR, "timeout"))
                raise RetryableError(
                    ErrorCode.UPSTREAM_TIMEOUT, f"{name}.{operation}: no answer in {timeout:.1f}s"
                ) from None
            except aiohttp.ClientError as exc:
                if (held := held_call(exc)) is not None:  # held in aiohttp's body writer
                    raise held from None
                upstream.set_status(Status(StatusCode.ERROR, "connection"))
                raise RetryableError(
                    ErrorCode.UPSTREAM_UNAVAILABLE, f"{name}.{operation}: {type(exc).__name__}"
                ) from None

    async def _find_done(self, call: ConnectorCall, doubt: Doubt, within: float) -> dict[str, Any] | None:
        """An earlier attempt's effect, found upstream; None when none is found or the
        upstream refuses to be read (then the call is made as it would have been).

        Raises:
            CredentialsExpired: the upstream refused the token (refreshed, then checked again).
            CheckFailed: the check failed otherwise; the command is retried, still in doubt.
        """
        try:
            async with asyncio.timeout(within):
                found = await self.connector.find_done(call, doubt)
        except (CredentialsExpired, CallHeld):
            raise
        except PermanentError as exc:
            logger.warning("could not check for an earlier attempt's effect (%s); calling again", exc.code.value)
            return None
        except RetryableError as exc:
            raise CheckFailed(
                exc.code, exc.message, retry_after=exc.retry_after, http_status=exc.http_status
            ) from None
        except TimeoutError:
            raise CheckFailed(
                ErrorCode.UPSTREAM_TIMEOUT, f"{call.operation}: the check for an earlier effect timed out"
            ) from None
        except aiohttp.ClientError as exc:
            raise CheckFailed(
                ErrorCode.UPSTREAM_UNAVAILABLE, f"{call.operation}: checking for an earlier effect: {type(exc).__name__}"
            ) from None
        except Exception as exc:  # a bug or an odd answer in the check: do not act blindly
            logger.warning("the check for an earlier attempt's effect failed (%s)", type(exc).__name__)
            raise CheckFailed(
                ErrorCode.UPSTREAM_UNAVAILABLE, f"{call.operation}: could not check for an earlier effect"
            ) from None
        if found is not None:
            logger.info("an earlier attempt had taken effect; not calling again")
        return found

    def _records(
        self,
        job: Job,
        verdict: _Verdict,
        started: datetime,
        trace_id: str | None,
        spans: list[SpanRecord],
        context: otel_context.Context,
    ) -> Outcome:
        command, topics = job.command, self.topics
        finished = now()
        errors = verdict.errors[-100:]
        attempts = sum(1 for e in errors if e.code is not ErrorCode.CIRCUIT_OPEN)
        if verdict.status is ResultStatus.SUCCEEDED:
            attempts += 1
        records: list[Outgoing] = []
        status = verdict.status
        error = verdict.error
        if verdict.step is Step.TIER and status is None:
            assert verdict.decision is not None and verdict.decision.tier is not None
            handoff = command.model_copy(
                update={
                    "errors": errors,
                    "spans": _merge_spans(command, spans),
                    "attempt": min(100, command.attempt + 1),
                    "not_before": verdict.decision.not_before,
                }
            )
            topic = topics.retry(command.connector, verdict.decision.tier)
            record = record_for(topic, command, handoff, KIND_RETRY, context)
            concurrency = job.headers.get(Headers.CONCURRENCY)
            if concurrency is not None:  # the workspace's cap holds for its retries too
                record.headers.append((Headers.CONCURRENCY, concurrency.encode()))
            if verdict.in_doubt:
                record.headers.append((IN_DOUBT_HEADER, b"1"))
            return Outcome([record], None, handoff_error=error, trace_id=trace_id)
        if status is None:
            if verdict.step is Step.DEAD_LETTER:
                status = ResultStatus.DEAD_LETTERED
                last = error.code.value if error else "unknown"
                error = ErrorInfo(
                    code=ErrorCode.RETRIES_EXHAUSTED,
                    message=f"gave up after {attempts} attempts (last: {last})",
                    http_status=error.http_status if error else None,
                )
            elif verdict.step is Step.EXPIRED:
                status = ResultStatus.EXPIRED
                error = _expired_info(errors)
            else:
                status = ResultStatus.FAILED
            if verdict.step in (Step.DEAD_LETTER, Step.EXPIRED) and errors:
                # The trail (errors and spans so far) only for records that carry the command on.
                trail = command.model_copy(update={"errors": errors, "spans": _merge_spans(command, spans)})
                records.append(record_for(topics.dead_letters, command, trail, KIND_DEAD_LETTER, context))
        try:
            result = build_result(
                command,
                status,
                output=verdict.output,
                error=error,
                attempts=attempts,
                started_at=started,
                finished_at=finished,
                trace_id=trace_id,
                spans=spans,
            )
        except ValueError:
            # The upstream answer broke the Result bounds (size, depth or a key's length;
            # pydantic's ValidationError is a ValueError too): report, not crash.
            result = build_result(
                command,
                ResultStatus.FAILED,
                error=ErrorInfo(code=ErrorCode.INTERNAL, message="connector output exceeds Result bounds"),
                attempts=attempts,
                started_at=started,
                finished_at=finished,
                trace_id=trace_id,
                spans=spans,
            )
        records.append(record_for(topics.results, command, result, KIND_RESULT, context))
        return Outcome(records, result.status, result)


@dataclass(slots=True)
class _Verdict:
    step: Step
    errors: list[ErrorInfo]
    output: dict[str, Any] | None
    error: ErrorInfo | None
    decision: Decision | None = None
    status: ResultStatus | None = None
    in_doubt: bool = False  # a tier hand-off's next run must check for an earlier effect

    @property
    def attempts(self) -> int:
        return len(self.errors) + (1 if self.status is ResultStatus.SUCCEEDED else 0)


class _DeadlinePassed(Exception):
    """The command's deadline passed before its request was sent (it is not sent)."""


class CheckFailed(RetryableError):
    """The check for an earlier attempt's effect failed (retryably). The command is tried
    again, still in doubt; the check itself had no effect upstream, so the window of
    doubt keeps its end and a read made since still answers it."""


def _doubt(command: RoutedCommand, *, settled_at: float) -> Doubt:
    return Doubt(since=command.submitted_at.timestamp() - DOUBT_CLOCK_MARGIN, settled_at=settled_at)


def _first_doubt(command: RoutedCommand, job: Job) -> Doubt | None:
    """Whether the first attempt here may repeat an earlier one: the record may have been
    started by another owner, or an earlier tier's attempt failed ambiguously."""
    if job.doubt_settled_at is not None:
        return _doubt(command, settled_at=job.doubt_settled_at)
    if any(error.code in _AMBIGUOUS_CODES for error in command.errors):
        return _doubt(command, settled_at=time.time())
    return None


def _expired_info(errors: list[ErrorInfo]) -> ErrorInfo:
    """The error of an expired command: with what its last attempt heard (the upstream's
    status and the wait it asked for), as a consumer deciding what to do next needs."""
    if not errors:
        return ErrorInfo(code=ErrorCode.DEADLINE_EXPIRED, message="deadline passed before the command could run")
    last = errors[-1]
    said = [last.code.value]
    if last.http_status is not None:
        said.append(f"HTTP {last.http_status}")
    if last.retry_after is not None:
        said.append(f"retry after {last.retry_after:g}s")
    return ErrorInfo(
        code=ErrorCode.DEADLINE_EXPIRED,
        message=f"deadline passed, or would before the next attempt could start (last error: {', '.join(said)})",
        http_status=last.http_status,
        retry_after=last.retry_after,
    )


def _cancelled(errors: list[ErrorInfo], doubt: Doubt | None) -> _Verdict:
    """The verdict on a command its caller cancelled: ``rejected`` when nothing of it can
    have run, else ``failed`` (an earlier attempt may have taken effect)."""
    attempts = [error for error in errors if error.code is not ErrorCode.CIRCUIT_OPEN]
    if not attempts and doubt is None:
        info = ErrorInfo(code=ErrorCode.CANCELLED, message="cancelled by its caller before it ran")
        return _Verdict(Step.FAIL, errors, None, info, status=ResultStatus.REJECTED)
    message = "cancelled by its caller"
    if attempts:
        last = attempts[-1]
        said = last.code.value if last.http_status is None else f"{last.code.value}, HTTP {last.http_status}"
        message += f" after {len(attempts)} failed attempt(s) (last error: {said})"
    if doubt is not None:  # an attempt's answer was lost, or another worker may have started it
        message += "; an earlier attempt may have taken effect"
    info = ErrorInfo(code=ErrorCode.CANCELLED, message=message, http_status=attempts[-1].http_status if attempts else None)
    return _Verdict(Step.FAIL, errors, None, info, status=ResultStatus.FAILED)


class _Cancelled(Exception):
    """The command was cancelled before its request was sent (it is not sent)."""


def _merge_spans(command: RoutedCommand, spans: list[SpanRecord]) -> list[SpanRecord]:
    from schemas.trace import MAX_SPANS

    own = list(spans)[-MAX_SPANS:]
    return list(command.spans)[: MAX_SPANS - len(own)] + own


def _outcome_of(exc: BaseException) -> str | None:
    """The outcome label of a call that raised ``exc``; None when it was only cancelled
    or held before its request was written."""
    if held_call(exc) is not None:
        return None
    if isinstance(exc, CommandError):
        return exc.code.value
    if isinstance(exc, TimeoutError):
        return ErrorCode.UPSTREAM_TIMEOUT.value
    if isinstance(exc, aiohttp.ClientError):
        return ErrorCode.UPSTREAM_UNAVAILABLE.value
    if isinstance(exc, Exception):
        return ErrorCode.INTERNAL.value
    return None
