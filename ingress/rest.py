"""The async REST API: submit (single and batch), poll with an optional bounded wait.

    POST /v1/commands                      → 202 {command_id, status, status_url}
    POST /v1/commands:batch                → 200 {accepted, failed, items: [...]}
                                             (none accepted: the first item's status)
    GET  /v1/commands/{command_id}?wait=S  → 200 {command_id, status, result?} | 404
    POST /v1/commands/{command_id}:cancel  → 202 {command_id, status: pending, cancel_requested}
                                             | 404 | 409 (finished)
    POST /v1/commands:cancel               → 200 {cancelled, failed, items: [...]}
                                             (none cancelled: the first item's status)

Each path also exists under ``/v1/spaces/{space_id}/...`` (see :mod:`ingress.auth`).
A replay (same idempotency key) answers 200 with the same command id and
``"replayed": true``. A batch is not all-or-nothing: each item is validated and
published on its own and reports the status a single submit would have had; the
batch's rate-limit cost is its item count, taken (or refused with 429) as a whole.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from pydantic import TypeAdapter, ValidationError

from core.errors import KafkaUnavailable
from schemas import CommandSource
from schemas.identifiers import IdempotencyKey

from ._http import COMMAND_ID, IDENTITY, json_response, read_json
from ._state import STATE
from .auth import SPACE_HEADER, authenticate, check_argument_claims, check_claims
from .contracts import Identity, Services
from .errors import (
    BadRequest,
    Conflict,
    IngressError,
    NotFound,
    ServiceUnavailable,
    from_validation,
)
from .models import CLAIM_FIELDS, MAX_BATCH, SubmitRequest
from .pipeline import KafkaPipeline, Submission, command_id_for

__all__ = ["MAX_WAIT_SECONDS", "SERVICES", "add_routes"]

MAX_WAIT_SECONDS = 30.0
SERVICES = web.AppKey("switchyard_services", Services)


def _status_url(request: web.Request, command_id: str) -> str:
    # A workspace chosen in the path or the header is in the URL, so following it needs
    # no header (a key with several workspaces would otherwise be asked which one).
    space = request.match_info.get("space_id")
    if not space and request.headers.get(SPACE_HEADER):
        space = request[IDENTITY].space_id  # the header's workspace, as authentication checked it
    return f"/v1/spaces/{space}/commands/{command_id}" if space else f"/v1/commands/{command_id}"


async def _identity(request: web.Request) -> Identity:
    identity = await authenticate(
        request.app[SERVICES].auth, request.headers, request.match_info.get("space_id")
    )
    request[IDENTITY] = identity
    return identity


# The shape of every command id (schemas.identifiers.CommandId).
_COMMAND_ID = re.compile(r"[A-Za-z0-9_-]{8,64}")

# The header is held to the body field's own type.
_HEADER_KEY: TypeAdapter[str] = TypeAdapter(IdempotencyKey)


# Checked by check_claims (another tenant or workspace is a 403), then dropped: a claim
# of the caller's own identity is allowed and ignored.
_BATCH_FIELDS = {"items", *CLAIM_FIELDS}
# Room in the 255 characters of an idempotency key for ":<index>" of up to 500 items.
_BATCH_KEY_MAX = 251


def _check_header_key(value: str) -> None:
    try:
        _HEADER_KEY.validate_python(value)
    except ValidationError:
        raise BadRequest(
            "the Idempotency-Key header must be 1-255 printable ASCII characters without spaces"
        ) from None


def _submission(raw: Any, header_key: str | None, prefix: str = "") -> Submission:
    if not isinstance(raw, dict):
        where = f"{prefix}: " if prefix else ""
        raise BadRequest(f"{where}a command must be a JSON object")
    body = {k: v for k, v in raw.items() if k not in CLAIM_FIELDS}
    try:
        parsed = SubmitRequest.model_validate(body)
    except ValidationError as exc:
        raise from_validation(exc, prefix=prefix) from None
    key = parsed.idempotency_key
    if header_key is not None:
        _check_header_key(header_key)
    if header_key and key and header_key != key:
        raise BadRequest("the Idempotency-Key header and the body's idempotency_key differ")
    deadline = None
    if parsed.deadline_seconds is not None:
        deadline = datetime.now(UTC) + timedelta(seconds=parsed.deadline_seconds)
    # A key of our own when the caller gave none, so that a 503 can name it: retried
    # with it, a command the broker took after all is not run twice.
    key = key or header_key or f"auto-{uuid.uuid4().hex}"
    return Submission(parsed.action, dict(parsed.arguments), key, deadline)


def _unavailable(identity: Identity, key: str) -> ServiceUnavailable:
    error = ServiceUnavailable(
        "the message broker did not confirm the command, which may still run; retry with "
        "the same idempotency key and it runs at most once",
        2.0,
    )
    error.details = {
        "idempotency_key": key,
        "command_id": command_id_for(identity.tenant_id, identity.space_id, key),
    }
    return error


def _check_claims(services: Services, identity: Identity, body: Any) -> None:
    """Refuse a claim of another tenant in a submission (see ``auth.check_claims``); in
    its arguments, the fields its action declares are the target app's data, as on MCP."""
    if not isinstance(body, dict) or "arguments" not in body:
        check_claims(identity, body=body)
        return
    check_claims(identity, body={k: v for k, v in body.items() if k != "arguments"})
    name = body.get("action")
    workspace = services.catalog.workspace(identity.tenant_id, identity.space_id)
    action = workspace.action(name) if workspace is not None and isinstance(name, str) else None
    check_argument_claims(identity, body["arguments"], action)


