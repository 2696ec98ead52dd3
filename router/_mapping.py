"""Argument mapping: an action's ``arguments`` rendered with Jinja2's immutable sandbox.

Every string leaf of the mapping is a template rendered with the caller's arguments as
``args``. A leaf that is exactly one ``{{ expression }}`` is compiled with
``compile_expression`` instead, so it keeps the expression's native type (a number stays
a number, a list a list). Undefined names fail (``StrictUndefined``): a mapping that
refers to an argument the caller did not send is a clear rejection, not an empty string.

The sandbox stops attribute tricks; it does not bound sizes, so ``*`` and ``**`` are
intercepted to keep one template from building a gigabyte string out of a small input.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import orjson
from jinja2 import StrictUndefined, TemplateError, Undefined
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

__all__ = ["MappingError", "compile_mapping"]

MAX_PRODUCT_LENGTH = 64 * 1024
MAX_EXPONENT = 64
MAX_RENDERED_BYTES = 256 * 1024

# One ``{{ ... }}`` and nothing around it; the body may not open or close another block.
_SINGLE_EXPRESSION = re.compile(r"^\{\{(?P<expr>(?:(?!\{\{|\}\}|\{%|%\}|\{#).)*)\}\}$", re.DOTALL)
_TEMPLATE_MARKERS = ("{{", "{%", "{#")
# ``args.a.b`` / ``args['a']["b"]``: the common leaf, a plain lookup into the caller's
# arguments. Each step is ``.name`` or a subscript with a string literal.
_PATH_STEP = r"""\s*(?:\.\s*([A-Za-z_][A-Za-z0-9_]*)|\[\s*(?:'([^'\\]*)'|"([^"\\]*)")\s*\])"""
_ARGS_PATH = re.compile(rf"^\s*args((?:{_PATH_STEP})+)\s*$")
_STEP = re.compile(_PATH_STEP)

Renderer = Callable[[dict[str, Any]], Any]


class MappingError(ValueError):
    """The mapping could not be compiled or rendered; the message names the leaf."""


class _BoundedSandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, int | float) and abs(right) > MAX_EXPONENT:
            raise SecurityError(f"exponent larger than {MAX_EXPONENT}")
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(times, int):
                    if len(seq) * times > MAX_PRODUCT_LENGTH:
                        raise SecurityError(f"repetition longer than {MAX_PRODUCT_LENGTH}")
        return super().call_binop(context, operator, left, right)


_ENV = _BoundedSandbox(undefined=StrictUndefined, autoescape=False)


def _lookup_path(expr: str) -> tuple[str, ...] | None:
    """The keys of an ``args`` lookup chain, or None when ``expr`` is anything else."""
    match = _ARGS_PATH.match(expr)
    if match is None:
        return None
    keys: list[str] = []
    for name, single, double in _STEP.findall(match.group(1)):
        # ``.items`` names dict's method for Jinja, not the key: leave such steps to it.
        if name and hasattr(dict, name):
            return None
        keys.append(name or single or double)
    return tuple(keys)


def _fast_lookup(keys: tuple[str, ...], slow: Renderer) -> Renderer:
    """Evaluate a lookup chain directly, or hand over to the compiled expression.

    Jinja's sandbox needs a new render context per call (most of a render's cost).
    For a chain of keys present in plain dicts, ``.name`` and ``['name']`` give the
    dict item in Jinja too (the names of dict methods are excluded at compile time),
    so the result is the same object; anything else (a missing key, a list, a
    string) goes to Jinja, which gives its own value or error.
    """

    def lookup(args: dict[str, Any]) -> Any:
        value: Any = args
        for key in keys:
            if type(value) is not dict or key not in value:
                return slow(args)
            value = value[key]
        return value

    return lookup


def _compile_leaf(text: str, where: str) -> Renderer:
    single = _SINGLE_EXPRESSION.match(text)
    try:
        if single is not None:
            expression = _ENV.compile_expression(single.group("expr"), undefined_to_none=False)

            def native(args: dict[str, Any]) -> Any:
                value = expression(args=args)
                if isinstance(value, Undefined):
                    # StrictUndefined only raises when used; returning it is a use too.
                    value._fail_with_undefined_error()
                return value

            keys = _lookup_path(single.group("expr"))
            return native if keys is None else _fast_lookup(keys, native)
        if any(marker in text for marker in _TEMPLATE_MARKERS):
            template = _ENV.from_string(text)
            return lambda args: template.render(args=args)
    except TemplateError as exc:
        raise MappingError(f"{where}: {exc.message or type(exc).__name__}") from exc
    return lambda args: text


def _compile(node: Any, where: str) -> Renderer:
    if isinstance(node, str):
        return _compile_leaf(node, where)
    if isinstance(node, dict):
        parts = [(key, _compile(value, f"{where}.{key}")) for key, value in node.items()]
        return lambda args: {key: part(args) for key, part in parts}
    if isinstance(node, list):
        items = [_compile(value, f"{where}[{index}]") for index, value in enumerate(node)]
        return lambda args: [item(args) for item in items]
    return lambda args: node


def compile_mapping(mapping: dict[str, Any]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """Compile an action's argument mapping once; the result renders it per command.

    An empty mapping passes the caller's arguments through unchanged.

    Raises:
        MappingError: when a template does not compile (at compile time), or when
            rendering fails, refers to an undefined value, or does not give JSON
            within the size bounds (when the returned function is called).
    """
    if not mapping:
        return lambda args: dict(args)
    root = _compile(mapping, "$")

    def render(args: dict[str, Any]) -> dict[str, Any]:
        try:
            rendered = root(args)
            # Native expressions may give tuples, Markup or other non-JSON objects: a
            # round trip through orjson leaves plain JSON or fails clearly.
            encoded = orjson.dumps(rendered)
            if len(encoded) > MAX_RENDERED_BYTES:
                raise MappingError(f"mapped arguments exceed {MAX_RENDERED_BYTES} bytes")
            plain: dict[str, Any] = orjson.loads(encoded)
            return plain
        except TemplateError as exc:
            raise MappingError(exc.message or type(exc).__name__) from exc
        except MappingError:
            raise
        except (TypeError, ValueError, ArithmeticError, orjson.JSONEncodeError) as exc:
            raise MappingError(str(exc)[:300]) from exc

    return render
