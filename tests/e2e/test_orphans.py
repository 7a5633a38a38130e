"""A supervisor that dies without stopping its children (SIGKILL, an OOM kill) leaves no worker
serving the proxy port and no cold process running jobs: each child stops with it."""

from __future__ import annotations

import signal

import psutil
import pytest

from tests.conftest import lectr_env, start_lectr, wait_for


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize("workers", ["1", "2"])
def test_children_stop_when_the_supervisor_is_killed(database_url, mock, tmp_path, workers):
    server = start_lectr(lectr_env(database_url, mock, tmp_path, LECTR_WORKERS=workers), tmp_path / "serve.log")
    supervisor = psutil.Process(server.proc.pid)
    wait_for(lambda: len(supervisor.children()) == (1 if workers == "1" else 3), timeout=30,
             message="the cold process and the workers")
    children = supervisor.children()
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait(10)
    wait_for(lambda: not any(_alive(proc) for proc in children), timeout=60,
             message=f"children {[p.pid for p in children]} to stop after the supervisor was killed")
