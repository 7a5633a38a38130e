"""A TCP relay that does nothing else: the floor of any proxy in Python on uvloop.

    lectr bench --peer 'relay=python lectr/bench/peers/relay.py {upstream} 9101@9101'
    lectr bench --peer 'relay-spin=python lectr/bench/peers/relay.py {upstream} 9102 --spin@9102'

Each client connection gets its own upstream connection and bytes are copied both ways
unread. ``--spin`` keeps the loop polling instead of sleeping, as Lectr's busy polling does
while traffic is dense.
"""

from __future__ import annotations

import argparse
import asyncio
from urllib.parse import urlsplit

import uvloop


class _Upstream(asyncio.Protocol):
    def __init__(self, client: asyncio.Transport) -> None:
        self.client = client

    def data_received(self, data: bytes) -> None:
        self.client.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.close()


class _Client(asyncio.Protocol):
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.upstream: asyncio.Transport | None = None
        self.pending: list[bytes] = []

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.transport = transport
        asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        self.upstream, _ = await loop.create_connection(lambda: _Upstream(self.transport), self.host, self.port)
        for data in self.pending:
            self.upstream.write(data)
        self.pending.clear()

    def data_received(self, data: bytes) -> None:
        if self.upstream is None:
            self.pending.append(data)
        else:
            self.upstream.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.upstream is not None:
            self.upstream.close()


async def _serve(upstream: str, port: int, spin: bool) -> None:
    loop = asyncio.get_running_loop()
    target = urlsplit(upstream)
    if spin:
        def keep_polling() -> None:
            loop.call_soon(keep_polling)
        loop.call_soon(keep_polling)
    server = await loop.create_server(lambda: _Client(target.hostname, target.port or 80), "127.0.0.1", port)
    await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("upstream", help="the mock's base URL")
    parser.add_argument("port", type=int)
    parser.add_argument("--spin", action="store_true", help="never let the loop sleep")
    args = parser.parse_args()
    uvloop.run(_serve(args.upstream, args.port, args.spin))


if __name__ == "__main__":
    main()
