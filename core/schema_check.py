"""Argument checks against a JSON Schema on the per-command path.

``jsonschema`` (pure Python, ~200 µs per check here) words errors well; ``jsonschema_rs``
(compiled, ~1 µs) decides valid or invalid. A :class:`SchemaCheck` asks the compiled
validator first and runs the Python one only for an invalid instance, so valid calls
are cheap and rejection messages stay exactly ``jsonschema``'s.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import jsonschema_rs
from jsonschema import Draft202012Validator, ValidationError
from jsonschema.protocols import Validator

__all__ = ["SchemaCheck"]


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
