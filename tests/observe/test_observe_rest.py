"""REST scoping of the per-tenant views on the real ingress, fed from the real results topic."""

from __future__ import annotations

import asyncio

import orjson
from pydantic import SecretStr

from core.metrics import Metrics
from core.settings import Settings
from schemas import ErrorCode, ResultStatus

from ._support import ObservedHarness, make_result, publish_results

CANARY = "ghp_CanarySecret0123456789abcdef"


async def _seed(h: ObservedHarness) -> tuple[object, object]:
    acme = await h.add_tenant("acme")
    beta = await h.add_tenant("beta")
    results = [make_result("acme", connector="slack") for _ in range(6)]
    results += [
        make_result("acme", status=ResultStatus.FAILED, code=ErrorCode.CREDENTIALS_INVALID,
                    connector="gmail", message=f"401 from gmail with access_token={CANARY}"),
        make_result("beta", connector="notion"),
        make_result("beta", status=ResultStatus.FAILED, connector="jira", message=f"boom {CANARY}"),
    ]
    await publish_results(h.settings, results)
    await h.wait_for_results(len(results))
    return acme, beta


async def test_a_tenant_key_reads_only_its_own_tenant_and_the_admin_reads_all(settings: Settings) -> None:
    async with ObservedHarness(settings) as h:
        acme, beta = await _seed(h)
        c = h.client
        r = await c.get("/v1/tenants/acme/metrics", headers=acme.headers)
        assert r.status == 200
        m = await r.json()
        assert m["total"] == 7 and m["errors_by_connector"] == {"gmail": 1}
        r = await c.get("/v1/tenants/acme/commands?connector=slack&limit=3", headers=acme.headers)
        body = await r.json()
        assert r.status == 200 and len(body["commands"]) == 3
        assert {x["connector"] for x in body["commands"]} == {"slack"}
        for path in ("metrics", "errors", "commands"):
            r = await c.get(f"/v1/tenants/beta/{path}", headers=acme.headers)
            assert r.status == 403, path
        r = await c.get("/v1/tenants/beta/errors", headers=beta.headers)
        failures = (await r.json())["failures"]
        assert [f["connector"] for f in failures] == ["jira"]
        r = await c.get("/v1/admin/overview", headers=acme.headers)
        assert r.status == 403
        r = await c.get("/v1/admin/overview", headers=h.admin_headers)
        overview = await r.json()
        assert r.status == 200 and {t["tenant_id"] for t in overview["tenants"]} == {"acme", "beta"}
        assert {p["connector"] for p in overview["pools"]} >= {"slack", "gmail", "jira"}
        for tenant in ("acme", "beta"):
            r = await c.get(f"/v1/tenants/{tenant}/metrics", headers=h.admin_headers)
            assert r.status == 200
        r = await c.get("/v1/tenants/acme/metrics")
        assert r.status == 401
        r = await c.get("/v1/tenants/acme/metrics", headers={"Authorization": "Bearer sy_nope_nope"})
        assert r.status == 401


async def test_a_trace_is_served_to_its_tenant_and_is_a_403_for_another(settings: Settings) -> None:
    async with ObservedHarness(settings) as h:
        acme, beta = await _seed(h)
        command_id = h.observer.aggregator.commands("acme", limit=1)[0]["command_id"]
        r = await h.client.get(f"/v1/tenants/acme/commands/{command_id}/trace", headers=acme.headers)
        trace = await r.json()
        assert r.status == 200 and len(trace["spans"]) == 3 and len(trace["trace_id"]) == 32
        r = await h.client.get(f"/v1/tenants/acme/commands/{command_id}/trace", headers=beta.headers)
        assert r.status == 403
        r = await h.client.get(f"/v1/tenants/beta/commands/{command_id}/trace", headers=beta.headers)
        assert r.status == 404


