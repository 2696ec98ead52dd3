"""Task-augmented tools/call (MCP 2025-11-25): the task is the Kafka command.

``taskId`` is the command id. Status comes from the pipeline, which reads the results
topic, so ``tasks/get`` and ``tasks/result`` work on any replica once the Result is
there. The list behind ``tasks/list`` and cancellations come from a
:class:`~ingress.task_ledger.TaskLedger` that every replica fills from the commands
topic (the command carries its task ttl; a cancellation is a record after it).

Cancellation is best effort and says so: ``tasks/cancel`` publishes the command's
cancellation (``Pipeline.cancel``: a worker ends it without running it if it has not
started), and marks the task ``cancelled`` on every replica (the spec lets the receiver
keep it cancelled whatever the execution does); the status message says that a command
already running may still finish, and its outcome stays readable through the REST API.
"""

from __future__ import annotations

import base64
import binascii
import time
from datetime import UTC, datetime

from mcp_types import (
    INVALID_PARAMS,
    CallToolResult,
    CancelTaskResult,
    CreateTaskResult,
    GetTaskResult,
    ListTasksResult,
    Task,
    TaskStatus,
    TextContent,
)

from core.errors import KafkaUnavailable
from ingress._http import time_left
from ingress.contracts import Identity, Services
from ingress.errors import RateLimited
from ingress.task_ledger import TaskLedger
from schemas import Command, Result

from ._jsonrpc import TASK_STILL_WORKING, RpcError
from ._tools import ANSWER_MARGIN, result_to_call_result, rpc_from_ingress_error, unavailable_error

__all__ = ["RELATED_TASK_META_KEY", "TaskBook"]

RELATED_TASK_META_KEY = "io.modelcontextprotocol/related-task"
_TERMINAL: frozenset[str] = frozenset({"completed", "failed", "cancelled"})
# How often a tasks/result waiting for a Result looks whether the task was cancelled.
_CANCEL_LOOK = 0.5
_CANCEL_NOTE = (
    "Cancelled by the client. The command does not run if it had not started; one already "
    "running may still finish, and its outcome remains readable with GET /v1/commands/{id}."
)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


