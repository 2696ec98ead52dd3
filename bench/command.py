"""``switchyard bench``: throughput and latency of the whole pipeline against a same-run baseline.

Starts its own local system (real Kafka + OpenBao, emulators, ingress, router, a Slack
worker pool), then measures, on the same broker in the same run:

- ``baseline``: raw aiokafka produce → consume, records/s;
- ``async``: commands/s through ``POST /v1/commands:batch`` until the final Results are on
  the results topic, and its ratio to the baseline;
- ``sync_mcp``: stateless MCP ``tools/call`` per second and latency with N concurrent
  clients, open-loop runs at 100/s and 500/s, one call at a time split into its hops
  (``bench._stages``), and the latency added over calling the emulator directly;
- ``noisy_neighbour``: a quiet tenant's p99 alone, then while another tenant floods at 20×
  its rate against a slow API, and while it bursts the same count at once (``bench._noisy``);
- ``noisy_worker``: the same at the Slack worker pool alone (RoutedCommands straight onto
  its topic), and the worker's CPU ms per command (``bench._noisy_worker``);
- ``tenant_memory``: every process's resident memory and metric series as thousands of
  new tenant ids pass the router, a worker pool and the ingress (``bench._tenant_memory``);
- ``scaling``: async throughput with 1, 2 and 4 worker processes;
- ``scale_out`` (only when named in ``--only``): on a 3-broker stack of its own, two
  routers and a worker pool walked 1 → 2 → 4 → 2 (``bench._scale_out``).

Prints one JSON document (and writes it with ``--out``), with ``targets``: each
performance target the run measured, and whether it was met (``bench._targets``).
Never part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import sys
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from core.event_loop import use_event_loop
from core.settings import load_settings
from switchyard.system import LocalSystem

from ._baseline import measure_baseline
from ._cpu import CpuMeter
from ._load import (
    BATCH_ITEMS,
    BATCH_SENDERS,
    ResultClock,
    direct_emulator_calls,
    mcp_calls,
    submit_batches,
)
from ._machine import code_version, machine
from ._noisy import MIN_PHASE_SECONDS, noisy_neighbour
from ._stages import lone_calls
from ._targets import against_targets
from ._tenants import FAST, slack_tenant

__all__ = ["add_arguments", "run"]

SCENARIOS = (
    "baseline", "async", "sync_mcp", "noisy_neighbour", "noisy_worker", "tenant_memory", "scaling", "scale_out",
)
# Scenarios that start a stack of their own: run only when named in --only.
OWN_STACK = ("scale_out",)
WARM_UP = 400
DIRECT_CALLS = 300
# One MCP call at a time, split into hops by its spans (bench._stages).
LONE_CALLS = 200
BASELINE_RECORDS = 50_000
BASELINE_RUNS = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--only",
        default=",".join(s for s in SCENARIOS if s not in OWN_STACK),
        help=f"comma-separated scenarios of {', '.join(SCENARIOS)} (default: all but {', '.join(OWN_STACK)})",
    )
    parser.add_argument("--quick", action="store_true", help="smaller counts (a smoke run)")
    parser.add_argument("--commands", type=int, default=20_000, help="async commands per measurement")
    parser.add_argument("--mcp-clients", type=int, default=64, help="concurrent MCP clients")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per MCP measurement")
    parser.add_argument("--workers", type=int, default=1, help="Slack worker processes (besides scaling)")
    parser.add_argument(
        "--router-linger-ms", type=int, default=None,
        help="the router's producer linger (SWITCHYARD_ROUTER_LINGER_MS; default: the setting's)",
    )
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    parser.add_argument("--state-dir", type=Path, default=None)
    parser.add_argument(
        "--log-level", default="WARNING",
        help="the system's log level (INFO shows rebalances and seeks; logs in <state dir>/**/logs)",
    )


async def _async_throughput(system: LocalSystem, clock: ResultClock, keys: list[str], count: int) -> dict[str, Any]:
    """Commands per second from the first submit to the last final Result on the results
    topic. ``commands_per_s`` counts every accepted command's final Result whatever its
    status (each is the end of a command); ``succeeded_per_s`` only those that succeeded."""
    cpu = CpuMeter(system)
    refused: Counter[str] = Counter()
    async with aiohttp.ClientSession() as session:
        cpu.start()
        started = time.perf_counter()
        ids = await submit_batches(session, system.ingress_url, keys, count, refused=refused)
        submitted = time.perf_counter()
        last = await clock.wait_for(ids, within=max(120.0, count / 100))
    elapsed = last - started
    summary = clock.summary(ids)
    return {
        "requested": count,
        "commands": len(ids),
        "refused_at_ingress": dict(refused),
        "statuses": summary["statuses"],
        "duplicates": summary["duplicates"],
        "submit_seconds": round(submitted - started, 2),
        "seconds": round(elapsed, 2),
        "commands_per_s": round(len(ids) / elapsed, 1),
        "succeeded_per_s": round(summary["statuses"].get("succeeded", 0) / elapsed, 1),
        "cpu_ms_per_command": cpu.per(len(ids)),
    }


async def _bench(args: argparse.Namespace) -> dict[str, Any]:
    only = {s for s in args.only.split(",") if s}
    scale = 0.1 if args.quick else 1.0
    count = max(500, int(args.commands * scale))
    duration = max(3.0, args.duration * (0.3 if args.quick else 1.0))
    state_dir = args.state_dir or load_settings().home / "bench"
    prefix = f"bench{uuid.uuid4().hex[:6]}."
    system = LocalSystem(
        state_dir, connectors=("slack",), workers={"slack": args.workers},
        env={
            "SWITCHYARD_TOPIC_PREFIX": prefix, "SWITCHYARD_LOG_LEVEL": args.log_level,
            **({} if args.router_linger_ms is None else {"SWITCHYARD_ROUTER_LINGER_MS": str(args.router_linger_ms)}),
        },
        progress=lambda line: print(f"bench: {line}", file=sys.stderr, flush=True),
        # The edge rate limit protects shared ingress capacity; the bench measures capacity.
        args={"ingress": ["--rate", "1000000", "--burst", "1000000"]},
    )
    report: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "code": code_version(),
        "scenarios": sorted(only - set(OWN_STACK)),
        "parameters": {
            "async_commands": count, "mcp_clients": args.mcp_clients, "mcp_duration_s": duration,
            "slack_workers": args.workers, "topic_partitions": None, "router_linger_ms": None,
            "quick": args.quick, "brokers": 1, "log_level": args.log_level,
            "batch_items": BATCH_ITEMS, "batch_senders": BATCH_SENDERS, "bench_tenants": 8,
            "warm_up_commands": WARM_UP, "mcp_open_loop_rates_per_s": [100, 500],
            "emulator_direct_calls": DIRECT_CALLS, "emulator_direct_concurrency": 1, "lone_calls": LONE_CALLS,
            "baseline_records": BASELINE_RECORDS, "baseline_runs": BASELINE_RUNS,
            "scaling_commands": max(1000, count // 2),
        },
    }
    try:
        await system.start()
        settings = system.settings
        report["parameters"]["topic_partitions"] = settings.topic_partitions
        report["parameters"]["router_linger_ms"] = settings.router_linger_ms
        report["load_average_1m_at_start"] = round(os.getloadavg()[0], 2)
        tenants = [slack_tenant(f"bench{i}") for i in range(8)]
        quiet, noisy = slack_tenant("quiet"), slack_tenant("noisy")
        keys = await system.provision([*tenants, quiet, noisy])
        bench_keys = [keys[t.tenant_id] for t in tenants]
        clock = ResultClock(settings)
        await clock.start()
        # Warm every path (connections, Vault tokens, JIT-free but cache-warm) before measuring.
        await _async_throughput(system, clock, bench_keys, WARM_UP)
        mcp_url = f"{system.ingress_url}/mcp/main"

        if "baseline" in only:
            print("bench: baseline", file=sys.stderr)
            # Records of the size the pipeline's Results have (the largest it writes), and
            # the median of a few runs long enough to be more than a blip.
            size = clock.mean_record_bytes() or 700
            runs = [
                await measure_baseline(settings, count=BASELINE_RECORDS, size=size, partitions=settings.topic_partitions)
                for _ in range(BASELINE_RUNS)
            ]
            report["baseline"] = {
                **sorted(runs, key=lambda r: r["msgs_per_s"])[len(runs) // 2],
                "runs_msgs_per_s": [r["msgs_per_s"] for r in runs],
            }
        if "async" in only:
            print("bench: async", file=sys.stderr)
            report["async"] = await _async_throughput(system, clock, bench_keys, count)
            if "baseline" in report:
                report["async"]["ratio_to_baseline"] = round(
                    report["async"]["commands_per_s"] / report["baseline"]["msgs_per_s"], 3
                )
        if "sync_mcp" in only:
            print("bench: sync MCP", file=sys.stderr)
            connector = aiohttp.TCPConnector(limit=0)
            async with aiohttp.ClientSession(connector=connector) as session:
                # Clients of all eight bench tenants: one tenant alone is held to its
                # own concurrency cap in the worker, which is fairness, not capacity.
                # Unmeasured: the clients' connections opened, the MCP path warm.
                await mcp_calls(session, mcp_url, bench_keys, duration=2.0, concurrency=args.mcp_clients)
                cpu = CpuMeter(system)
                cpu.start()
                closed = await mcp_calls(
                    session, mcp_url, bench_keys, duration=duration, concurrency=args.mcp_clients
                )
                closed["cpu_ms_per_call"] = cpu.per(closed["calls"] + closed["errors"])
                # The latency a sustained load sees (below this machine's capacity), then
                # the target's 500/s.
                light_loop = await mcp_calls(
                    session, mcp_url, bench_keys, duration=duration, concurrency=0, rate=100
                )
                open_loop = await mcp_calls(
                    session, mcp_url, bench_keys, duration=duration, concurrency=0, rate=500
                )
                # One call at a time through the pipeline, hop by hop: the floor under
                # every latency above.
                lone = await lone_calls(session, system.ingress_url, bench_keys[0], count=LONE_CALLS)
                # One call at a time: the emulator's own latency, free of queueing.
                direct = await direct_emulator_calls(
                    session, system.emulator_url, tenants[0].emulator_token, count=DIRECT_CALLS, concurrency=1
                )
            added = None
            if light_loop["latency"].get("count") and direct["latency"].get("count"):
                # At 100/s (below capacity), so the difference is the pipeline, not a queue.
                added = round(light_loop["latency"]["p50_ms"] - direct["latency"]["p50_ms"], 2)
            report["sync_mcp"] = {
                "protocol": "stateless 2026-07-28 tools/call, keep-alive connections, after a 2 s warm-up",
                "closed_loop": closed, "open_loop_100_per_s": light_loop, "open_loop_500_per_s": open_loop,
                "lone_calls": lone, "emulator_direct": direct, "added_p50_ms_at_100_per_s": added,
            }
        if "noisy_neighbour" in only:
            print("bench: noisy neighbour", file=sys.stderr)
            report["noisy_neighbour"] = await noisy_neighbour(
                system, clock, (quiet.tenant_id, keys[quiet.tenant_id]), (noisy.tenant_id, keys[noisy.tenant_id]),
                duration, min_phase=0.0 if args.quick else MIN_PHASE_SECONDS,
            )
            report["noisy_neighbour"]["tenant_limits"] = FAST.model_dump()
        if "noisy_worker" in only:
            from ._noisy_worker import noisy_worker, worker_cpu

            print("bench: noisy neighbour at the worker, worker CPU", file=sys.stderr)
            report["noisy_worker"] = await noisy_worker(system, duration=duration)
            report["worker_cpu"] = await worker_cpu(system, commands=max(2_000, count // 4))
        if "tenant_memory" in only:
            from ._tenant_memory import QUICK_STEPS, STEPS, tenant_memory

            print("bench: memory as tenants grow", file=sys.stderr)
            report["tenant_memory"] = await tenant_memory(system, clock, QUICK_STEPS if args.quick else STEPS)
        if "scaling" in only:
            print("bench: scaling", file=sys.stderr)
            report["scaling"] = await _scaling(system, clock, bench_keys, max(1000, count // 2), args.workers)
        report["targets"] = against_targets(report)
        report["results_by_status"] = dict(clock.statuses)
        # Everything shares the machine's cores: a high load average says the numbers
        # measure CPU contention as much as the pipeline.
        report["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)
        await clock.stop()
    finally:
        system.stop()
    return report


async def _scaling(
    system: LocalSystem, clock: ResultClock, keys: list[str], count: int, start_workers: int
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    current = start_workers
    for target in (1, 2, 4):
        while current > target:
            system.stop_worker("slack")
            current -= 1
        while current < target:
            system.add_worker("slack")
            current += 1
        waited = await _spread_over(system, "slack", target)
        await _async_throughput(system, clock, keys, 300)
        out[f"workers_{target}"] = await _async_throughput(system, clock, keys, count) | {"rebalance_s": waited}
    return out


async def _spread_over(system: LocalSystem, connector: str, workers: int, within: float = 90.0) -> float:
    """Wait (bounded) until the pool's rebalance has settled: every partition of its topic
    held, by each of its ``workers`` processes (as far as there are partitions); seconds waited.

    Raises:
        TimeoutError: it did not settle within ``within`` seconds.
    """
    topic = system.settings.topics.connector(connector)
    partitions = system.settings.topic_partitions
    names = [n for n in system.metrics_urls if n.startswith(f"worker-{connector}-")]
    wanted = re.compile(rf'^switchyard_assigned_partitions\{{[^}}]*topic="{re.escape(topic)}"[^}}]*\}} (\S+)$', re.M)
    started = time.perf_counter()
    async with asyncio.timeout(within), aiohttp.ClientSession() as session:
        while True:
            held = []
            for name in names:
                try:
                    async with session.get(system.metrics_urls[name]) as response:
                        held.append(sum(float(v) for v in wanted.findall(await response.text())))
                except (aiohttp.ClientError, OSError):
                    held.append(0.0)  # a worker still starting: its port is not bound yet
            if len(held) == workers and sum(held) == partitions and min(held) >= min(1, partitions // workers):
                return round(time.perf_counter() - started, 1)
            await asyncio.sleep(0.5)


def run(args: argparse.Namespace) -> int:
    from core.logs import configure_logging

    configure_logging("switchyard-bench", "WARNING")
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    # The load generators and the baseline run on the loop the system's processes use.
    use_event_loop(load_settings().event_loop)
    only = {s for s in args.only.split(",") if s}
    report = asyncio.run(_bench(args)) if only - set(OWN_STACK) else {}
    if "scale_out" in only:
        from ._scale_out import measure_scale_out

        report["scale_out"] = asyncio.run(measure_scale_out(args))
    text = orjson.dumps(report, option=orjson.OPT_INDENT_2).decode()
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0