async def test_commands_submitted_through_the_ingress_show_up_with_their_spans(settings: Settings) -> None:
    async with ObservedHarness(settings) as h:
        acme = await h.add_tenant("acme")
        async with h.responder():
            r = await h.client.post(
                "/v1/commands?wait=20", json={"action": "echo", "arguments": {"text": "hi"}}, headers=acme.headers
            )
            assert r.status in (200, 202)
            command_id = (await r.json())["command_id"]
            async with asyncio.timeout(30):
                while h.observer.aggregator.trace("acme", command_id) is None:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)  # the observer reads the same results topic
        r = await h.client.get(f"/v1/tenants/acme/commands/{command_id}/trace", headers=acme.headers)
        trace = await r.json()
        assert r.status == 200 and trace["status"] == "succeeded" and trace["spans"]


async def test_the_live_stream_sends_snapshots_of_the_callers_own_tenant(settings: Settings) -> None:
    async with ObservedHarness(settings) as h:
        acme, _ = await _seed(h)
        h.observer.stream_lifetime = 0.5
        r = await h.client.get("/v1/stream?view=tenant", headers=acme.headers)
        assert r.status == 200 and r.headers["Content-Type"] == "text/event-stream"
        text = await r.text()
        snapshots = [
            orjson.loads(chunk.split("data: ", 1)[1])
            for chunk in text.split("\n\n")
            if chunk.startswith("event: snapshot")
        ]
        assert snapshots and all(s["tenant_id"] == "acme" for s in snapshots)
        assert "event: reconnect" in text and "beta" not in text
        r = await h.client.get("/v1/stream?view=tenant&tenant=beta", headers=acme.headers)
        assert r.status == 403
        r = await h.client.get("/v1/stream?view=admin", headers=acme.headers)
        assert r.status == 403


async def test_one_tenant_cannot_hold_every_live_stream_of_a_replica(settings: Settings) -> None:
    async with ObservedHarness(settings) as h:
        acme, beta = await _seed(h)
        h.observer.stream_lifetime = 10.0
        h.observer.max_streams, h.observer.max_streams_per_tenant, h.observer.admin_reserved_streams = 5, 2, 1
        held = [await h.client.get("/v1/stream?view=tenant", headers=acme.headers) for _ in range(2)]
        try:
            assert [r.status for r in held] == [200, 200]
            refused = await h.client.get("/v1/stream?view=tenant", headers=acme.headers)
            assert refused.status == 429 and int(refused.headers["Retry-After"]) >= 1
            # Another tenant's dashboard and the operator's still stream.
            held.append(await h.client.get("/v1/stream?view=tenant", headers=beta.headers))
            held.append(await h.client.get("/v1/stream?view=tenant", headers=beta.headers))
            assert [r.status for r in held[2:]] == [200, 200]
            # The replica's last stream is the operator's: no tenant gets it.
            h.observer.max_streams_per_tenant = 10
            assert (await h.client.get("/v1/stream?view=tenant", headers=beta.headers)).status == 503
            held.append(await h.client.get("/v1/stream?view=admin", headers=h.admin_headers))
            assert held[-1].status == 200
        finally:
            for response in held:
                response.close()
        async with asyncio.timeout(10):  # the closed streams give their slots back
            while h.observer.streams:  # noqa: ASYNC110 - bounded
                await asyncio.sleep(0.05)
        assert h.observer.tenant_streams == {}


async def test_a_canary_secret_appears_in_no_response_page_or_metric(settings: Settings) -> None:
    async with ObservedHarness(settings) as h:
        acme, beta = await _seed(h)
        h.observer.stream_lifetime = 0.2
        bodies = []
        for headers, tenant in ((acme.headers, "acme"), (beta.headers, "beta"), (h.admin_headers, "acme")):
            for path in ("metrics", "errors", "commands"):
                r = await h.client.get(f"/v1/tenants/{tenant}/{path}", headers=headers)
                assert r.status == 200
                bodies.append(await r.text())
        for view in ("tenant", "admin"):
            r = await h.client.get(f"/v1/stream?view={view}&tenant=acme", headers=h.admin_headers)
            bodies.append(await r.text())
        for path in ("/dashboard", "/dashboard/app.js", "/dashboard/app.css"):
            r = await h.client.get(path)
            assert r.status == 200
            bodies.append(await r.text())
        r = await h.client.get("/v1/tenants/acme/errors", headers=acme.headers)
        message = (await r.json())["failures"][0]["message"]
        assert message.startswith("401 from gmail with access_token=")
        metrics = Metrics("worker-gmail")
        metrics.result(make_result("acme", status=ResultStatus.FAILED, message=f"token={CANARY}"))
        bodies.append(metrics.exposition().decode())
        assert all(CANARY not in body for body in bodies)


