"""Back-pressure for one client connection, in both directions."""

from __future__ import annotations

import asyncio


class FlowControl:
    """Idempotent pause/resume flags over a transport, and an awaitable for writers.

    The transport calls ``pause_writing``/``resume_writing`` when its send buffer crosses its
    high/low water marks; a relay awaits ``drain()`` between upstream reads, so a slow client
    stops Lectr reading from the provider instead of growing a buffer.
    """

    __slots__ = ("_transport", "read_paused", "write_paused", "_writable")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self.read_paused = False
        self.write_paused = False
        self._writable = asyncio.Event()
        self._writable.set()

    async def drain(self) -> None:
        if self.write_paused:
            await self._writable.wait()

    def pause_writing(self) -> None:
        if not self.write_paused:
            self.write_paused = True
            self._writable.clear()

    def resume_writing(self) -> None:
        if self.write_paused:
            self.write_paused = False
            self._writable.set()

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
