"""The one base class every wire model shares, and the orjson codec.

Every model that crosses Kafka or comes from outside rejects unknown fields and is
immutable: a record on a topic is a fact, and copies are made with ``model_copy``.
"""

from __future__ import annotations

from typing import Any, Self

import orjson
from pydantic import BaseModel, ConfigDict

__all__ = ["WireModel", "dumps", "loads"]


def dumps(value: Any) -> bytes:
    """Serialize plain data (dicts, lists, scalars) with orjson."""
    return orjson.dumps(value)


def loads(data: bytes | str) -> Any:
    """Parse JSON with orjson."""
    return orjson.loads(data)


class WireModel(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        str_max_length=65_536,
        validate_default=False,
        ser_json_timedelta="float",
    )

    def to_bytes(self) -> bytes:
        """Serialize for Kafka: compact JSON, ``None`` fields left out."""
        # pydantic's own JSON serializer (Rust): the same bytes as orjson over
        # ``model_dump(mode="json")`` at half the cost, and this runs on every hop.
        return self.__pydantic_serializer__.to_json(self, exclude_none=True)

    @classmethod
    def from_bytes(cls, data: bytes | str) -> Self:
        """Parse and validate a record produced by :meth:`to_bytes`.

        Raises:
            pydantic.ValidationError: when the bytes are not a valid record.
        """
        return cls.model_validate_json(data)
