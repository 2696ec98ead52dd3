"""What the chart's pods run: commands, environment, Vault identity, probes and hardening."""

from __future__ import annotations

import argparse
import importlib
import json
import re
from typing import Any

import pytest
import yaml
from _helm import CHART, Render

from core.settings import ENV_VARS, load_settings
from schemas import CONNECTORS, RETRY_TIERS
from switchyard.cli import COMMANDS

# The first test to ask for helm may build it (scripts/install-go-tool.sh, minutes on 2 cores);
# every helm call itself is bounded at 120 s.
pytestmark = pytest.mark.timeout(1500)

SECRET_WORDS = ("PASSWORD", "SECRET", "TOKEN", "ROLE_ID")


def _pods(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Pod specs of every workload, by workload name."""
    return {
        d["metadata"]["name"]: d["spec"]["template"]["spec"]
        for d in docs
        if d["kind"] in ("Deployment", "Job")
    }


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def parse_switchyard_args(argv: list[str]) -> argparse.Namespace:
    """Parse ``switchyard <argv>`` with the real parser of that command's module."""
    name, rest = argv[0], argv[1:]
    assert name in COMMANDS, f"switchyard {name} is not a command"
    module = importlib.import_module(COMMANDS[name][0])
    parser = argparse.ArgumentParser(prog=f"switchyard {name}", exit_on_error=False)
    module.add_arguments(parser)
    try:
        return parser.parse_args(rest)
    except SystemExit as exc:  # argparse exits on unknown options even with exit_on_error off
        raise AssertionError(f"switchyard {' '.join(argv)} does not parse") from exc


def test_every_container_runs_a_switchyard_command_its_parser_accepts(render: Render) -> None:
    for values in ("minimal-values.yaml", "large-values.yaml"):
        for name, pod in _pods(render(values)).items():
            [container] = pod["containers"]
            assert "command" not in container, name  # the image's ENTRYPOINT is switchyard
            parse_switchyard_args(container["args"])


def test_every_environment_variable_is_one_the_settings_read(render: Render) -> None:
    for values in ("minimal-values.yaml", "large-values.yaml"):
        for name, pod in _pods(render(values)).items():
            [container] = pod["containers"]
            unknown = set(_env(container)) - set(ENV_VARS)
            assert not unknown, f"{name}: {unknown}"


def test_secrets_come_from_kubernetes_secrets_never_literal_values(render: Render) -> None:
    docs = render("large-values.yaml")
    seen = set()
    for name, pod in _pods(docs).items():
        [container] = pod["containers"]
        for var, entry in _env(container).items():
            if any(word in var for word in SECRET_WORDS):
                assert "value" not in entry and "secretKeyRef" in entry["valueFrom"], (name, var)
                seen.add(var)
    assert seen >= {
        "SWITCHYARD_KAFKA_SASL_PASSWORD",
        "SWITCHYARD_VAULT_ROLE_ID",
        "SWITCHYARD_VAULT_SECRET_ID",
        "SWITCHYARD_ADMIN_TOKEN",
        "SWITCHYARD_OBSERVER_TOKEN",
        "SWITCHYARD_MCP_SESSION_SECRET",
        "VAULT_TOKEN",
    }
    assert not [d for d in docs if d["kind"] == "Secret"]


def test_each_pool_has_its_own_deployment_group_and_approle_secret(render: Render) -> None:
    docs = render("large-values.yaml")
    workers = {
        d["metadata"]["labels"]["switchyard.io/connector"]: d
        for d in docs
        if d["kind"] == "Deployment" and d["metadata"]["labels"]["app.kubernetes.io/component"] == "worker"
    }
    assert set(workers) == {"slack", "gmail", "notion", "jira", "github"}
    for connector, deployment in workers.items():
        group = deployment["metadata"]["annotations"]["switchyard.io/consumer-group"]
        assert group == f"prod.switchyard.workers.{connector}"
        assert "replicas" not in deployment["spec"]  # KEDA owns it
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        args = parse_switchyard_args(container["args"])
        assert args.connector == connector
        env = _env(container)
        secret = "vault-approle-github" if connector == "github" else f"sy-switchyard-vault-{connector}"
        assert env["SWITCHYARD_VAULT_ROLE_ID"]["valueFrom"]["secretKeyRef"] == {"name": secret, "key": "role-id"}
        assert env["SWITCHYARD_VAULT_SECRET_ID"]["valueFrom"]["secretKeyRef"] == {"name": secret, "key": "secret-id"}
    slack_env = _env(workers["slack"]["spec"]["template"]["spec"]["containers"][0])
    assert slack_env["SWITCHYARD_WORKER_CONCURRENCY"]["value"] == "512"
    assert slack_env["SWITCHYARD_TENANT_CONCURRENCY"]["value"] == "32"
    notion_args = workers["notion"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert parse_switchyard_args(notion_args).retry_tier_delays == "5,30"
    [router] = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-router")]
    assert _env(router["spec"]["template"]["spec"]["containers"][0])["SWITCHYARD_ROUTER_LINGER_MS"]["value"] == "5"


def test_vault_agent_injector_replaces_the_approle_secrets(render: Render) -> None:
    docs = render("minimal-values.yaml", set=["vault.agentInjector.enabled=true"])
    pools = [d for d in docs if d["kind"] == "Deployment" and "worker" in d["metadata"]["name"]]
    assert len(pools) == 3
    accounts = {d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount"}
    assert accounts == {"sy-switchyard", *(f"sy-switchyard-worker-{c}" for c in ("gmail", "http", "slack"))}
    # An existing account named instead stays the one every pod uses (nothing to create).
    named = render("minimal-values.yaml", set=[
        "vault.agentInjector.enabled=true", "serviceAccount.create=false", "serviceAccount.name=mysa",
    ])  # fmt: skip
    assert {d["spec"]["template"]["spec"]["serviceAccountName"] for d in named if d["kind"] == "Deployment"} == {"mysa"}
    for deployment in pools:
        connector = deployment["metadata"]["labels"]["switchyard.io/connector"]
        template = deployment["spec"]["template"]
        annotations = template["metadata"]["annotations"]
        assert annotations["vault.hashicorp.com/agent-inject"] == "true"
        assert annotations["vault.hashicorp.com/role"] == f"switchyard-{connector}"
        assert template["spec"]["automountServiceAccountToken"] is True
        [container] = template["spec"]["containers"]
        # Its own ServiceAccount, which only its own Kubernetes auth role binds.
        assert template["spec"]["serviceAccountName"] == f"sy-switchyard-worker-{connector}"
        env = _env(container)
        assert not {"SWITCHYARD_VAULT_ROLE_ID", "SWITCHYARD_VAULT_SECRET_ID"} & set(env)
        assert env["SWITCHYARD_VAULT_TOKEN_FILE"]["value"] == "/vault/secrets/token"
        assert "command" not in container  # the image's entry point, as with AppRole
        assert parse_switchyard_args(container["args"]).connector == connector


def test_pods_run_as_non_root_with_a_read_only_root_and_no_capabilities(render: Render) -> None:
    for name, pod in _pods(render("large-values.yaml")).items():
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] == 10001, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        [container] = pod["containers"]
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True, name
        assert security["allowPrivilegeEscalation"] is False, name
        assert security["capabilities"]["drop"] == ["ALL"], name
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert "emptyDir" in volumes["tmp"], name
        assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"], name
        assert _env(container)["SWITCHYARD_HOME"]["value"].startswith("/tmp/"), name
        if "kafka-ca" in volumes:
            ca_file = _env(container)["SWITCHYARD_KAFKA_CA_FILE"]["value"]
            assert ca_file == "/etc/switchyard/kafka-ca/ca.crt", name
        # Vault's private CA, where its clients and the readiness check read it.
        assert volumes["vault-ca"]["secret"]["secretName"] == "switchyard-vault-ca", name
        assert {"name": "vault-ca", "mountPath": "/etc/switchyard/vault-ca", "readOnly": True} in container["volumeMounts"]
        assert _env(container)["VAULT_CACERT"]["value"] == "/etc/switchyard/vault-ca/ca.crt", name


def test_probes_check_health_and_readiness_on_the_right_ports(render: Render) -> None:
    for name, pod in _pods(render("minimal-values.yaml")).items():
        [container] = pod["containers"]
        if "topics" in name:
            assert "readinessProbe" not in container
            continue
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        probe_port = "http" if name.endswith("-ingress") else "metrics"
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": probe_port}, name
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": probe_port}, name
        assert _env(container)["SWITCHYARD_METRICS_PORT"]["value"] == str(ports["metrics"]), name
        if probe_port == "http":
            assert _env(container)["SWITCHYARD_INGRESS_PORT"]["value"] == str(ports["http"])


def test_the_ingress_service_publishes_the_api_and_metrics_stay_on_a_headless_service(render: Render) -> None:
    # The metrics name every tenant and need no token on their own port: the Service a
    # LoadBalancer or NodePort may expose carries the API only (an SRE review found the
    # metrics port on it, guarded only by a NetworkPolicy the cluster may not enforce).
    services = {d["metadata"]["name"]: d for d in render("minimal-values.yaml") if d["kind"] == "Service"}
    api = services["sy-switchyard-ingress"]
    assert [port["name"] for port in api["spec"]["ports"]] == ["http"]
    assert "switchyard.io/metrics" not in api["metadata"]["labels"]
    metrics = services["sy-switchyard-ingress-metrics"]
    assert metrics["spec"]["clusterIP"] == "None" and [p["name"] for p in metrics["spec"]["ports"]] == ["metrics"]
    assert metrics["metadata"]["labels"]["switchyard.io/metrics"] == "true"
    assert metrics["spec"]["selector"] == api["spec"]["selector"]
    # Every process is scraped through a headless Service of its own, alike.
    scraped = [d for d in services.values() if d["metadata"]["labels"].get("switchyard.io/metrics") == "true"]
    assert all(d["spec"].get("clusterIP") == "None" for d in scraped)


def test_topics_job_applies_topics_before_install_and_upgrade(render: Render) -> None:
    from switchyard import topics

    docs = render("large-values.yaml")
    [job] = [d for d in docs if d["kind"] == "Job"]
    hooks = job["metadata"]["annotations"]["helm.sh/hook"].split(",")
    assert sorted(hooks) == ["pre-install", "pre-upgrade"]
    [container] = job["spec"]["template"]["spec"]["containers"]
    args = parse_switchyard_args(container["args"])
    assert args.action == "apply" and args.increase_partitions and not args.dry_run
    assert (args.results_retention_hours, args.dlq_retention_hours) == (72, 720)
    assert args.logs_retention_hours * 3_600_000 == topics.LOGS_RETENTION_MS
    env = _env(container)
    assert env["SWITCHYARD_TOPIC_PARTITIONS"]["value"] == "48"
    assert env["SWITCHYARD_REPLICATION_FACTOR"]["value"] == "3"
    assert env["SWITCHYARD_KAFKA_SECURITY_PROTOCOL"]["value"] == "SASL_SSL"


def test_chart_knows_the_runtimes_connectors_and_retry_tiers() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    pools = schema["properties"]["workers"]["properties"]["pools"]
    assert tuple(pools["propertyNames"]["enum"]) == CONNECTORS
    helpers = (CHART / "templates" / "_helpers.tpl").read_text()
    [names] = re.findall(r'define "switchyard.retryTierNames" -}}\s*(\[[^\]]*\])', helpers)
    assert tuple(json.loads(names)) == RETRY_TIERS
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert tuple(values["workerDefaults"]["retryTiers"]) == RETRY_TIERS
    assert schema["properties"]["workerDefaults"]["properties"]["retryTiers"]["maxItems"] == len(RETRY_TIERS)


def test_egress_lets_workers_reach_their_base_urls_and_every_pod_the_trace_collector(render: Render) -> None:
    docs = render(
        "large-values.yaml",
        set=["workers.pools.jira.connectorBaseUrl=http://jira.internal:8900",
             "workers.pools.slack.connectorBaseUrl=http://slack-proxy",
             "workers.pools.gmail.connectorBaseUrl=http://[fd00::1]:8901"],
    )  # fmt: skip
    policies = {d["metadata"]["name"]: d for d in docs if d["kind"] == "NetworkPolicy"}
    ports = {
        name: {port["port"] for rule in policy["spec"]["egress"] for port in rule.get("ports", [])}
        for name, policy in policies.items()
    }
    assert {443, 8900, 80, 8901, 4318} <= ports["sy-switchyard-worker"]  # HTTPS, the base URLs, OTLP
    assert 4318 in ports["sy-switchyard-ingress"] and 4318 in ports["sy-switchyard-router"]
    assert 8900 not in ports["sy-switchyard-ingress"]


# Beyond its caches, what a busy ingress replica holds: the process itself, each cache
# entry's overhead and the observer's per-tenant views. Measured: 120,000 async commands
# (bench, 2026-11-29) took a replica to 576 MiB with its caches full, 448 MiB of which
# were the caches' bytes.
INGRESS_OVERHEAD_MIB = 320


def _mib(quantity: str) -> float:
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return float(quantity[: -len(suffix)]) * factor
    return float(quantity) / 2**20


@pytest.mark.parametrize("values", ["minimal-values.yaml", "large-values.yaml"])  # defaults; overrides
def test_the_ingress_memory_limit_covers_its_caches(render: Render, values: str) -> None:
    """A busy replica fills its caches: under a limit below them it is killed for memory
    (the chart's 512Mi was: the bench's 120,000 commands took a replica to 576 MiB)."""
    from ingress.observe._aggregator import _TRACES_MAX_BYTES

    [pod] = [spec for name, spec in _pods(render(values)).items() if name.endswith("-ingress")]
    [container] = pod["containers"]
    args = parse_switchyard_args(container["args"])
    caches = args.results_max_mib + args.submitted_max_mib + _TRACES_MAX_BYTES / 2**20
    assert _mib(container["resources"]["limits"]["memory"]) >= caches + INGRESS_OVERHEAD_MIB
    assert args.no_create_topics and args.results_capacity == 100_000


def test_the_http_pool_takes_the_private_networks_its_hosts_may_resolve_to(render: Render) -> None:
    docs = render("minimal-values.yaml", set=["workers.pools.http.privateNetworks={10.0.0.0/8,fd00::/8}"])
    env = {
        d["metadata"]["labels"]["switchyard.io/connector"]: _env(d["spec"]["template"]["spec"]["containers"][0])
        for d in docs
        if d["kind"] == "Deployment" and d["metadata"]["labels"]["app.kubernetes.io/component"] == "worker"
    }
    listed = env["http"]["SWITCHYARD_HTTP_PRIVATE_NETWORKS"]["value"]
    assert [str(n) for n in load_settings({"SWITCHYARD_HTTP_PRIVATE_NETWORKS": listed}).http_private_networks] == [
        "10.0.0.0/8", "fd00::/8"]  # fmt: skip
    assert "SWITCHYARD_HTTP_PRIVATE_NETWORKS" not in env["slack"]


def test_the_ingress_can_keep_its_image_while_the_others_are_upgraded(render: Render) -> None:
    """An upgrade that must reach routers and workers first (README, "Upgrades")."""
    images = {name: pod["containers"][0]["image"] for name, pod in _pods(render("minimal-values.yaml")).items()}
    assert len(set(images.values())) == 1
    staged = render("minimal-values.yaml", set=["image.tag=2.0", "ingress.imageTag=1.9"])
    images = {name: pod["containers"][0]["image"] for name, pod in _pods(staged).items()}
    assert {image for name, image in images.items() if name.endswith("-ingress")} == {"switchyard:1.9"}
    assert {image for name, image in images.items() if not name.endswith("-ingress")} == {"switchyard:2.0"}


def test_rolling_updates_and_drains_let_each_process_finish(render: Render) -> None:
    docs = render("large-values.yaml")
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    ingress = deployments["sy-switchyard-ingress"]["spec"]["template"]["spec"]
    # The Service stops sending first, then requests in flight finish within the grace.
    assert ingress["containers"][0]["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "5"]
    assert ingress["terminationGracePeriodSeconds"] >= 5 + 45
    for name, deployment in deployments.items():
        if not name.startswith("sy-switchyard-worker-"):
            continue
        # One pod at a time: each join or leave rebalances the pool.
        assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        # A restart in the same pod fences its previous process's transaction at once.
        assert _env(container)["SWITCHYARD_INSTANCE_ID"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    budgets = [d for d in docs if d["kind"] == "PodDisruptionBudget"]
    assert budgets and all(b["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow" for b in budgets)
