"""``lectr serve --workers 2``: two processes share the proxy port; one admin port; clean stop."""

import signal
import time
import urllib.request

import psutil

from tests.conftest import create_org, lectr_env, sdk_client, start_lectr


def test_two_workers_share_the_port_record_everything_and_stop_cleanly(database_url, mock, tmp_path):
    env = lectr_env(database_url, mock, tmp_path, LECTR_WORKERS="2", LECTR_FLUSH_INTERVAL="0.2")
    key = create_org(env, "workers-co")
    server = start_lectr(env, tmp_path / "serve.log")
    try:
        def workers_of(pid: int) -> list[psutil.Process]:
            return [p for p in psutil.Process(pid).children() if "--worker-index" in p.cmdline()]

        deadline = time.monotonic() + 20
        while len(workers_of(server.proc.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        workers = workers_of(server.proc.pid)
        assert len(workers) == 2
        tokenizers = [p for p in psutil.Process(server.proc.pid).children() if "tokenizer_service" in " ".join(p.cmdline())]
        assert len(tokenizers) == 1  # one tokeniser process serves both workers
        def listening(worker, port: int) -> bool:
            return any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in worker.net_connections())

        port, admin_port = int(env["LECTR_PROXY_PORT"]), int(env["LECTR_ADMIN_PORT"])
        deadline = time.monotonic() + 20  # ready means one worker listens; wait for both
        while not all(listening(w, port) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert all(listening(w, port) for w in workers)  # each on the proxy port itself (SO_REUSEPORT)
        assert sum(listening(w, admin_port) for w in workers) == 1  # one admin listener

        def loaded_aiohttp(worker) -> bool:
            return any("aiohttp" in m.path for m in worker.memory_maps())

        # Only the admin's worker loads aiohttp (about 14 MB).
        assert [loaded_aiohttp(w) for w in workers] == [listening(w, admin_port) for w in workers]
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
    finally:
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(30) == 0
    assert all(not psutil.pid_exists(w.pid) or psutil.Process(w.pid).status() == psutil.STATUS_ZOMBIE
               for w in workers)