async def submit(request: web.Request) -> web.Response:
    identity = await _identity(request)
    body = await read_json(request)
    # Refuse a claimed tenant before anything else looks at the body: nothing is published.
    _check_claims(request.app[SERVICES], identity, body)
    header_key = request.headers.get("Idempotency-Key")
    item = _submission(body, header_key)
    assert item.idempotency_key is not None
    try:
        command, created = await request.app[SERVICES].pipeline.submit(
            identity,
            item.action,
            item.arguments,
            source=CommandSource.REST,
            idempotency_key=item.idempotency_key,
            deadline=item.deadline,
        )
    except KafkaUnavailable:
        raise _unavailable(identity, item.idempotency_key) from None
    request[COMMAND_ID] = command.command_id
    url = _status_url(request, command.command_id)
    return json_response(
        {"command_id": command.command_id, "status": "accepted", "status_url": url,
         "replayed": not created},
        status=202 if created else 200,
        headers={"Location": url},
    )


async def submit_batch(request: web.Request) -> web.Response:
    identity = await _identity(request)
    body = await read_json(request)
    check_claims(identity, body=body)
    # Claims of the key's own tenant are allowed and ignored, as on a single submit.
    if not isinstance(body, dict) or set(body) - _BATCH_FIELDS or not isinstance(body.get("items"), list):
        raise BadRequest('a batch is {"items": [...]}')
    # An Idempotency-Key header keys the items that bring none of their own, by position
    # ("<key>:<index>"): the same batch sent again runs none of them twice.
    batch_key = request.headers.get("Idempotency-Key")
    if batch_key is not None:
        # Checked as a whole: an empty one would key every batch ":<index>", so a
        # different batch sent later would be taken for this one.
        _check_header_key(batch_key)
        if len(batch_key) > _BATCH_KEY_MAX:
            raise BadRequest(f"on a batch the Idempotency-Key header is at most {_BATCH_KEY_MAX} characters")
    raw_items = body["items"]
    if not 1 <= len(raw_items) <= MAX_BATCH:
        raise BadRequest(f"a batch holds 1 to {MAX_BATCH} items")
    outcomes: list[Any] = [None] * len(raw_items)
    valid: list[tuple[int, Submission]] = []
    for index, raw in enumerate(raw_items):
        try:
            _check_claims(request.app[SERVICES], identity, raw)
            own = isinstance(raw, dict) and raw.get("idempotency_key") is not None
            item_key = None if batch_key is None or own else f"{batch_key}:{index}"
            valid.append((index, _submission(raw, item_key, prefix=f"items.{index}")))
        except IngressError as exc:
            outcomes[index] = exc
    pipeline = request.app[SERVICES].pipeline
    if valid:
        items = [item for _, item in valid]
        if isinstance(pipeline, KafkaPipeline):
            results = await pipeline.submit_many(identity, items, source=CommandSource.REST)
        else:  # any other Pipeline: one at a time
            results = [
                await pipeline.submit(identity, i.action, i.arguments, source=CommandSource.REST,
                                      idempotency_key=i.idempotency_key, deadline=i.deadline)
                for i in items
            ]
        for (index, item), result in zip(valid, results, strict=True):
            if isinstance(result, KafkaUnavailable):
                assert item.idempotency_key is not None
                result = _unavailable(identity, item.idempotency_key)
            outcomes[index] = result
    rendered = [_batch_item(request, index, outcome) for index, outcome in enumerate(outcomes)]
    accepted = sum(1 for item in rendered if item["status_code"] < 300)
    status, headers = _batch_status(accepted, outcomes)
    return json_response(
        {"accepted": accepted, "failed": len(rendered) - accepted, "items": rendered},
        status=status,
        headers=headers,
    )


