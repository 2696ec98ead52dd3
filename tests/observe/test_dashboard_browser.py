"""The dashboard in a real headless Chromium (Debian's, driven by Playwright), fed by real Results.

Install the browser with ``scripts/install-browser.sh``. Without it the test skips,
except under CI (``CI`` set), where a missing browser is a failure.
"""

from __future__ import annotations

import math
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from core.settings import Settings
from schemas import ErrorCode, ResultStatus

from ._support import ObservedHarness, make_result, publish_results

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CANARY = "xoxb-canary-91d2e7aa0c"
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def _browser_or_skip() -> None:
    missing = []
    if not Path(CHROMIUM).exists():
        missing.append(f"{CHROMIUM} (run scripts/install-browser.sh)")
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        missing.append("the playwright package (pip install playwright)")
    if missing:
        reason = "headless browser unavailable: " + ", ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


async def _feed(h: ObservedHarness) -> int:
    now = datetime.now(UTC)
    results = []
    for i in range(160):  # spread over the last ten minutes, so the charts have a shape
        wave = 1 + math.sin(i / 9)
        results.append(make_result(
            "acme", connector="slack" if i % 3 else "gmail", latency=0.04 + 0.06 * wave + (i % 7) * 0.01,
            finished=now - timedelta(seconds=590 * (1 - i / 160) ** 1.3)))
    results += [
        make_result("acme", status=ResultStatus.FAILED, code=ErrorCode.UPSTREAM_TIMEOUT, connector="gmail",
                    message=f"gmail timed out, token={CANARY}"),
        make_result("acme", status=ResultStatus.REJECTED, code=ErrorCode.RATE_LIMITED, connector="slack"),
        make_result("acme", status=ResultStatus.FAILED, code=ErrorCode.CIRCUIT_OPEN, connector="jira"),
    ]
    results += [make_result("beta", connector="notion", action="beta_only_action") for _ in range(12)]
    await publish_results(h.settings, results)
    await h.wait_for_results(len(results))
    return len(results)


async def test_the_dashboard_shows_a_tenant_only_its_data_and_the_operator_all_tenants(
    settings: Settings,
) -> None:
    _browser_or_skip()
    from playwright.async_api import async_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    async with ObservedHarness(settings) as h:
        acme = await h.add_tenant("acme")
        await h.add_tenant("beta")
        await _feed(h)
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            try:
                page = await browser.new_page(viewport={"width": 1440, "height": 1000})
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                await page.goto(f"{h.url}/dashboard")
                await page.fill("#login-key", acme.api_key)
                await page.click("#login-btn")
                await page.wait_for_selector("#commands tbody tr[data-command-id]", timeout=20_000)
                await page.wait_for_selector("#waterfall .span-row", timeout=20_000)
                assert await page.text_content("#tenant-name") == "acme"
                text = await page.inner_text("main")
                assert "beta_only_action" not in text and "notion" not in text
                assert "upstream_timeout" in text and "gmail" in text
                assert await page.locator("#chart-latency path").count() >= 2
                assert await page.evaluate("() => location.href.indexOf('sy_') === -1")
                await page.screenshot(path=str(ARTIFACTS / "dashboard-tenant.png"), full_page=True)
                html = await page.content()
                assert CANARY not in html and acme.api_key not in html

                # The operator view: every tenant, the noisiest, lag per pool, breakers.
                await page.click("#logout-btn")
                await page.fill("#login-key", h.admin_token)
                await page.click("#login-btn")
                await page.wait_for_selector("#tenants-table tbody tr[data-tenant='beta']", timeout=20_000)
                tenants = await page.locator("#tenants-table tbody tr").evaluate_all(
                    "rows => rows.map(r => r.dataset.tenant)"
                )
                assert set(tenants) == {"acme", "beta"}
                await page.wait_for_selector("#lag .bar[data-name='slack']", timeout=20_000)
                assert "jira" in await page.inner_text("#breakers")
                await page.screenshot(path=str(ARTIFACTS / "dashboard-operator.png"), full_page=True)
                assert not errors, errors
            finally:
                await browser.close()
    assert (ARTIFACTS / "dashboard-tenant.png").stat().st_size > 10_000
