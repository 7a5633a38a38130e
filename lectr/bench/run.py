"""Lectr's added latency, throughput, CPU and memory, measured against a direct connection in the same run.

Starts the embedded Postgres, the mock provider, ``lectr serve`` and any --peer proxies as
their own processes, then sends the same requests straight to the mock, through Lectr and
through each peer, interleaved, over several rounds, and reports medians. On a machine with two
or more cores Lectr (and the peers) get a core of their own and the mock, the load generator
and Postgres share another, so the proxy is measured rather than the contention.

    python -m lectr.bench.run                              # the full run (a few minutes)
    python -m lectr.bench.run --seconds 2 --rounds 1       # a quick look
    python -m lectr.bench.run --only c1,stream             # some scenarios
    python -m lectr.bench.run --peer 'other=other-proxy --upstream {upstream} --port 9100@9100'

Scenarios: c1, c32, c128, stream, body100k, idle1000, recording (see lectr/bench/README.md).
Results: a table here, and JSON, Markdown and a PNG chart in lectr/bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import uvloop

from lectr.bench import background
from lectr.bench import report as reporting
from lectr.bench.processes import CoreMeter, PeerSpec, Stack, parse_cpus
from lectr.bench.scenarios import (BY_NAME, SCENARIOS, Scenario, Target, measure, measure_idle, pct, recording,
                                   summarize)

# Beside the suite in a checkout; in the working directory when Lectr is installed from a wheel.
_CHECKOUT = (Path(__file__).resolve().parents[2] / "setup.cfg").exists()
RESULTS_DIR = Path(__file__).resolve().parent / "results" if _CHECKOUT else Path("lectr-bench-results")
WARMUP_REQUESTS = 500
SUMMARY_TARGET = "lectr+sum"  # Lectr measured while its cold process runs summaries (--background-summary)


class Suite:
    """Runs the chosen scenarios against every target and collects the report and the latency samples."""

    def __init__(self, args: argparse.Namespace, stack: Stack, scenarios: list[Scenario]) -> None:
        self.args = args
        self.stack = stack
        self.scenarios = scenarios
        self.started = time.monotonic()
        self.samples: dict[str, dict[str, dict[str, list[float]]]] = {}
        self.summary_hold: background.SummaryHold | None = None
        pinned = args.lectr_cores is not None
        self.meter = CoreMeter({"client": args.client_cores, "lectr": args.lectr_cores} if pinned
                               else {"all": set(os.sched_getaffinity(0))})

    def progress(self, text: str) -> None:
        print(f"[{time.monotonic() - self.started:6.1f}s] {text}", flush=True)

    def targets(self) -> list[Target]:
        st = self.stack
        auth = {"Authorization": "Bearer sk-bench"}
        lectr_headers = {**auth, "X-Lectr-Key": st.key, "X-Lectr-Feature": "bench"}
        targets = [Target("direct", st.mock_port, auth, st.mock_tree),
                   Target("lectr", st.lectr_port, lectr_headers, st.lectr_tree, admin_port=st.admin_port)]
        if self.summary_hold:  # the same Lectr with summaries running; in the others' runs none can
            targets.append(Target(SUMMARY_TARGET, st.lectr_port, lectr_headers, st.lectr_tree,
                                  admin_port=st.admin_port))
            for target in targets[:2]:
                target.quiet, target.unquiet = self.summary_hold.hold, self.summary_hold.release
        targets += [Target(name, port, lectr_headers, tree) for name, (port, tree) in st.peers.items()]
        return targets

    async def run(self) -> dict:
        # SIGTERM cancels the run cleanly (a KeyboardInterrupt raised inside a protocol callback would not)
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, asyncio.current_task().cancel)
        if self.args.background_summary:
            self.progress(f"filling request_logs with {background.ROWS:,} rows for the background summary")
            seconds = await background.fill(self.stack.database_url, "bench")
            interval = self.args.lectr_env["LECTR_AGGREGATE_INTERVAL"]
            self.progress(f"filled in {seconds:.1f} s; the cold process runs the aggregator every {interval} s "
                          f"in the {SUMMARY_TARGET} runs and skips its turns in the others")
            self.summary_hold = background.SummaryHold(self.stack.database_url)
        try:
            return await self._scenarios(self.targets())
        finally:
            if self.summary_hold:
                await self.summary_hold.close()

    async def _scenarios(self, targets: list[Target]) -> dict:
        scenarios = []
        rec = None
        for scenario in sorted(self.scenarios, key=lambda s: not s.run_first):
            if scenario.kind == "recording":
                self.progress(f"{scenario.name}: {scenario.title}")
                rec = await recording(targets[1], scenario, self.args.seconds)
                self.progress(f"{scenario.name}: {reporting.recording_line(rec)}")
            else:
                scenarios.append(await self.scenario(scenario, targets))
        order = [s.name for s in self.scenarios]
        return {"scenarios": sorted(scenarios, key=lambda s: order.index(s["scenario"])), "recording": rec}

    async def scenario(self, scenario: Scenario, targets: list[Target]) -> dict:
        """Warm up, then every round runs each target once, the order rotating from round to round."""
        self.progress(f"{scenario.name}: {scenario.title}")
        peaks_reset = all([t.tree.reset_peaks() for t in targets])  # noqa: C419 - reset every tree
        for target in targets:  # warm pools, caches and branch predictors
            await measure(target, scenario, min(1.0, self.args.seconds), requests=min(WARMUP_REQUESTS, scenario.requests))
        rows: dict[str, list[dict]] = {t.name: [] for t in targets}
        samples = self.samples[scenario.name] = {t.name: {"latency": [], "ttfb": []} for t in targets}
        url = self.stack.database_url
        since = await background.database_now(url)
        if self.args.background_summary:
            async with background.SummaryWatch(url, "bench") as watch:
                await self.rounds(scenario, targets, rows, samples)
            self.progress(f"{scenario.name}: a summary query over {background.ROWS:,} rows was running in "
                          f"{watch.busy_pct:.0f}% of {watch.samples} samples; {watch.runs} summary runs finished")
            if rows.get(SUMMARY_TARGET):
                self.progress(f"{scenario.name}: {self.compare_summary(rows, samples)}")
        else:
            await self.rounds(scenario, targets, rows, samples)
        overhead = await background.recorded_overhead(url, since, await background.database_now(url))
        if overhead is not None:
            self.progress(f"{scenario.name}: Lectr's own added time as recorded (overhead_us): "
                          f"p50 {overhead[0]:.0f} µs, p99 {overhead[1]:.0f} µs over {overhead[2]:,} requests")
        peaks = {t.name: t.tree.peaks_mb() for t in targets}
        summary = summarize(scenario, rows, peaks)
        summary["peaks_reset"] = peaks_reset
        summary["recorded_overhead_us"] = overhead and {"p50": overhead[0], "p99": overhead[1], "requests": overhead[2]}
        return summary

    async def rounds(self, scenario: Scenario, targets: list[Target], rows: dict, samples: dict) -> None:
        for round_no in range(self.args.rounds):
            shift = round_no % len(targets)
            for target in targets[shift:] + targets[:shift]:
                run = measure_idle if scenario.kind == "idle" else measure
                row, result = await run(target, scenario, self.args.seconds, meter=self.meter)
                rows[target.name].append(row)
                samples[target.name]["latency"] += result.latencies
                samples[target.name]["ttfb"] += result.ttfb
                self.progress(self.line(scenario, round_no, target.name, row))

    @staticmethod
    def compare_summary(rows: dict, samples: dict) -> str:
        """Lectr's p99 with summaries running against without: the median of the rounds' p99s,
        and the p99 of every request of the arm pooled (steadier: a hundred times the tail)."""
        names = (SUMMARY_TARGET, "lectr")
        with_, without = (statistics.median(r["p99_ms"] for r in rows[name]) for name in names)
        pooled_with, pooled_without = (pct(samples[name]["latency"], 0.99) * 1000 for name in names)
        return (f"Lectr p99 with summaries running / without: {with_:.3f} / {without:.3f} ms "
                f"({100 * (with_ / without - 1):+.0f}%, medians of the rounds), {pooled_with:.3f} / "
                f"{pooled_without:.3f} ms ({100 * (pooled_with / pooled_without - 1):+.0f}%, all requests pooled)")

    def line(self, scenario: Scenario, round_no: int, target: str, row: dict) -> str:
        text = (f"{scenario.name:9} round {round_no + 1}/{self.args.rounds} {target:8} "
                f"p50 {row['p50_ms']:7.3f} ms  p99 {row['p99_ms']:7.3f} ms  {row['rps']:8,.0f} req/s  "
                f"CPU {row['server_cpu_ms_per_request']:.3f} ms/req")
        text += "  busy " + " ".join(f"{g} {row[f'{g}_cores_busy_pct']:.0f}%" for g in self.meter.groups)
        if "gap_p50_ms" in row:
            text += f"  TTFB {row['ttfb_p50_ms']:.3f} ms  gap {row['gap_p50_ms']:.3f} ms"
        if "kb_per_connection" in row:
            text += f"  +{row['rss_added_mb']:.1f} MB for {row['connections']} conns ({row['kb_per_connection']:.1f} KB each)"
        bad = row["errors"] + row["non_2xx"]
        return text + (f"  {row['requests']} ok, {bad} FAILED" if bad else f"  ({row['requests']} ok)")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="lectr bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per scenario (default 3)")
    parser.add_argument("--seconds", type=float, default=6.0, help="time cap per run, in seconds (default 6)")
    parser.add_argument("--only", "--scenarios", dest="only", default="", metavar="NAMES",
                        help=f"comma-separated scenarios to run (default all): {', '.join(BY_NAME)}")
    parser.add_argument("--workers", type=int, default=1, help="Lectr worker processes, as LECTR_WORKERS (default 1)")
    parser.add_argument("--lectr-cpus", metavar="LIST", help="cores for Lectr and peers, e.g. 1 or 2,3 (default: the last)")
    parser.add_argument("--client-cpus", metavar="LIST",
                        help="cores for the mock, load generator and Postgres (default: the first other core)")
    parser.add_argument("--cold-cpus", metavar="LIST",
                        help="cores for Lectr's cold process (jobs, admin, tokeniser), e.g. 0 (default: Lectr's)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    parser.add_argument("--lectr-env", action="append", default=[], metavar="NAME=VALUE",
                        help="a LECTR_* setting for Lectr, e.g. LECTR_BUSY_POLL_US=0; repeatable")
    parser.add_argument("--peer", action="append", default=[], metavar="NAME=COMMAND@PORT",
                        help="another OpenAI-compatible proxy to compare, started with the shell; {upstream} in "
                             "COMMAND becomes the mock's base URL; repeatable")
    parser.add_argument("--background-summary", action="store_true",
                        help=f"fill request_logs with {background.ROWS:,} rows and measure Lectr twice per round: "
                             f"as {SUMMARY_TARGET} while its cold process runs the dashboard summary every "
                             f"{background.INTERVAL} s, and as lectr while the summaries are held back")
    parser.add_argument("--idle-postgres", action=argparse.BooleanOptionalAction, default=None,
                        help="run Postgres in a cgroup with cpu.idle, so its queries never delay the load generator, "
                             "the mock or Lectr (needs a writable cgroup cpu controller; default: on with "
                             "--background-summary)")
    parser.add_argument("--results", type=Path, default=RESULTS_DIR, metavar="DIR",
                        help="where the JSON, Markdown and PNG go (default lectr/bench/results in a checkout, else ./lectr-bench-results)")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.seconds <= 0 or args.workers < 1:
        parser.error("--rounds and --workers must be at least 1, --seconds above 0")
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        parser.error(f"unknown scenario {', '.join(unknown)}; choose from {', '.join(BY_NAME)}")
    args.scenarios = [s for s in SCENARIOS if not names or s.name in names]
    try:
        args.peers = [PeerSpec.parse(p) for p in args.peer]
        args.lectr_cores, args.client_cores = choose_cores(args)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        args.lectr_env = dict(_setting(text) for text in args.lectr_env)
    except ValueError as exc:
        parser.error(str(exc))
    if args.background_summary:
        args.lectr_env.setdefault("LECTR_AGGREGATE_INTERVAL", background.INTERVAL)
    if args.idle_postgres is None:
        args.idle_postgres = args.background_summary
    if len({p.name for p in args.peers}) != len(args.peers):
        parser.error("two --peer options have the same NAME")
    return args


def _setting(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.startswith("LECTR_"):
        raise ValueError(f"--lectr-env takes LECTR_NAME=VALUE, got {text!r}")
    return name, value


def choose_cores(args: argparse.Namespace) -> tuple[set[int] | None, set[int] | None]:
    """Lectr on the last core and the rest on the first, unless told otherwise; None: unpinned."""
    allowed = sorted(os.sched_getaffinity(0))
    if args.no_pin or (len(allowed) < 2 and not (args.lectr_cpus or args.client_cpus)):
        return None, None
    lectr = parse_cpus(args.lectr_cpus) if args.lectr_cpus else {allowed[-1]}
    others = [c for c in allowed if c not in lectr] or allowed
    client = parse_cpus(args.client_cpus) if args.client_cpus else {others[0]}
    for label, cores in (("--lectr-cpus", lectr), ("--client-cpus", client)):
        if not cores <= set(allowed):
            raise ValueError(f"{label}: cores {sorted(cores - set(allowed))} are not available (have {allowed})")
    if lectr & client:
        print(f"bench: warning: Lectr and the client share cores {sorted(lectr & client)}", file=sys.stderr)
    if args.workers > len(lectr):
        print(f"bench: warning: {args.workers} workers on {len(lectr)} core(s) for Lectr", file=sys.stderr)
    return lectr, client


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stamp, started = time.strftime("%Y%m%d-%H%M%S"), time.strftime("%Y-%m-%d %H:%M:%S")
    stack = Stack(lectr_cores=args.lectr_cores, client_cores=args.client_cores, workers=args.workers,
                  lectr_env=args.lectr_env, cold_cores=parse_cpus(args.cold_cpus) if args.cold_cpus else None,
                  peers=args.peers, idle_postgres=args.idle_postgres)
    suite = Suite(args, stack, args.scenarios)
    previous_term = signal.signal(signal.SIGTERM, _raise_interrupt)
    failed = False
    try:
        stack.start(suite.progress)
        results = uvloop.run(suite.run())
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("\nbench: interrupted, stopping what it started", file=sys.stderr)
        return 130
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:  # a process would not start or answer
        failed = True
        print(f"bench: failed: {exc}\n{stack.log_tail()}", file=sys.stderr)
        return 1
    except Exception:
        failed = True
        print(stack.log_tail(), file=sys.stderr)
        raise
    finally:
        suite.progress("stopping the processes")
        previous_int = signal.signal(signal.SIGINT, signal.SIG_IGN)  # stopping is bounded: let it finish
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            stack.stop()
            stack.cleanup(keep_logs=failed)
        finally:
            signal.signal(signal.SIGINT, previous_int)
            signal.signal(signal.SIGTERM, previous_term)
    report = {
        "stamp": stamp, "started": started, "background_summary": args.background_summary, "idle_postgres": args.idle_postgres, "rounds": args.rounds, "seconds": args.seconds, "workers": args.workers,
        "machine": {"cores": os.cpu_count(), "pinned": args.lectr_cores is not None,
                    "lectr_cores": sorted(args.lectr_cores or []), "client_cores": sorted(args.client_cores or [])},
        "peers": [{"name": p.name, "command": p.command, "port": p.port} for p in args.peers],
        **results,
    }
    written = reporting.write(report, suite.samples, args.results)
    print()
    print(reporting.render(report, markdown=False))
    print()
    print("Written: " + ", ".join(str(p) for p in written) + " (and latest.*)")
    failed = any(t["errors"] for s in report["scenarios"] for t in s["targets"].values())
    rec = report["recording"]
    failed |= bool(rec and (rec["dropped"] or rec["errors"]))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
