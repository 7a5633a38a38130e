"""Lectr's own answers on the request path: health checks, its errors, and fixed responses.

Subordinate to ``handler.py`` (read that first): ``RequestCycle`` inherits ``OwnAnswers`` for
``/healthz``, ``/readyz`` and the refusals a ``Decision`` carries (in the OpenAI error shape,
``responses.py``); ``FixedResponse`` is what ``protocol.py`` queues for a request it refused
while parsing (400, 408, 413, 431), so it is answered in turn and the connection closed.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from lectr.proxy import responses as R

if TYPE_CHECKING:
    from lectr.proxy.connection import ClientConnection

_HEALTH_OK = b'{"status":"ok"}'
_NOT_READY = b'{"status":"starting"}'
_DRAINING = b'{"status":"draining"}'



class FixedResponse:
    """A response decided while parsing (400, 408, 413, 431): written in turn, then close."""

    __slots__ = ("conn", "data")

    def __init__(self, conn: ClientConnection, data: bytes) -> None:
        self.conn = conn
        self.data = data

    def start(self) -> None:
        self.conn.write(self.data)
        self.conn.finish_response(keep_alive=False)
        self.conn.cycle_done(self)

    def cancel(self) -> None:
        pass



class OwnAnswers:
    """``RequestCycle``'s answers written by Lectr itself (a mixin: the state lives in its slots)."""

    __slots__ = ()

    def _reply_local(self, path: bytes) -> None:
        head = self.method == b"HEAD"
        self.keep_alive = self.keep_alive and not self.ctx.draining
        close = not self.keep_alive
        if path == b"/healthz":
            self._write_own(R.json_response(200, _HEALTH_OK, close=close, head=head))
        elif path == b"/readyz":
            if self.ctx.draining:
                self._write_own(R.json_response(503, _DRAINING, close=close, head=head))
            elif not self.ctx.directory.loaded:
                self._write_own(R.json_response(503, _NOT_READY, close=close, head=head))
            else:
                self._write_own(R.json_response(200, _HEALTH_OK, close=close, head=head))
        else:
            self._reply_error(R.NOT_FOUND)

    def _reply_error(self, template: tuple, detail: object = None, *, close: bool = False) -> None:
        status, message, type_, code = template
        if "{}" in message:
            message = message.format(detail)
        self.status = status
        if self.error_type is None:
            self.error_type, self.error_origin = code, "lectr"
        close = close or not self.keep_alive or self.ctx.draining
        self._write_own(R.error_response(status, message, type_, code, close=close), keep_alive=not close)

    def _write_own(self, data: bytes, keep_alive: bool | None = None) -> None:
        self.conn.write(data)
        self.t_first_byte = time.perf_counter()
        self.conn.finish_response(self.keep_alive if keep_alive is None else keep_alive)
        self._finish()
