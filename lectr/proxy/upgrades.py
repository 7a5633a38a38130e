"""Upgrade requests on a client connection, and the seam for a WebSocket tunnel.

httptools stops at the head of a request that asks to upgrade (``Connection: upgrade`` and an
``Upgrade`` field, or ``CONNECT``) and skips its body. ``ProxyProtocol`` decides here:

- ``CONNECT``: 405 and close (Lectr is not a forward proxy).
- ``Upgrade: websocket`` on a GET without a body: the request goes to a ``RequestCycle`` as
  usual (body ``b""``), with the connection's reading paused and every byte after the head
  held. The cycle decides. After writing the provider's 101 it calls
  ``conn.upgrade_to_tunnel(on_data)``: the held bytes, then every later read, go to
  ``on_data`` unparsed. If it answers anything else and finishes, the held bytes are parsed as
  the next request (RFC 9110 §7.8: a server may ignore an upgrade).
- Anything else (``h2c`` from ``curl --http2``): the upgrade is ignored, the request parsed
  again without its Upgrade field, body and all, and answered once in HTTP/1.1.
"""

from __future__ import annotations

from typing import Callable

import httptools

from lectr.proxy import responses as R
from lectr.proxy.framing import head_without_upgrade, upgrade_tokens
from lectr.proxy.handler import RequestCycle

_WEBSOCKET = b"websocket"


class UpgradeSupport:
    """``ProxyProtocol``'s upgrade handling (a mixin: the state lives in its slots)."""

    __slots__ = ()

    def upgrade_to_tunnel(self, on_data: Callable[[bytes], None]) -> None:
        """Make this connection a raw byte tunnel, once the active cycle has written a 101.

        Only for the cycle of a WebSocket upgrade request: ``conn.upgrade_requested`` is True
        while that cycle is active. Bytes the client sent after the request's head are passed
        to ``on_data`` at once, and every later read goes to it unparsed. The connection's own
        header and idle deadlines stop (the tunnel keeps its own); ``write``, ``writelines``
        and ``flow`` (back-pressure both ways, the client write deadline) work as before. The
        client going away calls ``cycle.cancel()``; the cycle calling ``conn.cycle_done(cycle)``
        closes the connection. Raises RuntimeError when no upgrade request is active.
        """
        if not self.upgrade_requested:
            raise RuntimeError("no upgrade request is active on this connection")
        held, self.held = self.held, None
        self.upgrading = None
        self.tunnel = on_data
        self.in_message = False
        self.flow.resume_reading()
        if held:
            on_data(bytes(held))

    @property
    def upgrade_requested(self) -> bool:
        """True while the active cycle's request asked for a WebSocket and no answer has been decided."""
        return self.upgrading is not None and self.active is self.upgrading

    def _upgraded(self, rest: bytes) -> bytes:
        """Decide an upgrade request the parser stopped at; return bytes still to be parsed.

        ``rest`` is what followed the request's head in the current read. The parser that
        stopped is replaced: the next request starts on a fresh one.
        """
        method, url, version, raw, headers, keep_alive = self._upgrade
        self._upgrade = None
        self.parser = httptools.HttpRequestParser(self)
        if method == b"CONNECT":
            self._fail(R.CONNECT_NOT_ALLOWED, None)
            return b""
        if _WEBSOCKET in upgrade_tokens(headers.upgrade) and method == b"GET" and not headers.chunked \
                and headers.content_length in (None, b"0"):
            self.held = bytearray(rest)
            self.flow.pause_reading()
            self.upgrading = RequestCycle(self.ctx, self, method, url, headers, b"",
                                          keep_alive=keep_alive and not self.ctx.draining, http11=version == "1.1")
            self._enqueue(self.upgrading)
            return b""
        self.fresh = True  # parsed again: the clock that started at its first byte keeps running
        return head_without_upgrade(method, url, version, raw) + rest

    def _parse_held(self) -> None:
        """After a declined upgrade: parse what the client sent after it, then read on."""
        held, self.held = self.held, None
        self.upgrading = None
        if held is None or self.closing or self.peer_gone:
            return
        self.flow.resume_reading()
        if held:
            self.data_received(bytes(held))
