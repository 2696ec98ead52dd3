"""Argument mapping: an action's ``arguments`` rendered with Jinja2's immutable sandbox.

Every string leaf of the mapping is a template rendered with the caller's arguments as
``args``. A leaf that is exactly one ``{{ expression }}`` is compiled with
``compile_expression`` instead, so it keeps the expression's native type (a number stays
a number, a list a list). Undefined names fail (``StrictUndefined``): a mapping that
refers to an argument the caller did not send is a clear rejection, not an empty string.

The sandbox stops attribute tricks; it does not bound sizes or time, which a mapping
must: it runs on the router's event loop for every command, and a crash while rendering
replays the command (and crashes again). So a mapping is straight-line: no loops, macros
or assignments (refused when it is compiled, so the admin API and ``tenants apply``
refuse it too). What one step could build from a small input is checked before the step
runs: ``*``, ``+``, ``~``, ``**`` and ``//`` (by the result's size; integers of at most
``MAX_INT_BITS`` in arithmetic and tests), ``%`` and ``str.format`` (their output
estimated from each field's width, precision and value), any integer argument above
``MAX_ARGUMENT`` to a filter or a call that takes sizes, ``tojson``'s indent, and the
output of ``join``, ``replace``, ``indent``, ``wordwrap``, ``expandtabs``,
``translate`` and ``urlize``, estimated from their inputs; ``sum`` adds numbers only and
``pprint`` is not offered. Sizes are weights (``_weight``): what a value writes out, a
container's items with theirs each time they are referenced. Every value a step builds,
every container a filter or call receives (as text), each leaf's value and each piece
of a template's output count against one budget per render, ``MAX_WORK_BYTES``, and
compiling (Jinja folds constants) runs within one too: many bounded steps cannot add up
to an unbounded one. Any failure while rendering, ``RecursionError`` and
``MemoryError`` included, rejects the command.

These bounds check Jinja's filters and methods one by one: a mapping is code the
operator trusts, the caller's values are the untrusted part.
"""

from __future__ import annotations

import _string
import re
import string
from collections.abc import Callable, ItemsView, Iterator, KeysView, ValuesView
from contextvars import ContextVar
from functools import wraps
from typing import Any

import orjson
from jinja2 import StrictUndefined, TemplateError, Undefined, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

__all__ = ["MappingError", "compile_mapping"]

MAX_PRODUCT_LENGTH = 64 * 1024
MAX_EXPONENT = 64
MAX_RENDERED_BYTES = 256 * 1024
# The largest width, count or size a filter or call that takes one may be given.
MAX_ARGUMENT = 64 * 1024
MAX_INDENT = 16  # tojson's: it repeats on every line of every level
# tojson with an indent runs Python's own (slow) encoder, and its output grows with depth.
MAX_INDENTED_WEIGHT = 16 * 1024
_WRAP_WORK = 2 * 10**9
MAX_INT_BITS = 64 * 1024
# What one render may build in all (values of its steps, leaves, output pieces).
MAX_WORK_BYTES = 8 * 2**20
# The filters and calls whose integer arguments are sizes of what they build.
_SIZE_TAKING = frozenset({
    "center", "ljust", "rjust", "zfill", "indent", "wordwrap", "tojson", "slice", "expandtabs", "range", "batch",
    "to_bytes",
})
# One ``%`` conversion: its width and precision (``*`` takes them from the values).
# (A key holds no parenthesis: a "%(" left open is not scanned to the end again and again.)
_PERCENT_FIELD = re.compile(r"%(\([^()]*\))?[-#0 +]*(\*|\d*)(?:\.(\*|\d*))?[hlL]?(.)", re.DOTALL)
# The width and precision of a ``str.format`` spec ([[fill]align][sign][z][#][0][width][,_][.precision]).
_BRACE_SPEC = re.compile(r"(?:.?[<>=^])?[-+ ]?z?#?0?(\d*)[,_]?(?:\.(\d*))?", re.DOTALL)
_TEXT_GROWTH = 6  # a container's text per unit of weight, at most (quotes, escapes, separators)
# Containers up to this weight are measured as text exactly (str() of them is cheap).
_MEASURED_WEIGHT = 64 * 1024
_CONTAINERS = (list, tuple, dict, set, frozenset, KeysView, ValuesView, ItemsView)
_FLOAT_WEIGHT = 24  # as text: -1.2345678901234567e-100
_OBJECT_WEIGHT = 64  # another object (a generator, say): what it takes in memory, about
_MISSING = object()  # a format field that names no value
_budget: ContextVar[_Budget | None] = ContextVar("mapping_budget", default=None)

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


