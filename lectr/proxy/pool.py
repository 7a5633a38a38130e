"""Keep-alive pools of upstream connections: one ``OriginPool`` per provider origin.

Subordinate to ``upstream.py`` (read that first: one connection and its exchange). The request
cycle takes the warmest idle connection without waiting (``take_idle``); only when none is
idle does it wait in ``acquire`` for a new one (up to ``pool_size`` per origin, within the
connect timeout, else 504; a refused connection is 502). Connections come back through
``release`` after a complete exchange and are retired when closed, stale or abandoned.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque

from lectr.settings.config import UpstreamSettings
from lectr.providers.base import Origin
from lectr.proxy.busypoll import BusyPoller
from lectr.proxy.upstream import UpstreamConnection, UpstreamError


# Seconds a pooled connection may sit idle before it is retired: providers close idle
# connections after a minute or so, and reusing one they are closing fails the request.
IDLE_SECONDS = 30.0


class OriginPool:
    """Keep-alive connections to one origin: reuse the warmest idle one, open new ones up to a limit."""

    def __init__(self, origin: Origin, settings: UpstreamSettings, loop: asyncio.AbstractEventLoop,
                 tls: ssl.SSLContext | None, poller: BusyPoller) -> None:
        self.origin = origin
        self.loop = loop
        self.poller = poller
        self.limit = settings.pool_size
        self.connect_timeout = settings.connect_timeout
        self.read_timeout = settings.read_timeout
        self.tls = tls
        self.idle: deque[UpstreamConnection] = deque()
        self.open = 0
        self._waiters: deque[asyncio.Future] = deque()

    def take_idle(self) -> UpstreamConnection | None:
        """The most recently used idle connection still fit for use, without waiting; or None."""
        now = self.loop.time()
        while self.idle:
            conn = self.idle.pop()
            if conn.alive and now - conn.idle_since < IDLE_SECONDS:
                conn.reused = True
                return conn
            self._retire(conn)
        return None

    async def acquire(self) -> UpstreamConnection:
        """A connection ready for one exchange; raises UpstreamError when none can be had."""
        conn = self.take_idle()
        if conn is not None:
            return conn
        while self.open >= self.limit:
            waiter = self.loop.create_future()
            self._waiters.append(waiter)
            try:
                conn = await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled() and waiter.result() is not None:
                    self.release(waiter.result())  # handed a connection just as we gave up
                elif waiter.done() and not waiter.cancelled():
                    self._wake()  # handed a free slot: pass it on
                raise
            if conn is not None:
                conn.reused = True
                return conn
        self.open += 1
        try:
            return await self._connect()
        except BaseException:
            self.open -= 1
            self._wake()
            raise

    async def _connect(self) -> UpstreamConnection:
        origin = self.origin
        try:
            _, conn = await asyncio.wait_for(self.loop.create_connection(
                lambda: UpstreamConnection(self), origin.host, origin.port, ssl=self.tls,
                server_hostname=origin.host if self.tls else None), self.connect_timeout)
        except TimeoutError:
            raise UpstreamError(504, f"timed out connecting to {origin.host}:{origin.port}") from None
        except OSError as exc:
            raise UpstreamError(502, f"cannot connect to {origin.host}:{origin.port}: "
                                     f"{exc.strerror or type(exc).__name__}") from None
        conn.reused = False
        return conn

    def release(self, conn: UpstreamConnection) -> None:
        """Take a connection back after a complete exchange (or retire it if it cannot be reused)."""
        if not conn.alive:
            self._retire(conn)
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        conn.idle_since = self.loop.time()
        self.idle.append(conn)

    def forget(self, conn: UpstreamConnection) -> None:
        """An idle connection was closed by the other side."""
        try:
            self.idle.remove(conn)
        except ValueError:
            return
        self._retire(conn)

    def _retire(self, conn: UpstreamConnection) -> None:
        if conn.retired:
            return
        conn.retired = True
        conn.alive = False
        if conn.transport is not None and not conn.transport.is_closing():
            conn.transport.close()
        self.open -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # a slot is free: open a new connection
                return

    def detach(self, conn: UpstreamConnection) -> None:
        """A connection switched to another protocol: no longer the pool's to count or reuse."""
        if conn.retired:
            return
        conn.retired = True
        conn.alive = False
        self.open -= 1
        self._wake()

    def discard(self, conn: UpstreamConnection) -> None:
        """Give up a connection whose exchange was abandoned mid-way."""
        conn.abandon()
        self._retire(conn)

    def close(self) -> None:
        while self.idle:
            self._retire(self.idle.pop())


class UpstreamPools:
    """One ``OriginPool`` per upstream origin, created on first use."""

    def __init__(self, settings: UpstreamSettings, poller: BusyPoller) -> None:
        self.settings = settings
        self.poller = poller
        self._pools: dict[str, OriginPool] = {}
        self._tls: ssl.SSLContext | None = None

    def pool(self, origin: Origin) -> OriginPool:
        pool = self._pools.get(origin.key)
        if pool is None:
            if origin.tls and self._tls is None:
                self._tls = ssl.create_default_context()
            pool = self._pools[origin.key] = OriginPool(
                origin, self.settings, asyncio.get_running_loop(), self._tls if origin.tls else None, self.poller)
        return pool

    async def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
        await asyncio.sleep(0)  # let the transports run their close callbacks
