"""``switchyard vault bootstrap``: create the Vault layout for every connector pool.

For deployments whose Vault is not the local stack's (docker compose, Kubernetes):
with an admin ``VAULT_TOKEN`` it creates, per connector, the token role, the pool
policy and the AppRole (see ``core.vault_layout``), and the policy for the ingress admin
API's token (``switchyard-ingress``); it writes the pools' AppRole
credentials as ``SWITCHYARD_VAULT_ROLE_ID_<CONNECTOR>`` / ``..._SECRET_ID_<CONNECTOR>``
lines into an env file readable only by its owner. Secret ids are never printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
from pathlib import Path

from core.settings import load_settings
from core.vault import VaultAdmin
from schemas import CONNECTORS

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    boot = sub.add_parser("bootstrap", help="create token roles, policies and AppRoles per pool")
    boot.add_argument("--env-file", type=Path, required=True, help="where to write the pools' AppRole ids")
    boot.add_argument("--connector", action="append", choices=CONNECTORS, help="default: all")


async def _bootstrap(env_file: Path, connectors: list[str]) -> None:
    settings = load_settings()
    if settings.vault_token is None:
        raise SystemExit("switchyard vault: VAULT_TOKEN (an admin token) is required")
    admin = VaultAdmin(
        settings.vault_addr, settings.vault_token.get_secret_value(),
        mount=settings.vault_kv_mount, ca_file=settings.vault_ca_file,
    )  # fmt: skip
    try:
        lines = []
        for connector in connectors:
            creds = await admin.bootstrap_pool(connector)
            lines.append(f"SWITCHYARD_VAULT_ROLE_ID_{connector.upper()}={creds.role_id}")
            lines.append(f"SWITCHYARD_VAULT_SECRET_ID_{connector.upper()}={creds.secret_id}")
            print(f"pool {connector}: AppRole ready")
        policy = await admin.write_ingress_policy()
        print(f"policy {policy} ready: give the ingress admin API a token of it (vault token create -policy={policy})")
    finally:
        admin.close()
    env_file.parent.mkdir(parents=True, exist_ok=True)
    write_private(env_file, "".join(f"{line}\n" for line in _merged(env_file, lines)))
    print(f"wrote {env_file}")


def _merged(env_file: Path, lines: list[str]) -> list[str]:
    """The file's lines with those of the pools just set up replaced (a bootstrap of one
    connector keeps the others' ids)."""
    try:
        existing = env_file.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        existing = []
    replaced = {line.partition("=")[0] for line in lines}
    return [line for line in existing if line.partition("=")[0] not in replaced] + lines


def write_private(path: Path, text: str) -> None:
    """Write ``path`` readable by its owner only, even if it existed with a wider mode.

    Written to a fresh file beside it and renamed over it, so neither an existing file's
    mode nor a symlink planted at ``path`` decides who can read the secret ids.
    """
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:  # mkstemp: mode 0600
            handle.write(text)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def run(args: argparse.Namespace) -> int:
    try:
        asyncio.run(_bootstrap(args.env_file, args.connector or list(CONNECTORS)))
    except OSError as exc:
        print(f"switchyard vault: {exc}", file=sys.stderr)
        return 1
    return 0
