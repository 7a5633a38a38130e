"""Lectr's own Python per request, without sockets: ``python -m lectr.bench.hotpath``.

The hot path (the client connection's and the upstream connection's callbacks, from the
request's bytes to the response's) and the cold path (row building and metrics for the
events that produces) run in-process against stand-in transports, so the time is Lectr's
code alone: no kernel, no other process, little noise. ``--profile`` adds a cProfile table;
under ``valgrind --tool=callgrind`` the same run gives exact instruction counts.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import pstats
import time
from datetime import datetime, timezone
from decimal import Decimal

import uvloop

from lectr.settings.config import ProxyLimits, UpstreamSettings
from lectr.snapshot.directory import Directory, DirectoryHolder, Org
from lectr.proxy.ring import EventRing
from lectr.recording.rows import RowBuilder
from lectr.snapshot.keys import hash_key
from lectr.platform.metrics import Metrics
from lectr.pricing.prices import PriceRow, PricingTable
from lectr.proxy.busypoll import BusyPoller
from lectr.proxy.protocol import ProxyProtocol
from lectr.proxy.server import ProxyContext
from lectr.proxy.pool import UpstreamPools
from lectr.proxy.upstream import UpstreamConnection

KEY = b"lc_key_hotpathhotpathhotpathhotpathhotpathhot"
BODY = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello."}]}'
# The headers the openai Python SDK sends, and about what OpenAI answers with: real traffic
# carries many more fields than the benchmark's load generator and mock.
REQUEST = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nAccept-Encoding: gzip, deflate\r\n"
           b"Connection: keep-alive\r\nAccept: application/json\r\nContent-Type: application/json\r\n"
           b"User-Agent: OpenAI/Python 1.109.1\r\nX-Stainless-Lang: python\r\n"
           b"X-Stainless-Package-Version: 1.109.1\r\nX-Stainless-OS: Linux\r\nX-Stainless-Arch: x64\r\n"
           b"X-Stainless-Runtime: CPython\r\nX-Stainless-Runtime-Version: 3.11.7\r\n"
           b"Authorization: Bearer sk-test\r\nX-Lectr-Key: %s\r\nX-Lectr-Feature: chat\r\n"
           b"X-Stainless-Async: false\r\nx-stainless-retry-count: 0\r\nx-stainless-read-timeout: 600\r\n"
           b"Content-Length: %d\r\n\r\n%s") % (KEY, len(BODY), BODY)
RESPONSE_BODY = (b'{"id":"chatcmpl-1","object":"chat.completion","created":1700000000,"model":"gpt-4o-mini",'
                 b'"choices":[{"index":0,"message":{"role":"assistant","content":"Hello!"},'
                 b'"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":3,"total_tokens":12,'
                 b'"prompt_tokens_details":{"cached_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}}}')
RESPONSE = (b"HTTP/1.1 200 OK\r\nDate: Sun, 22 Nov 2026 12:00:00 GMT\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nConnection: keep-alive\r\naccess-control-expose-headers: X-Request-ID\r\n"
            b"openai-organization: org-abc\r\nopenai-processing-ms: 120\r\nopenai-project: proj_abc\r\n"
            b"openai-version: 2020-10-01\r\nx-envoy-upstream-service-time: 124\r\n"
            b"x-ratelimit-limit-requests: 30000\r\nx-ratelimit-limit-tokens: 150000000\r\n"
            b"x-ratelimit-remaining-requests: 29999\r\nx-ratelimit-remaining-tokens: 149999990\r\n"
            b"x-ratelimit-reset-requests: 2ms\r\nx-ratelimit-reset-tokens: 0s\r\nx-request-id: req_123\r\n"
            b"strict-transport-security: max-age=31536000; includeSubDomains; preload\r\n"
            b"cf-cache-status: DYNAMIC\r\nX-Content-Type-Options: nosniff\r\nServer: cloudflare\r\n"
            b"CF-RAY: 8f0a1b2c3d4e5f60-AMS\r\nalt-svc: h3=\":443\"; ma=86400\r\n\r\n%s") % (
    len(RESPONSE_BODY), RESPONSE_BODY)

# What `lectr bench`'s load generator sends and its mock answers: five fields each way.
LIGHT_REQUEST = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\nAuthorization: Bearer sk-test\r\nX-Lectr-Key: %s\r\n\r\n%s") % (
    len(BODY), KEY, BODY)
LIGHT_RESPONSE = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-request-id: req_mock\r\n"
                  b"openai-processing-ms: 1\r\nx-ratelimit-remaining-requests: 9999\r\ncontent-length: %d\r\n\r\n%s"
                  ) % (len(RESPONSE_BODY), RESPONSE_BODY)


class _Transport:
    """Enough of an asyncio transport for the protocols: writes are counted and dropped."""

    def __init__(self) -> None:
        self.written = 0

    def write(self, data: bytes) -> None:
        self.written += 1

    def writelines(self, parts) -> None:
        self.written += 1

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def is_closing(self) -> bool: return False
    def close(self) -> None: ...
    def abort(self) -> None: ...


def _stack(loop: asyncio.AbstractEventLoop):
    org = Org(id=1, name="bench", azure=None)
    directory = DirectoryHolder()
    directory.replace(Directory(orgs_by_key_hash={hash_key(KEY): org}))
    ring: EventRing = EventRing(1 << 20, batch_size=1 << 30)
    upstream = UpstreamPools(UpstreamSettings(base_urls={"openai": "http://127.0.0.1:9/v1"}), BusyPoller(loop, 0))
    ctx = ProxyContext(loop=loop, limits=ProxyLimits(), base_urls={"openai": "http://127.0.0.1:9/v1"},
                       directory=directory, upstream=upstream, ring=ring)
    client = ProxyProtocol(ctx)
    client.connection_made(_Transport())
    pool = upstream.pool(ctx.origins["openai"])
    conn = UpstreamConnection(pool)
    conn.connection_made(_Transport())
    pool.open = 1
    pool.release(conn)
    return ctx, client, conn, ring


async def run(requests: int, profile: bool, cold_too: bool = True, light: bool = False) -> None:
    request, response = (LIGHT_REQUEST, LIGHT_RESPONSE) if light else (REQUEST, RESPONSE)
    ctx, client, conn, ring = _stack(asyncio.get_running_loop())
    rows = RowBuilder(PricingTable([PriceRow(1, "openai", "gpt-4o-mini", Decimal("0.15"), Decimal("0.6"), None,
                                             datetime(2024, 1, 1, tzinfo=timezone.utc), "seed")]))
    metrics = Metrics(ring)

    def hot(n: int) -> None:
        for _ in range(n):
            client.data_received(request)
            conn.data_received(response)

    def cold() -> None:
        for event in ring.drain():
            metrics.observe(event)
            rows.build(event)

    hot(1000)
    cold()
    gc.collect()
    gc.freeze()
    profiler = cProfile.Profile() if profile else None
    started = time.perf_counter()
    if profiler:
        profiler.enable()
    hot(requests)
    hot_s = time.perf_counter() - started
    assert len(ring) == requests, f"{len(ring)} events for {requests} requests"
    started = time.perf_counter()
    if cold_too:
        cold()
    cold_s = time.perf_counter() - started
    if profiler:
        profiler.disable()
    print(f"hot path  {hot_s / requests * 1e6:6.2f} µs per request")
    print(f"cold path {cold_s / requests * 1e6:6.2f} µs per event (rows and metrics; COPY not included)")
    if profiler:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m lectr.bench.hotpath", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--hot-only", action="store_true", help="skip the cold path (to count the hot path's "
                        "instructions under callgrind: run twice with different --requests and subtract)")
    parser.add_argument("--light", action="store_true",
                        help="the five fields each way that lectr bench sends and its mock answers, not the SDK's and OpenAI's")
    parser.add_argument("--profile", action="store_true", help="print a cProfile table (slows the run down)")
    args = parser.parse_args()
    uvloop.run(run(args.requests, args.profile, not args.hot_only, args.light))


if __name__ == "__main__":
    main()
