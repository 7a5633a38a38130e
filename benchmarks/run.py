"""Lectr's added latency and throughput, measured against a direct connection in the same run.

Starts the mock provider and ``lectr serve`` (embedded Postgres) as their own processes,
then sends the same requests straight to the mock and through Lectr, interleaved, over
several rounds, and reports medians. On a machine with two or more cores Lectr gets a core
of its own and the mock, the load generator and Postgres share another, so the proxy is
measured rather than the contention.

    python -m benchmarks.run                 # the full run (a few minutes)
    python -m benchmarks.run --seconds 2 --rounds 1   # a quick look
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import uvloop

from benchmarks.loadgen import RunResult, post_request, run_load

RESULTS_DIR = Path(__file__).resolve().parent / "results"
CHAT = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello."}]}'
STREAM = b'{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Say hello."}]}'


@dataclass(frozen=True)
class Scenario:
    name: str
    body: bytes
    concurrency: int
    requests: int


SCENARIOS = [
    Scenario("non-streamed, concurrency 1", CHAT, 1, 4000),
    Scenario("non-streamed, concurrency 32", CHAT, 32, 40000),
    Scenario("streamed, concurrency 1", STREAM, 1, 3000),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"port {port} never opened")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def scrape(port: int) -> dict[str, float]:
    """The unlabelled and ``reason``-labelled samples of Lectr's /metrics, by name."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="lectr-bench-"))
        cores = sorted(os.sched_getaffinity(0))
        self.pinned = len(cores) >= 2 and not args.no_pin
        self.lectr_cores = {cores[-1]} if self.pinned else set(cores)
        self.client_cores = {cores[0]} if self.pinned else set(cores)
        self.procs: list[subprocess.Popen] = []

    def spawn(self, args: list[str], env: dict[str, str], cores: set[int]) -> subprocess.Popen:
        proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=open(self.tmp / "stderr.log", "a"),
                                preexec_fn=lambda: os.sched_setaffinity(0, cores))
        self.procs.append(proc)
        return proc

    def start(self) -> None:
        self.mock_port, self.lectr_port, self.admin_port = free_port(), free_port(), free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("LECTR_")}
        env.update({"LECTR_DATA_DIR": str(self.tmp / "data"), "LECTR_PROXY_PORT": str(self.lectr_port),
                    "LECTR_ADMIN_PORT": str(self.admin_port), "LECTR_LOG_LEVEL": "WARNING",
                    "LECTR_UPSTREAM_OPENAI": f"http://127.0.0.1:{self.mock_port}/v1"})
        python = sys.executable
        # Postgres starts here, so it shares the client core and Lectr's core runs Lectr alone;
        # `lectr serve` joins the running server.
        os.sched_setaffinity(0, self.client_cores)
        from lectr.db import start_embedded
        start_embedded(self.tmp / "data")
        self.mock = self.spawn([python, "-m", "lectr", "mock-provider", "--port", str(self.mock_port)], env,
                               self.client_cores)
        out = subprocess.run([python, "-m", "lectr", "org", "create", "bench"], env=env, capture_output=True,
                             text=True, check=True)
        self.key = out.stdout.strip().splitlines()[-1]
        self.lectr = self.spawn([python, "-m", "lectr", "serve"], env, self.lectr_cores)
        wait_for_port(self.mock_port, self.mock)
        wait_for_port(self.lectr_port, self.lectr)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()

    async def one(self, target: str, scenario: Scenario, requests: int | None = None) -> RunResult:
        if target == "direct":
            port, path, headers = self.mock_port, "/v1/chat/completions", {"Authorization": "Bearer sk-bench"}
        else:
            port, path = self.lectr_port, "/v1/chat/completions"
            headers = {"Authorization": "Bearer sk-bench", "X-Lectr-Key": self.key, "X-Lectr-Feature": "bench"}
        payload = post_request(path, scenario.body, headers)
        return await run_load("127.0.0.1", port, payload, concurrency=scenario.concurrency,
                              requests=requests or scenario.requests, max_seconds=self.args.seconds)

    async def run(self) -> dict:
        report: dict = {"machine": {"cores": os.cpu_count(), "pinned": self.pinned,
                                    "lectr_cores": sorted(self.lectr_cores),
                                    "client_cores": sorted(self.client_cores)},
                        "rounds": self.args.rounds, "scenarios": []}
        for scenario in [sc for sc in SCENARIOS if self.args.only in sc.name]:
            for target in ("direct", "lectr"):  # warm pools, caches and branch predictors
                await self.one(target, scenario, requests=min(500, scenario.requests))
            rows: dict[str, list[dict]] = {"direct": [], "lectr": []}
            for round_no in range(self.args.rounds):
                for target in ("direct", "lectr") if round_no % 2 == 0 else ("lectr", "direct"):
                    cpu_before = cpu_seconds(self.lectr.pid)
                    result = await self.one(target, scenario)
                    cpu = cpu_seconds(self.lectr.pid) - cpu_before
                    rows[target].append({
                        "p50_ms": pct(result.latencies, 0.50) * 1000, "p99_ms": pct(result.latencies, 0.99) * 1000,
                        "ttfb_p50_ms": pct(result.ttfb, 0.50) * 1000, "rps": result.rps,
                        "requests": len(result.latencies), "errors": result.errors,
                        "non_2xx": sum(n for s, n in result.statuses.items() if s >= 300),
                        "lectr_cpu_ms_per_request": cpu * 1000 / max(1, len(result.latencies)),
                    })
                    print(f"  {scenario.name:32} round {round_no + 1} {target:6} "
                          f"p50 {rows[target][-1]['p50_ms']:.3f} ms  {result.rps:8.0f} req/s", flush=True)
            report["scenarios"].append(summarize(scenario, rows))
        report["recording"] = await self.recording()
        report["lectr_rss_mb"] = rss_mb(self.lectr.pid)
        report["lectr_peak_rss_mb"] = rss_mb(self.lectr.pid, "VmHWM")
        return report


    async def recording(self) -> dict:
        """The event pipeline at the top request rate: every request's row written, none dropped."""
        scenario = SCENARIOS[1]
        before = scrape(self.admin_port)
        result = await self.one("lectr", scenario)
        served_at = time.perf_counter()
        while scrape(self.admin_port)["lectr_events_buffered"] > 0 and time.perf_counter() - served_at < 60:
            await asyncio.sleep(0.05)
        drained = time.perf_counter() - served_at
        after = scrape(self.admin_port)
        written = after["lectr_events_written_total"] - before["lectr_events_written_total"]
        dropped = sum(after[k] - before.get(k, 0) for k in after if k.startswith("lectr_events_dropped_total"))
        return {"requests": len(result.latencies), "requests_per_s": result.rps, "rows_written": written,
                "rows_per_s": written / (result.wall + drained), "drain_after_load_s": drained,
                "dropped": dropped}


