"""Fixtures: a real PostgreSQL, a mock provider over real HTTP, and Lectr itself.

PostgreSQL is the embedded server (started once per run in a temporary directory) unless
``LECTR_TEST_DATABASE_URL`` names another; every test module gets a fresh database on it.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import openai
import pytest

from lectr.platform import db
from lectr.settings.config import ProxyLimits, UpstreamSettings
from lectr.devtools.mock_provider import MockProvider
from lectr.snapshot.directory import Directory, DirectoryHolder, Org
from lectr.proxy.ring import EventRing
from lectr.snapshot.keys import hash_key, new_org_key
from lectr.providers.base import AzureTarget
from lectr.proxy.busypoll import BusyPoller
from lectr.proxy.server import ProxyContext, ProxyServer
from lectr.proxy.pool import UpstreamPools

# Path prefixes under which the one mock plays each provider, so a test can tell where a
# request was routed from the path the mock saw.
PROVIDER_PREFIXES = {"openai": "/openai/v1", "anthropic": "/anthropic/v1", "groq": "/groq/openai/v1",
                     "gemini": "/gemini/v1beta/openai", "mistral": "/mistral/v1"}


_SDK_CLIENTS: list[openai.OpenAI] = []


def sdk_client(base_url: str, *, api_key: str = "sk-test", timeout: float = 20, **default_headers: str) -> openai.OpenAI:
    """The official openai client pointed at ``base_url``, closed after the test."""
    client = openai.OpenAI(api_key=api_key, base_url=base_url, default_headers=default_headers or None,
                           max_retries=0, timeout=timeout)
    _SDK_CLIENTS.append(client)
    return client


@pytest.fixture(autouse=True)
def _close_sdk_clients():
    yield
    while _SDK_CLIENTS:
        _SDK_CLIENTS.pop().close()


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05, message: str = ""):
    """Poll ``predicate`` until it returns something truthy; return that value.

    The one way tests wait for an event: on the condition itself, never a fixed sleep.
    Raises AssertionError naming ``message`` (or the predicate) after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message or predicate}")
        time.sleep(interval)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """In CI (``CI`` set) a missing prerequisite is a failure: no test may be skipped there."""
    outcome = yield
    report = outcome.get_result()
    if in_ci() and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, which counts as a failure: {reason}"


def _ephemeral_ports() -> tuple[int, int]:
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


_PICKED_BELOW = 10_000  # ports are picked from here up to the ephemeral range


