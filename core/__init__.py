"""Runtime shared by every Switchyard process: settings, Kafka, Vault, telemetry, logs, errors.

Imports only ``schemas``; ``ingress``, ``router`` and ``workers`` build on it.
"""

from .errors import (
    CasConflict,
    CommandError,
    ConfigurationError,
    CredentialsMissing,
    KafkaUnavailable,
    PermanentError,
    RetryableError,
    SwitchyardError,
    VaultError,
    VaultForbidden,
    VaultUnavailable,
)
from .settings import ENV_VARS, Settings, connector_env, load_settings

__all__ = [
    "CasConflict",
    "CommandError",
    "ConfigurationError",
    "CredentialsMissing",
    "ENV_VARS",
    "KafkaUnavailable",
    "PermanentError",
    "RetryableError",
    "Settings",
    "SwitchyardError",
    "VaultError",
    "VaultForbidden",
    "VaultUnavailable",
    "connector_env",
    "load_settings",
]