def _batch_status(done: int, outcomes: list[Any]) -> tuple[int, dict[str, str]]:
    """A batch's status: 200 when any item was done; else it fails as a whole, with its
    first item's status (503 and Retry-After when the broker refused them all), so no
    client mistakes it for a success. Each item still says why."""
    if done:
        return 200, {}
    errors = [outcome for outcome in outcomes if isinstance(outcome, IngressError)]
    if all(isinstance(error, ServiceUnavailable) for error in errors):
        return 503, errors[0].headers()
    return errors[0].status, {}


def _item_error(index: int, error: IngressError) -> dict[str, Any]:
    """A batch item refused as a single request would have been."""
    return {"index": index, "status_code": error.status,
            "error": {"code": error.code, "message": error.message, **error.details}}  # fmt: skip


def _batch_item(request: web.Request, index: int, outcome: Any) -> dict[str, Any]:
    if isinstance(outcome, IngressError):
        return _item_error(index, outcome)
    command, created = outcome
    return {
        "index": index,
        "status_code": 202 if created else 200,
        "command_id": command.command_id,
        "status": "accepted",
        "status_url": _status_url(request, command.command_id),
        "replayed": not created,
    }


async def get_command(request: web.Request) -> web.Response:
    identity = await _identity(request)
    command_id = request.match_info["command_id"]
    request[COMMAND_ID] = command_id
    raw_wait = request.query.get("wait", "0")
    try:
        wait = float(raw_wait)
    except ValueError:
        raise BadRequest("wait must be a number of seconds") from None
    if not 0 <= wait <= MAX_WAIT_SECONDS:
        raise BadRequest(f"wait must be between 0 and {MAX_WAIT_SECONDS:g} seconds")
    if not _COMMAND_ID.fullmatch(command_id):
        raise NotFound("no such command")  # no id of that shape exists: nothing to wait for
    pipeline = request.app[SERVICES].pipeline
    result = pipeline.peek(identity, command_id)
    if result is None and wait > 0:
        result = await pipeline.wait(identity, command_id, wait)
    if result is not None:
        return json_response(
            {"command_id": command_id, "status": result.status.value,
             "result": result.model_dump(mode="json", exclude_none=True)}
        )
    if pipeline.forgotten(identity, command_id):
        raise NotFound(
            "this command has finished, but its Result is no longer held by the ingress "
            "(it stays on the results topic)"
        )
    if pipeline.known(identity, command_id) is not None or _accepted_elsewhere(
        request, identity, command_id
    ):
        return json_response({"command_id": command_id, "status": "pending"})
    # Unknown, another tenant's or workspace's, or older than the replicas remember.
    raise NotFound("no such command")


async def cancel_command(request: web.Request) -> web.Response:
    """Ask the workers to end the command without running it.

    Answered once the broker has the cancellation; the command's Result says what came
    of it: ``rejected`` (or ``failed`` after attempts) with code ``cancelled``, or its
    own outcome when it had started already.
    """
    identity = await _identity(request)
    command_id = request.match_info["command_id"]
    request[COMMAND_ID] = command_id
    _check_cancellable(request, identity, command_id)
    try:
        await request.app[SERVICES].pipeline.cancel(identity, command_id, datetime.now(UTC))
    except KafkaUnavailable:
        raise _cancel_unavailable() from None
    return json_response(_cancel_requested(request, command_id), status=202)