class TaskBook:
    """The task methods over the tasks of every tenant."""

    def __init__(
        self,
        services: Services,
        *,
        ttl_ms: int,
        poll_interval_ms: int,
        result_timeout: float,
    ) -> None:
        self._services = services
        # Keyed by (tenant, workspace, task id): a task is its workspace's, like its command.
        self._ledger = services.tasks if services.tasks is not None else TaskLedger()
        self._ttl_ms = ttl_ms
        self._poll_ms = poll_interval_ms
        self._result_timeout = result_timeout

    def ttl_for(self, requested_ttl: int | None) -> int:
        """The ttl (ms) a task gets: the one asked for, capped at the configured one.

        Raises:
            RpcError: -32602 for a negative ttl (before anything is published).
        """
        if requested_ttl is None:
            return self._ttl_ms
        if requested_ttl < 0:
            raise RpcError(INVALID_PARAMS, f"task.ttl must be 0 or more milliseconds, not {requested_ttl}")
        return min(requested_ttl, self._ttl_ms)

    def create(self, identity: Identity, command: Command, ttl: int) -> CreateTaskResult:
        """Record a task for a just-published command and describe it."""
        self._ledger.created(
            identity.tenant_id, identity.space_id, command.command_id, command.submitted_at, ttl
        )
        task = Task(
            task_id=command.command_id,
            status="working",
            created_at=_iso(command.submitted_at),
            last_updated_at=_iso(command.submitted_at),
            ttl=ttl,
            poll_interval=self._poll_ms,
        )
        return CreateTaskResult(task=task)

    def _describe(self, identity: Identity, task_id: str) -> tuple[Task, Result | None]:
        """The task's current state, bound to the caller's tenant and workspace.

        Raises:
            RpcError: -32602 when the workspace has no such task (another one's id
                included: it must read exactly like an unknown one), or when it has
                finished and this replica no longer holds its result.
        """
        entry = self._ledger.get(identity.tenant_id, identity.space_id, task_id)
        pipeline = self._services.pipeline
        result = pipeline.peek(identity, task_id)
        command = pipeline.known(identity, task_id) if result is None else None
        if result is None and pipeline.forgotten(identity, task_id):
            raise RpcError(INVALID_PARAMS, f"Task {task_id} has finished, but its result is no longer held")
        if entry is None and result is None and command is None:
            raise RpcError(INVALID_PARAMS, f"Unknown task: {task_id}")
        if result is not None:
            created = result.times.submitted_at
            updated = result.times.finished_at
        elif command is not None:
            created = updated = command.submitted_at
        else:
            assert entry is not None
            created = updated = entry.created_at
        status: TaskStatus
        message: str | None
        if (
            entry is not None
            and entry.cancelled_at is not None
            and (result is None or entry.cancelled_at < result.times.finished_at)
        ):
            # A cancellation counts only before the Result: a replica whose results
            # reader lagged must not turn a finished task back into a cancelled one.
            status, message, updated = (
                "cancelled",
                _CANCEL_NOTE.format(id=task_id),
                entry.cancelled_at,
            )
        elif result is None:
            status, message = "working", "The command is queued or running."
        elif result.ok:
            status, message = "completed", None
        else:
            # The spec counts a tool result with isError among failed tasks.
            code = result.error.code.value if result.error is not None else "unknown"
            status, message = "failed", f"{result.status.value}: {code}"
        task = Task(
            task_id=task_id,
            status=status,
            status_message=message,
            created_at=_iso(created),
            last_updated_at=_iso(updated),
            ttl=entry.ttl_ms if entry is not None and entry.ttl_ms is not None else self._ttl_ms,
            poll_interval=self._poll_ms,
        )
        return task, result

    def get(self, identity: Identity, task_id: str) -> GetTaskResult:
        """tasks/get.

        Raises:
            RpcError: -32602 for an unknown task.
        """
        task, _ = self._describe(identity, task_id)
        return GetTaskResult(**task.model_dump())

    async def result(self, identity: Identity, task_id: str) -> CallToolResult:
        """tasks/result: waits (bounded) for the command to end, then its CallToolResult.

        Raises:
            RpcError: -32602 for an unknown task; TASK_STILL_WORKING when the task did
                not end within the bounded wait.
        """
        task, result = self._describe(identity, task_id)
        related = {RELATED_TASK_META_KEY: {"taskId": task_id}}
        if task.status == "cancelled":
            call = CallToolResult(
                content=[TextContent(text=task.status_message or "")], is_error=True
            )
        elif result is None:
            # Bounded by the edge's own cut too: a cut request is answered with no
            # JSON-RPC id and no -32014 to tell the client to ask again.
            left = time_left(margin=ANSWER_MARGIN)
            timeout = self._result_timeout if left is None else min(self._result_timeout, left)
            result = await self._wait_for_end(identity, task_id, timeout)
            if result is None and self._cancelled(identity, task_id):
                # Cancelled while this call waited: the task has ended.
                return await self.result(identity, task_id)
            if result is None:
                # tasks/result must block until the task ends, but a request may only last
                # so long: an error, not a result that would read as the task's final one.
                raise RpcError(
                    TASK_STILL_WORKING,
                    f"Task {task_id} is still working after {timeout:.3g} s; "
                    "call tasks/result again (or poll tasks/get)",
                    data={"taskId": task_id, "status": "working"},
                )
            call = result_to_call_result(result)
        else:
            call = result_to_call_result(result)
        call.meta = {**(call.meta or {}), **related}
        return call

    async def _wait_for_end(self, identity: Identity, task_id: str, within: float) -> Result | None:
        """The task's Result within ``within`` s; None sooner when it is cancelled
        meanwhile (looked at every :data:`_CANCEL_LOOK` s)."""
        until = time.monotonic() + within
        while (left := until - time.monotonic()) > 0:
            result = await self._services.pipeline.wait(identity, task_id, min(left, _CANCEL_LOOK))
            if result is not None or self._cancelled(identity, task_id):
                return result
        return None

    def _cancelled(self, identity: Identity, task_id: str) -> bool:
        entry = self._ledger.get(identity.tenant_id, identity.space_id, task_id)
        return entry is not None and entry.cancelled_at is not None

    async def cancel(self, identity: Identity, task_id: str) -> CancelTaskResult:
        """tasks/cancel (best effort, see the module docstring).

        Raises:
            RpcError: -32602 for an unknown task or one already in a terminal status;
                the edge's rate limit; the broker's refusal when the cancellation could
                not be published.
        """
        task, _ = self._describe(identity, task_id)
        if task.status in _TERMINAL:
            raise RpcError(
                INVALID_PARAMS, f"Cannot cancel task {task_id}: it is already {task.status}"
            )
        now = datetime.now(UTC)
        try:
            await self._services.pipeline.cancel(identity, task_id, now)
        except RateLimited as exc:
            raise rpc_from_ingress_error(exc) from exc
        except KafkaUnavailable as exc:
            raise unavailable_error(
                "the cancellation was not confirmed by the broker and may or may not be "
                "recorded; read the task with tasks/get, then retry"
            ) from exc
        self._ledger.cancelled(identity.tenant_id, identity.space_id, task_id, now)
        task, _ = self._describe(identity, task_id)
        return CancelTaskResult(**task.model_dump())

    def list(self, identity: Identity, cursor: str | None, page_size: int) -> ListTasksResult:
        """tasks/list: the workspace's tasks, newest first.

        Raises:
            RpcError: -32602 for an invalid cursor.
        """
        ids = self._ledger.task_ids(identity.tenant_id, identity.space_id)
        # The cursor names the last task of the page before: a task created between two
        # pages (it comes first, newest first) shifts no task from one page to the next.
        offset = 0
        if cursor is not None:
            try:
                offset = ids.index(_cursor_task(cursor)) + 1
            except ValueError as exc:  # not a cursor of ours, or its task was forgotten
                raise RpcError(INVALID_PARAMS, "Invalid cursor") from exc
        page = ids[offset : offset + page_size]
        # A task whose result this replica no longer holds has no status left to show.
        pipeline = self._services.pipeline
        tasks = [
            self._describe(identity, task_id)[0]
            for task_id in page
            if not pipeline.forgotten(identity, task_id)
        ]
        end = offset + len(page)
        return ListTasksResult(tasks=tasks, next_cursor=_task_cursor(page[-1]) if end < len(ids) else None)


def _task_cursor(task_id: str) -> str:
    """tasks/list's cursor: the last task of the page, opaque to clients."""
    return base64.urlsafe_b64encode(task_id.encode()).decode().rstrip("=")


def _cursor_task(cursor: str) -> str:
    """The task a cursor names.

    Raises:
        ValueError: not a cursor of ours.
    """
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise ValueError("not a cursor") from exc
