"""Start-up and shutdown of ``lectr serve``: a planned stop finishes what is in flight."""

import signal
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
