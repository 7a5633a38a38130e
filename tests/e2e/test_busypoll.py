"""The busy poller's self-tuning, on a fake clock and a fake loop: no timing, no flakiness."""

from __future__ import annotations

import os
import socket
import threading
import time

import psutil

from lectr.app import Lectr
from lectr.settings.config import Settings
from lectr.proxy.busypoll import GROW_START_NS, BusyPoller
from tests.conftest import create_org, lectr_env, start_lectr, stop_lectr

US = 1_000


class FakeLoop:
    """Holds ``call_soon`` callbacks; ``run_once`` is one loop iteration."""

    def __init__(self) -> None:
        self.ready: list = []

    def call_soon(self, callback) -> None:
        self.ready.append(callback)

    def run_once(self) -> None:
        ready, self.ready = self.ready, []
        for callback in ready:
            callback()


class Clock:
    def __init__(self) -> None:
        self.now = 10**12

    def __call__(self) -> int:
        return self.now


def make(max_us: int = 200) -> tuple[BusyPoller, FakeLoop, Clock]:
    loop, clock = FakeLoop(), Clock()
    return BusyPoller(loop, max_us, clock), loop, clock


def idle_for(poller: BusyPoller, loop: FakeLoop, clock: Clock, ns: int, step: int = 1 * US) -> None:
    """Let ``ns`` pass with no event, the loop spinning (or sleeping) as the poller decides."""
    end = clock.now + ns
    while clock.now < end:
        clock.now += step
        loop.run_once()


def test_events_closer_than_the_limit_make_the_loop_spin_through_the_gaps():
    poller, loop, clock = make(200)
    for _ in range(10):  # a request every 50 µs
        poller.kick()
        idle_for(poller, loop, clock, 50 * US)
    assert poller.spinning and poller.window_ns >= 50 * US
    poller.kick()
    idle_for(poller, loop, clock, 40 * US)
    assert poller.spinning and loop.ready, "an event 40 µs after the last one finds the loop still polling"


def test_sparse_traffic_stops_spinning():
    poller, loop, clock = make(200)
    for _ in range(10):
        poller.kick()
        idle_for(poller, loop, clock, 50 * US)
    for _ in range(12):  # then a request every 5 ms: spinning would be wasted
        poller.kick()
        idle_for(poller, loop, clock, 5_000 * US, step=100 * US)
    assert poller.window_ns < GROW_START_NS
    poller.kick()
    assert not poller.spinning and not loop.ready


def test_a_spin_ends_after_a_quiet_window():
    poller, loop, clock = make(200)
    for _ in range(6):
        poller.kick()
        idle_for(poller, loop, clock, 20 * US)
    window = poller.window_ns
    idle_for(poller, loop, clock, window + 5 * US)
    assert not poller.spinning and not loop.ready, "the loop sleeps once a whole window passed with nothing"


def test_the_window_never_exceeds_the_limit():
    poller, loop, clock = make(30)
    for _ in range(20):
        poller.kick()
        idle_for(poller, loop, clock, 25 * US)
    assert poller.window_ns <= 30 * US


def test_zero_turns_it_off():
    poller, loop, clock = make(0)
    for _ in range(20):
        poller.kick()
        idle_for(poller, loop, clock, 10 * US)
    assert not poller.spinning and not loop.ready and poller.window_ns == 0


def test_idle_work_runs_only_in_spins_with_nothing_to_poll():
    poller, loop, clock = make(200)
    steps: list[int] = []
    poller.idle = lambda: steps.append(clock.now)
    for _ in range(6):  # a request every 20 µs: the loop spins through the gaps
        poller.kick()
        idle_for(poller, loop, clock, 20 * US)
    assert steps, "the gaps between requests were used"
    poller.kick()
    done = len(steps)
    loop.run_once()  # the iteration that handles the event does no deferred work
    assert len(steps) == done
    idle_for(poller, loop, clock, poller.window_ns + 5 * US)
    assert not poller.spinning
    done = len(steps)
    idle_for(poller, loop, clock, 100 * US)
    assert len(steps) == done, "a sleeping loop does no deferred work"


def test_an_idle_gateway_stops_spinning(database_url, mock, tmp_path):
    """After a burst dense enough to make the loop spin, an idle ``lectr serve`` uses next to no CPU."""
    env = lectr_env(database_url, mock, tmp_path)
    key = create_org(env, "spin-co")
    server = start_lectr(env, tmp_path / "serve.log")
    body = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}'
    request = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Authorization: Bearer sk-test\r\nX-Lectr-Key: %s\r\nContent-Length: %d\r\n\r\n%s"
               % (key.encode(), len(body), body))

    def burst() -> None:
        with socket.create_connection(("127.0.0.1", server.port)) as sock, sock.makefile("rb") as reader:
            for _ in range(200):
                sock.sendall(request)
                assert reader.readline().startswith(b"HTTP/1.1 200")
                length = 0
                while (line := reader.readline()) != b"\r\n":
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                reader.read(length)

    try:
        threads = [threading.Thread(target=burst) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        process = psutil.Process(server.proc.pid)
        time.sleep(0.5)
        before = sum(process.cpu_times()[:2])
        time.sleep(2.0)
        used = sum(process.cpu_times()[:2]) - before
    finally:
        stop_lectr(server)
    assert used < 0.2, f"an idle gateway used {used:.2f} s of CPU in 2 s"


def test_workers_beyond_the_cores_do_not_spin(tmp_path):
    cores = len(os.sched_getaffinity(0))
    env = {"LECTR_DATA_DIR": str(tmp_path), "LECTR_BUSY_POLL_US": "150"}
    crowded = Settings.from_env({**env, "LECTR_WORKERS": str(cores + 1)})
    assert Lectr(crowded, worker_index=1)._busy_poll_us() == 0
    assert Lectr(crowded)._busy_poll_us() == 150  # one process: its own core
    fitting = Settings.from_env({**env, "LECTR_WORKERS": str(cores)})
    assert Lectr(fitting, worker_index=0)._busy_poll_us() == 150
