"""A WebSocket connection relayed as bytes, after the provider's ``101 Switching Protocols``.

OpenAI's Realtime API (``GET /v1/realtime?model=…`` with ``Upgrade: websocket``) is one long
exchange of WebSocket frames. Once the provider has answered 101, Lectr takes the provider's
transport over with a ``Tunnel`` (``transport.set_protocol``) and the client's connection
hands its reads straight to it: bytes are copied both ways as they come, nothing is parsed,
and back-pressure holds in both directions (a side that cannot take more stops the other from
being read). Either side closing, or neither sending for the upstream read timeout, ends the
tunnel; the request cycle then records one event with the byte counts and a bounded capture
of what the provider sent, whose frames the cold path reads for usage
(``lectr.recording.websocket``).
"""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING, Protocol
from urllib.parse import parse_qsl

if TYPE_CHECKING:
    from lectr.proxy.connection import ClientConnection


# This hop's Connection and Upgrade fields, which a proxy otherwise drops (RFC 9110 §7.6.1),
# forwarded for a WebSocket upgrade so the provider can answer 101; as ClientHeaders.forward parts.
UPGRADE_FIELDS = [b"\r\n", b"Connection", b": ", b"Upgrade", b"\r\n", b"Upgrade", b": ", b"websocket"]
_EXTENSIONS = re.compile(rb"\r\nsec-websocket-extensions:[ \t]*([^\r]*)", re.IGNORECASE)


def model_in_query(query: bytes) -> str | None:
    """``model`` of a query string (``model=gpt-realtime&x=1`` → ``gpt-realtime``), or None."""
    for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        if name == "model" and value:
            return value
    return None


def negotiated_extensions(head: bytes) -> str | None:
    """The WebSocket extensions a 101 head agreed to (``permessage-deflate; …``), or None."""
    values = [m.strip().decode("latin-1") for m in _EXTENSIONS.findall(head) if m.strip()]
    return ", ".join(values) if values else None


class TunnelOwner(Protocol):
    """The request cycle a tunnel reports its end to."""

    def tunnel_closed(self, timed_out: bool) -> None: ...


class Tunnel(asyncio.Protocol):
    """The provider's side of a relayed WebSocket connection; ``from_client`` is the client's."""

    __slots__ = ("owner", "client", "transport", "loop", "idle_timeout", "deadline", "timer",
                 "bytes_in", "bytes_out", "captured", "capture_left", "closed", "timed_out")

    def __init__(self, owner: TunnelOwner, client: ClientConnection, transport: asyncio.Transport,
                 idle_timeout: float, capture_max_bytes: int) -> None:
        self.owner = owner
        self.client = client
        self.transport = transport
        self.loop = client.loop
        self.idle_timeout = idle_timeout
        self.deadline = self.loop.time() + idle_timeout
        self.timer: asyncio.TimerHandle | None = self.loop.call_at(self.deadline, self._on_deadline)
        self.bytes_in = 0  # client → provider
        self.bytes_out = 0  # provider → client
        self.captured: list[bytes] | None = []  # provider → client, for usage; None once past the limit
        self.capture_left = capture_max_bytes
        self.closed = False
        self.timed_out = False

    # -- provider → client (asyncio.Protocol on the provider's transport) -----------------------

    def data_received(self, data: bytes) -> None:
        self.client.write(data)
        self.bytes_out += len(data)
        self.deadline = self.loop.time() + self.idle_timeout
        captured = self.captured
        if captured is not None:
            self.capture_left -= len(data)
            if self.capture_left >= 0:
                captured.append(data)
            else:
                self.captured = None  # too long to keep: recorded without usage

    def eof_received(self) -> bool:
        return False  # the provider is done: close our side too, which ends the tunnel

    def connection_lost(self, exc: Exception | None) -> None:
        self._end()

    def pause_writing(self) -> None:
        self.client.flow.pause_reading()  # the provider is not taking the client's bytes

    def resume_writing(self) -> None:
        self.client.flow.resume_reading()

    # -- client → provider ------------------------------------------------------------------------

    def from_client(self, data: bytes) -> None:
        """Bytes the client sent: to the provider as they are."""
        if self.closed:
            return
        self.transport.write(data)
        self.bytes_in += len(data)
        self.deadline = self.loop.time() + self.idle_timeout

    # -- back-pressure from the client (FlowControl follows the tunnel like an upstream) ---------

    def pause_reading(self) -> None:
        if not self.closed:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if not self.closed:
            self.transport.resume_reading()

    # -- ending -------------------------------------------------------------------------------------

    def close(self) -> None:
        """The client is gone: close the provider's side after what it already sent us."""
        if not self.closed:
            self.transport.close()
            self._end()

    def _on_deadline(self) -> None:
        self.timer = None
        if self.closed:
            return
        if self.loop.time() < self.deadline:
            self.timer = self.loop.call_at(self.deadline, self._on_deadline)
            return
        self.timed_out = True  # neither side sent anything for the whole timeout
        self.transport.abort()
        self._end()

    def _end(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.owner.tunnel_closed(self.timed_out)
