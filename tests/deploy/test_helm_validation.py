"""The Helm chart renders manifests that Kubernetes and KEDA accept, and refuses bad values.

Kubernetes objects are checked offline with kubernetes-validate's strict schemas (unknown
fields rejected, as ``kubectl apply`` does by default); KEDA objects with jsonschema against
the CRD schemas kept in deploy/schemas/.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
from _helm import CHART, ROOT, Render, run_helm, template_args

# The first test to ask for helm may build it (scripts/install-go-tool.sh, minutes on 2 cores);
# every helm call itself is bounded at 120 s.
pytestmark = pytest.mark.timeout(1500)

# Oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and newest with shipped schemas.
KUBE_VERSIONS = ("1.25", "1.37")
KEDA_SCHEMAS = {
    "ScaledObject": ROOT / "deploy" / "schemas" / "keda.sh_v1alpha1_scaledobject.json",
    "TriggerAuthentication": ROOT / "deploy" / "schemas" / "keda.sh_v1alpha1_triggerauthentication.json",
}
# Trigger metadata keys KEDA's kafka scaler reads (pkg/scalers/kafka_scaler.go, order=triggerMetadata).
KAFKA_TRIGGER_KEYS = {
    "bootstrapServers", "consumerGroup", "topic", "partitionLimitation", "lagThreshold",
    "activationLagThreshold", "offsetResetPolicy", "allowIdleConsumers", "excludePersistentLag",
    "scaleToZeroOnInvalidOffset", "limitToPartitionsWithLag", "ensureEvenDistributionOfPartitions",
    "fullMetadata", "version", "tls", "unsafeSsl", "sasl", "saslTokenProvider", "awsRegion",
}


def _strict(schema: Any) -> Any:
    """A CRD schema that rejects unknown fields, as the API server's strict field validation."""
    if isinstance(schema, dict):
        out = {key: _strict(value) for key, value in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    return schema


def _keda_validator(kind: str) -> jsonschema.Draft7Validator:
    schema = json.loads(KEDA_SCHEMAS[kind].read_text())
    return jsonschema.Draft7Validator(_strict(schema))


def _rules_filled(spec: dict[str, Any]) -> bool:
    groups = spec.get("groups") or []
    return bool(groups) and all(group.get("name") and group.get("rules") for group in groups)


def validate_manifest(doc: dict[str, Any], versions: Sequence[str] = KUBE_VERSIONS) -> list[str]:
    """Problems with one rendered manifest ([] when valid) for the Kubernetes ``versions``."""
    kind, name = doc["kind"], doc["metadata"]["name"]
    if doc["apiVersion"] == "keda.sh/v1alpha1":
        errors = [
            f"{kind}/{name}: {'.'.join(map(str, e.path))}: {e.message}"
            for e in _keda_validator(kind).iter_errors(doc)
        ]
        spec = doc.get("spec", {})
        # The CRD's x-kubernetes-validations (CEL) rule, which jsonschema cannot run.
        low, high = spec.get("minReplicaCount", 0), spec.get("maxReplicaCount", 100)
        if kind == "ScaledObject" and not errors and low > high:
            errors.append(f"{kind}/{name}: minReplicaCount must be <= maxReplicaCount")
        return errors
    if doc["apiVersion"] == "monitoring.coreos.com/v1":
        # The shape only; promtool checks the rules themselves (test_alerts.py).
        filled = {"ServiceMonitor": lambda spec: spec["endpoints"], "PrometheusRule": _rules_filled}
        check = filled.get(kind)
        return [] if check is not None and check(doc["spec"]) else [f"{kind}/{name}"]
    errors = []
    for version in versions:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{kind}/{name} (k8s {version}): {'.'.join(map(str, exc.path))}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            errors.append(f"{kind}/{name}: {exc.message}")
    return errors


def test_the_validators_reject_an_unknown_field_and_a_wrong_type(render: Render) -> None:
    docs = render("large-values.yaml")
    deployment = copy.deepcopy(next(d for d in docs if d["kind"] == "Deployment"))
    deployment["spec"]["replicaz"] = 2
    scaled = copy.deepcopy(next(d for d in docs if d["kind"] == "ScaledObject"))
    scaled["spec"]["maxReplicaCount"] = "many"
    inverted = copy.deepcopy(next(d for d in docs if d["kind"] == "ScaledObject"))
    inverted["spec"].update(minReplicaCount=5, maxReplicaCount=2)

    assert any("replicaz" in e for e in validate_manifest(deployment))
    assert any("maxReplicaCount" in e for e in validate_manifest(scaled))
    assert any("minReplicaCount" in e for e in validate_manifest(inverted))


def test_helm_lint_passes_with_minimal_and_large_values(helm: str) -> None:
    for values in ("minimal-values.yaml", "large-values.yaml"):
        done = run_helm(
            helm, "lint", "--strict", str(CHART), "-f", str(CHART / "ci" / values),
            "--kube-version", "1.37.0",
        )
        assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_default_values_render_valid_kubernetes_manifests(render: Render, version: str) -> None:
    # Rendered for each version: some fields are written only where Kubernetes has them.
    docs = render("minimal-values.yaml", kube_version=f"{version}.0")
    kinds = sorted(d["kind"] for d in docs)
    assert kinds.count("Deployment") == 2 + 3  # ingress, router, slack/gmail/http pools
    assert not {"ScaledObject", "ServiceMonitor", "PrometheusRule"} & set(kinds)
    problems = [p for doc in docs for p in validate_manifest(doc, [version])]
    assert problems == []


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_large_values_render_valid_kubernetes_and_keda_manifests(render: Render, version: str) -> None:
    docs = render("large-values.yaml", kube_version=f"{version}.0")
    kinds = [d["kind"] for d in docs]
    assert kinds.count("ScaledObject") == 5
    assert kinds.count("TriggerAuthentication") == 1
    assert kinds.count("ServiceMonitor") == 1
    assert kinds.count("PrometheusRule") == 1
    # KEDA owns the pools' replica counts, so only the ingress keeps an HPA.
    assert [d["metadata"]["name"] for d in docs if d["kind"] == "HorizontalPodAutoscaler"] == [
        "sy-switchyard-ingress"
    ]
    problems = [p for doc in docs for p in validate_manifest(doc, [version])]
    assert problems == []


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["vault.address=http://vault:8200"], "/kafka/bootstrap"),
        (["kafka.bootstrap=kafka:9092"], "/vault"),
        (["kafka.bootstrap=kafka", "vault.address=http://v:8200"], "/kafka/bootstrap"),
        (["workers.pools.slack.replicas=-1"], "/workers/pools/slack"),
        (["workers.pools.teams.replicas=1"], "teams"),
        (["workers.pools.slack.retryTiers={5,30,120,600}"], "/workers/pools/slack"),
        (["ingress.autoscaling.maxReplicas=0"], "/ingress/autoscaling/maxReplicas"),
        (["kafka.sasl.mechanism=GSSAPI"], "/kafka/sasl/mechanism"),
        (["kafka.topics.partitions=0"], "/kafka/topics/partitions"),
        (["routerr.replicas=1"], "routerr"),
        (["metrics.serviceMonitor.enabled=maybe"], "/metrics/serviceMonitor/enabled"),
    ],
)
def test_values_violating_the_schema_make_helm_template_fail(
    helm: str, values: list[str], expected: str
) -> None:
    base = [] if any(v.startswith(("kafka.bootstrap", "vault.address")) for v in values) else [
        "minimal-values.yaml"
    ]
    done = run_helm(helm, *template_args(*base, set=values))
    assert done.returncode != 0
    assert "schema" in done.stderr and expected in done.stderr, done.stderr


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["router.replicas=13"], "router.replicas (13) must not exceed kafka.topics.partitions (12)"),
        (["workers.pools.slack.replicas=9"], "workers.pools.slack: replicas (9) must not exceed"),
        (["kafka.sasl.enabled=true"], "kafka.sasl.existingSecret"),
        (["ingress.mcpSessionSecret.name="], "ingress.mcpSessionSecret.name is needed"),
        # Both ports on one container: the ingress could not bind the second (crash loop).
        (["ingress.port=9464"], "ingress.port and metrics.port are both 9464"),
        # A name Helm accepts (fullnames are cut at 63) whose Services' suffixes pass 63:
        # the API server would refuse the install half-way.
        (["fullnameOverride=" + "a" * 45], "characters, over Kubernetes' 63"),
        # KEDA wakes a pool at zero only past the activation lag: commands under it wait.
        (
            ["keda.enabled=true", "workers.pools.slack.replicas=0", "workers.pools.slack.keda.activationLagThreshold=3"],
            "workers.pools.slack: with replicas 0, keda.activationLagThreshold must be 0",
        ),
    ],
)
def test_values_that_contradict_each_other_make_helm_template_fail(
    helm: str, values: list[str], expected: str
) -> None:
    done = run_helm(helm, *template_args("minimal-values.yaml", set=values))
    assert done.returncode != 0
    assert expected in done.stderr, done.stderr


