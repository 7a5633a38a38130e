"""What the connections of one proxy process share: caches, pools, ring, tasks, in-flight cycles."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Coroutine

from lectr.settings.config import ProxyLimits
from lectr.snapshot.directory import DirectoryHolder
from lectr.proxy.ring import EventRing
from lectr.providers.base import parse_origin
from lectr.providers.registry import PROVIDER_NAMES, ModelRegistry
from lectr.proxy.busypoll import BusyPoller
from lectr.proxy.decide import Routes
from lectr.proxy.pool import UpstreamPools

if TYPE_CHECKING:
    from lectr.proxy.connection import ClientConnection

log = logging.getLogger("lectr.proxy.server")

_MAX_LOGGED_PROVIDERS = 64


class ProxyContext:
    """Everything the connections of one process share: caches, pools, ring, tasks."""

    def __init__(self, *, loop: asyncio.AbstractEventLoop, limits: ProxyLimits,
                 base_urls: dict[str, str], directory: DirectoryHolder, upstream: UpstreamPools,
                 ring: EventRing) -> None:
        self.loop = loop
        self.poller: BusyPoller = upstream.poller
        self.limits = limits
        self.origins = {provider: parse_origin(url) for provider, url in base_urls.items()}
        self.directory = directory
        self.upstream = upstream
        self.ring = ring
        self.registry = ModelRegistry()
        self.routes = Routes(self.origins, self.registry.detect)  # what decide() needs besides the snapshot
        self.connections: set[ClientConnection] = set()
        self.tasks: set[asyncio.Task] = set()
        self.inflight: set = set()  # request cycles not yet finished
        self._all_done: asyncio.Event | None = None  # made when something waits for it
        self.draining = False
        self._invalid_providers_logged: set[str] = set()

    def spawn(self, coro: Coroutine) -> asyncio.Task:
        """Start a task and hold it until it is done, so none is lost or left behind."""
        task = self.loop.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def cycle_started(self, cycle) -> None:
        self.inflight.add(cycle)

    def cycle_finished(self, cycle) -> None:
        inflight = self.inflight
        inflight.discard(cycle)
        if not inflight and self._all_done is not None:
            self._all_done.set()

    def connection_closed(self, conn: ClientConnection) -> None:
        self.connections.discard(conn)
        if self._all_done is not None:
            self._all_done.set()  # it may have been receiving a request that wait_idle waits for

    def busy(self) -> bool:
        """A request is in flight, or on its way in on a connection opened before the drain."""
        return bool(self.inflight) or any(conn.in_message for conn in self.connections)

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until ``busy()`` is False; False if it is still True after ``timeout`` s."""
        if self._all_done is None:
            self._all_done = asyncio.Event()
        deadline = self.loop.time() + timeout
        while self.busy():
            self._all_done.clear()
            try:
                await asyncio.wait_for(self._all_done.wait(), deadline - self.loop.time())
            except TimeoutError:
                return not self.busy()
        return True

    def note_invalid_provider(self, name: str) -> None:
        """Log an unknown ``X-Lectr-Provider`` value, once per value, without flooding the log."""
        if name in self._invalid_providers_logged or len(self._invalid_providers_logged) >= _MAX_LOGGED_PROVIDERS:
            return
        self._invalid_providers_logged.add(name)
        log.warning("X-Lectr-Provider %r is not one of %s; using openai", name[:40], ", ".join(PROVIDER_NAMES))
