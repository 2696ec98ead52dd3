"""Schema pieces of the flexible (tagged-field) Kafka request versions aiokafka lacks."""

from __future__ import annotations

from typing import Any

from aiokafka.protocol.types import CompactArray, CompactString, TaggedFields

__all__ = ["STRING", "TAGS", "per_topic", "tagged_array"]

STRING = CompactString("utf-8")
TAGS = ("tags", TaggedFields)


def tagged_array(*fields: tuple[str, Any]) -> CompactArray:
    """An array of structs, each ending in its tagged fields."""
    return CompactArray(*fields, TAGS)


def per_topic(*partition_fields: tuple[str, Any]) -> CompactArray:
    """``[name, partitions: [partition_fields...]]``, the shape of per-partition requests."""
    return tagged_array(("name", STRING), ("partitions", tagged_array(*partition_fields)))
