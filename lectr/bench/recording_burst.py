"""Recording under a burst of big streams without usage (issue 12): does counting hold other rows back?

Starts Postgres, the mock provider and ``lectr serve`` (one worker) as in the benchmark suite,
then sends 20 concurrent streams of about 3.9 MB that carry no usage chunk (so every one must be
counted by the tokeniser) while ordinary non-streamed requests keep flowing, and reports:

- the peak RSS of the worker and of the tokeniser process (sampled every 20 ms, and the kernel's
  VmHWM where it can be reset);
- for the ordinary requests: the longest and the 99th-percentile delay from served (the row's
  ``created_at``) to written (the first poll of Postgres that sees the row; polled every 50 ms);
- when the big streams' rows were all written, and how many were measured or left uncounted.

    python -m lectr.bench.recording_burst [--streams 20] [--chunks 21000] [--ordinary 5000]
    python -m lectr.bench.recording_burst --chunk-chars 1000 --chunks 3300   # text-heavy streams
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import threading
import time

import aiohttp
import asyncpg

from lectr.bench.processes import ProcessTree, Stack

ORDINARY_CONCURRENCY = 8
POLL_SECONDS = 0.05


def _role(cmdline: str) -> str:
    # With LECTR_WORKERS=1 ``lectr serve`` is itself the worker: proxy loop and event writer.
    return "tokeniser" if "tokenizer_service" in cmdline else "worker"


class RssSampler:
    """Samples each process of a tree every 20 ms and keeps the peak by process."""

    def __init__(self, tree: ProcessTree) -> None:
        self.tree = tree
        self.peaks: dict[int, tuple[str, int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            for proc in self.tree.processes():
                try:
                    rss = proc.memory_info().rss
                    cmd = " ".join(proc.cmdline())
                except Exception:  # noqa: BLE001 - a process that just ended
                    continue
                if rss > self.peaks.get(proc.pid, ("", 0))[1]:
                    self.peaks[proc.pid] = (cmd, rss)
            time.sleep(0.02)


async def _big_stream(session: aiohttp.ClientSession, url: str, key: str, chunks: int, chunk_chars: int) -> int:
    headers = {"X-Lectr-Key": key, "X-Lectr-Feature": "burst-big", "x-mock-chunks": str(chunks),
               "x-mock-chunk-chars": str(chunk_chars), "Authorization": "Bearer sk-bench"}
    async with session.post(url, json={"model": "gpt-4o-mini", "stream": True}, headers=headers) as response:
        size = 0
        async for block in response.content.iter_chunked(65536):
            size += len(block)
        return size


async def _ordinary(session: aiohttp.ClientSession, url: str, key: str, count: int, stop: asyncio.Event) -> int:
    headers = {"X-Lectr-Key": key, "X-Lectr-Feature": "burst-ordinary", "Authorization": "Bearer sk-bench"}
    sent = 0

    async def one_by_one() -> None:
        nonlocal sent
        while sent < count and not stop.is_set():
            sent += 1
            async with session.post(url, json={"model": "gpt-4o-mini", "messages": []}, headers=headers) as r:
                await r.read()

    await asyncio.gather(*(one_by_one() for _ in range(ORDINARY_CONCURRENCY)))
    return sent


async def _poll_rows(db_url: str, stop: asyncio.Event, delays: list[float], big: dict) -> None:
    """Note when each ordinary row is first seen, and when the last big one is."""
    conn = await asyncpg.connect(db_url)
    last_id = 0
    try:
        while True:
            rows = await conn.fetch("SELECT id, feature, extract(epoch FROM created_at) AS at FROM request_logs "
                                    "WHERE id > $1 ORDER BY id", last_id)
            seen = time.time()
            for row in rows:
                last_id = max(last_id, row["id"])
                if row["feature"] == "burst-ordinary":
                    delays.append(seen - float(row["at"]))
                elif row["feature"] == "burst-big":
                    big["rows"] = big.get("rows", 0) + 1
                    big["last_seen"] = seen
            if (stop.is_set() and big.get("rows", 0) >= big["expected"]
                    and len(delays) >= big.get("ordinary_sent", float("inf"))):
                return
            await asyncio.sleep(POLL_SECONDS)
    finally:
        await conn.close()


async def _run(stack: Stack, db_url: str, args) -> dict:
    url = f"http://127.0.0.1:{stack.lectr_port}/v1/chat/completions"
    sampler = RssSampler(stack.lectr_tree)
    stack.lectr_tree.reset_peaks()
    sampler.start()
    delays: list[float] = []
    big = {"expected": args.streams}
    stop = asyncio.Event()
    poller = asyncio.create_task(_poll_rows(db_url, stop, delays, big))
    started = time.time()
    connector = aiohttp.TCPConnector(limit=args.streams + ORDINARY_CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=600)) as session:
        ordinary = asyncio.create_task(_ordinary(session, url, stack.key, args.ordinary, stop))
        sizes = await asyncio.gather(*(_big_stream(session, url, stack.key, args.chunks, args.chunk_chars)
                                       for _ in range(args.streams)))
        streams_done = time.time()
        await asyncio.sleep(2)  # ordinary traffic goes on while the big streams are counted
        stop.set()
        sent = big["ordinary_sent"] = await ordinary
    await asyncio.wait_for(poller, 600)
    sampler.stop()
    conn = await asyncpg.connect(db_url)
    try:
        try:
            outcome = await conn.fetch("SELECT token_source, usage_note, count(*) AS n FROM request_logs "
                                       "WHERE feature = 'burst-big' GROUP BY 1, 2")
        except asyncpg.UndefinedColumnError:  # a Lectr from before usage_note, for comparison
            outcome = await conn.fetch("SELECT token_source, NULL AS usage_note, count(*) AS n FROM request_logs "
                                       "WHERE feature = 'burst-big' GROUP BY 1")
    finally:
        await conn.close()
    delays.sort()
    peaks: dict[str, float] = {}
    for cmd, rss in sampler.peaks.values():
        role = _role(cmd)
        peaks[role] = max(peaks.get(role, 0.0), rss / 2**20)
    for entry in stack.lectr_tree.peaks_mb():
        role = _role(entry["cmd"])
        peaks[f"{role}_vmhwm"] = max(peaks.get(f"{role}_vmhwm", 0.0), entry["peak_rss_mb"])
    return {
        "big_streams": args.streams, "big_stream_mb": round(sizes[0] / 2**20, 2), "chunk_chars": args.chunk_chars,
        "ordinary_requests": sent, "ordinary_rows_seen": len(delays),
        "ordinary_delay_max_s": round(delays[-1], 3) if delays else None,
        "ordinary_delay_p99_s": round(delays[int(len(delays) * 0.99) - 1], 3) if delays else None,
        "big_streams_served_s": round(streams_done - started, 2),
        "big_rows_all_written_s": round(big.get("last_seen", started) - started, 2),
        "big_rows": {f"{r['token_source']}/{r['usage_note']}": r["n"] for r in outcome},
        "peak_rss_mb": {k: round(v, 1) for k, v in sorted(peaks.items())},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=20)
    parser.add_argument("--chunks", type=int, default=21000, help="content chunks per stream (~190 bytes each)")
    parser.add_argument("--chunk-chars", type=int, default=0,
                        help="characters of text per chunk (default one word; 1000 with --chunks 3300 makes "
                             "the same 3.9 MB streams carry 3.3 M characters to count each)")
    parser.add_argument("--ordinary", type=int, default=5000, help="most ordinary requests to send")
    args = parser.parse_args()
    stack = Stack(lectr_cores=None, client_cores=None, workers=1, peers=[])
    ok = False
    try:
        stack.start(lambda message: print(f"bench: {message}", file=sys.stderr))
        env = {k: v for k, v in os.environ.items() if not k.startswith("LECTR_")}
        env["LECTR_DATA_DIR"] = str(stack.tmp / "data")
        db_url = subprocess.run([sys.executable, "-m", "lectr", "db", "url"], env=env, capture_output=True,
                                text=True, check=True, timeout=120).stdout.strip().splitlines()[-1]
        print(json.dumps(asyncio.run(_run(stack, db_url, args)), indent=2))
        ok = True
    finally:
        stack.stop()
        stack.cleanup(keep_logs=not ok)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
