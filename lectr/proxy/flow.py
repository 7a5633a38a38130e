"""Back-pressure for one client connection, in both directions."""

from __future__ import annotations

import asyncio


class FlowControl:
    """Idempotent pause/resume flags over a transport, and an awaitable for writers.

    The transport calls ``pause_writing``/``resume_writing`` when its send buffer crosses its
    high/low water marks; the upstream connection being relayed stops being read meanwhile,
    so a slow client slows the provider down instead of growing a buffer in Lectr.
    """

    __slots__ = ("_transport", "read_paused", "write_paused", "_writable", "_upstream")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self.read_paused = False
        self.write_paused = False
        self._writable = asyncio.Event()
        self._writable.set()
        self._upstream = None  # the upstream connection whose response is being relayed

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
            if self._upstream is not None:
                self._upstream.pause_reading()

    def resume_writing(self) -> None:
        if self.write_paused:
            self.write_paused = False
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
        self._writable.set()
