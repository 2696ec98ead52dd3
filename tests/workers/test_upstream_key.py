"""The idempotency key sent upstream: per workspace for commands keyed per workspace, and
as before for commands published before that (a command in doubt across the upgrade
looks for its earlier attempt's effect under the key that attempt sent)."""

from __future__ import annotations

import base64
import hashlib

from _runtime_support import command

from schemas import RoutedCommand, command_id_for
from workers._execute import upstream_idempotency_key


def _keyed(routed: RoutedCommand, space: str, key: str = "daily", tenant: str = "acme") -> RoutedCommand:
    return routed.model_copy(update={
        "tenant_id": tenant, "space_id": space, "idempotency_key": key,
        "command_id": command_id_for(tenant, space, key),
    })


def test_two_workspaces_of_a_tenant_send_different_keys_for_the_same_idempotency_key() -> None:
    main = _keyed(command("acme"), "main")
    assert main.keyed_per_workspace()
    support = _keyed(main, "support")
    assert upstream_idempotency_key(main) != upstream_idempotency_key(support)
    assert upstream_idempotency_key(main) == upstream_idempotency_key(main.model_copy(update={"attempt": 2}))
    assert upstream_idempotency_key(main) != upstream_idempotency_key(_keyed(main, "main", tenant="beta"))


def test_a_command_with_a_tenant_wide_key_sends_the_key_it_always_sent() -> None:
    # The id an ingress of before gave it (from tenant and key alone).
    legacy_id = base64.b32encode(hashlib.sha256(b"switchyard\0acme\0daily").digest()[:20])[:26].lower().decode()
    legacy = command("acme").model_copy(
        update={"tenant_id": "acme", "idempotency_key": "daily", "command_id": legacy_id}
    )
    assert not legacy.keyed_per_workspace()
    digest = hashlib.sha256(b"acme\0daily").hexdigest()
    assert upstream_idempotency_key(legacy) == f"sy-{digest[:40]}"
    assert upstream_idempotency_key(legacy.model_copy(update={"space_id": "support"})) == f"sy-{digest[:40]}"
