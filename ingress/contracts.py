"""What the ingress's MCP endpoint and REST API share: identity, catalog, pipeline.

``ingress.app`` builds one :class:`Services` at start and hands it to the REST routes
and to ``ingress.mcp.setup(app, services)``. Nothing here holds per-request state that
another replica could not serve: identities come from API keys (config topic), results
from the results topic, so any replica answers any tenant.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from schemas import Command, CommandSource, Result, WorkspaceConfig

from .task_ledger import TaskLedger

if TYPE_CHECKING:
    from core.errors import KafkaUnavailable

    from .actions import ActionChecks

__all__ = ["Catalog", "Identity", "Pipeline", "Services", "Authenticator"]


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is calling, as established by the API key (never by the request body)."""

    tenant_id: str
    space_id: str
    user_id: str
    role: str
    key_id: str
    is_admin: bool = False


class Authenticator(Protocol):
    def authenticate(self, bearer: str | None, space_id: str | None) -> Identity:
        """Resolve ``Authorization: Bearer`` + the requested workspace to an identity.

        When ``space_id`` is None and the key owns exactly one workspace, that one is used.

        Raises:
            ingress.errors.Unauthorized: missing/invalid/revoked key (401).
            ingress.errors.Forbidden: the key does not own that workspace (403).
        """
        ...


class Catalog(Protocol):
    def workspace(self, tenant_id: str, space_id: str) -> WorkspaceConfig | None:
        """The workspace configuration as last seen on the config topic."""
        ...


class Pipeline(Protocol):
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
        """Publish a command (durable in Kafka on return). Returns (command, created).

        ``created`` is False when the idempotency key was seen before in this workspace:
        the same command id comes back and nothing new is published. ``task_ttl``
        (ms) marks the command as an MCP task, so every replica lists it.

        Raises:
            ingress.errors.RateLimited: the tenant's edge rate limit is exceeded (429).
            core.errors.KafkaUnavailable: the broker did not acknowledge.
        """
        ...

    async def wait(self, identity: Identity, command_id: str, timeout: float) -> Result | None:  # noqa: ASYNC109
        """The command's final Result, waiting up to ``timeout`` seconds (None on timeout).

        Only results of ``identity.tenant_id`` are returned; another tenant's command id
        behaves as unknown.
        """
        ...

    def peek(self, identity: Identity, command_id: str) -> Result | None:
        """The final Result if this replica has it, without waiting."""
        ...

    def known(self, identity: Identity, command_id: str) -> Command | None:
        """A command this tenant submitted that is still pending, if this replica knows it."""
        ...

    def forgotten(self, identity: Identity, command_id: str) -> bool:
        """Whether this workspace's command finished and its Result is no longer held here."""
        ...

    async def cancel(self, identity: Identity, command_id: str, at: datetime, *, charged: bool = True) -> None:
        """Publish the cancellation of ``command_id``: the workers that hold it end it
        without running it if it has not started, and every replica sees its task cancelled.

        Raises:
            ingress.errors.RateLimited: the tenant's edge rate limit is exceeded (429;
                never when not ``charged``: a call's own cancellation, paid by its submit).
            core.errors.KafkaUnavailable: the broker did not acknowledge.
        """
        ...

    async def cancel_many(
        self, identity: Identity, command_ids: Sequence[str], at: datetime, *, charged: bool = True
    ) -> list[KafkaUnavailable | None]:
        """Publish several cancellations with one round of acknowledgements; each id's
        outcome is None (published) or the broker's failure.

        Raises:
            ingress.errors.RateLimited: fewer tokens left than ids (429).
        """
        ...


@dataclass(frozen=True, slots=True)
class Services:
    auth: Authenticator
    catalog: Catalog
    pipeline: Pipeline
    # Origins allowed to call the MCP endpoint from a browser (empty: only same-host).
    allowed_origins: tuple[str, ...] = ()
    # MCP tasks every replica sees (fed from the commands topic); None: this process's only.
    tasks: TaskLedger | None = None
    # The edge's checks of actions and arguments (MCP and REST share their compiled
    # validators); None: made from ``catalog``.
    actions: ActionChecks = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.actions is None:
            from .actions import ActionChecks

            object.__setattr__(self, "actions", ActionChecks(self.catalog))
