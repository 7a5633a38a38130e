"""What the suite measures: the scenarios, the targets they run against, and one measured run.

A *target* is where the load generator sends requests: ``direct`` (the mock provider itself),
``lectr``, or a ``--peer``. Every scenario runs against every target in the same run; the
direct column is the ceiling of the client core and the baseline the others are compared to.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from lectr.bench.loadgen import RunResult, open_connections, post_request, request_each, run_load
from lectr.bench.processes import CoreMeter, ProcessTree

HOST = "127.0.0.1"
PATH = "/v1/chat/completions"


def chat_body(content: str, *, stream: bool = False) -> bytes:
    doc = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}]}
    if stream:
        doc["stream"] = True
    return json.dumps(doc, separators=(",", ":")).encode()


def _text_of(size: int) -> str:
    words = ["the", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog", "while", "a", "gateway",
             "relays", "every", "byte"]
    out, n, i = [], 0, 0
    while n < size:
        out.append(words[i % len(words)])
        n += len(out[-1]) + 1
        i += 1
    return " ".join(out)[:size]


@dataclass(frozen=True)
class Scenario:
    """One workload. ``name`` is what ``--only`` takes; ``kind`` is ``load``, ``idle`` or ``recording``."""

    name: str
    title: str
    body: bytes
    concurrency: int
    requests: int
    kind: str = "load"
    headers: dict[str, str] = field(default_factory=dict)
    seconds: float | None = None  # a tighter time cap than --seconds, for the slow scenarios
    run_first: bool = False  # runs before the others (memory growth is clearest on a fresh heap)
    stream: bool = False  # record chunk arrivals: time to first byte and inter-chunk gaps
    paced: bool = False  # the mock's delays set the rate, so req/s says nothing about the proxy


STREAM_HEADERS = {"x-mock-chunks": "8", "x-mock-chunk-delay-ms": "2"}
IDLE_CONNECTIONS = 1000

SCENARIOS = [
    Scenario("c1", "non-streamed, concurrency 1", chat_body("Say hello."), 1, 10000),
    Scenario("c32", "non-streamed, concurrency 32", chat_body("Say hello."), 32, 80000),
    Scenario("c128", "non-streamed, concurrency 128", chat_body("Say hello."), 128, 60000, seconds=4),
    Scenario("stream", "streamed, 8 chunks 2 ms apart, concurrency 4", chat_body("Say hello.", stream=True), 4, 600,
             headers=STREAM_HEADERS, stream=True, paced=True),
    Scenario("body100k", "100 KB request body, concurrency 8", chat_body(_text_of(100_000)), 8, 12000, seconds=4),
    Scenario("idle1000", f"{IDLE_CONNECTIONS:,} idle keep-alive connections", chat_body("Say hello."),
             32, IDLE_CONNECTIONS, kind="idle", run_first=True),
    Scenario("recording", "event pipeline at the top request rate (Lectr only)", chat_body("Say hello."), 32, 80000,
             kind="recording"),
]
BY_NAME = {s.name: s for s in SCENARIOS}


@dataclass
class Target:
    """Somewhere to send requests, and the process tree that serves them (for CPU and memory)."""

    name: str
    port: int
    headers: dict[str, str]
    tree: ProcessTree
    admin_port: int | None = None  # Lectr's: its /metrics tell when the ring has drained
    # Awaited around each run's load: e.g. holding back Lectr's summaries (--background-summary)
    quiet: Callable[[], Awaitable[None]] | None = None
    unquiet: Callable[[], Awaitable[None]] | None = None

    def payload(self, scenario: Scenario) -> bytes:
        return post_request(PATH, scenario.body, {**self.headers, **scenario.headers})


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def scrape(port: int) -> dict[str, float]:
    """The samples of Lectr's /metrics, by name (labels included in the name)."""
    with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


async def wait_drained(admin_port: int, limit: float) -> float:
    """Wait (up to ``limit`` seconds) until Lectr's ring is empty; return how long that took."""
    started = time.perf_counter()
    while time.perf_counter() - started < limit:
        try:
            buffered = (await asyncio.to_thread(scrape, admin_port)).get("lectr_events_buffered", 0)
        except OSError:  # metrics unavailable: don't wait, don't fail the run
            break
        if buffered <= 0:
            break
        await asyncio.sleep(0.02)
    return time.perf_counter() - started


def row_of(result: RunResult, cpu_seconds: float) -> dict:
    """The numbers of one run (milliseconds, requests per second)."""
    done = len(result.latencies)
    row = {
        "requests": done, "errors": result.errors, "non_2xx": result.non_2xx, "wall_s": result.wall,
        "rps": result.rps,
        "p50_ms": pct(result.latencies, 0.50) * 1000, "p90_ms": pct(result.latencies, 0.90) * 1000,
        "p99_ms": pct(result.latencies, 0.99) * 1000, "max_ms": max(result.latencies, default=0) * 1000,
        "ttfb_p50_ms": pct(result.ttfb, 0.50) * 1000, "ttfb_p99_ms": pct(result.ttfb, 0.99) * 1000,
        "server_cpu_ms_per_request": cpu_seconds * 1000 / max(1, done),
        "loadgen_cpu_pct": 100 * result.client_cpu / result.wall if result.wall else 0.0,
    }
    if result.gaps:
        row["gap_p50_ms"] = pct(result.gaps, 0.50) * 1000
        row["gap_p99_ms"] = pct(result.gaps, 0.99) * 1000
    return row


