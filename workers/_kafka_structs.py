"""What aiokafka lacks: schema pieces of the flexible (tagged-field) Kafka request
versions, and a consumer's position read without awaiting."""

from __future__ import annotations

from typing import Any

from aiokafka.protocol.types import CompactArray, CompactString, TaggedFields

__all__ = ["STRING", "TAGS", "consumed_position", "per_topic", "tagged_array"]

STRING = CompactString("utf-8")
TAGS = ("tags", TaggedFields)


def tagged_array(*fields: tuple[str, Any]) -> CompactArray:
    """An array of structs, each ending in its tagged fields."""
    return CompactArray(*fields, TAGS)


def per_topic(*partition_fields: tuple[str, Any]) -> CompactArray:
    """``[name, partitions: [partition_fields...]]``, the shape of per-partition requests."""
    return tagged_array(("name", STRING), ("partitions", tagged_array(*partition_fields)))


def consumed_position(consumer: Any, tp: Any) -> int | None:
    """The offset of the next record ``consumer`` will return for ``tp`` (past any
    control records it skipped), or None when it has none (not assigned, or being reset).

    ``AIOKafkaConsumer.position`` awaits a reset; this reads the state as it is now, so a
    caller can pair it with the records it has just been given (aiokafka 0.14 internals).
    """
    subscription = getattr(consumer._subscription, "subscription", None)
    assignment = getattr(subscription, "assignment", None)
    if assignment is None:
        return None
    try:
        state = assignment.state_value(tp)
    except (KeyError, AttributeError):
        return None
    if state is None or not state.has_valid_position:
        return None
    position: int = state.position
    return position
