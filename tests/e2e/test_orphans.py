"""A supervisor that dies without stopping its children (SIGKILL, an OOM kill) leaves no worker
serving the proxy port and no cold process running jobs: each child stops with it."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.conftest import lectr_env, start_lectr, wait_for


def _children(pid: int) -> list[int]:
    kids = []
    for path in Path(f"/proc/{pid}/task").glob("*/children"):
        kids += [int(k) for k in path.read_text().split()]
    return kids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="reads the process tree from /proc (Linux)")
@pytest.mark.parametrize("workers", ["1", "2"])
def test_children_stop_when_the_supervisor_is_killed(database_url, mock, tmp_path, workers):
    server = start_lectr(lectr_env(database_url, mock, tmp_path, LECTR_WORKERS=workers), tmp_path / "serve.log")
    wait_for(lambda: len(_children(server.proc.pid)) == (1 if workers == "1" else 3), timeout=30,
             message="the cold process and the workers")
    children = _children(server.proc.pid)
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait(10)
    wait_for(lambda: not any(_alive(pid) for pid in children), timeout=60,
             message=f"children {children} to stop after the supervisor was killed")