def _too_large(what: str) -> SecurityError:
    return SecurityError(f"{what} would exceed {MAX_RENDERED_BYTES} bytes")


class _Budget:
    """What one render may still build, and the weights of the values it has measured
    (kept with the values, so an id is never reused for another within the render)."""

    __slots__ = ("left", "weights")

    def __init__(self) -> None:
        self.left = MAX_WORK_BYTES
        self.weights: dict[int, tuple[Any, int]] = {}


def _weight(value: Any) -> int:
    """About how large ``value`` is written out: a string's length, a container's items
    with theirs, each time they are referenced (``[[x] * 65536] * 256`` holds one inner
    list but writes out 256 of them). Past ``MAX_WORK_BYTES``, any number above it."""
    budget = _budget.get()
    memo = budget.weights if budget is not None else {}
    return _weigh(value, memo)


def _weigh(value: Any, memo: dict[int, tuple[Any, int]]) -> int:
    if isinstance(value, str | bytes):
        return len(value)
    if isinstance(value, bool) or value is None:
        return 5
    if isinstance(value, float):
        return _FLOAT_WEIGHT
    if isinstance(value, int):
        return value.bit_length() // 3 + 1  # its decimal digits
    if not isinstance(value, _CONTAINERS):
        return _OBJECT_WEIGHT
    known = memo.get(id(value))
    if known is not None:
        return known[1]
    total = len(value)
    items: Any = value
    if isinstance(value, dict):
        items = (part for pair in value.items() for part in pair)
    elif isinstance(value, ItemsView):
        items = (part for pair in value for part in pair)
    for item in items:
        total += _weigh(item, memo)
        if total > MAX_WORK_BYTES:
            return total  # not remembered: it stopped counting past the budget
    memo[id(value)] = (value, total)
    return total


def _spend(size: int) -> None:
    """Count ``size`` bytes against the render's budget (there is none at compile time).

    Raises:
        SecurityError: the render has built more than ``MAX_WORK_BYTES``.
    """
    budget = _budget.get()
    if budget is not None:
        budget.left -= size
        if budget.left < 0:
            raise SecurityError(f"the mapping builds more than {MAX_WORK_BYTES} bytes")


def _charge(value: Any) -> Any:
    """Count a value built against the render's budget; returns it."""
    _spend(_weight(value))
    return value


def _charge_input(value: Any) -> None:
    """Count a container about to be written out or copied (by a filter or a call)
    before the step runs: its items are written out whole, however little it holds, and
    as text (``string``, ``urlencode``...) each unit of weight may take several bytes."""
    if isinstance(value, _CONTAINERS):
        _spend(_weight(value) * _TEXT_GROWTH)


