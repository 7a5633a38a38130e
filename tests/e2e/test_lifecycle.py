"""Start-up and shutdown of ``lectr serve``: a planned stop finishes what is in flight."""

import signal
import time
import threading


from tests.conftest import create_org, lectr_env, sdk_client, start_lectr, wait_for


def test_sigterm_lets_in_flight_requests_finish_and_exits_0(database_url, mock, tmp_path):
    env = lectr_env(database_url, mock, tmp_path)
    key = create_org(env, "shutdown-co")
    server = start_lectr(env, tmp_path / "serve.log")
    client = sdk_client(server.base_url, **{"X-Lectr-Key": key})
    result = {}

    def slow_request() -> None:
        reply = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}],
                                               extra_headers={"x-mock-delay-ms": "800"})
        result["model"] = reply.model

    received = mock.received
    worker = threading.Thread(target=slow_request)
    worker.start()
    wait_for(lambda: mock.received > received, timeout=5, interval=0.01, message="the request in flight")
    server.proc.send_signal(signal.SIGTERM)
    worker.join(10)
    assert result == {"model": "gpt-4o"}
    assert server.proc.wait(15) == 0
    assert "Lectr stopped" in server.log_text()


def test_a_draining_lectr_is_told_by_its_closed_port_while_in_flight_requests_finish(database_url, mock, tmp_path):
    """The README's readiness contract: on SIGTERM the proxy port closes at once (a load balancer's
    probe and any new connection are refused, so it retries elsewhere: nothing was sent), while
    requests already in flight finish; the admin port keeps answering until they have."""
    import socket
    import urllib.request

    env = lectr_env(database_url, mock, tmp_path)
    key = create_org(env, "drain-co")
    server = start_lectr(env, tmp_path / "serve.log")
    client = sdk_client(server.base_url, **{"X-Lectr-Key": key})
    result = {}

    def slow_request() -> None:
        reply = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}],
                                               extra_headers={"x-mock-delay-ms": "3000"})
        result["model"] = reply.model

    seen = len(mock.requests)
    worker = threading.Thread(target=slow_request)
    worker.start()
    deadline = time.monotonic() + 10
    while len(mock.requests) == seen and time.monotonic() < deadline:  # the mock holds it for 3 s
        time.sleep(0.02)
    server.proc.send_signal(signal.SIGTERM)
    refused = False
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline and not refused:
        try:
            with socket.create_connection(("127.0.0.1", server.port), timeout=1) as probe:
                probe.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
                probe.recv(100)
        except ConnectionRefusedError:
            refused = True
        except OSError:
            pass
        time.sleep(0.05)
    assert refused and worker.is_alive()  # the port is closed while the request is still in flight
    with urllib.request.urlopen(f"http://127.0.0.1:{env['LECTR_ADMIN_PORT']}/healthz", timeout=5) as reply:
        assert reply.status == 200  # the process is alive and draining
    worker.join(15)
    assert result == {"model": "gpt-4o"}
    assert server.proc.wait(15) == 0