async def cancel_batch(request: web.Request) -> web.Response:
    """``{"command_ids": [...]}``: each cancelled (or refused) as a single cancel would be,
    published with one round of broker acknowledgements."""
    identity = await _identity(request)
    body = await read_json(request)
    check_claims(identity, body=body)
    ids = body.get("command_ids") if isinstance(body, dict) else None
    if (
        not isinstance(body, dict)
        or set(body) - {"command_ids", *CLAIM_FIELDS}
        or not isinstance(ids, list)
        or not all(isinstance(command_id, str) for command_id in ids)
    ):
        raise BadRequest('a batch of cancellations is {"command_ids": ["<command id>", ...]}')
    if not 1 <= len(ids) <= MAX_BATCH:
        raise BadRequest(f"a batch cancels 1 to {MAX_BATCH} commands")
    outcomes: list[Any] = [None] * len(ids)
    wanted: list[int] = []
    for index, command_id in enumerate(ids):
        try:
            _check_cancellable(request, identity, command_id)
            wanted.append(index)
        except IngressError as exc:
            outcomes[index] = exc
    if wanted:
        published = await request.app[SERVICES].pipeline.cancel_many(
            identity, [ids[index] for index in wanted], datetime.now(UTC)
        )
        for index, failure in zip(wanted, published, strict=True):
            outcomes[index] = _cancel_unavailable() if failure is not None else None
    items = [
        {"index": index, "status_code": 202, **_cancel_requested(request, command_id)}
        if outcome is None
        else {**_item_error(index, outcome), "command_id": command_id}
        for index, (command_id, outcome) in enumerate(zip(ids, outcomes, strict=True))
    ]
    cancelled = sum(1 for outcome in outcomes if outcome is None)
    status, headers = _batch_status(cancelled, outcomes)
    return json_response(
        {"cancelled": cancelled, "failed": len(items) - cancelled, "items": items}, status=status, headers=headers
    )


def _check_cancellable(request: web.Request, identity: Identity, command_id: str) -> None:
    """Raises NotFound for an id unknown here (as ``GET``), Conflict for a finished command."""
    if not _COMMAND_ID.fullmatch(command_id):
        raise NotFound("no such command")
    pipeline = request.app[SERVICES].pipeline
    result = pipeline.peek(identity, command_id)
    if result is not None or pipeline.forgotten(identity, command_id):
        status = result.status.value if result is not None else "finished"
        conflict = Conflict(f"this command has finished ({status}); there is nothing to cancel")
        conflict.details = {"status": status}
        raise conflict
    if pipeline.known(identity, command_id) is None and not _accepted_elsewhere(request, identity, command_id):
        raise NotFound("no such command")


def _cancel_requested(request: web.Request, command_id: str) -> dict[str, Any]:
    return {"command_id": command_id, "status": "pending", "cancel_requested": True,
            "status_url": _status_url(request, command_id)}  # fmt: skip


def _cancel_unavailable() -> ServiceUnavailable:
    return ServiceUnavailable(
        "the message broker did not confirm the cancellation, which may still take effect; retry it", 2.0
    )


def _accepted_elsewhere(request: web.Request, identity: Identity, command_id: str) -> bool:
    """Accepted by any replica (this one's commands follower saw it), still running."""
    state = request.app.get(STATE)
    if state is None or state.accepted is None:
        return False
    return state.accepted.owner(command_id) == (identity.tenant_id, identity.space_id)


def add_routes(app: web.Application) -> None:
    """Register the REST API on ``app`` (expects ``app[SERVICES]``)."""
    for base in ("/v1", "/v1/spaces/{space_id}"):
        app.router.add_post(f"{base}/commands", submit)
        app.router.add_post(f"{base}/commands:batch", submit_batch)
        app.router.add_post(f"{base}/commands:cancel", cancel_batch)
        app.router.add_post(f"{base}/commands/{{command_id}}:cancel", cancel_command)
        app.router.add_get(f"{base}/commands/{{command_id}}", get_command)
