"""``lectr serve``'s processes: the proxy worker(s) and one cold process beside them.

One worker is two processes (the supervisor is the worker); the cold process holds the admin
listener, the scheduled jobs and the tokeniser, and is restarted if it dies; migrations and
seeding run once per ``lectr serve``, however many workers.
"""

import urllib.request

import psutil

from tests.conftest import create_org, lectr_env, sdk_client, start_lectr, stop_lectr, wait_for


def _children(pid: int, flag: str) -> list[psutil.Process]:
    found = []
    for p in psutil.Process(pid).children():
        try:
            if flag in p.cmdline() and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except psutil.Error:  # just killed, not yet reaped
            pass
    return found


def _listening(proc: psutil.Process, port: int) -> bool:
    return any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in proc.net_connections())


def _metrics(admin_port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=5) as r:
        return r.read().decode()


def test_one_worker_is_two_processes_and_a_dead_cold_process_is_restarted(database_url, mock, tmp_path):
    env = lectr_env(database_url, mock, tmp_path, LECTR_WORKERS="1", LECTR_FLUSH_INTERVAL="0.2")
    key = create_org(env, "layout-co")
    server = start_lectr(env, tmp_path / "serve.log")
    try:
        port, admin_port = int(env["LECTR_PROXY_PORT"]), int(env["LECTR_ADMIN_PORT"])
        top = psutil.Process(server.proc.pid)
        [cold] = wait_for(lambda: _children(top.pid, "--cold"), timeout=20, message="the cold process")
        assert [p for p in top.children() if p.pid != cold.pid and "postgres" not in p.name()] == []
        assert _listening(top, port) and not _listening(top, admin_port)  # the supervisor proxies
        wait_for(lambda: _listening(cold, admin_port), timeout=20, message="the admin listener")
        assert not _listening(cold, port)
        cold_nice = min(19, top.nice() + 10)  # LECTR_COLD_NICE: it gives way to the worker
        assert cold.nice() == cold_nice
        assert not any("aiohttp" in m.path for m in top.memory_maps())  # the proxy side stays small

        client = sdk_client(server.base_url, **{"X-Lectr-Key": key})
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
        wait_for(lambda: 'lectr_requests_total{provider="openai",status_class="2xx"} 1.0' in _metrics(admin_port),
                 timeout=15, message="the worker's request in the cold process's /metrics")

        cold.kill()
        [new] = wait_for(lambda: [p for p in _children(top.pid, "--cold") if p.pid != cold.pid and
                                  _listening(p, admin_port)], timeout=30, message="a new cold process")
        assert "cold process" in server.log_text() and "restarting" in server.log_text()
        assert new.nice() == cold_nice
        assert 'status_class="2xx"} 1.0' in _metrics(admin_port)
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    finally:
        assert stop_lectr(server) == 0
    assert not psutil.pid_exists(new.pid) or psutil.Process(new.pid).status() == psutil.STATUS_ZOMBIE


def test_migrations_run_once_per_serve_however_many_workers(database_url, mock, tmp_path):
    env = lectr_env(database_url, mock, tmp_path, LECTR_WORKERS="2", LECTR_LOG_LEVEL="DEBUG")
    server = start_lectr(env, tmp_path / "serve.log")
    try:
        wait_for(lambda: len(_children(server.proc.pid, "--worker-index")) == 2, timeout=20, message="two workers")
        wait_for(lambda: "Lectr cold process" in server.log_text(), timeout=20, message="the cold process")
        wait_for(lambda: server.log_text().count("proxy on http") == 2, timeout=20, message="both workers ready")
        assert server.log_text().count("migrations checked") == 1
    finally:
        assert stop_lectr(server) == 0
