"""Workspace input schemas the router applies: written by tenants' admins, so nothing in
one may fetch a URL, crash the router or be read in another dialect than the MCP edge
reads it. Pure: no Kafka."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from _router_support import command, summary_action, workspace

from core.errors import PermanentError
from core.schema_check import SchemaBroken, SchemaCheck, checked, schema_problem
from router import workspace_problem
from router._resolve import ActionCache, resolve
from schemas import ErrorCode, WorkspaceConfig


def _workspace(schema: dict[str, Any]) -> WorkspaceConfig:
    action = summary_action("slack", "chat.postMessage", {"text": "{{ args.summary }}"})
    return workspace("acme", [action.model_copy(update={"input_schema": schema})])


def _resolve(schema: dict[str, Any], arguments: dict[str, Any]) -> Any:
    # The workspace is built around the write-time check, as one stored before it was.
    return resolve(command("acme", arguments), _workspace(schema), datetime.now(UTC), ActionCache())


@pytest.fixture
def schema_server() -> Iterator[tuple[str, list[str]]]:
    """A URL serving a schema, and the paths requested from it."""
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            hits.append(self.path)
            body = b'{"enum": ["INTERNAL-ONLY-VALUE"]}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/internal/schema.json", hits
    finally:
        server.shutdown()
        thread.join(5)


@pytest.mark.parametrize(
    ("schema", "why"),
    [
        ({"properties": {"summary": {"$ref": "#/$defs/missing"}}}, "does not resolve"),
        ({"properties": {"summary": {"$dynamicRef": "#nope"}}}, "does not resolve"),
        ({"properties": {"summary": {"$ref": "urn:elsewhere"}}}, "does not resolve"),
        ({"properties": {"summary": {"type": "string", "pattern": "(" * 2000 + ")" * 2000}}}, "nested"),
        ({"type": "objekt"}, "is not valid"),
        ({"$schema": 5, "type": "object"}, "$schema"),
        ({"required": ["a"], "properties": {"summary": {"$ref": "#/required/x"}}}, "does not resolve"),
        ({"required": ["a"], "properties": {"summary": {"$ref": "#/required/0"}}}, "not a schema"),
        ({"type": "object", "properties": {"summary": {"$ref": "#/type"}}}, "not a schema"),
        # Only the Python validator reads these, and it may run without bound on a value.
        ({"$schema": "http://json-schema.org/draft-03/schema#", "type": "object"}, "cannot be compiled"),
        ({"properties": {"summary": {"type": "string", "pattern": "done\\Z"}}}, "cannot be compiled"),
    ],
    ids=[
        "dangling-pointer", "dangling-dynamic-anchor", "other-resource", "deep-pattern", "not-a-schema",
        "dialect-not-a-string", "pointer-step-into-a-list", "pointer-to-a-string", "pointer-to-a-keyword",
        "draft-03", "python-only-pattern",
    ],
)
def test_a_schema_that_cannot_be_applied_is_refused_when_written(schema: dict[str, Any], why: str) -> None:
    problem = schema_problem(schema)
    assert problem is not None and why in problem
    assert why in (workspace_problem(_workspace(schema)) or "")


@pytest.mark.parametrize("kind", ["array", "string", ["object", "null"]])
def test_a_schema_whose_root_is_not_an_object_is_refused_when_written(kind: Any) -> None:
    # Arguments are always a JSON object: such an action would be listed, and every call
    # of it rejected by the router.
    problem = workspace_problem(_workspace({"type": kind}))
    assert problem is not None and "must describe an object of named arguments" in problem
    assert workspace_problem(_workspace({"type": "object"})) is None
    assert workspace_problem(_workspace({"properties": {"summary": {"type": "string"}}})) is None


@pytest.mark.parametrize(
    "schema",
    [
        {"$defs": {"s": {"type": "string"}}, "properties": {"summary": {"$ref": "#/$defs/s"}}},
        {"$defs": {"s": {"$anchor": "text", "type": "string"}}, "properties": {"summary": {"$ref": "#text"}}},
        {
            "$id": "https://example.com/root",
            "$defs": {"s": {"$id": "text", "type": "string", "$defs": {"n": {"type": "integer"}}}},
            "properties": {"summary": {"$ref": "text"}, "count": {"$ref": "text#/$defs/n"}},
        },
        {"properties": {"summary": {"$ref": "https://json-schema.org/draft/2020-12/schema"}}},
        {
            "$schema": "http://json-schema.org/draft-07/schema#",
            "definitions": {"s": {"type": "string"}},
            "properties": {"summary": {"$ref": "#/definitions/s"}},
        },
        {"properties": {"summary": {"$ref": "#/properties/count"}, "count": True}},
        # Not a keyword of draft-07: an unknown keyword, ignored there.
        {"$schema": "http://json-schema.org/draft-07/schema#", "properties": {"summary": {"$dynamicRef": "#x"}}},
    ],
    ids=["pointer", "anchor", "embedded-id", "metaschema", "draft-07", "boolean-schema", "unknown-keyword"],
)
def test_references_within_the_schema_resolve(schema: dict[str, Any]) -> None:
    assert schema_problem(schema) is None
    checked(schema).errors({"summary": "x", "count": 1})  # applies, raises nothing


def test_a_remote_reference_is_never_fetched_and_rejects_the_command(schema_server: tuple[str, list[str]]) -> None:
    url, hits = schema_server
    schema = {"type": "object", "properties": {"summary": {"$ref": url}}}
    assert "does not resolve" in (schema_problem(schema) or "")

    with pytest.raises(PermanentError) as refused:
        _resolve(schema, {"summary": 1})

    assert refused.value.code is ErrorCode.INTERNAL and "invalid input schema" in refused.value.message
    # Nor by a check built around the write-time test (the MCP edge's, for one).
    with pytest.raises(SchemaBroken):
        SchemaCheck(schema).errors({"summary": 1})
    assert hits == []
    assert "INTERNAL-ONLY-VALUE" not in refused.value.message


def test_a_dangling_reference_rejects_its_command_instead_of_raising() -> None:
    # It stopped the router (the batch failed on a non-CommandError), and the command
    # came back after each restart.
    with pytest.raises(PermanentError) as refused:
        _resolve({"type": "object", "properties": {"summary": {"$ref": "#/$defs/missing"}}}, {"summary": "x"})
    assert refused.value.code is ErrorCode.INTERNAL


def test_a_check_built_without_the_write_time_test_reports_a_broken_schema() -> None:
    check = SchemaCheck({"properties": {"x": {"$ref": "#/$defs/gone"}}})
    assert check.errors({"y": 1}) is not None  # the reference is not on this instance's path
    with pytest.raises(SchemaBroken, match="does not resolve"):
        check.errors({"x": 1})
    # A reference to a string: jsonschema raised AttributeError (an MCP call's 500).
    with pytest.raises(SchemaBroken, match="cannot be applied"):
        SchemaCheck({"type": "object", "properties": {"x": {"$ref": "#/type"}}}).errors({"x": 1})


def test_the_router_reads_a_schema_in_its_own_dialect_as_the_mcp_edge_does() -> None:
    # draft-07's "dependencies" is not a 2020-12 keyword: read as 2020-12, {"summary"}
    # alone passed the router while the MCP edge refused it.
    schema = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "properties": {"summary": {"type": "string"}, "count": {"type": "integer"}},
        "dependencies": {"summary": ["count"]},
    }
    with pytest.raises(PermanentError) as refused:
        _resolve(schema, {"summary": "x"})
    assert refused.value.code is ErrorCode.INVALID_ARGUMENTS
    assert _resolve(schema, {"summary": "x", "count": 1}).resolved_arguments == {"text": "x"}


def test_the_compiled_and_the_python_check_agree_on_what_they_refuse() -> None:
    # A value the compiled check refuses but Python's regex lets by ("$" matches before a
    # final newline) is refused, with a worded error.
    line = checked({"type": "object", "properties": {"h": {"type": "string", "pattern": "^[^\\r\\n]*$"}}})
    (error,) = line.errors({"h": "v\n"})
    assert error.validator == "pattern" and list(error.absolute_path) == ["h"]
    assert list(line.errors({"h": "v"})) == []
    # Formats are annotations in both (jsonschema_rs asserts them for draft-07 by default).
    email = checked({"$schema": "http://json-schema.org/draft-07/schema#", "properties": {"e": {"format": "email"}}})
    assert list(email.errors({"e": "not an address"})) == []


@pytest.mark.timeout(60)  # the old check ran for minutes on each of these, or for ever
def test_a_callers_value_cannot_make_a_check_run_away() -> None:
    # Run to word an error, the Python validator compared every pair for uniqueItems over
    # objects and backtracks on nested quantifiers; the router and the MCP edge check on
    # their event loop, shared by every tenant. The compiled check words errors itself.
    unique = checked({"type": "object", "properties": {"labels": {"type": "array", "uniqueItems": True}}})
    (error,) = unique.errors({"labels": [{"a": n} for n in range(20_000)] + [{"a": 0}]})
    assert error.validator == "uniqueItems" and list(error.absolute_path) == ["labels"]
    nested = checked({"type": "object", "properties": {"s": {"type": "string", "pattern": "^(a+)+$"}}})
    (error,) = nested.errors({"s": "a" * 64 + "!"})
    assert error.validator == "pattern" and list(error.absolute_path) == ["s"]


@pytest.mark.parametrize(
    ("schema", "instance"),
    [
        ({"properties": {"a": {"anyOf": [{"type": "string", "maxLength": 2}, {"type": "integer"}]}}}, {"a": "abcd"}),
        ({"properties": {"a": {"oneOf": [{"type": "object", "properties": {"b": {"type": "string"}}},
                                         {"type": "integer"}]}}}, {"a": {"b": 5}}),  # fmt: skip
        ({"properties": {"k": {}}, "dependentRequired": {"k": ["d"]}}, {"k": 1}),
        ({"properties": {"required": False}}, {"required": "SECRET-VALUE"}),
        ({"required": ["x"], "properties": {"x": {"type": "string"}}}, {}),
        ({"properties": {"x": {"type": "string", "pattern": "^a+$"}}}, {"x": "b"}),
        ({"additionalProperties": False, "properties": {"x": {}}}, {"y": 1}),
        ({"properties": {"n": {"type": "integer", "minimum": 3}}}, {"n": 1}),
    ],
    ids=["anyOf", "oneOf-nested", "dependentRequired", "false-schema", "required", "pattern",
         "additionalProperties", "minimum"],
)
def test_the_compiled_check_words_errors_as_the_python_one(schema: dict[str, Any], instance: Any) -> None:
    # The words a caller reads (the best error, its place and its rule) are jsonschema's,
    # through anyOf/oneOf branches too; never the value.
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import best_match

    from core.schema_check import describe

    expected = best_match(Draft202012Validator(schema).iter_errors(instance))
    got = best_match(checked(schema).errors(instance))
    assert describe(got) == describe(expected)
    if expected.validator is not None:  # jsonschema places a false schema's error at its parent
        assert got.json_path == expected.json_path
    assert "SECRET-VALUE" not in describe(got)
