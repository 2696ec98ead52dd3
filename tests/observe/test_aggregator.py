"""Aggregator math on synthetic Results (pure, no Kafka)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ingress.observe import LatencyHistogram, ResultsAggregator
from schemas import ErrorCode, ResultStatus

from ._support import make_result

NOW = datetime(2026, 11, 27, 12, 0, 5, tzinfo=UTC)
T = NOW.timestamp()


def test_rates_count_results_in_the_last_minute_and_five_minutes() -> None:
    agg = ResultsAggregator()
    for i in range(120):  # one every 2 s over the last 4 minutes
        agg.add(make_result("acme", finished=NOW - timedelta(seconds=2 * i)), now=T)
    m = agg.metrics("acme", now=T)
    assert 0.45 <= m["rate_1m"] <= 0.6  # 30 results in the last ~60 s
    assert 0.35 <= m["rate_5m"] <= 0.45  # 120 results over 300 s
    assert m["total"] == 120


def test_success_ratio_and_errors_by_code_and_connector() -> None:
    agg = ResultsAggregator()
    for _ in range(7):
        agg.add(make_result("acme", finished=NOW), now=T)
    agg.add(make_result("acme", status=ResultStatus.FAILED, code=ErrorCode.UPSTREAM_TIMEOUT, connector="jira", finished=NOW), now=T)
    agg.add(make_result("acme", status=ResultStatus.FAILED, code=ErrorCode.UPSTREAM_TIMEOUT, connector="slack", finished=NOW), now=T)
    agg.add(make_result("acme", status=ResultStatus.REJECTED, code=ErrorCode.RATE_LIMITED, finished=NOW), now=T)
    m = agg.metrics("acme", now=T)
    assert m["success_ratio"] == 0.7
    assert m["errors_by_code"] == {"upstream_timeout": 2, "rate_limited": 1}
    assert m["errors_by_connector"] == {"jira": 1, "slack": 2}
    assert m["errors_5m"] == 3


def test_latency_percentiles_come_within_the_histogram_error() -> None:
    agg = ResultsAggregator()
    for i in range(1, 1001):  # 1 ms .. 1000 ms, uniform
        agg.add(make_result("acme", latency=i / 1000, finished=NOW), now=T)
    lat = agg.metrics("acme", now=T)["latency_5m"]
    for key, exact in (("p50_ms", 500), ("p95_ms", 950), ("p99_ms", 990)):
        assert abs(lat[key] - exact) / exact < 0.13, (key, lat[key])


def test_histogram_is_empty_until_fed_and_bounded_in_size() -> None:
    hist = LatencyHistogram()
    assert hist.quantile(0.5) is None
    for _ in range(10_000):
        hist.add(3600.0)  # beyond the last bucket: clamped, not grown
    assert len(hist.counts) == 64 and hist.quantile(0.99) is not None


def test_last_failures_keep_only_n_with_redacted_messages_and_trace_ids() -> None:
    agg = ResultsAggregator(recent=5)
    for i in range(12):
        agg.add(
            make_result(
                "acme", status=ResultStatus.FAILED, finished=NOW,
                message=f"call {i} failed: token=xoxb-1234-secretvalue Authorization: Bearer abcdefgh123",
            ),
            now=T,
        )
    failures = agg.errors("acme")["failures"]
    assert len(failures) == 5
    assert all("xoxb" not in f["message"] and "abcdefgh123" not in f["message"] for f in failures)
    assert failures[0]["message"].startswith("call 11 failed")
    assert all(len(f["trace_id"]) == 32 for f in failures)


def test_commands_filter_by_status_and_connector_newest_first() -> None:
    agg = ResultsAggregator()
    agg.add(make_result("acme", connector="slack", finished=NOW - timedelta(seconds=3)), now=T)
    agg.add(make_result("acme", connector="gmail", status=ResultStatus.FAILED, finished=NOW - timedelta(seconds=2)), now=T)
    newest = make_result("acme", connector="slack", finished=NOW - timedelta(seconds=1))
    agg.add(newest, now=T)
    assert [c["connector"] for c in agg.commands("acme")] == ["slack", "gmail", "slack"]
    assert [c["command_id"] for c in agg.commands("acme", connector="slack", limit=1)] == [newest.command_id]
    assert [c["status"] for c in agg.commands("acme", status="failed")] == ["failed"]


def test_trace_returns_the_spans_of_the_tenants_own_command_only() -> None:
    agg = ResultsAggregator()
    mine = make_result("acme", finished=NOW, spans=4)
    agg.add(mine, now=T)
    agg.add(make_result("beta", finished=NOW), now=T)
    trace = agg.trace("acme", mine.command_id)
    assert trace is not None and len(trace["spans"]) == 4
    assert trace["spans"][0]["parent_span_id"] is None
    assert agg.trace("beta", mine.command_id) is None


def test_a_duplicate_result_is_counted_once() -> None:
    agg = ResultsAggregator()
    result = make_result("acme", finished=NOW)
    assert agg.add(result, now=T) and not agg.add(result, now=T)
    assert agg.metrics("acme", now=T)["total"] == 1


def test_tenant_count_is_capped_by_evicting_the_least_recently_active() -> None:
    agg = ResultsAggregator(max_tenants=50)
    for i in range(500):
        agg.add(make_result(f"t{i}", finished=NOW), now=T)
    assert len(agg) == 50 and agg.evicted == 450
    assert agg.stats("t499") is not None and agg.stats("t0") is None


def test_overview_ranks_noisiest_tenants_and_infers_open_breakers() -> None:
    agg = ResultsAggregator()
    for _ in range(30):
        agg.add(make_result("loud", finished=NOW), now=T)
    agg.add(make_result("quiet", finished=NOW), now=T)
    for _ in range(3):
        agg.add(make_result("broken", status=ResultStatus.FAILED, code=ErrorCode.CIRCUIT_OPEN, connector="jira", finished=NOW), now=T)
    overview = agg.overview(now=T)
    assert [t["tenant_id"] for t in overview["noisiest"]][:1] == ["loud"]
    assert overview["breakers"] == [
        {"tenant_id": "broken", "connector": "jira", "state": "open", "last_seen": T, "rejections": 3}
    ]
    agg.add(make_result("broken", connector="jira", finished=NOW), now=T)  # the probe passed
    assert agg.overview(now=T)["breakers"] == []


def test_timeline_has_sixty_ten_second_points_with_counts_and_percentiles() -> None:
    agg = ResultsAggregator()
    agg.add(make_result("acme", latency=0.2, finished=NOW), now=T)
    agg.add(make_result("acme", status=ResultStatus.FAILED, finished=NOW - timedelta(seconds=30)), now=T)
    timeline = agg.metrics("acme", now=T)["timeline"]
    assert len(timeline) == 60
    assert timeline[-1]["ok"] == 1 and timeline[-1]["p50_ms"] is not None
    assert sum(p["errors"] for p in timeline) == 1
    assert timeline[0]["total"] == 0 and timeline[0]["p50_ms"] is None


def test_the_spans_kept_are_bounded_in_bytes_and_a_large_record_keeps_only_its_spans(monkeypatch) -> None:
    from ingress.observe import _aggregator

    monkeypatch.setattr(_aggregator, "_TRACES_MAX_BYTES", 100_000)  # a tenant: 10,000
    agg = ResultsAggregator()
    small = make_result("acme", finished=NOW)
    large = make_result("acme", finished=NOW).model_copy(update={"output": {"blob": "x" * 200_000}})
    for result in (small, large):
        agg.add_record(result, result.to_bytes())
    assert agg._traces.peek(small.command_id) == ("acme", small.to_bytes())  # parsed only if asked for
    assert len(agg._traces.peek(large.command_id)[1]) < 5_000  # its spans, not its 200 kB
    for result in (small, large):
        trace = agg.trace("acme", result.command_id)
        assert trace is not None and [s["span_id"] for s in trace["spans"]] == [s.span_id for s in result.spans]
    many = [make_result("beta", finished=NOW) for _ in range(100)]
    for result in many:
        agg.add_record(result, result.to_bytes())
    assert agg._traces.bytes <= 100_000
    # Another tenant's flood let go of its own oldest traces, not of acme's.
    assert agg.trace("acme", small.command_id)["spans"]
    assert agg.trace("beta", many[-1].command_id)["spans"]
    kept = [r for r in many if agg._traces.peek(r.command_id) is not None]
    assert 0 < len(kept) < len(many) and kept == many[-len(kept):]  # its newest
