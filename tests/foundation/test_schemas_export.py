"""JSON Schema export: committed files match the models, and they validate real records."""

from __future__ import annotations

import argparse
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import jsonschema
import orjson
import pytest

from schemas import ErrorCode, ErrorInfo, Result, ResultStatus, StageTimes
from switchyard import schema_export

EXPECTED_FILES = {
    "command.schema.json",
    "routed_command.schema.json",
    "result.schema.json",
    "workspace_config.schema.json",
    "api_key_record.schema.json",
    "task_cancel.schema.json",
}


def test_committed_json_schemas_match_the_models() -> None:
    assert {p.name for p in schema_export.SCHEMA_DIR.glob("*.schema.json")} == EXPECTED_FILES
    stale = schema_export.stale_files()
    assert stale == [], f"run `switchyard schemas export` (stale: {stale})"


def test_schemas_export_check_exits_1_on_a_stale_file_and_0_after_export(tmp_path: Path) -> None:
    check = argparse.Namespace(action="export", check=True, dir=tmp_path)
    assert schema_export.run(check) == 1  # nothing written yet
    assert schema_export.run(argparse.Namespace(action="export", check=False, dir=tmp_path)) == 0
    assert schema_export.run(check) == 0
    result_file = tmp_path / "result.schema.json"
    result_file.write_bytes(result_file.read_bytes().replace(b"dead_lettered", b"dead"))
    assert schema_export.run(check) == 1
    assert schema_export.stale_files(tmp_path) == ["result.schema.json"]


def test_schemas_export_check_cli_passes_on_the_committed_files() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "switchyard.cli", "schemas", "export", "--check"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_export_is_deterministic_with_sorted_keys_and_a_trailing_newline() -> None:
    first = schema_export.render(Result)
    assert first == schema_export.render(Result)
    assert first.endswith(b"}\n")
    parsed = orjson.loads(first)
    assert list(parsed) == sorted(parsed)


def _result() -> Result:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    return Result(
        command_id="cmd_0001",
        tenant_id="acme",
        space_id="sales",
        user_id="u1",
        action="daily_summary",
        idempotency_key="k-1",
        status=ResultStatus.FAILED,
        connector="slack",
        operation="chat.postMessage",
        error=ErrorInfo(code=ErrorCode.UPSTREAM_RATE_LIMITED, message="slow down", retryable=True),
        attempts=3,
        times=StageTimes(submitted_at=now, finished_at=now),
        trace_id="0" * 32,
    )


def test_exported_result_schema_accepts_a_real_result_and_fields_a_later_release_may_add() -> None:
    # The consumers' contract: schema_version stays 1 while changes are additive, so a
    # consumer validating with the file it has must not fail on a new optional field.
    schema = orjson.loads((schema_export.SCHEMA_DIR / "result.schema.json").read_bytes())
    validator = jsonschema.Draft202012Validator(schema)
    record = orjson.loads(_result().to_bytes())
    validator.validate(record)
    validator.validate({**record, "surprise": 1, "error": {**record["error"], "detail": "x"}})
    with pytest.raises(jsonschema.ValidationError):
        validator.validate({**record, "status": "maybe"})  # a new status comes a release ahead
    with pytest.raises(jsonschema.ValidationError):
        validator.validate({**record, "attempts": "two"})
    # Switchyard's own readers (the ingress's polls and waits) skip them too: workers are
    # upgraded first, and their Results must not read as missing meanwhile.
    assert Result.from_bytes(orjson.dumps({**record, "surprise": 1})) == Result.from_bytes(orjson.dumps(record))
    with pytest.raises(ValueError, match="status"):
        Result.from_bytes(orjson.dumps({**record, "status": "maybe"}))
    command = orjson.loads((schema_export.SCHEMA_DIR / "command.schema.json").read_bytes())
    assert command["additionalProperties"] is False