def _check_arguments(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    if name not in _SIZE_TAKING:
        return
    for value in (*args, *kwargs.values()):
        if isinstance(value, int | float) and not isinstance(value, bool) and abs(value) > MAX_ARGUMENT:
            raise SecurityError(f"an argument larger than {MAX_ARGUMENT}")


def _text_length(value: Any, conversion: str = "") -> int:
    """How long ``value`` is as text (``str``, or its repr or ascii for ``conversion`` r
    or a), at most; a field whose value is not known (``_MISSING``) counts as too long."""
    if value is _MISSING:
        return MAX_RENDERED_BYTES + 1
    if isinstance(value, str):
        if conversion in ("r", "a"):  # a repr or ascii escapes: up to 10 characters each
            return len(value) + 2 if len(value) > MAX_RENDERED_BYTES else len(ascii(value))
        return len(value)
    if isinstance(value, bool) or value is None:
        return 5
    if isinstance(value, int):
        return value.bit_length() + 2  # digits in any base, binary included
    if isinstance(value, float):
        return 32
    weight = _weight(value)
    if weight <= _MEASURED_WEIGHT:
        try:
            return len(ascii(value))
        except ValueError:  # an int of more digits than Python prints: the call raises too
            return 0
    return weight * _TEXT_GROWTH + 2


def _field_size(width: str, precision: str, value: Any, conversion: str) -> int:
    if width == "*" or precision == "*":
        raise SecurityError("a format width or precision that is not a literal")
    return max(int(width or 0), _text_length(value, conversion)) + int(precision or 0)


def _brace_value(name: str, args: tuple[Any, ...], kwargs: dict[str, Any], auto: int) -> Any:
    """The value a ``str.format`` field names (``0``, ``name``, the next positional one,
    then its ``[key]`` and ``.name`` parts as far as they lead into dicts and lists);
    ``_MISSING`` when it names none."""
    first, rest = _string.formatter_field_name_split(name)
    if first == "":
        value = args[auto] if auto < len(args) else _MISSING
    elif isinstance(first, int):
        value = args[first] if first < len(args) else _MISSING
    else:
        value = kwargs.get(first, _MISSING)
    return _follow(value, [key for _, key in rest])


def _follow(value: Any, keys: list[Any]) -> Any:
    """``value[key]...`` as far as the keys lead into dicts and lists; where one leads
    nowhere, the value reached so far (counting the whole is counting more)."""
    for key in keys:
        if isinstance(value, dict) and key in value:
            value = value[key]
        elif isinstance(value, list | tuple) and isinstance(key, int) and -len(value) <= key < len(value):
            value = value[key]
        else:
            break
    return value


def _check_format(spec: Any, args: tuple[Any, ...], kwargs: dict[str, Any], *, percent: bool) -> None:
    """Refuse a formatting whose output would exceed ``MAX_RENDERED_BYTES``: every field
    counts its width or its value's length, whichever is more, plus its precision.

    ``percent``: ``spec % values``, where ``args`` are a tuple's items (taken in turn)
    and ``kwargs`` a mapping's (named by ``%(key)s``); else ``spec.format(*args, **kwargs)``.
    """
    if not isinstance(spec, str):
        return
    total = len(spec)
    if total > MAX_RENDERED_BYTES:
        raise _too_large("the formatted text")
    if percent:
        turn = 0
        for field in _PERCENT_FIELD.finditer(spec):
            key, width, precision, kind = field.groups()
            if kind == "%":
                total += 1
                continue
            if key:
                value = kwargs.get(key[1:-1], _MISSING)
            else:
                value = args[turn] if turn < len(args) else _MISSING
                turn += 1
            total += _field_size(width, precision, value, kind)
            if total > MAX_RENDERED_BYTES:  # before measuring the fields after it
                raise _too_large("the formatted text")
    else:
        try:
            fields = list(string.Formatter().parse(spec))
        except ValueError:
            return  # not a format string: the call raises
        auto = 0
        for _, name, format_spec, conversion in fields:
            if name is None:
                continue
            if "{" in (format_spec or ""):
                raise SecurityError("a format width or precision that is not a literal")
            value = _brace_value(name, args, kwargs, auto)
            if name == "" or name[0] in ".[":
                auto += 1
            width, precision = _BRACE_SPEC.match(format_spec or "").groups()  # type: ignore[union-attr]
            total += _field_size(width or "", precision or "", value, conversion or "")
            if total > MAX_RENDERED_BYTES:  # before measuring the fields after it
                raise _too_large("the formatted text")
    if total > MAX_RENDERED_BYTES:
        raise _too_large("the formatted text")


def _percent_values(values: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """``spec % values`` as ``_check_format`` takes them."""
    if isinstance(values, tuple):
        return values, {}
    if isinstance(values, dict):
        return (values,), values  # ``%s`` of the dict itself, or ``%(key)s`` of its items
    return (values,), {}


def _joined_length(items: Any, attribute: Any = None) -> int:
    """How long the text of ``items`` joined is, without writing it (``join``; with
    ``attribute``, of that attribute of each item, a dotted path into dicts and lists)."""
    if isinstance(items, str):
        return len(items)  # joined character by character
    if not isinstance(items, list | tuple | set | frozenset | dict):
        return 0
    path = [] if attribute is None else [int(p) if p.isdigit() else p for p in str(attribute).split(".")]
    total = 0
    for item in items:
        item = _follow(item, path)
        total += len(item) if isinstance(item, str) else _text_length(item)
        if total > MAX_RENDERED_BYTES:
            break
    return total


def _check_output(
    name: str, subject: Any, args: tuple[Any, ...], kwargs: dict[str, Any], *, as_filter: bool = False
) -> None:
    """Refuse a call of ``name`` on ``subject`` (or the filter ``name`` of the value
    ``subject``) whose result would be too large."""
    if name == "join":
        # ``items|join(sep)`` (a filter) or ``sep.join(items)`` (a call).
        if as_filter:
            items, sep = subject, args[0] if args else kwargs.get("d", "")
        else:
            items, sep = args[0] if args else (), subject
        count = len(items) if isinstance(items, str | list | tuple | set | frozenset | dict) else 0
        attribute = kwargs.get("attribute", args[1] if as_filter and len(args) > 1 else None)
        if _joined_length(items, attribute) + len(str(sep)) * max(0, count - 1) > MAX_RENDERED_BYTES:
            raise _too_large("join")
    elif name == "replace" and isinstance(subject, str):
        # Positional or named (the filter's ``old=``/``new=``).
        old = str(args[0] if args else kwargs.get("old", ""))
        new = str(args[1] if len(args) > 1 else kwargs.get("new", ""))
        hits = len(subject) + 1 if old == "" else subject.count(old)
        if len(subject) + hits * max(0, len(new) - len(old)) > MAX_RENDERED_BYTES:
            raise _too_large("replace")
    elif name == "indent" and isinstance(subject, str):
        width = args[0] if args else kwargs.get("width", 4)
        pad = len(width) if isinstance(width, str) else int(width) if isinstance(width, int) else 0
        # Jinja splits lines as splitlines() does (\r, \v, \x85, \u2028... too).
        if len(subject) + (len(subject.splitlines()) + 1) * pad > MAX_RENDERED_BYTES:
            raise _too_large("indent")
    elif name == "wordwrap" and isinstance(subject, str):
        width = args[0] if args else kwargs.get("width", 79)
        wrap = args[2] if len(args) > 2 else kwargs.get("wrapstring")
        wrap = "\n" if wrap is None else str(wrap)
        if isinstance(width, int):
            lines = len(subject) // max(1, width) + len(subject.splitlines()) + 1
            if len(subject) + lines * max(1, len(wrap)) > MAX_RENDERED_BYTES:
                raise _too_large("wordwrap")
            # textwrap slices a long word once per line: quadratic in the word's length.
            if len(subject) ** 2 // max(1, width) > _WRAP_WORK:
                raise SecurityError("wordwrap of this text at this width would take too long")
    elif name == "expandtabs" and isinstance(subject, str):
        size = args[0] if args else kwargs.get("tabsize", 8)
        if isinstance(size, int) and len(subject) + subject.count("\t") * size > MAX_RENDERED_BYTES:
            raise _too_large("expandtabs")
    elif name == "tojson" and as_filter:
        indent = args[0] if args else kwargs.get("indent")
        if isinstance(indent, int | float) and not isinstance(indent, bool) and abs(indent) > MAX_INDENT:
            raise SecurityError(f"a tojson indent larger than {MAX_INDENT}")
        if indent is not None and _weight(subject) > MAX_INDENTED_WEIGHT:
            raise SecurityError(f"tojson with an indent takes values of weight {MAX_INDENTED_WEIGHT} at most")
    elif name == "sum" and as_filter:
        start = args[1] if len(args) > 1 else kwargs.get("start", 0)
        if not isinstance(start, int | float):
            # Adding sequences copies the whole so far at every step: quadratic.
            raise SecurityError("sum adds numbers only in a mapping (join texts, or list them)")
    elif name == "translate" and isinstance(subject, str) and args:
        table = args[0]
        values = table.values() if isinstance(table, dict) else table if isinstance(table, list | tuple) else ()
        longest = max((len(v) for v in values if isinstance(v, str)), default=1)
        if len(subject) * max(1, longest) > MAX_RENDERED_BYTES:
            raise _too_large("translate")
    elif name == "urlize" and isinstance(subject, str):
        # Every word may become a link that repeats itself, its target and its rel.
        extra = sum(len(str(kwargs.get(key) or "")) for key in ("target", "rel", "extra_schemes"))
        words = len(subject.split())
        if len(subject) * 2 + words * (extra + 40) > MAX_RENDERED_BYTES:
            raise _too_large("urlize")
    elif name == "format" and as_filter:  # %-formatting: ``value % (args or kwargs)``
        _check_format(subject, args, kwargs, percent=True)
    elif name == "format":
        _check_format(subject, args, kwargs, percent=False)
    elif name == "format_map":
        mapping = args[0] if args and isinstance(args[0], dict) else {}
        _check_format(subject, (), mapping, percent=False)


def _check_integers(*values: Any) -> None:
    """Refuse arithmetic on an integer above ``MAX_INT_BITS``: a product of bounded
    powers grows past it, and dividing such integers takes quadratic time."""
    for value in values:
        if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
            raise SecurityError(f"an integer of more than {MAX_INT_BITS} bits")


def _bounded_test(test: Callable[..., Any]) -> Callable[..., Any]:
    @wraps(test)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        _check_integers(*args, *kwargs.values())
        return test(*args, **kwargs)

    return bounded


def _bounded_filter(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    pass_arg = getattr(function, "jinja_pass_arg", None)

    @wraps(function)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        # A filter that takes the environment or context gets it first, then the value.
        value_at = 0 if pass_arg is None else 1
        if name in ("join", "sum") and len(args) > value_at and isinstance(args[value_at], Iterator):
            # Measured, then joined: the items of a lazy filter (map, select) are read once.
            args = (*args[:value_at], list(args[value_at]), *args[value_at + 1 :])
        values = args[value_at + 1 :]
        _check_arguments(name, values, kwargs)
        if len(args) > value_at:
            _charge_input(args[value_at])
            _check_output(name, args[value_at], values, kwargs, as_filter=True)
        return _charge(function(*args, **kwargs))

    return bounded


class _BoundedCodeGenerator(CodeGenerator):
    """Compiles ``a ~ b`` to the sandbox's :meth:`_BoundedSandbox.concat`, which measures
    before it joins (Jinja joins in place, with no hook)."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class _BoundedSandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**", "%", "+", "//"})
    code_generator_class = _BoundedCodeGenerator

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        # pprint is pure Python and slow on large values: not offered (tojson writes data).
        self.filters = {name: _bounded_filter(name, f) for name, f in self.filters.items() if name != "pprint"}
        # Tests take values too: divisibleby of a huge integer is a quadratic division.
        self.tests = {name: _bounded_test(test) for name, test in self.tests.items()}
        # Nothing that builds text or state of its own: lipsum(n), cycler, joiner, namespace.
        self.globals = {name: self.globals[name] for name in ("range", "dict")}

    def concat(self, parts: tuple[Any, ...]) -> str:
        """``a ~ b ~ ...``: measured (and counted), then joined."""
        _spend(sum(len(part) if type(part) is str else _text_length(part) for part in parts))
        return "".join([part if type(part) is str else str(part) for part in parts])

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        _check_integers(left, right)
        if operator == "**" and isinstance(right, int | float) and abs(right) > MAX_EXPONENT:
            raise SecurityError(f"exponent larger than {MAX_EXPONENT}")
        if operator == "**" and isinstance(left, int) and isinstance(right, int) and right > 0:
            if abs(left) > 1 and left.bit_length() * right > MAX_INT_BITS:
                raise SecurityError(f"a power of more than {MAX_INT_BITS} bits")
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(times, int) and not isinstance(times, bool):
                    if len(seq) * times > MAX_PRODUCT_LENGTH:
                        raise SecurityError(f"repetition longer than {MAX_PRODUCT_LENGTH}")
                    # What the repeated items hold, written out once per repetition.
                    if times > 0 and _weight(seq) * times > MAX_WORK_BYTES:
                        raise SecurityError(f"a repetition that holds more than {MAX_WORK_BYTES} bytes")
        if operator == "+" and isinstance(left, str | list | tuple) and isinstance(right, str | list | tuple):
            _spend(_weight(left) + _weight(right))  # counted before it is built
            return super().call_binop(context, operator, left, right)
        if operator == "%" and isinstance(left, str):
            _check_format(left, *_percent_values(right), percent=True)
        return _charge(super().call_binop(context, operator, left, right))

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        name = getattr(__obj, "__name__", "")
        # A bound method, or the sandbox's wrapper of str.format (which keeps the original).
        subject = getattr(__obj, "__self__", None)
        if subject is None:
            subject = getattr(getattr(__obj, "__wrapped__", None), "__self__", None)
        if name == "join" and args and isinstance(args[0], Iterator):
            args = (list(args[0]), *args[1:])  # measured, then joined: read once
        _check_arguments(name, args, kwargs)
        _charge_input(subject)
        _check_output(name, subject, args, kwargs)
        return _charge(super().call(__context, __obj, *args, **kwargs))


_ENV = _BoundedSandbox(undefined=StrictUndefined, autoescape=False)


def _check_straight_line(tree: nodes.Template, where: str) -> None:
    """Refuse loops, macros and assignments: a mapping's work stays proportional to its
    template and its input."""
    for node in tree.find_all(nodes.Stmt):
        if not isinstance(node, nodes.Output | nodes.If):
            raise MappingError(
                f"{where}: {type(node).__name__.lower()} blocks are not allowed in a mapping "
                "(only expressions and if)"
            )


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


def _counted(leaf: Renderer) -> Renderer:
    """A leaf whose value counts against the budget: a value the leaf looked up is
    written out once more for every leaf that gives it."""

    def counted(args: dict[str, Any]) -> Any:
        value = leaf(args)
        _spend(_weight(value))
        return value

    return counted


def _compile_leaf(text: str, where: str) -> Renderer:
    # Jinja folds constant expressions while it compiles (the admin API's check runs
    # here): within a budget of its own, as a render would be.
    budget = _budget.set(_Budget())
    try:
        return _compile_leaf_within(text, where)
    finally:
        _budget.reset(budget)


def _compile_leaf_within(text: str, where: str) -> Renderer:
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
            return _counted(native if keys is None else _fast_lookup(keys, native))
        if any(marker in text for marker in _TEMPLATE_MARKERS):
            tree = _ENV.parse(text)  # parsed once: checked, then compiled
            _check_straight_line(tree, where)
            template = _ENV.from_string(tree)

            def rendered(args: dict[str, Any]) -> str:
                # Piece by piece, each counted: a template of many large outputs stops
                # at the budget instead of being joined first.
                pieces = []
                for piece in template.generate(args=args):
                    _spend(len(piece))
                    pieces.append(piece)
                return "".join(pieces)

            return rendered
    except TemplateError as exc:
        raise MappingError(f"{where}: {exc.message or type(exc).__name__}") from exc
    except RecursionError:  # e.g. thousands of nested parentheses
        raise MappingError(f"{where}: the template is nested too deeply") from None
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
        budget = _budget.set(_Budget())
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
        except RecursionError:
            raise MappingError("the mapping recursed too deeply") from None
        except MemoryError:
            raise MappingError("the mapping ran out of memory") from None
        except Exception as exc:  # a crash here would replay the command and crash again
            raise MappingError(str(exc)[:300] or type(exc).__name__) from exc
        finally:
            _budget.reset(budget)

    return render
