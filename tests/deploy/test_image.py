"""The Dockerfile (which cannot be built here) agrees with the package and its entry points."""

from __future__ import annotations

import importlib
import re
import shlex
import tomllib
from typing import Any

import yaml
from _helm import CHART, ROOT

from core.settings import ENV_VARS
from switchyard.cli import COMMANDS

DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "docker-compose.kafka.yml"
ENV_NAME = re.compile(r"\b((?:SWITCHYARD|VAULT|OTEL)_[A-Z0-9_]+)\b")
SWITCHYARD_CMD = re.compile(r"(?:^|[\s\"'\[(;&|])switchyard[ \t]+([a-z][a-z-]*)")


def _stages() -> list[list[str]]:
    """Dockerfile instructions (continuations joined, comments dropped), per stage."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


def _dockerfile_commands() -> set[str]:
    """Roles the Dockerfile names: its usage comment and `switchyard <cmd>` in RUN lines."""
    text = DOCKERFILE.read_text()
    [usage] = re.findall(r"docker run IMAGE (.+)", text)
    roles = {alternative.split()[0] for alternative in usage.split("|")}
    roles |= set(SWITCHYARD_CMD.findall(text)) - {"-"}
    return roles


def _compose_commands() -> set[str]:
    compose = yaml.safe_load(COMPOSE.read_text())
    found: set[str] = set()
    for service in compose["services"].values():
        if not str(service.get("image", "")).startswith("switchyard") and "build" not in service:
            continue
        command = service.get("command", [])
        entrypoint = service.get("entrypoint")
        parts = command if isinstance(command, list) else shlex.split(command)
        # The image's ENTRYPOINT is `switchyard`; a shell entrypoint may pass the command on.
        passes_on = any('switchyard "$$@"' in str(part) for part in entrypoint or [])
        if (entrypoint is None or passes_on) and parts:
            found.add(parts[0])
        for text in [*(entrypoint or []), *parts]:
            found.update(SWITCHYARD_CMD.findall(str(text)))
    return found


def _chart_commands() -> set[str]:
    """`switchyard <cmd>` in the chart's templates: args lists and shell command strings."""
    found: set[str] = set()
    for template in (CHART / "templates").glob("*.yaml"):
        text = template.read_text()
        found.update(SWITCHYARD_CMD.findall(text))
        for block in re.findall(r"args:\s*\[\s*\"([a-z-]+)\"", text):
            found.add(block)
        for block in re.findall(r"args:\n(\s+)- ([a-z-]+)\n", text):
            found.add(block[1])
    return found


def test_every_switchyard_command_the_deploy_files_name_exists() -> None:
    dockerfile, compose, chart = _dockerfile_commands(), _compose_commands(), _chart_commands()
    assert {"ingress", "router", "worker", "topics"} <= dockerfile
    assert {"ingress", "router", "worker", "topics"} <= compose
    assert {"ingress", "router", "worker", "topics"} <= chart
    unknown = (dockerfile | compose | chart) - set(COMMANDS)
    assert not unknown, f"not in switchyard.cli.COMMANDS: {unknown}"
    for name in dockerfile | compose | chart:
        module = importlib.import_module(COMMANDS[name][0])
        assert callable(module.add_arguments) and callable(module.run), name


def test_every_long_running_compose_service_of_ours_has_a_readiness_healthcheck() -> None:
    # Each process serves /readyz on its metrics port (the ingress too, with its own checks).
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    ours = {name: s for name, s in services.items() if s.get("image") == "switchyard:local" and s.get("restart")}
    assert {"ingress", "router"} <= set(ours)
    for name, service in ours.items():
        assert "9464/readyz" in " ".join(service.get("healthcheck", {}).get("test", [])), name


def test_the_entrypoint_is_the_packages_console_script() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    target = project["scripts"]["switchyard"]
    module_name, _, attribute = target.partition(":")
    assert callable(getattr(importlib.import_module(module_name), attribute))
    final = _stages()[-1]
    assert 'ENTRYPOINT ["switchyard"]' in final


def test_the_builder_copies_every_package_the_wheel_includes() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {pattern.rstrip("*") for pattern in include}
    builder = " ".join(_stages()[0])
    copied = set(re.findall(r"COPY (\w+) \./\1", builder))
    assert packages <= copied, packages - copied
    assert "COPY pyproject.toml README.md constraints.txt ./" in builder
    # The image installs the versions the tests ran with.
    assert "pip wheel -c constraints.txt" in builder


def test_the_final_stage_has_no_build_tools_java_or_kafka_and_runs_as_uid_10001() -> None:
    stages = _stages()
    assert len(stages) >= 2
    final = stages[-1]
    # What the stage installs or copies (LABEL text may mention Kafka by name).
    text = "\n".join(line for line in final if not line.startswith("LABEL")).lower()
    for banned in ("build-essential", "gcc", "apt-get install", "pip install", "java", "jdk", "jre", "kafka", "maven"):
        assert banned not in text, banned
    assert final[0].split()[1] in ("${PYTHON_IMAGE}", "python:3.11-slim")
    assert 'ARG PYTHON_IMAGE=python:3.11-slim' in DOCKERFILE.read_text()
    assert any(line.startswith("COPY --from=builder /opt/switchyard ") for line in final)
    assert "USER 10001:10001" in final
    assert "--uid 10001" in text


def test_deploy_files_set_only_environment_variables_the_settings_read() -> None:
    named: dict[str, set[str]] = {
        "Dockerfile": set(ENV_NAME.findall(DOCKERFILE.read_text())),
        "compose": set(ENV_NAME.findall(COMPOSE.read_text())),
        "chart": {
            name
            for path in (CHART / "templates").iterdir()
            for name in ENV_NAME.findall(path.read_text())
        },
    }
    for where, names in named.items():
        # Per-pool variants (SWITCHYARD_VAULT_ROLE_ID_SLACK) are read by core.settings.connector_env.
        base = {re.sub(r"_(SLACK|GMAIL|NOTION|JIRA|GITHUB|HTTP)$", "", n) for n in names}
        assert base <= set(ENV_VARS), f"{where}: {base - set(ENV_VARS)}"
    assert "SWITCHYARD_VAULT_ROLE_ID" in named["chart"]


def test_the_build_context_leaves_out_secrets_tests_and_local_state() -> None:
    ignored = {
        line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", "tests", "*.env", ".env*"} <= ignored
    copied_dirs: set[Any] = set(re.findall(r"COPY (\w+) ", DOCKERFILE.read_text()))
    assert not copied_dirs & ignored