def test_one_ingress_replica_needs_no_shared_mcp_session_secret(helm: str) -> None:
    values = ["ingress.mcpSessionSecret.name=", "ingress.autoscaling.enabled=false", "ingress.replicas=1"]
    done = run_helm(helm, *template_args("minimal-values.yaml", set=values))
    assert done.returncode == 0, done.stderr
    # Nor a disruption budget, which with minAvailable 1 would block every node drain.
    assert "kind: PodDisruptionBudget\nmetadata:\n  name: sy-switchyard-ingress" not in done.stdout


def test_an_empty_topic_prefix_is_refused_where_the_processes_would_ignore_it(helm: str) -> None:
    done = run_helm(helm, *template_args("minimal-values.yaml", set=["kafka.topics.prefix="]))
    assert done.returncode != 0 and "/kafka/topics/prefix" in done.stderr, done.stderr


def test_keda_triggers_watch_each_pools_consumer_group_on_its_topics(render: Render) -> None:
    from schemas import RETRY_TIERS, Topics

    docs = render("large-values.yaml")
    topics = Topics("prod.switchyard.")
    auth = next(d for d in docs if d["kind"] == "TriggerAuthentication")
    assert {r["parameter"] for r in auth["spec"]["secretTargetRef"]} == {"username", "password", "ca"}
    tiers = {"slack": 3, "gmail": 3, "notion": 2, "jira": 3, "github": 3}
    scaled = {d["spec"]["scaleTargetRef"]["name"]: d for d in docs if d["kind"] == "ScaledObject"}
    assert set(scaled) == {f"sy-switchyard-worker-{c}" for c in tiers}
    deployments = {d["metadata"]["name"] for d in docs if d["kind"] == "Deployment"}
    for connector, count in tiers.items():
        spec = scaled[f"sy-switchyard-worker-{connector}"]["spec"]
        assert f"sy-switchyard-worker-{connector}" in deployments
        triggers = spec["triggers"]
        assert {t["type"] for t in triggers} == {"kafka"}
        assert [t["metadata"]["topic"] for t in triggers] == topics.pool_sources(connector, count)
        for trigger in triggers:
            meta = trigger["metadata"]
            assert set(meta) <= KAFKA_TRIGGER_KEYS, set(meta) - KAFKA_TRIGGER_KEYS
            assert meta["consumerGroup"] == f"prod.switchyard.workers.{connector}"
            assert meta["sasl"] == "scram_sha512" and meta["tls"] == "enable"
            assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
            assert all(isinstance(v, str) for v in meta.values())
            # One tenant's backlog sits in one partition: no more replicas than lagging ones.
            assert meta["limitToPartitionsWithLag"] == "true" and meta["allowIdleConsumers"] == "false"
    assert scaled["sy-switchyard-worker-jira"]["spec"]["minReplicaCount"] == 0
    jira = scaled["sy-switchyard-worker-jira"]["spec"]["triggers"]
    assert jira[0]["metadata"]["lagThreshold"] == "50"
    # Retry tiers' records mostly wait for their time: they ask for replicas far later.
    assert {t["metadata"]["lagThreshold"] for t in jira if ".retry." in t["metadata"]["topic"]} == {"1000"}
    assert jira[-1]["metadata"]["topic"].endswith("parked.jira") and jira[-1]["metadata"]["lagThreshold"] == "50"
    assert scaled["sy-switchyard-worker-slack"]["spec"]["maxReplicaCount"] == 48
    assert len(RETRY_TIERS) == 3


