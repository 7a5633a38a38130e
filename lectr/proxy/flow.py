"""Back-pressure for one client connection, in both directions, and the client's write deadline.

The contract with the upstream side is two calls on the followed upstream connection:
``pause_reading()`` when the client's transport stops taking bytes and ``resume_reading()`` when
it drains (or when the response is no longer followed). Time between the two is Lectr waiting
for the client, not for the provider: an upstream read deadline must not run over it.
``FlowControl.paused_since`` says when the current pause began (loop time; 0.0 when writing is
not paused). A client that takes nothing for ``write_timeout`` seconds is the client's fault:
``on_write_timeout`` is called once and the owner closes the connection.
"""

from __future__ import annotations

import asyncio
from typing import Callable


class FlowControl:
    """Idempotent pause/resume flags over a transport, an awaitable for writers, and one
    moving deadline for a client that stops reading.

    The transport calls ``pause_writing``/``resume_writing`` when its send buffer crosses its
    high/low water marks; the upstream connection being relayed stops being read meanwhile,
    so a slow client slows the provider down instead of growing a buffer in Lectr.
    """

    __slots__ = ("_transport", "read_paused", "write_paused", "_writable", "_upstream",
                 "_loop", "_write_timeout", "_on_write_timeout", "paused_since", "_timer")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop | None = None,
                 write_timeout: float = 0.0, on_write_timeout: Callable[[], None] | None = None) -> None:
        """``write_timeout`` (seconds; 0 turns the deadline off) bounds one uninterrupted pause."""
        self._transport = transport
        self.read_paused = False
        self.write_paused = False
        self._writable = asyncio.Event()
        self._writable.set()
        self._upstream = None  # the upstream connection whose response is being relayed
        self._loop = loop
        self._write_timeout = write_timeout if loop is not None and on_write_timeout is not None else 0.0
        self._on_write_timeout = on_write_timeout
        self.paused_since = 0.0
        self._timer: asyncio.TimerHandle | None = None

    async def drain(self) -> None:
        if self.write_paused:
            await self._writable.wait()

    def follow(self, upstream) -> None:
        """Relay ``upstream``'s response: while the client cannot take more, it is not read."""
        self._upstream = upstream
        if self.write_paused:
            upstream.pause_reading()

    def unfollow(self) -> None:
        upstream, self._upstream = self._upstream, None
        if upstream is not None and self.write_paused:
            upstream.resume_reading()

    def pause_writing(self) -> None:
        if not self.write_paused:
            self.write_paused = True
            self._writable.clear()
            if self._write_timeout:
                self.paused_since = now = self._loop.time()
                # One timer at a time: one armed for an earlier pause re-arms itself when it
                # finds this one still running, so a client that pauses and drains in turn
                # costs no timer per pause.
                if self._timer is None:
                    self._timer = self._loop.call_at(now + self._write_timeout, self._check_write)
            if self._upstream is not None:
                self._upstream.pause_reading()

    def resume_writing(self) -> None:
        if self.write_paused:
            self.write_paused = False
            self.paused_since = 0.0
            self._writable.set()
            if self._upstream is not None:
                self._upstream.resume_reading()

    def pause_reading(self) -> None:
        if not self.read_paused:
            self.read_paused = True
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if self.read_paused:
            self.read_paused = False
            self._transport.resume_reading()

    def release(self) -> None:
        """Wake any writer for good: the connection is gone and it must find that out."""
        self.write_paused = False
        self.paused_since = 0.0
        self._writable.set()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check_write(self) -> None:
        self._timer = None
        if not self.write_paused:
            return
        due = self.paused_since + self._write_timeout
        if self._loop.time() < due:
            self._timer = self._loop.call_at(due, self._check_write)
            return
        self._on_write_timeout()
