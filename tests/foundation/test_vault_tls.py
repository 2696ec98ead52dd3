"""Vault over TLS with a private CA (``VAULT_CACERT``): a real OpenBao dev server with
``-dev-tls``, which makes its own CA. The admin client, a pool's client (which has an HTTP
session of its own, where hvac ignores the variable) and the readiness check all verify
the server with that CA, and none of them trusts it without."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.health import vault_reachable
from core.settings import load_settings
from core.vault import PoolVault, VaultAdmin
from switchyard.stack._procs import free_port
from switchyard.stack._vault import bao_binary

pytestmark = pytest.mark.integration

ROOT = "tls-test-root"


@pytest.fixture(scope="module")
def tls_vault(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """``(https address, CA file)`` of a dev OpenBao serving TLS with a CA of its own."""
    certs = tmp_path_factory.mktemp("bao-tls")
    port = free_port()
    env = {**os.environ, "BAO_DEV_ROOT_TOKEN_ID": ROOT}
    server = subprocess.Popen(  # noqa: S603 - our own binary, loopback only
        [str(bao_binary()), "server", "-dev", "-dev-tls", f"-dev-listen-address=127.0.0.1:{port}",
         f"-dev-tls-cert-dir={certs}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    ca = certs / "vault-ca.pem"
    try:
        deadline = time.monotonic() + 30
        while not ca.is_file() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert ca.is_file(), "OpenBao wrote no CA"
        time.sleep(0.5)
        yield f"https://127.0.0.1:{port}", str(ca)
    finally:
        server.terminate()
        server.wait(timeout=15)


async def test_clients_and_readiness_verify_vault_with_the_ca_of_vault_cacert(tls_vault: tuple[str, str]) -> None:
    addr, ca = tls_vault
    settings = load_settings({"VAULT_ADDR": addr, "VAULT_CACERT": ca})
    assert settings.vault_ca_file == ca
    tenant = f"t{uuid.uuid4().hex[:10]}"

    admin = VaultAdmin(addr, ROOT, ca_file=settings.vault_ca_file)
    try:
        creds = await admin.bootstrap_pool("slack")
        await admin.put_credentials(tenant, "slack", {"bot_token": "xoxb-tls"})
    finally:
        admin.close()
    pool = PoolVault(addr, "slack", creds, ca_file=settings.vault_ca_file)
    try:
        assert dict((await pool.read(tenant)).data) == {"bot_token": "xoxb-tls"}
    finally:
        pool.close()
    assert await vault_reachable(settings)()


async def test_without_the_ca_vault_is_not_trusted(tls_vault: tuple[str, str]) -> None:
    addr, _ = tls_vault
    settings = load_settings({"VAULT_ADDR": addr})
    admin = VaultAdmin(addr, ROOT)
    try:
        with pytest.raises(Exception, match="(?i)certificate|ssl|unreachable"):
            await admin.put_credentials("t1", "slack", {"bot_token": "x"})
    finally:
        admin.close()
    with pytest.raises(Exception, match="(?i)certificate|ssl"):
        await vault_reachable(settings)()


def test_the_ca_file_is_read_from_vault_cacert_as_the_vault_cli_does(tmp_path: Path) -> None:
    assert load_settings({"VAULT_CACERT": str(tmp_path / "ca.pem")}).vault_ca_file == str(tmp_path / "ca.pem")
    assert load_settings({}).vault_ca_file is None
