"""One factory for Kafka clients, built from Settings plus a pass-through dict.

Producers are idempotent with ``acks="all"`` (aiokafka's defaults are weaker); consumers
never auto-commit: each component commits only after its effect is durable.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from aiokafka.partitioner import murmur2

from .errors import KafkaUnavailable
from .settings import Settings

T = TypeVar("T")

__all__ = [
    "connection_options",
    "ensure_topics",
    "headers_dict",
    "keyed_partition",
    "make_admin",
    "make_consumer",
    "make_producer",
    "retry_transient",
    "start_client",
    "topic_partitions",
]


def connection_options(settings: Settings) -> dict[str, Any]:
    """Bootstrap, TLS and SASL options common to every client."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "security_protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_security_protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = ssl.create_default_context(cafile=settings.kafka_ca_file)
    if settings.kafka_sasl_mechanism:
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        if settings.kafka_sasl_password is not None:
            options["sasl_plain_password"] = settings.kafka_sasl_password.get_secret_value()
    return options


def make_producer(settings: Settings, **extra: Any) -> AIOKafkaProducer:
    """An idempotent, acks=all producer. ``extra`` overrides any aiokafka option."""
    options: dict[str, Any] = {
        **connection_options(settings),
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 2,
        "max_batch_size": 256 * 1024,
        "request_timeout_ms": 30_000,
        "compression_type": None,
    }
    options.update(extra)
    return AIOKafkaProducer(**options)


def make_consumer(settings: Settings, *topics: str, **extra: Any) -> AIOKafkaConsumer:
    """A consumer with manual commits (``enable_auto_commit=False``) unless overridden."""
    options: dict[str, Any] = {
        **connection_options(settings),
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "isolation_level": "read_committed",
        "max_poll_records": 500,
    }
    options.update(extra)
    return AIOKafkaConsumer(*topics, **options)


def make_admin(settings: Settings, **extra: Any) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(**{**connection_options(settings), **extra})


async def start_client(client: Any, *, what: str, timeout: float = 30.0) -> None:  # noqa: ASYNC109
    """Start an aiokafka client, translating failure into :class:`KafkaUnavailable`.

    Raises:
        KafkaUnavailable: when the broker cannot be reached in ``timeout`` seconds.
    """
    try:
        async with asyncio.timeout(timeout):
            await client.start()
    except (KafkaError, OSError, TimeoutError) as exc:
        await _quiet_stop(client)
        raise KafkaUnavailable(f"{what}: cannot reach Kafka ({type(exc).__name__})") from exc


async def _quiet_stop(client: Any) -> None:
    # Producers and consumers have stop(); the admin client only close().
    stop = getattr(client, "stop", None) or client.close
    try:
        await stop()
    except (KafkaError, OSError, RuntimeError):
        pass


async def ensure_topics(
    settings: Settings,
    names: Iterable[str],
    *,
    partitions: int | None = None,
    configs: Mapping[str, Mapping[str, str]] | None = None,
) -> list[str]:
    """Create the topics that do not exist yet; return the names created.

    Raises:
        KafkaUnavailable: when the broker cannot be reached.
    """
    wanted = list(dict.fromkeys(names))
    admin = make_admin(settings)
    await start_client(admin, what="admin")
    try:
        existing = await _list_topics(admin)
        missing = [name for name in wanted if name not in existing]
        if not missing:
            return []
        new = [
            NewTopic(
                name=name,
                num_partitions=partitions or settings.topic_partitions,
                replication_factor=settings.replication_factor,
                topic_configs=dict((configs or {}).get(name, {})),
            )
            for name in missing
        ]
        try:
            await admin.create_topics(new)
        except TopicAlreadyExistsError:
            pass
        except (KafkaError, OSError) as exc:
            raise KafkaUnavailable(f"creating topics failed ({type(exc).__name__})") from exc
        return missing
    finally:
        await admin.close()


async def _list_topics(admin: AIOKafkaAdminClient, attempts: int = 20) -> set[str]:
    """All topic names, retrying transient errors (bounded; see :func:`retry_transient`).

    Raises:
        KafkaUnavailable: a non-retriable error, or ``attempts`` retriable ones.
    """
    return set(await retry_transient(admin.list_topics, what="listing topics", attempts=attempts))


async def retry_transient(
    call: Callable[[], Awaitable[T]], *, what: str, attempts: int = 20
) -> T:
    """``await call()``, again after retriable Kafka errors (bounded, backing off to 1 s).

    An admin client asks a random known broker; a broker that just died is still in the
    metadata until the controller fences it (seconds), so one unlucky pick must not fail
    a process start while the rest of the cluster serves.

    Raises:
        KafkaUnavailable: a non-retriable error, or ``attempts`` retriable ones.
    """
    for attempt in range(attempts):
        try:
            return await call()
        except (KafkaError, OSError) as exc:
            if not getattr(exc, "retriable", False) or attempt == attempts - 1:
                raise KafkaUnavailable(f"{what} failed ({type(exc).__name__})") from exc
            await asyncio.sleep(min(0.1 * 2**attempt, 1.0))
    raise AssertionError("unreachable")


async def topic_partitions(settings: Settings, topic: str, *, within: float = 30.0) -> list[int]:
    """Partition ids of ``topic``, waiting (bounded) for a just-created topic to appear.

    Transient errors (a broker that just died is still in the metadata) are retried.

    Raises:
        KafkaUnavailable: the cluster is unreachable or the topic does not appear in time.
    """
    admin = make_admin(settings)
    await start_client(admin, what="admin")
    try:
        async with asyncio.timeout(within):
            while True:
                (described,) = await retry_transient(
                    lambda: admin.describe_topics([topic]), what=f"describing {topic}"
                )
                partitions = sorted(p["partition"] for p in described.get("partitions", ()))
                if described.get("error_code") == 0 and partitions:
                    return partitions
                await asyncio.sleep(0.1)  # metadata of a new topic propagates asynchronously
    except TimeoutError as exc:
        raise KafkaUnavailable(f"topic {topic} is not available") from exc
    finally:
        await admin.close()


def keyed_partition(key: bytes, partitions: int) -> int:
    """The partition of ``partitions`` where a keyed record goes: Kafka's default
    partitioner (Java's and aiokafka's), so a tenant's records land where any keyed
    producer puts them."""
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


def headers_dict(headers: Iterable[tuple[str, bytes]] | None) -> dict[str, str]:
    """Kafka record headers as a str → str dict (last value wins)."""
    out: dict[str, str] = {}
    for key, value in headers or ():
        if value is not None:
            out[key] = value.decode("utf-8", "replace")
    return out