def test_without_keda_each_pool_scales_on_cpu_with_an_hpa(render: Render) -> None:
    docs = render("minimal-values.yaml")
    hpas = {d["spec"]["scaleTargetRef"]["name"]: d for d in docs if d["kind"] == "HorizontalPodAutoscaler"}
    assert set(hpas) == {
        "sy-switchyard-ingress",
        "sy-switchyard-worker-slack",
        "sy-switchyard-worker-gmail",
        "sy-switchyard-worker-http",
    }
    for hpa in hpas.values():
        [metric] = hpa["spec"]["metrics"]
        assert metric["resource"]["name"] == "cpu"
        assert hpa["spec"]["minReplicas"] >= 1


def test_service_monitor_only_when_the_prometheus_operator_api_is_served(render: Render) -> None:
    def monitors(**kwargs: Any) -> list[dict[str, Any]]:
        return [d for d in render("minimal-values.yaml", **kwargs) if d["kind"] == "ServiceMonitor"]

    assert monitors() == []
    [monitor] = monitors(api_versions=["monitoring.coreos.com/v1"])
    assert monitors(api_versions=["monitoring.coreos.com/v1"], set=["metrics.serviceMonitor.enabled=false"]) == []
    docs = render("minimal-values.yaml")
    selector = monitor["spec"]["selector"]["matchLabels"]
    scraped = [
        d for d in docs
        if d["kind"] == "Service" and selector.items() <= d["metadata"]["labels"].items()
    ]
    # The ingress, the router and the three default pools each expose a "metrics" port.
    assert len(scraped) == 5
    assert all(any(p["name"] == "metrics" for p in s["spec"]["ports"]) for s in scraped)
