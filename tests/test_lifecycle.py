"""Start-up and shutdown of ``lectr serve``: a planned stop finishes what is in flight."""

import signal
import threading
import time

import openai

from tests.conftest import create_org, lectr_env, start_lectr


def test_sigterm_lets_in_flight_requests_finish_and_exits_0(database_url, mock, tmp_path):
    env = lectr_env(database_url, mock, tmp_path)
    key = create_org(env, "shutdown-co")
    server = start_lectr(env, tmp_path / "serve.log")
    client = openai.OpenAI(api_key="sk-x", base_url=server.base_url, default_headers={"X-Lectr-Key": key},
                           max_retries=0)
    result = {}

    def slow_request() -> None:
        reply = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}],
                                               extra_headers={"x-mock-delay-ms": "800"})
        result["model"] = reply.model

    worker = threading.Thread(target=slow_request)
    worker.start()
    time.sleep(0.3)
    server.proc.send_signal(signal.SIGTERM)
    worker.join(10)
    assert result == {"model": "gpt-4o"}
    assert server.proc.wait(15) == 0
    assert "Lectr stopped" in server.log_text()
