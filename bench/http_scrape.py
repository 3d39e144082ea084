"""What ``GET /metrics`` costs with 10,000 actors, and what the metrics cost a run.

A real runtime (10,000 no-op actors every 20 s, the embedded PostgreSQL, ``[http]`` enabled)
runs until every actor has run; then ``/metrics`` is fetched over HTTP:

- *after all ran*: every actor ran since the previous scrape, so every actor's lines are
  rendered again (the worst case: a scrape interval longer than every actor's period);
- *after few ran*: a scrape 1 s after the previous one (only the actors that ran meanwhile are
  rendered again; the others' lines are kept from the previous scrape).

It also times what a run pays when nobody looks (``run_started`` + ``run_finished``, the
counters the executor updates per run), next to the runtime's CPU per run in BENCHMARKS.md.

    .venv/bin/python bench/http_scrape.py [--actors 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import statistics
import sys
import time
from dataclasses import replace

import aiohttp
from common import bench_database, machine_line, quiet_platforms
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

from discord_actor import RunContext, actor, exposition
from discord_actor.assembly import Assembly
from discord_actor.config import HttpConfig, ScheduleConfig
from discord_actor.metrics import RUN_DURATION_BUCKETS, RuntimeMetrics
from discord_actor.testing.harness import actor_config, load, make_config


@actor(platform="none")
async def noop(ctx: RunContext) -> None:
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def render_by_families(metrics: RuntimeMetrics) -> str:
    """What /metrics did before per-actor templates: every actor's samples rendered through
    prometheus_client's families at each scrape. The same text, for the side-by-side figure."""
    runs = CounterMetricFamily("discord_actor_runs", "", labels=["actor", "status"])
    duration = HistogramMetricFamily("discord_actor_run_duration_seconds", "", labels=["actor"])
    for name, series in sorted(metrics.actors.items()):
        for status, n in sorted(series.statuses.items()):
            runs.add_metric([name, status], n)
        bounds = [*(repr(b) for b in RUN_DURATION_BUCKETS), "+Inf"]
        cumulative = list(zip(bounds, series.durations.cumulative(), strict=True))
        duration.add_metric([name], cumulative, series.durations.sum)
    everything_else = exposition._families(metrics)
    return exposition._render(everything_else) + exposition._render([runs, duration])


def render_side_by_side(metrics: RuntimeMetrics, rounds: int = 5) -> tuple[float, float, bool]:
    """Median ms of rendering every actor anew: templates (now) and families (before), in
    turns; and whether both give the same samples."""
    now_ms, before_ms = [], []
    for _ in range(rounds):
        for series in metrics.actors.values():
            series.lines = (-1, "", "")  # as if every actor ran since the last scrape
        started = time.perf_counter()
        text = exposition.render(metrics).decode()
        now_ms.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        reference = render_by_families(metrics)
        before_ms.append((time.perf_counter() - started) * 1000)
    samples = sorted(line for line in text.splitlines() if not line.startswith("#"))
    same = samples == sorted(line for line in reference.splitlines() if not line.startswith("#"))
    return statistics.median(now_ms), statistics.median(before_ms), same


def per_run_cost(n: int = 200_000) -> float:
    """Microseconds the metrics add to one run, unscraped."""
    metrics = RuntimeMetrics()
    names = [f"actor_{i}" for i in range(1000)]
    started = time.perf_counter()
    for i in range(n):
        metrics.run_started("schedule", 0.004)
        metrics.run_finished(names[i % 1000], "succeeded", 0.012)
    return (time.perf_counter() - started) / n * 1e6


async def main(actors: int) -> int:
    logging.basicConfig(level=logging.WARNING)
    async with bench_database("bench_http", max_pool_size=10) as database:
        print(await machine_line(database))
        every = ScheduleConfig(type="interval", timezone="UTC", seconds=20)
        configs = [actor_config(f"actor_{i:05d}", schedule=every, platform="none")
                   for i in range(actors)]
        port = free_port()
        config = replace(make_config(database.config, configs, max_concurrent_runs=64),
                         http=HttpConfig(enabled=True, port=port))
        assembly = Assembly(config, {c.name: load(noop, c) for c in config.actors},
                            platforms=quiet_platforms(), database=database)
        runtime = await assembly.start()
        url = f"http://127.0.0.1:{port}/metrics"
        try:
            deadline = time.monotonic() + 300
            while sum(1 for c in configs if runtime.metrics.runs(c.name, "succeeded")) < actors:
                if time.monotonic() > deadline:
                    print("not every actor ran within 300 s", file=sys.stderr)
                    return 1
                await asyncio.sleep(0.5)
            all_ran, few_ran, sizes, lines = [], [], [], 0
            async with aiohttp.ClientSession() as http:
                for _ in range(5):
                    await asyncio.sleep(21)  # every actor runs again meanwhile
                    for store in (all_ran, few_ran):
                        started = time.perf_counter()
                        async with http.get(url) as answer:
                            body = await answer.read()
                        store.append((time.perf_counter() - started) * 1000)
                        sizes.append(len(body))
                        lines = body.count(b"\n")
                        await asyncio.sleep(1)
        finally:
            await assembly.stop()
    # After the stop: rendering on the event loop here would stall the runtime's runs.
    side_by_side = render_side_by_side(runtime.metrics)
    print(f"{actors:,} actors, every one has run; /metrics: {lines:,} lines, "
          f"{statistics.median(sizes) / 1e6:.1f} MB")
    print(f"scrape after all ran  (ms, 5 scrapes): median {statistics.median(all_ran):.0f}, "
          f"max {max(all_ran):.0f}")
    print(f"scrape after few ran  (ms, 5 scrapes): median {statistics.median(few_ran):.0f}, "
          f"max {max(few_ran):.0f}")
    now_ms, before_ms, same = side_by_side
    print(f"rendering every actor anew (ms, median of 5, in turns): templates {now_ms:.0f},"
          f" prometheus_client families {before_ms:.0f} ({before_ms / now_ms:.1f}x);"
          f" same samples: {same}")
    print(f"metrics per run, unscraped: {per_run_cost():.2f} µs")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--actors", type=int, default=10_000)
    sys.exit(asyncio.run(main(parser.parse_args().actors)))