async def measure(target: Target, scenario: Scenario, max_seconds: float, requests: int | None = None,
                  meter: CoreMeter | None = None) -> tuple[dict, RunResult]:
    """One run of a load scenario against one target; the server's CPU includes its cold path."""
    cpu_before = target.tree.cpu_seconds()
    if target.quiet:
        await target.quiet()
    try:
        cores_before, started = meter.sample() if meter else {}, time.perf_counter()
        result = await run_load(HOST, target.port, target.payload(scenario), concurrency=scenario.concurrency,
                                requests=requests or scenario.requests,
                                max_seconds=min(max_seconds, scenario.seconds or max_seconds),
                                track_chunks=scenario.stream)
        busy = meter.busy_pct(cores_before, meter.sample(), time.perf_counter() - started) if meter else {}
    finally:
        if target.unquiet:
            await target.unquiet()
    if target.admin_port is not None:
        await wait_drained(target.admin_port, 5)
        await asyncio.sleep(0.05)  # the last batch's write, so that it counts in this run's CPU
    row = row_of(result, target.tree.cpu_seconds() - cpu_before)
    row.update({f"{group}_cores_busy_pct": pct for group, pct in busy.items()})
    return row, result


async def measure_idle(target: Target, scenario: Scenario, max_seconds: float,
                       meter: CoreMeter | None = None) -> tuple[dict, RunResult]:
    """Open ``scenario.requests`` connections, one request on each, and weigh the server while they idle."""
    rss_before = target.tree.rss_bytes()
    cpu_before = target.tree.cpu_seconds()
    deadline = time.perf_counter() + max(max_seconds, 10)
    clients = await open_connections(HOST, target.port, scenario.requests, deadline=deadline)
    try:
        cores_before, started = meter.sample() if meter else {}, time.perf_counter()
        result = await request_each(clients, target.payload(scenario), concurrency=scenario.concurrency,
                                    deadline=deadline)
        busy = meter.busy_pct(cores_before, meter.sample(), time.perf_counter() - started) if meter else {}
        if target.admin_port is not None:
            await wait_drained(target.admin_port, 5)
        await asyncio.sleep(0.3)  # let the server settle with every connection idle
        rss_after = target.tree.rss_bytes()
        open_now = sum(1 for c in clients if c.transport is not None and not c.transport.is_closing())
    finally:
        for client in clients:
            client.close()
    row = row_of(result, target.tree.cpu_seconds() - cpu_before)
    grown = rss_after - rss_before
    row.update({f"{group}_cores_busy_pct": pct for group, pct in busy.items()})
    row.update({"connections": open_now, "rss_before_mb": rss_before / 2**20, "rss_after_mb": rss_after / 2**20,
                "rss_added_mb": grown / 2**20, "kb_per_connection": grown / 1024 / max(1, open_now)})
    await asyncio.sleep(0.3)  # let the server see the closes before the next run
    return row, result


async def recording(lectr: Target, scenario: Scenario, max_seconds: float) -> dict:
    """The event pipeline at the top request rate: every request's row written, none dropped."""
    before = await asyncio.to_thread(scrape, lectr.admin_port)
    result = await run_load(HOST, lectr.port, lectr.payload(scenario), concurrency=scenario.concurrency,
                            requests=scenario.requests, max_seconds=max_seconds)
    drained = await wait_drained(lectr.admin_port, 60)
    after = await asyncio.to_thread(scrape, lectr.admin_port)
    written = after.get("lectr_events_written_total", 0) - before.get("lectr_events_written_total", 0)
    dropped = sum(v - before.get(k, 0) for k, v in after.items() if k.startswith("lectr_events_dropped_total"))
    return {"concurrency": scenario.concurrency, "requests": len(result.latencies), "requests_per_s": result.rps,
            "errors": result.errors + result.non_2xx, "rows_written": written,
            "rows_per_s": written / (result.wall + drained), "drain_after_load_s": drained, "dropped": dropped}


def summarize(scenario: Scenario, rows: dict[str, list[dict]], peaks: dict[str, list[dict]]) -> dict:
    """Medians over rounds per target, and each proxy's difference from direct."""
    def med(target: str, key: str) -> float:
        values = [r[key] for r in rows[target] if key in r]
        return statistics.median(values) if values else float("nan")

    keys = sorted({k for rs in rows.values() for r in rs for k in r})
    summary = {"scenario": scenario.name, "title": scenario.title, "concurrency": scenario.concurrency,
               "kind": scenario.kind, "paced": scenario.paced, "stream": scenario.stream, "targets": {}}
    for target, runs in rows.items():
        medians = {k: med(target, k) for k in keys}
        if scenario.kind == "idle":  # freed memory is kept for reuse, so later rounds grow less: keep the most
            most = max(runs, key=lambda r: r["rss_added_mb"])
            medians.update({k: most[k] for k in ("rss_before_mb", "rss_after_mb", "rss_added_mb", "kb_per_connection")})
        medians["errors"] = sum(r["errors"] + r["non_2xx"] for r in runs)
        medians["peak_rss_mb"] = peaks.get(target, [])
        if target != "direct":
            for k in ("p50_ms", "p99_ms", "ttfb_p50_ms", "ttfb_p99_ms", "gap_p50_ms", "gap_p99_ms"):
                if k in medians:
                    medians["added_" + k] = medians[k] - med("direct", k)
            medians["rps_ratio"] = medians["rps"] / med("direct", "rps") if med("direct", "rps") else float("nan")
        summary["targets"][target] = medians
    summary["rounds"] = rows
    return summary