def free_port() -> int:
    """A port nothing listens on, for a server a test is about to start.

    Picked below the kernel's ephemeral range: every outgoing connection (to Postgres, to the
    mock) takes its local port from that range, and one made between the pick and the server's
    bind could take a port picked there (seen: ``lectr serve`` failing on "port already in use").
    """
    low, _ = _ephemeral_ports()
    if low - _PICKED_BELOW < 1000:  # no room below it: let the kernel pick
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]
    rng = random.Random()
    while True:
        port = rng.randrange(_PICKED_BELOW, low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue  # taken: another pick
            return port


@pytest.fixture(scope="session")
def pg_server_url(tmp_path_factory) -> str:
    """A URL to a PostgreSQL server's maintenance database."""
    url = os.environ.get("LECTR_TEST_DATABASE_URL")
    if url:
        return url
    return db.start_embedded(tmp_path_factory.mktemp("pg")).replace(f"/{db.DATABASE_NAME}?", "/postgres?")


def _with_database(url: str, name: str) -> str:
    if "/postgres?" in url:
        return url.replace("/postgres?", f"/{name}?", 1)
    base, _, query = url.partition("?")
    base = base.rsplit("/", 1)[0]
    return f"{base}/{name}" + (f"?{query}" if query else "")


def _admin(url: str, sql: str) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()
    asyncio.run(run())


@pytest.fixture(scope="module")
def database_url(pg_server_url) -> str:
    """A fresh, empty database for one test module, dropped afterwards."""
    name = f"lectr_test_{uuid.uuid4().hex[:12]}"
    _admin(pg_server_url, f'CREATE DATABASE "{name}"')
    yield _with_database(pg_server_url, name)
    try:
        _admin(pg_server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    except asyncpg.exceptions.ConnectionDoesNotExistError:
        # Seen once in a full run after a test killed a worker mid-connection: the DROP's own
        # connection was cut. IF EXISTS makes a second attempt safe either way.
        _admin(pg_server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def mock() -> MockProvider:
    """The mock provider, served over HTTP from a thread of its own."""
    provider = MockProvider()
    provider.start_in_thread()
    yield provider
    provider.stop_thread()


@dataclass
class LectrProcess:
    """A ``lectr serve`` subprocess and the environment its CLI commands share."""

    env: dict[str, str]
    port: int
    proc: subprocess.Popen
    log_path: Path
    extra: dict = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return run_cli(self.env, *args, check=check)

    def create_org(self, name: str) -> str:
        return create_org(self.env, name)

    def log_text(self) -> str:
        return self.log_path.read_text()


def run_cli(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``lectr ARGS`` as a user would, in its own process."""
    # The timeout only stops a hung command: a month's replay takes about a minute on a loaded
    # two-core machine, and a guard must not turn load into a failure.
    result = subprocess.run([sys.executable, "-m", "lectr", *args], env=env,
                            capture_output=True, text=True, timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"lectr {' '.join(args)} failed: {result.stderr}")
    return result


def create_org(env: dict[str, str], name: str) -> str:
    """Create an org with the CLI; return its key (the last line of output)."""
    return run_cli(env, "org", "create", name).stdout.strip().splitlines()[-1]


def lectr_env(database_url: str, mock: MockProvider, tmp_path: Path, **overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LECTR_")}
    env.update({
        "LECTR_DATABASE_URL": database_url,
        "LECTR_DATA_DIR": str(tmp_path / "data"),
        "LECTR_PROXY_PORT": str(free_port()),
        "LECTR_ADMIN_PORT": str(free_port()),
        "LECTR_LOG_LEVEL": "DEBUG",
        "LECTR_WORKERS": "1",
        **{f"LECTR_UPSTREAM_{p.upper()}": mock.url(prefix) for p, prefix in PROVIDER_PREFIXES.items()},
    })
    env.update(overrides)
    return env


def start_lectr(env: dict[str, str], log_path: Path) -> LectrProcess:
    with open(log_path, "w") as log_file:  # the child keeps its own descriptor
        proc = subprocess.Popen([sys.executable, "-m", "lectr", "serve"], env=env,
                                stdout=log_file, stderr=subprocess.STDOUT)
    port = int(env["LECTR_PROXY_PORT"])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"lectr serve exited early:\n{log_path.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
                if s.recv(100).startswith(b"HTTP/1.1 200"):
                    return LectrProcess(env, port, proc, log_path)
        except OSError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"lectr serve did not become ready:\n{log_path.read_text()}")


def stop_lectr(server: LectrProcess) -> int:
    if server.proc.poll() is None:
        server.proc.terminate()
        try:
            server.proc.wait(30)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait()
    return server.proc.returncode


class LectrFactory:
    """Starts ``lectr serve`` processes for one test or module and stops them all afterwards.

    ``start(orgs=("acme",), **LECTR_VARS)`` creates the orgs with the CLI first (as an
    operator would), serves, and returns the process with ``extra["keys"]`` (name → key) and
    ``extra["api"]`` (the admin port's base URL).
    """

    def __init__(self, database_url: str, mock: MockProvider, tmp: Path) -> None:
        self.database_url, self.mock, self.tmp = database_url, mock, tmp
        self.servers: list[LectrProcess] = []

    def env(self, **overrides: str) -> dict[str, str]:
        return lectr_env(self.database_url, self.mock, self.tmp, **overrides)

    def start(self, orgs: tuple[str, ...] = (), env: dict[str, str] | None = None, **overrides: str) -> LectrProcess:
        env = env or self.env(**overrides)
        keys = {name: create_org(env, name) for name in orgs}
        server = start_lectr(env, self.tmp / f"serve-{len(self.servers)}.log")
        server.extra.update(keys=keys, api=f"http://127.0.0.1:{env['LECTR_ADMIN_PORT']}")
        if orgs:
            server.extra["key"] = keys[orgs[0]]
        self.servers.append(server)
        return server

    def stop_all(self) -> None:
        for server in self.servers:
            stop_lectr(server)


@pytest.fixture()
def lectr_factory(database_url, mock, tmp_path) -> LectrFactory:
    """Start ``lectr serve`` processes in a test; all are stopped when it ends."""
    factory = LectrFactory(database_url, mock, tmp_path)
    yield factory
    factory.stop_all()


@pytest.fixture(scope="module")
def module_lectr_factory(database_url, mock, tmp_path_factory) -> LectrFactory:
    """Like ``lectr_factory``, for servers shared by a module."""
    factory = LectrFactory(database_url, mock, tmp_path_factory.mktemp("lectr"))
    yield factory
    factory.stop_all()


@pytest.fixture(scope="module")
def lectr_server(module_lectr_factory) -> LectrProcess:
    """``lectr serve`` on a fresh database, its providers all played by the mock."""
    return module_lectr_factory.start(("acme",), LECTR_UPSTREAM_READ_TIMEOUT="2")


# -- an in-process proxy, for protocol and event tests -------------------------------------

class ProxyHarness:
    """The proxy listener on a private uvloop in a thread, with a hand-made directory.

    No database: the directory is set directly, the way the cache loader would set it.
    """

    def __init__(self, mock: MockProvider, limits: ProxyLimits, ring_size: int = 1000) -> None:
        self.key = new_org_key()
        self.org = Org(7, "harness", AzureTarget(mock.url("/azure"), "2024-10-21"))
        self.directory = DirectoryHolder()
        self.directory.replace(Directory({hash_key(self.key): self.org}))
        self.ring: EventRing = EventRing(ring_size)
        self.mock = mock
        self.limits = limits
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: ProxyServer | None = None
        self._pools: UpstreamPools | None = None

    def start(self) -> None:
        import uvloop

        ready = threading.Event()

        def run() -> None:
            loop = uvloop.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self._start(loop))
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="proxy-harness", daemon=True)
        self._thread.start()
        assert ready.wait(10)

    async def _start(self, loop) -> None:
        upstreams = UpstreamSettings(
            base_urls={p: self.mock.url(prefix) for p, prefix in PROVIDER_PREFIXES.items()},
            read_timeout=2.0, connect_timeout=2.0)
        self._pools = UpstreamPools(upstreams, BusyPoller(loop, self.limits.busy_poll_us))
        ctx = ProxyContext(loop=loop, limits=self.limits, base_urls=upstreams.base_urls,
                           directory=self.directory, upstream=self._pools, ring=self.ring)
        self._server = ProxyServer(ctx, "127.0.0.1", 0)
        await self._server.start()
        self.port = self._server.port

    def call(self, coro_fn, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coro_fn(), self._loop).result(timeout)

    def stop(self) -> None:
        async def stop() -> None:
            await self._server.stop(5)
            await self._pools.close()
        self.call(stop)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def events(self) -> list:
        return self.call(self._drain)

    async def _drain(self):
        return self.ring.drain()


@pytest.fixture(scope="module")
def harness(mock) -> ProxyHarness:
    h = ProxyHarness(mock, ProxyLimits(max_body_bytes=1_000_000, max_header_bytes=8192,
                                       header_timeout=1.0, idle_timeout=1.5))
    h.start()
    yield h
    h.stop()
