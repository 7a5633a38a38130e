"""What a request cycle may do with its client connection: the whole interface, nothing more.

``RequestCycle`` (handler.py) and ``Tunnel`` (tunnel.py) talk to the client through this,
as uvicorn's cycles do through their callbacks; ``ProxyProtocol`` (protocol.py) implements it.
So the cycle never reaches into the protocol's parser or buffers, and neither module imports
the other's class.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Callable, Protocol

if TYPE_CHECKING:
    from lectr.proxy.flow import FlowControl


class ClientConnection(Protocol):
    """One client connection, as seen by the request (or tunnel) it is serving."""

    loop: asyncio.AbstractEventLoop
    flow: FlowControl | None  # None until the transport is connected

    def write(self, data: bytes) -> None:
        """Send ``data`` to the client now (flow control decides when reading pauses)."""

    def writelines(self, parts: list[bytes]) -> None:
        """Send several pieces in one system call."""

    def finish_response(self, keep_alive: bool) -> None:
        """The response is complete: read the next request, or close when not ``keep_alive``."""

    def abort(self) -> None:
        """Drop the connection at once (the response cannot be completed)."""

    def cycle_done(self, cycle: object) -> None:
        """``cycle`` has finished with this connection: its event is recorded, its slot free."""

    def upgrade_requested(self) -> bool:
        """True when the request asked to switch protocols (WebSocket) and may be tunnelled."""

    def upgrade_to_tunnel(self, on_data: Callable[[bytes], None]) -> None:
        """From now on, hand every byte the client sends to ``on_data`` (after a 101)."""
