"""``lectr serve --workers 2``: two processes share the proxy port; one admin port; clean stop."""

import asyncio
import signal
import socket
import time
import urllib.request

import asyncpg
import psutil

from tests.conftest import create_org, lectr_env, sdk_client, start_lectr, wait_for


def _rows(database_url: str, org: str) -> int:
    async def count() -> int:
        conn = await asyncpg.connect(database_url)
        try:
            return await conn.fetchval("SELECT count(*) FROM request_logs r JOIN organizations o ON o.id = r.org_id "
                                       "WHERE o.name = $1", org)
        finally:
            await conn.close()
    return asyncio.run(count())


def serving_worker(workers, port: int, key: str) -> int | None:
    """Send one slow request on a new connection; return the pid of the worker that accepted it."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        local = sock.getsockname()[1]
        body = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"x"}]}'
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Lectr-Key: " + key.encode() +
                     b"\r\nx-mock-delay-ms: 300\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
                     + body)
        def owner() -> int | None:  # the request is in flight at the mock for 300 ms
            for worker in workers:
                if any(c.raddr and c.raddr.port == local and c.laddr.port == port for c in worker.net_connections()):
                    return worker.pid
            return None
        pid = wait_for(owner, timeout=0.25, interval=0.01, message="a worker holding the connection")
        assert sock.recv(100).startswith(b"HTTP/1.1 200")
        return pid


def test_two_workers_share_the_port_record_everything_and_stop_cleanly(database_url, mock, tmp_path):
    env = lectr_env(database_url, mock, tmp_path, LECTR_WORKERS="2", LECTR_FLUSH_INTERVAL="0.2")
    key = create_org(env, "workers-co")
    server = start_lectr(env, tmp_path / "serve.log")
    try:
        def workers_of(pid: int) -> list[psutil.Process]:
            found = []
            for p in psutil.Process(pid).children():
                try:
                    if "--worker-index" in p.cmdline() and p.status() != psutil.STATUS_ZOMBIE:
                        found.append(p)
                except psutil.Error:  # a worker just killed, not yet reaped
                    pass
            return found

        deadline = time.monotonic() + 20
        while len(workers_of(server.proc.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        workers = workers_of(server.proc.pid)
        assert len(workers) == 2
        # One process beside the workers serves them the tokeniser: the cold process.
        tokenizers = [p for p in psutil.Process(server.proc.pid).children() if "--cold" in p.cmdline()]
        assert len(tokenizers) == 1  # one tokeniser process serves both workers
        cold = tokenizers[0]
        def listening(worker, port: int) -> bool:
            return any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in worker.net_connections())

        port, admin_port = int(env["LECTR_PROXY_PORT"]), int(env["LECTR_ADMIN_PORT"])
        deadline = time.monotonic() + 20  # ready means one worker listens; wait for both
        while not all(listening(w, port) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert all(listening(w, port) for w in workers)  # each on the proxy port itself (SO_REUSEPORT)
        wait_for(lambda: listening(cold, admin_port), timeout=20, message="the cold process's admin listener")
        assert sum(listening(w, admin_port) for w in [*workers, cold]) == 1  # one admin listener

        def loaded_aiohttp(worker) -> bool:
            return any("aiohttp" in m.path for m in worker.memory_maps())

        # Only the admin's process loads aiohttp (about 14 MB): no worker does.
        assert [loaded_aiohttp(w) for w in [*workers, cold]] == [listening(w, admin_port) for w in [*workers, cold]]
        client = sdk_client(server.base_url, **{"X-Lectr-Key": key})
        for _ in range(60):
            client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
        for _ in range(40):  # new connections, spread by the kernel over both workers' sockets
            with sdk_client(server.base_url, **{"X-Lectr-Key": key}) as fresh:
                fresh.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
        deadline = time.monotonic() + 10
        text = ""
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"http://127.0.0.1:{env['LECTR_ADMIN_PORT']}/metrics", timeout=5) as r:
                text = r.read().decode()
            if 'lectr_requests_total{provider="openai",status_class="2xx"} 100.0' in text:
                break
            time.sleep(0.2)
        assert 'lectr_requests_total{provider="openai",status_class="2xx"} 100.0' in text  # merged over workers
        # Everything recorded: one row per request, whichever worker served it.
        wait_for(lambda: _rows(database_url, "workers-co") == 100, timeout=15, message="100 rows")
        # Both workers serve: the worker holding each new connection's server side.
        served = {serving_worker(workers, port, key) for _ in range(24)}
        assert served == {w.pid for w in workers}
        # A worker killed is restarted, and the new one serves and records too.
        victim = workers[0]
        victim.kill()
        restarted = wait_for(lambda: [w for w in workers_of(server.proc.pid) if w.pid != workers[1].pid
                                      and w.pid != victim.pid and listening(w, port)], timeout=30,
                             message="a new worker in place of the killed one")
        assert "exited with" in server.log_text() and "restarting" in server.log_text()
        wait_for(lambda: serving_worker([*restarted, workers[1]], port, key) == restarted[0].pid, timeout=30,
                 interval=0, message="the restarted worker to serve a request")
        before = _rows(database_url, "workers-co")
        for _ in range(10):
            client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
        wait_for(lambda: _rows(database_url, "workers-co") >= before + 10, timeout=15)
    finally:
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(30) == 0
    assert all(not psutil.pid_exists(w.pid) or psutil.Process(w.pid).status() == psutil.STATUS_ZOMBIE
               for w in workers)
