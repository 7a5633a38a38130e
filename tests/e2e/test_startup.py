"""Start-up of ``lectr serve``: one Lectr per port, and every failure told in one line."""

import socket
import subprocess
import sys
import time

import pytest

from tests.conftest import create_org, free_port, lectr_env, sdk_client, start_lectr, stop_lectr


def _serve(env: dict[str, str], *args: str, level: str = "INFO") -> subprocess.CompletedProcess:
    env = {**env, "LECTR_LOG_LEVEL": level}  # the default: what a user sees
    return subprocess.run([sys.executable, "-m", "lectr", "serve", *args], env=env, capture_output=True,
                          text=True, timeout=60)


def _one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lectr: error:"), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    return lines[0]


@pytest.mark.parametrize("workers", ["2", "1"])
def test_a_second_lectr_on_ports_in_use_exits_with_one_line_and_takes_no_request(database_url, mock, tmp_path,
                                                                                 workers):
    env = lectr_env(database_url, mock, tmp_path, LECTR_WORKERS="2", LECTR_FLUSH_INTERVAL="0.2")
    key = create_org(env, f"first-{workers}")
    first = start_lectr(env, tmp_path / "first.log")
    try:
        second_env = {**env, "LECTR_WORKERS": workers, "LECTR_DATA_DIR": str(tmp_path / "second")}
        line = _one_error_line(_serve(second_env))
        assert env["LECTR_PROXY_PORT"] in line and "in use" in line
        # The admin port alone taken: named too.
        line = _one_error_line(_serve({**second_env, "LECTR_PROXY_PORT": str(free_port())}))
        assert env["LECTR_ADMIN_PORT"] in line and "in use" in line
        client = sdk_client(first.base_url, **{"X-Lectr-Key": key})
        for _ in range(10):  # every request on a fresh connection still reaches the first Lectr
            with sdk_client(first.base_url, **{"X-Lectr-Key": key}) as fresh:
                fresh.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    finally:
        assert stop_lectr(first) == 0


def test_a_port_held_by_someone_else_is_named(database_url, mock, tmp_path):
    with socket.socket() as other:  # a plain listener, no SO_REUSEPORT
        other.bind(("127.0.0.1", 0))
        other.listen()
        env = lectr_env(database_url, mock, tmp_path, LECTR_PROXY_PORT=str(other.getsockname()[1]))
        line = _one_error_line(_serve(env))
        assert str(other.getsockname()[1]) in line


# The admin port is the cold process's; the proxy port, a worker's.
@pytest.mark.parametrize("role,port_variable", [(("--cold",), "LECTR_ADMIN_PORT"),
                                                (("--worker-index", "0"), "LECTR_PROXY_PORT")])
def test_a_worker_that_cannot_listen_exits_with_one_line_and_is_not_restarted(database_url, mock, tmp_path, role,
                                                                               port_variable):
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        env = lectr_env(database_url, mock, tmp_path, **{port_variable: str(other.getsockname()[1])},
                        LECTR_TOKENIZER_SOCKET=str(tmp_path / "tokenizer.sock"))
        # As the supervisor starts it, past its checks (its INFO lines, e.g. migrations, aside).
        result = _serve(env, *role, level="WARNING")
        line = _one_error_line(result)
        assert result.returncode == 3 and str(other.getsockname()[1]) in line


@pytest.mark.parametrize("override,words", [
    ({"LECTR_PROXY_PORT": "eighty"}, "LECTR_PROXY_PORT"),
    ({"LECTR_SHUTDOWN_TIMEOUT": "-1"}, "LECTR_SHUTDOWN_TIMEOUT"),
    ({"LECTR_DATABASE_URL": "postgresql://127.0.0.1:1/nothing"}, "PostgreSQL"),
    ({"LECTR_DATABASE_URL": "mysql://127.0.0.1/x"}, "could not start"),
    ({"LECTR_DATA_DIR": "/proc/no/such"}, "LECTR_DATA_DIR"),
    ({"LECTR_HOST": "no-such-host.invalid"}, "LECTR_HOST"),
])
@pytest.mark.parametrize("workers", ["1", "2"])
def test_every_start_up_failure_is_one_line_and_non_zero(database_url, mock, tmp_path, override, words, workers):
    env = lectr_env(database_url, mock, tmp_path, LECTR_WORKERS=workers, **override)
    started = time.monotonic()
    line = _one_error_line(_serve(env))
    assert words in line
    assert time.monotonic() - started < 30


def test_a_port_held_with_so_reuseport_by_another_user_is_named(database_url, mock, tmp_path):
    import os

    if os.geteuid() != 0:
        pytest.skip("needs root to listen as another user")
    port = free_port()
    holder = subprocess.Popen([sys.executable, "-c", f"""
import os, socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
os.setgid(65534); os.setuid(65534)
s.bind(("127.0.0.1", {port})); s.listen()
print("ready", flush=True)
time.sleep(120)
"""], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        for workers in ("1", "2"):
            env = lectr_env(database_url, mock, tmp_path, LECTR_PROXY_PORT=str(port), LECTR_WORKERS=workers)
            line = _one_error_line(_serve(env))
            assert str(port) in line and "in use" in line
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()


def test_a_restart_on_the_same_ports_right_after_a_stop_starts(database_url, mock, tmp_path):
    env = lectr_env(database_url, mock, tmp_path, LECTR_WORKERS="2")
    key = create_org(env, "restart-co")
    for run in range(2):  # the second start meets the first one's connections in TIME_WAIT
        server = start_lectr(env, tmp_path / f"serve-{run}.log")
        try:
            for _ in range(5):
                with sdk_client(server.base_url, **{"X-Lectr-Key": key}) as client:
                    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
        finally:
            assert stop_lectr(server) == 0
