"""Process settings: the only module that reads the environment.

Each process calls :func:`load_settings` once at start and passes the frozen
:class:`Settings` into constructors. Tests pass their own mapping.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, IPvAnyNetwork, SecretStr

from schemas import Topics

__all__ = ["ENV_VARS", "Settings", "connector_env", "load_settings"]

# Environment variable → Settings field. The README and the Helm chart document these.
ENV_VARS: dict[str, str] = {
    "SWITCHYARD_KAFKA_BOOTSTRAP": "kafka_bootstrap",
    "SWITCHYARD_KAFKA_SECURITY_PROTOCOL": "kafka_security_protocol",
    "SWITCHYARD_KAFKA_SASL_MECHANISM": "kafka_sasl_mechanism",
    "SWITCHYARD_KAFKA_SASL_USERNAME": "kafka_sasl_username",
    "SWITCHYARD_KAFKA_SASL_PASSWORD": "kafka_sasl_password",
    "SWITCHYARD_KAFKA_CA_FILE": "kafka_ca_file",
    "SWITCHYARD_TOPIC_PREFIX": "topic_prefix",
    "SWITCHYARD_TOPIC_PARTITIONS": "topic_partitions",
    "SWITCHYARD_REPLICATION_FACTOR": "replication_factor",
    "VAULT_ADDR": "vault_addr",
    "VAULT_TOKEN": "vault_token",
    "VAULT_CACERT": "vault_ca_file",
    "SWITCHYARD_VAULT_KV_MOUNT": "vault_kv_mount",
    "SWITCHYARD_VAULT_ROLE_ID": "vault_role_id",
    "SWITCHYARD_VAULT_SECRET_ID": "vault_secret_id",
    "SWITCHYARD_VAULT_TOKEN_FILE": "vault_token_file",
    "SWITCHYARD_ADMIN_TOKEN": "admin_token",
    "SWITCHYARD_OBSERVER_TOKEN": "observer_token",
    "SWITCHYARD_MCP_SESSION_SECRET": "mcp_session_secret",
    "SWITCHYARD_INGRESS_HOST": "ingress_host",
    "SWITCHYARD_INGRESS_PORT": "ingress_port",
    "SWITCHYARD_INGRESS_ALLOWED_ORIGINS": "ingress_allowed_origins",
    "SWITCHYARD_PUBLIC_URL": "public_url",
    "SWITCHYARD_CONNECTOR_BASE_URL": "connector_base_url",
    "SWITCHYARD_WORKER_CONCURRENCY": "worker_concurrency",
    "SWITCHYARD_TENANT_CONCURRENCY": "tenant_concurrency",
    "SWITCHYARD_CREDENTIAL_CACHE_SECONDS": "credential_cache_seconds",
    "SWITCHYARD_HTTP_PRIVATE_NETWORKS": "http_private_networks",
    "SWITCHYARD_METRICS_PORT": "metrics_port",
    "SWITCHYARD_METRICS_HOST": "metrics_host",
    "SWITCHYARD_LOG_LEVEL": "log_level",
    "SWITCHYARD_EVENT_LOOP": "event_loop",
    "SWITCHYARD_ROUTER_LINGER_MS": "router_linger_ms",
    "SWITCHYARD_INSTANCE_ID": "instance_id",
    "SWITCHYARD_HOME": "home",
    "OTEL_EXPORTER_OTLP_ENDPOINT": "otlp_endpoint",
}


class Settings(BaseModel):
    """Frozen settings shared by every Switchyard process."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kafka_bootstrap: str = "127.0.0.1:9092"
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ca_file: str | None = None
    topic_prefix: str = "switchyard."
    # Partitions of the commands, connector and results topics. Chosen once: changing it
    # later moves tenants between partitions and breaks router table changelogs.
    topic_partitions: int = Field(default=6, ge=1, le=1024)
    replication_factor: int = Field(default=1, ge=1, le=7)

    vault_addr: str = "http://127.0.0.1:8200"
    vault_token: SecretStr | None = None
    # CA bundle Vault's certificate is checked against (an https VAULT_ADDR with a private
    # CA); the Vault CLI's own variable. Unset: the system's CAs.
    vault_ca_file: str | None = None
    vault_kv_mount: str = "secret"
    vault_role_id: str | None = None
    vault_secret_id: SecretStr | None = None
    vault_token_file: str | None = None

    admin_token: SecretStr | None = None
    # Reads what the admin token reads in the dashboard, the observe routes and the
    # ingress's edge /metrics, and nothing else: no admin API (for browsers and scrapers).
    observer_token: SecretStr | None = None
    # Signs MCP session ids; every ingress replica must share it (else the admin token).
    mcp_session_secret: SecretStr | None = None
    ingress_host: str = "127.0.0.1"
    ingress_port: int = Field(default=8080, ge=0, le=65535)
    ingress_allowed_origins: tuple[str, ...] = ()
    public_url: str | None = None

    # When set, every connector talks to this base URL (the local API emulators).
    connector_base_url: str | None = None
    worker_concurrency: int = Field(default=256, ge=1, le=100_000)
    tenant_concurrency: int = Field(default=16, ge=1, le=10_000)
    # How long a worker keeps a tenant's credentials read from Vault: a change or a
    # deletion reaches running workers within it (0: read Vault for every command).
    credential_cache_seconds: float = Field(default=30.0, ge=0, le=3_600)
    # Non-public networks (CIDR) that host names in the generic HTTP connector's
    # allow-lists may resolve to; by default a name reaches public addresses only.
    http_private_networks: tuple[IPvAnyNetwork, ...] = ()

    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    # Where the metrics port listens: every interface, for kubelet probes and Prometheus
    # on the pod IP; the local system sets 127.0.0.1.
    metrics_host: str = "0.0.0.0"  # noqa: S104
    log_level: str = "INFO"
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"
    # How long the router's producer gathers records into a request. Each routed batch
    # makes two produce round trips (its dedup entries, then its outputs), so a longer
    # linger makes fewer, larger batches: less CPU per command under load, a few ms more
    # per command when idle.
    router_linger_ms: int = Field(default=1, ge=0, le=100)
    # A worker's stable id (the pod name; `--instance-id` wins): see workers.command.
    instance_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
    home: Path = Path.home() / ".cache" / "switchyard"
    otlp_endpoint: str | None = None

    @property
    def topics(self) -> Topics:
        return Topics(self.topic_prefix)


def load_settings(env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    """Build settings from an environment mapping (``os.environ`` by default).

    Raises:
        pydantic.ValidationError: when a variable has an invalid value.
    """
    source = os.environ if env is None else env
    values: dict[str, object] = {}
    for var, field in ENV_VARS.items():
        raw = source.get(var)
        if raw is None or raw == "":
            continue
        if field in ("ingress_allowed_origins", "http_private_networks"):
            values[field] = tuple(part.strip() for part in raw.split(",") if part.strip())
        else:
            values[field] = raw
    values.update(overrides)
    return Settings.model_validate(values)


def connector_env(env: Mapping[str, str] | None, connector: str, name: str) -> str | None:
    """Per-connector variant of a variable: ``<NAME>_<CONNECTOR>`` wins over ``<NAME>``.

    The local stack writes one AppRole per pool as ``SWITCHYARD_VAULT_ROLE_ID_SLACK`` etc.
    into one env file, so any pool can start from it.
    """
    source = os.environ if env is None else env
    return source.get(f"{name}_{connector.upper()}") or source.get(name) or None
