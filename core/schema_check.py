"""Argument checks against a JSON Schema on the per-command path.

``jsonschema_rs`` (compiled, ~1 µs per check here) decides valid or invalid and reports
the errors, as ``jsonschema`` ``ValidationError`` objects (keyword, rule, paths), so
callers word them alike. The pure-Python ``jsonschema`` checks schemas against their
dialect's metaschema, never a caller's arguments: on whatever a caller sent it can take
quadratic time (``uniqueItems`` over objects compares every pair) or backtrack without
end (a workspace's ``pattern``), which the compiled one bounds, and a check runs on the
event loop of the router and the MCP edge, shared by every tenant. So a schema the
compiled validator cannot take (draft-03, a pattern outside ECMA 262) is refused.

Workspace schemas are written by tenants' admins, so neither validator fetches a
remote ``$ref`` (an address inside the deployment, a blocked event loop), and
:func:`schema_problem` refuses, when a workspace is written, a schema that could not be
applied: not a schema of its dialect, a reference that does not resolve inside it, or
one the compiled validator cannot take.
:func:`checked` builds the check every process uses, in the schema's own dialect
(``$schema``, else 2020-12), so the MCP edge and the router agree on what is valid.

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
from jsonschema import Draft202012Validator, SchemaError, ValidationError
from jsonschema.protocols import Validator
from jsonschema.validators import validator_for
from jsonschema_specifications import REGISTRY as SPECIFICATIONS
from referencing import Registry, Resource
from referencing.exceptions import Unresolvable
from referencing.jsonschema import specification_with

__all__ = ["SchemaBroken", "SchemaCheck", "checked", "describe", "schema_problem"]

# No resources but the schema itself and the dialects' own metaschemas (bundled, as
# jsonschema's default has them): a reference elsewhere does not resolve.
_LOCAL_ONLY: Registry[Any] = SPECIFICATIONS
_REFERENCE_KEYWORDS = ("$ref", "$dynamicRef", "$recursiveRef")
_UNCOMPILED = (
    "the schema cannot be compiled: use draft-04 or later, and patterns in the ECMA 262 "
    "syntax JSON Schema names"
)


class SchemaBroken(ValueError):
    """The schema cannot be applied (see :func:`schema_problem`); the message says why."""

# Validators whose messages name properties only (of the schema or the object), never a value.
_NAMES_ONLY = frozenset(
    {"required", "additionalProperties", "unevaluatedProperties", "dependentRequired", "dependencies"}
)


def describe(error: ValidationError, limit: int = 200) -> str:
    """What rule ``error`` broke, without the rejected value (``expected type "string"``)."""
    if error.validator is None:  # a false schema: nothing is allowed there
        text = "no value is allowed here"
    elif error.validator in _NAMES_ONLY:
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
    """One schema's validator: the compiled one, else (no counterpart) the Python one."""

    __slots__ = ("_fast", "_python", "_schema")

    def __init__(
        self, schema: Mapping[str, Any], validator: type[Validator] = Draft202012Validator
    ) -> None:
        """Compile ``schema`` for ``validator``'s dialect (checked by the caller).

        Without a compiled counterpart (another dialect, or a schema the compiled
        validator rejects) the Python validator decides alone.
        """
        self._schema = schema
        self._python = validator(schema, registry=_LOCAL_ONLY)
        fast_class = getattr(jsonschema_rs, validator.__name__, None)
        self._fast = None
        if fast_class is not None:
            with contextlib.suppress(ValueError, jsonschema_rs.ValidationError):
                # Formats as jsonschema reads them (annotations only): the compiled
                # validator of draft-07 and earlier would assert them by default.
                self._fast = fast_class(dict(schema), retriever=_no_remote, validate_formats=False)

    @property
    def compiled(self) -> bool:
        """Whether the compiled validator decides (else the Python one does alone)."""
        return self._fast is not None

    def errors(self, instance: Any) -> Iterator[ValidationError]:
        """``instance``'s validation errors, as ``jsonschema`` reports them (none if valid).

        Raises:
            SchemaBroken: the schema could not be applied to ``instance`` (a reference
                that does not resolve; a pattern nested past the regex compiler's depth).
        """
        if self._fast is not None:
            if self._fast.is_valid(instance):
                return iter(())
            types = self._python.TYPE_CHECKER
            return (_from_compiled(error, self._schema, types) for error in self._fast.iter_errors(instance))
        try:
            errors = list(self._python.iter_errors(instance))
        except Unresolvable as exc:
            raise SchemaBroken(f"a reference does not resolve: {str(exc)[:100]}") from None
        except Exception as exc:  # noqa: BLE001 - a schema no check vetted can fail any way
            # A pattern nested past the regex compiler's depth, a reference to something
            # that is no schema (a string, a list): the schema's fault, not the caller's.
            raise SchemaBroken(f"the schema cannot be applied ({type(exc).__name__})") from None
        return iter(errors)


