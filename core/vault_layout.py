"""Names and policies of the Vault layout, shared by the stack bootstrap, the admin API and workers.

Layout (KV v2 mounted at ``secret/``):

- secret ``secret/data/tenants/<tenant>/<connector>`` holds one tenant's credentials
  for one connector;
- policy ``t-<tenant>-<connector>`` reads and updates exactly that secret (Vault folds
  policy names to lower case, so a capital letter ``X`` of the tenant id is written
  ``.x``: tenants ``Acme`` and ``acme`` get policies of their own);
- token role ``<connector>-tenant`` may mint orphan tokens whose policies match
  ``t-*-<connector>``, for at most :data:`TENANT_TOKEN_MAX_TTL` seconds;
- AppRole ``worker-<connector>`` (policy ``pool-<connector>``) may only call
  ``auth/token/create/<connector>-tenant``: the pool token reads no secret itself.

Ids are restricted to ``[A-Za-z0-9_]`` (``schemas.identifiers``) so a tenant id cannot
make one policy name look like another's.
"""

from __future__ import annotations

import re

__all__ = [
    "TENANT_TOKEN_MAX_TTL",
    "TENANT_TOKEN_TTL",
    "INGRESS_POLICY",
    "approle_name",
    "ingress_policy_hcl",
    "pool_policy_hcl",
    "pool_policy_name",
    "secret_path",
    "tenant_policy_hcl",
    "tenant_policy_name",
    "token_role_name",
]

TENANT_TOKEN_TTL = 120
TENANT_TOKEN_MAX_TTL = 300

_SAFE = re.compile(r"^[A-Za-z0-9_]{1,64}$")


def _check(*ids: str) -> None:
    for value in ids:
        if not _SAFE.fullmatch(value):
            raise ValueError(f"unsafe id for a Vault name: {value!r}")


def secret_path(tenant_id: str, connector: str) -> str:
    """KV v2 path (relative to the mount) of one tenant's connector credentials."""
    _check(tenant_id, connector)
    return f"tenants/{tenant_id}/{connector}"


def tenant_policy_name(tenant_id: str, connector: str) -> str:
    _check(tenant_id, connector)
    folded = "".join(f".{char.lower()}" if char.isupper() else char for char in tenant_id)
    return f"t-{folded}-{connector}"


def tenant_policy_hcl(tenant_id: str, connector: str, mount: str = "secret") -> str:
    path = secret_path(tenant_id, connector)
    return (
        f'path "{mount}/data/{path}" {{ capabilities = ["read", "create", "update"] }}\n'
        f'path "{mount}/metadata/{path}" {{ capabilities = ["read"] }}\n'
    )


# The ingress admin API's token: it stores tenants' credentials and the policy that alone
# may read each, and can read no secret back.
INGRESS_POLICY = "switchyard-ingress"


def ingress_policy_hcl(mount: str = "secret") -> str:
    return (
        f'path "{mount}/data/tenants/*" {{ capabilities = ["create", "update"] }}\n'
        f'path "{mount}/metadata/tenants/*" {{ capabilities = ["read", "delete"] }}\n'
        'path "sys/policy/t-*" { capabilities = ["create", "update"] }\n'
    )


def token_role_name(connector: str) -> str:
    _check(connector)
    return f"{connector}-tenant"


def pool_policy_name(connector: str) -> str:
    _check(connector)
    return f"pool-{connector}"


def pool_policy_hcl(connector: str) -> str:
    return f'path "auth/token/create/{token_role_name(connector)}" {{ capabilities = ["update"] }}\n'


def approle_name(connector: str) -> str:
    _check(connector)
    return f"worker-{connector}"
