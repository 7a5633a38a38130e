"""README promises about a running ``lectr serve`` that had no test: shutdown with a stream in
flight, the connect timeout, the size limits through LECTR_* variables, session expiry and
housekeeping, ``lectr pricing sync``, the aggregator's single runner, real dropped events and
the writer's kept connection when Postgres ends it."""

from __future__ import annotations

import asyncio
import signal
import socket
import threading

import asyncpg
import openai
import orjson
import pytest
import requests as http

from lectr.jobs.scheduler import Job, Scheduler
from lectr.jobs.registry import AGGREGATOR_LOCK
from tests.conftest import sdk_client, wait_for
from tests.rawhttp import exchange


def query(url: str, sql: str, *args):
    async def run():
        conn = await asyncpg.connect(url)
        try:
            return await conn.fetch(sql, *args)
        finally:
            await conn.close()
    return asyncio.run(run())


def org_rows(url: str, org: str, where: str = "true") -> list:
    return query(url, "SELECT r.* FROM request_logs r JOIN organizations o ON o.id = r.org_id "
                      f"WHERE o.name = $1 AND {where} ORDER BY r.id", org)


def log_in(api: str, key: str) -> http.Session:
    session = http.Session()
    token = session.get(api + "/login").text.split('name="csrf_token" value="')[1].split('"')[0]
    assert session.post(api + "/login", data={"key": key, "csrf_token": token}, allow_redirects=False).status_code == 303
    return session


def test_sigterm_with_a_stream_in_flight_finishes_it_records_it_and_exits_0(lectr_factory, mock, database_url):
    server = lectr_factory.start(("stream-stop",))
    client = sdk_client(server.base_url, **{"X-Lectr-Key": server.extra["key"], "X-Lectr-Feature": "in-flight"})
    gate = "sigterm-stream"
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}],
                                            stream=True, extra_headers={"x-mock-gate": gate, "x-mock-chunks": "5",
                                                                           "x-mock-chunk-delay-ms": "100"})
    chunks = iter(stream)
    texts = [next(chunks)]  # the stream has begun; the mock holds the rest until released
    server.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: "shutting down" in server.log_text(), timeout=10,
             message="the server to begin its shutdown")
    mock.release(gate)
    for chunk in chunks:
        texts.append(chunk)
        mock.release(gate)
    assert "".join(c.choices[0].delta.content or "" for c in texts if c.choices) == "Hello from the mock provider"
    # The drain then stops the cold process too; under a loaded CI machine that can take longer
    # than the 30 s LECTR_SHUTDOWN_TIMEOUT alone.
    assert server.proc.wait(90) == 0
    [row] = org_rows(database_url, "stream-stop")
    assert (row["status_code"], row["stream"], row["error_type"]) == (200, True, None)