async def test_a_workspace_key_sees_its_own_workspaces_commands_and_the_tenants_counts(settings: Settings) -> None:
    async with ObservedHarness(settings) as h:
        main = await h.add_tenant("acme", "main")
        ops = await h.add_tenant("acme", "ops")
        results = [
            make_result("acme", space_id="main"),
            make_result("acme", space_id="ops", status=ResultStatus.FAILED, message="ops detail"),
            make_result("acme", space_id="ops"),
        ]
        await publish_results(h.settings, results)
        await h.wait_for_results(len(results))
        c = h.client
        commands = (await (await c.get("/v1/tenants/acme/commands", headers=main.headers)).json())["commands"]
        assert [x["command_id"] for x in commands] == [results[0].command_id]
        errors = await (await c.get("/v1/tenants/acme/errors", headers=main.headers)).json()
        assert errors["failures"] == [] and sum(errors["errors_by_code"].values()) == 1  # counts: the tenant's
        assert (await (await c.get("/v1/tenants/acme/metrics", headers=main.headers)).json())["total"] == 3
        hidden = await c.get(f"/v1/tenants/acme/commands/{results[1].command_id}/trace", headers=main.headers)
        assert hidden.status == 404
        shown = await c.get(f"/v1/tenants/acme/commands/{results[1].command_id}/trace", headers=ops.headers)
        assert shown.status == 200
        failures = (await (await c.get("/v1/tenants/acme/errors", headers=ops.headers)).json())["failures"]
        assert [f["command_id"] for f in failures] == [results[1].command_id]
        everything = (await (await c.get("/v1/tenants/acme/commands", headers=h.admin_headers)).json())["commands"]
        assert len(everything) == 3


async def test_the_observer_token_reads_every_tenant_and_changes_nothing(settings: Settings) -> None:
    observer = {"Authorization": "Bearer observer-token-for-the-test"}
    async with ObservedHarness(settings.model_copy(update={"observer_token": SecretStr("observer-token-for-the-test")})) as h:
        await _seed(h)
        for path in ("/v1/admin/overview", "/v1/tenants/acme/errors", "/v1/tenants/beta/metrics", "/metrics"):
            r = await h.client.get(path, headers=observer)
            assert r.status == 200, path
        # No admin API: no key, workspace or credential through it.
        r = await h.client.post("/v1/admin/api-keys", headers=observer,
                                json={"tenant_id": "acme", "spaces": ["main"], "user_id": "u", "role": "member"})
        assert r.status == 401
        assert (await h.client.get("/v1/admin/workspaces/acme/main", headers=observer)).status == 401
        assert (await h.client.get("/metrics", headers={"Authorization": "Bearer nope"})).status == 401


async def test_the_dashboard_is_served_with_a_strict_policy(settings: Settings) -> None:
    async with ObservedHarness(settings) as h:
        for path in ("/dashboard", "/dashboard/app.js"):
            r = await h.client.get(path)
            assert r.status == 200
            policy = r.headers["Content-Security-Policy"]
            # No inline script, no framing (clickjacking), no form posts elsewhere.
            assert "script-src 'self'" in policy and "'unsafe-inline'" not in policy
            assert "frame-ancestors 'none'" in policy and "form-action 'none'" in policy
            assert r.headers["X-Frame-Options"] == "DENY" and r.headers["X-Content-Type-Options"] == "nosniff"
            assert r.headers["Referrer-Policy"] == "no-referrer"
