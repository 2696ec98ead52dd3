"""``switchyard tenants apply/list/delete`` against the real broker."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

from switchyard.stack._procs import free_port
from switchyard.tenants import list_workspaces

REPO = Path(__file__).resolve().parents[2]

WORKSPACES_YAML = """
workspaces:
  - tenant_id: {tenant}
    space_id: main
    connectors: {{slack: {{}}}}
    actions:
      - name: daily_summary
        connector: slack
        operation: chat.postMessage
        input_schema: {{type: object, required: [summary]}}
        arguments: {{channel: "#daily", text: "{{{{ args.summary }}}}"}}
  - tenant_id: {tenant}
    space_id: other
"""


def _cli(settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_")}
    env.update(
        SWITCHYARD_KAFKA_BOOTSTRAP=settings.kafka_bootstrap,
        SWITCHYARD_TOPIC_PREFIX=settings.topic_prefix,
        SWITCHYARD_TOPIC_PARTITIONS=str(settings.topic_partitions),
        PYTHONPATH=str(REPO),
    )
    return subprocess.run(
        [sys.executable, "-m", "switchyard.cli", "tenants", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_tenants_apply_publishes_yaml_workspaces_that_list_and_delete_show(
    own_settings, tmp_path
) -> None:
    settings = own_settings
    tenant = f"cli_{uuid.uuid4().hex[:8]}"
    path = tmp_path / "tenants.yaml"
    path.write_text(WORKSPACES_YAML.format(tenant=tenant))
    applied = _cli(settings, "apply", "-f", str(path))
    assert applied.returncode == 0, applied.stderr
    assert f"applied: {tenant}/main v1 (1 actions)" in applied.stdout

    workspaces = await list_workspaces(settings)
    assert [(w.tenant_id, w.space_id) for w in workspaces] == [(tenant, "main"), (tenant, "other")]
    assert workspaces[0].action("daily_summary").arguments["text"] == "{{ args.summary }}"
    listed = _cli(settings, "list")
    assert f"{tenant}/main\tv1\tconnectors=slack\tactions=daily_summary" in listed.stdout

    deleted = _cli(settings, "delete", "--tenant", tenant, "--space", "other")
    assert deleted.returncode == 0, deleted.stderr
    assert [(w.space_id) for w in await list_workspaces(settings)] == ["main"]


def test_tenants_apply_refuses_a_bad_schema_or_mapping_before_publishing(
    settings, tmp_path
) -> None:
    bad_schema = tmp_path / "bad.json"
    bad_schema.write_text(
        '{"tenant_id": "x", "space_id": "main", "actions": [{"name": "a", "connector": "slack",'
        ' "operation": "op", "input_schema": {"type": "nonsense"}}]}'
    )
    result = _cli(settings, "apply", "-f", str(bad_schema), "--dry-run")
    assert result.returncode == 2 and "invalid input_schema" in result.stderr
    bad_mapping = tmp_path / "bad.yaml"
    bad_mapping.write_text(
        "tenant_id: x\nspace_id: main\nactions:\n  - {name: a, connector: slack, operation: op,"
        " arguments: {text: '{{ oops '}}\n"
    )
    result = _cli(settings, "apply", "-f", str(bad_mapping), "--dry-run")
    assert result.returncode == 2 and "invalid argument mapping" in result.stderr


def test_tenants_without_a_broker_say_so_in_one_line(settings) -> None:
    unreachable = settings.model_copy(update={"kafka_bootstrap": f"127.0.0.1:{free_port()}"})
    result = _cli(unreachable, "list")
    assert result.returncode == 1
    assert "cannot reach Kafka" in result.stderr and "Traceback" not in result.stderr, result.stderr
