"""Argument checks against a JSON Schema on the per-command path.

``jsonschema`` (pure Python, ~200 µs per check here) words errors well; ``jsonschema_rs``
(compiled, ~1 µs) decides valid or invalid. A :class:`SchemaCheck` asks the compiled
validator first and runs the Python one only for an invalid instance, so valid calls
are cheap and rejection messages come from ``jsonschema``'s errors.

:func:`describe` words an error without the rejected value: ``jsonschema``'s own
messages quote the instance (``'<token>' is too long``), and arguments may hold
anything a caller pasted, so a rejection names the rule broken and no more.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import jsonschema_rs
import orjson
from jsonschema import Draft202012Validator, ValidationError
from jsonschema.protocols import Validator

__all__ = ["SchemaCheck", "describe"]

# Validators whose messages name properties only (of the schema or the object), never a value.
_NAMES_ONLY = frozenset(
    {"required", "additionalProperties", "unevaluatedProperties", "dependentRequired", "dependencies"}
)


def describe(error: ValidationError, limit: int = 200) -> str:
    """What rule ``error`` broke, without the rejected value (``expected type "string"``)."""
    if error.validator in _NAMES_ONLY:
        text = str(error.message)
    else:
        try:
            rule = orjson.dumps(error.validator_value).decode()
        except TypeError:
            rule = "(schema)"
        text = f"expected {error.validator} {rule}"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _no_remote(uri: str) -> Any:
    # Tenant-written schemas must not make a process fetch URLs ($ref to http://...).
    raise ValueError(f"remote references are not resolved: {uri[:100]}")


class SchemaCheck:
    """One schema's validators: the compiled one decides, the Python one explains."""

    __slots__ = ("_fast", "_python")

    def __init__(
        self, schema: Mapping[str, Any], validator: type[Validator] = Draft202012Validator
    ) -> None:
        """Compile ``schema`` for ``validator``'s dialect (checked by the caller).

        Without a compiled counterpart (another dialect, or a schema the compiled
        validator rejects) the Python validator decides alone.
        """
        self._python = validator(schema)
        fast_class = getattr(jsonschema_rs, validator.__name__, None)
        self._fast = None
        if fast_class is not None:
            with contextlib.suppress(ValueError, jsonschema_rs.ValidationError):
                self._fast = fast_class(dict(schema), retriever=_no_remote)

    @property
    def compiled(self) -> bool:
        """Whether the compiled validator decides (else the Python one does alone)."""
        return self._fast is not None

    def errors(self, instance: Any) -> Iterator[ValidationError]:
        """``instance``'s validation errors, as ``jsonschema`` reports them (none if valid)."""
        if self._fast is not None and self._fast.is_valid(instance):
            return iter(())
        errors: Iterator[ValidationError] = self._python.iter_errors(instance)
        return errors