def _from_compiled(
    error: Any, schema: Mapping[str, Any], types: Any, within: tuple[list[Any], list[Any]] = ([], [])
) -> ValidationError:
    """A ``jsonschema_rs`` error as ``jsonschema`` reports it: keyword, rule, the schema it
    belongs to, paths relative to the error ``within`` (an anyOf/oneOf's ``context``) and
    that context, so that ``best_match`` descends into the branch that failed."""
    steps, path = list(error.schema_path), list(error.instance_path)
    kind = type(error.kind).__name__
    keyword: str | None = str(steps[-1]) if steps else "schema"
    rule, owner = _at(schema, steps), _at(schema, steps[:-1])
    message = str(error.message)
    if kind == "FalseSchema":  # the path ends at the property, not at a keyword
        keyword, rule, owner = None, None, False
    elif kind == "Required":  # worded as jsonschema words it
        missing = error.kind.property
        message = f"{missing!r} is a required property"
        if keyword in ("dependentRequired", "dependencies") and isinstance(rule, dict):
            present = [name for name, needs in rule.items() if isinstance(error.instance, dict)
                       and name in error.instance and isinstance(needs, list) and missing in needs]  # fmt: skip
            if present:
                message = f"{missing!r} is a dependency of {present[0]!r}"
    context = []
    if kind in ("AnyOf", "OneOfNotValid"):
        context = [_from_compiled(sub, schema, types, (path, steps)) for branch in error.kind.context for sub in branch]
    return ValidationError(
        message, validator=keyword, validator_value=rule, path=path[len(within[0]):],
        schema_path=steps[len(within[1]):], instance=error.instance, schema=owner, type_checker=types,
        context=context,
    )  # fmt: skip


def _at(schema: Any, steps: list[Any]) -> Any:
    """The part of ``schema`` at ``steps`` (None where the path leads nowhere)."""
    for step in steps:
        try:
            schema = schema[step]
        except (KeyError, IndexError, TypeError):
            return None
    return schema


def schema_problem(schema: Mapping[str, Any]) -> str | None:
    """Why ``schema`` cannot check arguments; None when it can.

    It must be a schema of its dialect (``$schema``, else 2020-12), and every reference
    (``$ref``, and ``$dynamicRef`` or ``$recursiveRef`` where the dialect has them) must
    resolve within it, to a schema: nothing is fetched. And the compiled validator must
    take it (see the module's docstring): draft-04 or later, patterns it compiles.
    """
    try:
        checked(schema)
    except SchemaBroken as exc:
        return str(exc)
    return None


def checked(schema: Mapping[str, Any]) -> SchemaCheck:
    """The check of ``schema`` in its own dialect.

    Raises:
        SchemaBroken: :func:`schema_problem` finds one.
    """
    validator, problem = _examined(schema)
    if problem is not None:
        raise SchemaBroken(problem)
    check = SchemaCheck(schema, validator)
    if not check.compiled:
        raise SchemaBroken(_UNCOMPILED)
    return check


def _examined(schema: Mapping[str, Any]) -> tuple[type[Validator], str | None]:
    """``schema``'s dialect, and why it cannot check arguments (None when it can)."""
    if not isinstance(schema.get("$schema", ""), str):
        return Draft202012Validator, "'$schema' must be a string naming a JSON Schema dialect"
    validator = validator_for(schema, default=Draft202012Validator)
    try:
        validator.check_schema(schema)
    except SchemaError as exc:
        return validator, str(exc.message)
    except RecursionError:  # compiling a pattern of thousands of nested groups
        return validator, "a pattern is nested too deeply"
    try:
        return validator, _unresolved_reference(schema, validator)
    except Exception as exc:  # noqa: BLE001 - refused with a reason, never a crash
        return validator, f"the schema's references cannot be followed ({type(exc).__name__})"


def _unresolved_reference(schema: Mapping[str, Any], validator: type[Validator]) -> str | None:
    meta = validator.META_SCHEMA
    specification = specification_with(str(meta.get("$id") or meta.get("id")))
    keywords = [keyword for keyword in _REFERENCE_KEYWORDS if keyword in validator.VALIDATORS]
    root: Resource[Any] = specification.create_resource(schema)
    base = root.id() or ""
    resolver = _LOCAL_ONLY.with_resource(base, root).crawl().resolver(base)
    pending = [(root, resolver)]
    while pending:  # bounded: every subschema once (a workspace's size is bounded)
        resource, here = pending.pop()
        contents = resource.contents
        if isinstance(contents, Mapping):
            for keyword in keywords:
                target = contents.get(keyword)
                if not isinstance(target, str):
                    continue
                where = f"{keyword} {target[:100]!r}"
                try:
                    found = here.lookup(target).contents
                except Exception:  # noqa: BLE001 - Unresolvable, or a pointer step into a list that is no index
                    return f"{where} does not resolve within the schema (nothing is fetched)"
                if not isinstance(found, Mapping | bool):
                    return f"{where} points at something that is not a schema"
        pending.extend((sub, here.in_subresource(sub)) for sub in resource.subresources())
    return None
