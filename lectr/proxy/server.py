"""The proxy listener: the listening socket and a graceful stop (shared state: ``context.py``)."""

from __future__ import annotations

import asyncio
import logging
import socket

from lectr.proxy.context import ProxyContext
from lectr.proxy.protocol import ProxyProtocol

__all__ = ["ProxyContext", "ProxyServer"]

log = logging.getLogger(__name__)


class ProxyServer:
    """Listens on the proxy port; ``stop`` lets in-flight requests finish before closing."""

    def __init__(self, ctx: ProxyContext, host: str, port: int, *, reuse_port: bool = False) -> None:
        self.ctx = ctx
        self.host = host
        self.port = port
        self.reuse_port = reuse_port
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await self.ctx.loop.create_server(
            lambda: ProxyProtocol(self.ctx), self.host, self.port,
            reuse_address=True, reuse_port=self.reuse_port or None, backlog=4096,
        )
        sock = self._server.sockets[0]
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.port = sock.getsockname()[1]

    async def stop(self, timeout: float) -> None:
        """Stop accepting, let in-flight requests finish for up to ``timeout`` s, close the rest."""
        ctx = self.ctx
        ctx.draining = True
        if self._server is not None:
            self._server.close()
        for conn in list(ctx.connections):
            conn.shutdown()
        if not await ctx.wait_idle(timeout):
            log.warning("%d requests still in flight after %.0fs; cutting them", len(ctx.inflight), timeout)
            for cycle in list(ctx.inflight):
                cycle.shutdown_cut()
        for conn in list(ctx.connections):
            if conn.transport is None or not conn.transport.is_closing():  # else it is flushing its last answer
                conn.abort()
        if self._server is not None:
            await self._server.wait_closed()