def summarize(scenario: Scenario, rows: dict[str, list[dict]]) -> dict:
    def med(target: str, key: str) -> float:
        return statistics.median(r[key] for r in rows[target])

    return {
        "scenario": scenario.name, "concurrency": scenario.concurrency,
        "direct": {k: med("direct", k) for k in ("p50_ms", "p99_ms", "ttfb_p50_ms", "rps")},
        "lectr": {k: med("lectr", k) for k in ("p50_ms", "p99_ms", "ttfb_p50_ms", "rps", "lectr_cpu_ms_per_request")},
        "added_p50_ms": med("lectr", "p50_ms") - med("direct", "p50_ms"),
        "added_p99_ms": med("lectr", "p99_ms") - med("direct", "p99_ms"),
        "added_ttfb_p50_ms": med("lectr", "ttfb_p50_ms") - med("direct", "ttfb_p50_ms"),
        "rps_ratio": med("lectr", "rps") / med("direct", "rps"),
        "errors": sum(r["errors"] + r["non_2xx"] for rs in rows.values() for r in rs),
        "raw": rows,
    }


def markdown(report: dict) -> str:
    lines = ["| scenario | direct p50 / p99 (ms) | Lectr p50 / p99 (ms) | added p50 / p99 (ms) | "
             "direct req/s | Lectr req/s | ratio | Lectr CPU/req (ms) |",
             "|---|---|---|---|---|---|---|---|"]
    for s in report["scenarios"]:
        d, l = s["direct"], s["lectr"]
        lines.append(f"| {s['scenario']} | {d['p50_ms']:.3f} / {d['p99_ms']:.3f} | {l['p50_ms']:.3f} / "
                     f"{l['p99_ms']:.3f} | {s['added_p50_ms']:.3f} / {s['added_p99_ms']:.3f} | {d['rps']:.0f} | "
                     f"{l['rps']:.0f} | {s['rps_ratio']:.2f} | {l['lectr_cpu_ms_per_request']:.3f} |")
    m, rec = report["machine"], report["recording"]
    lines.append("")
    lines.append(f"Recording at the top rate (concurrency 32): {rec['requests']} requests served at "
                 f"{rec['requests_per_s']:.0f} req/s, {rec['rows_written']:.0f} rows written at {rec['rows_per_s']:.0f} "
                 f"rows/s (ring empty {rec['drain_after_load_s']:.2f} s after the load ended), "
                 f"{rec['dropped']:.0f} dropped.")
    lines.append("")
    lines.append(f"Medians of {report['rounds']} interleaved rounds; {m['cores']} cores, Lectr pinned to "
                 f"{m['lectr_cores']}, mock + load generator to {m['client_cores']}. Lectr RSS after the run: "
                 f"{report['lectr_rss_mb']:.0f} MB (peak {report['lectr_peak_rss_mb']:.0f} MB).")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lectr bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per scenario (default 3)")
    parser.add_argument("--seconds", type=float, default=6.0, help="time cap per run (default 6)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    parser.add_argument("--only", default="", metavar="TEXT", help="run only the scenarios whose name contains TEXT")
    args = parser.parse_args(argv)
    bench = Bench(args)
    try:
        bench.start()
        report = uvloop.run(bench.run())
    finally:
        bench.stop()
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (RESULTS_DIR / f"overhead-{stamp}.json").write_text(json.dumps(report, indent=2))
    table = markdown(report)
    (RESULTS_DIR / f"overhead-{stamp}.md").write_text(table + "\n")
    print()
    print(table)
    ok = all(s["errors"] == 0 for s in report["scenarios"]) and report["recording"]["dropped"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