def _full_backlog_listener() -> tuple[socket.socket, list[socket.socket]]:
    """A listening socket that never accepts, its queue filled: a new connect hangs in SYN."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    held = []
    while True:
        probe = socket.socket()
        probe.setblocking(False)
        if probe.connect_ex(listener.getsockname()) not in (0, 115):  # EINPROGRESS is fine too
            raise AssertionError("could not fill the backlog")
        held.append(probe)
        # Full once a further connect does not complete within a moment.
        test = socket.socket()
        test.settimeout(0.3)
        try:
            test.connect(listener.getsockname())
            held.append(test)
        except (socket.timeout, TimeoutError):
            test.close()
            return listener, held
        if len(held) > 64:
            raise AssertionError("the backlog never filled")


def test_a_provider_that_does_not_accept_in_time_is_504(lectr_factory):
    listener, held = _full_backlog_listener()
    try:
        server = lectr_factory.start(("slow-connect",), LECTR_UPSTREAM_CONNECT_TIMEOUT="0.5")
        endpoint = "http://127.0.0.1:%d" % listener.getsockname()[1]
        server.cli("org", "azure", "slow-connect", "--endpoint", endpoint, "--api-version", "2024-10-21")
        client = sdk_client(server.base_url, **{"X-Lectr-Key": server.extra["key"], "X-Lectr-Provider": "azure"})

        def status() -> int:
            try:
                client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
                return 200
            except openai.APIStatusError as exc:
                return exc.status_code if exc.status_code != 400 else 0  # 400: the config is not live yet
        assert wait_for(status, timeout=10) == 504
        with pytest.raises(openai.APIStatusError) as info:
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
        assert info.value.status_code == 504 and info.value.body["code"] == "upstream_timeout"
    finally:
        for s in held:
            s.close()
        listener.close()


def test_body_and_header_limits_come_from_the_lectr_variables(lectr_factory, mock):
    server = lectr_factory.start(("limits",), LECTR_MAX_BODY_BYTES="2000", LECTR_MAX_HEADER_BYTES="3000")
    key = server.extra["key"]
    base = [("X-Lectr-Key", key), ("Content-Type", "application/json")]
    small = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x" * 1500}]})
    large = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x" * 2100}]})
    received = mock.received
    assert exchange(server.port, "POST", "/v1/chat/completions", base, small).status_line.startswith(b"HTTP/1.1 200")
    assert mock.received == received + 1
    too_big = exchange(server.port, "POST", "/v1/chat/completions", base, large)
    assert too_big.status_line.startswith(b"HTTP/1.1 413")
    assert set(orjson.loads(too_big.raw[len(too_big.head):])["error"]) == {"message", "type", "param", "code"}
    assert exchange(server.port, "POST", "/v1/chat/completions", [*base, ("X-Pad", "p" * 2500)], small) \
        .status_line.startswith(b"HTTP/1.1 200")
    too_long = exchange(server.port, "POST", "/v1/chat/completions", [*base, ("X-Pad", "p" * 3100)], small)
    assert too_long.status_line.startswith(b"HTTP/1.1 431")
    assert mock.received == received + 2  # refused requests never reach the provider


def test_a_session_expires_and_housekeeping_removes_it(lectr_factory, database_url):
    server = lectr_factory.start(("expiring",), LECTR_SESSION_HOURS="0.0005")  # 1.8 s
    api = server.extra["api"]
    token = log_in(api, server.extra["key"]).cookies["lectr_session"]
    # The cookie is sent by hand: the browser's copy expires with it (Max-Age), but the server
    # must refuse the token by itself too.
    cookie = {"Cookie": f"lectr_session={token}"}
    assert http.get(api + "/dashboard", headers=cookie, allow_redirects=False).status_code == 200
    assert http.get(api + "/api/v1/summary", headers=cookie).status_code == 200
    wait_for(lambda: http.get(api + "/api/v1/summary", headers=cookie).status_code == 401, timeout=10,
             message="the session to expire")
    reply = http.get(api + "/dashboard", headers=cookie, allow_redirects=False)
    assert reply.status_code == 303 and reply.headers["Location"] == "/login"
    org = "SELECT id FROM organizations WHERE name = 'expiring'"
    assert query(database_url, f"SELECT count(*) FROM dashboard_sessions WHERE org_id = ({org})")[0][0] == 1
    server.cli("jobs", "run", "housekeeping")
    assert query(database_url, f"SELECT count(*) FROM dashboard_sessions WHERE org_id = ({org})")[0][0] == 0


def test_housekeeping_creates_the_coming_partitions(lectr_factory, database_url):
    server = lectr_factory.start()
    parts = "SELECT count(*) FROM pg_inherits WHERE inhparent = 'request_logs'::regclass"
    before = query(database_url, parts)[0][0]
    newest = query(database_url, "SELECT max(c.relname) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                                 "WHERE i.inhparent = 'request_logs'::regclass "
                                 "AND c.relname ~ '^request_logs_[0-9]{8}$'")[0][0]
    query(database_url, f'DROP TABLE "{newest}"')  # as if the days ahead had not been prepared
    assert query(database_url, parts)[0][0] == before - 1
    result = server.cli("jobs", "run", "housekeeping")
    assert "Ran housekeeping" in result.stdout
    assert query(database_url, parts)[0][0] == before


def test_pricing_sync_refreshes_seeded_rows_and_keeps_operator_rows(lectr_factory, database_url):
    server = lectr_factory.start()
    query(database_url, "DELETE FROM model_pricing WHERE source = 'seed' AND provider = 'openai' AND model = 'gpt-4o'")
    query(database_url, "INSERT INTO model_pricing (provider, model, input_usd_per_mtok, output_usd_per_mtok, "
                        "effective_from, source) VALUES ('openai', 'sync-probe', 1, 2, now(), 'operator')")
    result = server.cli("pricing", "sync")
    assert result.returncode == 0 and result.stdout.startswith("Synced ")
    assert int(result.stdout.split()[1]) > 100
    assert query(database_url, "SELECT count(*) FROM model_pricing WHERE source = 'seed' AND provider = 'openai' "
                               "AND model = 'gpt-4o'")[0][0] >= 1
    assert query(database_url, "SELECT count(*) FROM model_pricing WHERE model = 'sync-probe' "
                               "AND source = 'operator'")[0][0] == 1


async def test_the_aggregator_runs_in_one_process_per_turn(database_url):
    started, release = asyncio.Event(), asyncio.Event()
    runs = []

    async def slow_job(conn) -> None:
        runs.append(1)
        started.set()
        await asyncio.wait_for(release.wait(), 10)

    # Two pools: two processes' worth of connections to the same database.
    pools = [await asyncpg.create_pool(database_url, min_size=1, max_size=2) for _ in range(2)]
    first, second = (Scheduler(pool, [Job("aggregator", 3600, AGGREGATOR_LOCK, slow_job)]) for pool in pools)
    running = asyncio.create_task(first.run_once("aggregator"))
    try:
        await asyncio.wait_for(started.wait(), 10)
        # The lock is held: this turn is skipped (a second runner would block in the job).
        skipped = asyncio.create_task(second.run_once("aggregator"))
        done, _ = await asyncio.wait({skipped}, timeout=5)
        release.set()
        assert await running is True
        assert done and skipped.result() is False
        assert len(runs) == 1
        assert await second.run_once("aggregator") is True  # and the next turn may run anywhere
    finally:
        release.set()
        await asyncio.gather(running, return_exceptions=True)
        for pool in pools:
            await pool.close()


def test_a_running_server_skips_the_aggregator_while_another_holds_its_lock(lectr_factory, database_url):
    async def hold_and_watch() -> tuple[int, int]:
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute("SELECT pg_advisory_lock($1)", AGGREGATOR_LOCK)  # another runner, mid-turn
            await conn.execute("DELETE FROM dashboard_summaries")
            server = await asyncio.to_thread(lectr_factory.start, ("agg-co",), LECTR_AGGREGATE_INTERVAL="0.2")
            held = [await conn.fetchval("SELECT count(*) FROM dashboard_summaries")]
            for _ in range(10):  # many of the server's turns pass while the lock is held
                await asyncio.sleep(0.2)
                held.append(await conn.fetchval("SELECT count(*) FROM dashboard_summaries"))
            await conn.execute("SELECT pg_advisory_unlock($1)", AGGREGATOR_LOCK)
            after = await asyncio.to_thread(wait_for, lambda: asyncio.run(_count_summaries(database_url)), 10)
            return max(held), after
        finally:
            await conn.close()
    held, after = asyncio.run(hold_and_watch())
    assert held == 0
    assert after > 0


async def _count_summaries(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval("SELECT count(*) FROM dashboard_summaries")
    finally:
        await conn.close()


def test_real_dropped_events_reach_the_banner(lectr_factory, mock, database_url):
    # A ring of two, drained only every 2 s, without busy polling (which would build rows ahead).
    server = lectr_factory.start(("dropper",), LECTR_RING_SIZE="2", LECTR_FLUSH_INTERVAL="2",
                                 LECTR_FLUSH_EVENTS="1000", LECTR_BUSY_POLL_US="0", LECTR_AGGREGATE_INTERVAL="3600")
    client = sdk_client(server.base_url, **{"X-Lectr-Key": server.extra["key"]})
    for _ in range(30):
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    org = "(SELECT id FROM organizations WHERE name = 'dropper')"
    dropped = wait_for(lambda: query(database_url, f"SELECT sum(count) FROM event_drops WHERE org_id = {org} "
                                                   "AND reason = 'ring_full'")[0][0], timeout=15,
                       message="the drops written by the writer")
    written = wait_for(lambda: len(org_rows(database_url, "dropper")) == 30 - dropped and 30 - dropped, timeout=15)
    assert dropped + written == 30 and dropped > 0
    server.cli("jobs", "run", "aggregator")
    page = log_in(server.extra["api"], server.extra["key"]).get(server.extra["api"] + "/dashboard").text
    assert f"{dropped} events could not be recorded" in page.replace(",", "")


def test_the_writers_kept_connection_ended_by_postgres_loses_and_repeats_nothing(lectr_factory, database_url):
    server = lectr_factory.start(("terminated",), LECTR_FLUSH_INTERVAL="0.1")
    client = sdk_client(server.base_url, **{"X-Lectr-Key": server.extra["key"]})
    sent = 0
    for round_ in range(3):
        for _ in range(10):
            client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}],
                                           extra_headers={"X-Lectr-Feature": f"round-{round_}"})
        sent += 10
        wait_for(lambda: len(org_rows(database_url, "terminated")) >= sent, timeout=20,
                 message=f"{sent} rows after round {round_}")
        # Postgres ends every connection Lectr holds, the writer's kept one among them.
        killed = query(database_url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                     "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                                     "AND backend_type = 'client backend'")
        assert len(killed) >= 1
    # One more request, written after everything before it: nothing is still on its way.
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}],
                                   extra_headers={"X-Lectr-Feature": "last"})
    wait_for(lambda: org_rows(database_url, "terminated", "feature = 'last'"), timeout=20)
    rows = org_rows(database_url, "terminated")
    assert len(rows) == sent + 1
    for round_ in range(3):
        assert len([r for r in rows if r["feature"] == f"round-{round_}"]) == 10
