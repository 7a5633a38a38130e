"""A request cycle's WebSocket session: from the provider's ``101`` to its one event.

Subordinate to ``handler.py`` (read that first) and ``tunnel.py`` (the byte relay itself):
``RequestCycle`` inherits ``TunnelCycle``. When the provider switches protocols the cycle
relays the 101 head unchanged, hands both transports to a ``Tunnel``, and when either side
ends it records one event for the whole session (bytes each way, the server's frames).
"""

from __future__ import annotations

import asyncio
import time

from lectr.snapshot.directory import Org
from lectr.proxy.event import RequestEvent
from lectr.proxy.tunnel import Tunnel, negotiated_extensions


class TunnelCycle:
    """``RequestCycle``'s WebSocket tunnel (a mixin: the state lives in its slots)."""

    __slots__ = ()


    def upstream_switched(self, head: bytes, rest: bytes, transport: asyncio.Transport) -> None:
        """The provider answered 101: relay its head unchanged and tunnel both ways from here."""
        self.status = 101
        self.t_first_byte = time.perf_counter()
        self.upstream = None  # out of its pool for good; its transport is the tunnel's now
        conn = self.conn
        conn.flow.unfollow()
        self.tunnel = tunnel = Tunnel(self, conn, transport, self.pool.read_timeout, self.capture_left)
        transport.set_protocol(tunnel)
        self.content_encoding = negotiated_extensions(head)  # how the cold path reads the frames
        conn.write(head)
        conn.flow.follow(tunnel)
        conn.upgrade_to_tunnel(tunnel.from_client)
        if rest:
            tunnel.data_received(rest)

    def tunnel_closed(self, timed_out: bool) -> None:
        """Either side closed the tunnel (or it sat silent for the read timeout): record it, once."""
        self.t_upstream_done = time.perf_counter()
        self.conn.flow.unfollow()
        if timed_out:
            self.error_type, self.error_origin = "tunnel_idle_timeout", "lectr"
        self._finish()

    def _log_tunnel_event(self, org: Org) -> None:
        # One event for a whole WebSocket session: bytes each way and the server's frames.
        tunnel = self.tunnel
        t_end = time.perf_counter()
        self.ctx.ring.append(RequestEvent(
            org_id=org.id, created_at=time.time(), provider=self.provider, model=self.model, model_used=self.model,
            feature=self.feature, task=self.task, status_code=self.status, error_type=self.error_type,
            error_origin=self.error_origin, stream=False, t_start=self.t_start, t_first_byte=self.t_first_byte,
            t_end=t_end, overhead_s=max(0.0, (t_end - self.t_start) - (self.t_upstream_done - self.t_upstream)),
            provider_unknown=self.provider_unknown, rule_id=None, bytes_in=len(self.body) + tunnel.bytes_in,
            bytes_out=tunnel.bytes_out, content_type=None, content_encoding=self.content_encoding,
            response_chunks=tunnel.captured))
