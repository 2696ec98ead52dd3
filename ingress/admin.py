"""Administration without HTTP: API keys and config-topic records.

The admin REST API (``/v1/admin/...``) and the ``switchyard tenants`` command both use
these functions. Configuration goes to the compacted config topic (the router and every
ingress replica follow it, so changes apply without restarts); credentials never do
(they go to Vault through :class:`core.vault.VaultAdmin`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from core.errors import KafkaUnavailable
from core.kafka import ensure_topics, make_producer, start_client
from core.settings import Settings
from schemas import ApiKeyRecord, WorkspaceConfig, api_key_key, workspace_key

from .keys import generate_api_key

__all__ = [
    "CONFIG_TOPIC_SETTINGS",
    "config_key",
    "delete_config",
    "ensure_ingress_topics",
    "new_api_key",
    "publish_config",
]

# The config topic is a table: compaction keeps the last record per key, tombstones delete.
CONFIG_TOPIC_SETTINGS: dict[str, str] = {"cleanup.policy": "compact", "min.compaction.lag.ms": "0"}


def new_api_key(
    *, tenant_id: str, spaces: list[str], user_id: str, role: str = "member"
) -> tuple[str, ApiKeyRecord]:
    """A new API key ``(plaintext, record)``: show the plaintext once, publish the record.

    Raises:
        pydantic.ValidationError: an id outside the safe character set, or no space.
    """
    return generate_api_key(tenant_id=tenant_id, spaces=spaces, user_id=user_id, role=role)


def config_key(record: WorkspaceConfig | ApiKeyRecord) -> str:
    """The config-topic key of a record."""
    if isinstance(record, WorkspaceConfig):
        return workspace_key(record.tenant_id, record.space_id)
    return api_key_key(record.key_id)


async def ensure_ingress_topics(settings: Settings) -> None:
    """Create the commands, config (compacted), results and cancels topics if they are missing.

    Raises:
        KafkaUnavailable: the broker cannot be reached.
    """
    topics = settings.topics
    await ensure_topics(
        settings,
        [topics.commands, topics.config, topics.results, topics.cancels],
        configs={topics.config: CONFIG_TOPIC_SETTINGS},
    )


async def _produce(
    settings: Settings,
    entries: list[tuple[str, bytes | None]],
    producer: AIOKafkaProducer | None,
) -> list[Any]:
    own = producer is None
    if producer is None:
        producer = make_producer(settings)
        await start_client(producer, what="config producer")
    try:
        futures = [
            await producer.send(settings.topics.config, key=key.encode(), value=value)
            for key, value in entries
        ]
        return [await future for future in futures]
    except (KafkaError, OSError) as exc:
        raise KafkaUnavailable(f"config publish failed ({type(exc).__name__})") from exc
    finally:
        if own:
            with contextlib.suppress(KafkaError, OSError, RuntimeError):
                await producer.stop()


async def publish_config(
    settings: Settings,
    records: Iterable[WorkspaceConfig | ApiKeyRecord],
    *,
    producer: AIOKafkaProducer | None = None,
) -> list[Any]:
    """Publish records to the config topic; returns their ``RecordMetadata`` once durable.

    Uses ``producer`` when given (it stays open), else a short-lived one.

    Raises:
        KafkaUnavailable: the broker did not acknowledge.
    """
    entries = [(config_key(record), record.to_bytes()) for record in records]
    return await _produce(settings, entries, producer)


async def delete_config(
    settings: Settings, keys: Iterable[str], *, producer: AIOKafkaProducer | None = None
) -> list[Any]:
    """Publish tombstones (delete a workspace, revoke an API key) for config-topic keys.

    Raises:
        KafkaUnavailable: the broker did not acknowledge.
    """
    return await _produce(settings, [(key, None) for key in keys], producer)
