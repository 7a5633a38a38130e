"""The admin port's ``aiohttp.web`` application: management API, dashboard, metrics.

Cold side: it shares no code path with the proxy, only the in-memory directory (to check an
``X-Lectr-Key`` without a query) and the metrics registry.
"""

from __future__ import annotations

import logging
import sys

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError, InvalidHeader, LineTooLong
from prometheus_client import CONTENT_TYPE_LATEST

from lectr.dashboard.routes import add_dashboard_routes
from lectr.api.errors import json_errors
from lectr.api.openapi import ENDPOINTS, document
from lectr.api.state import STATE, AdminState


async def metrics_page(request: web.Request) -> web.Response:
    body = request.app[STATE].metrics.render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(document())


def make_admin_app(state: AdminState) -> web.Application:
    """The admin application with every route: API, OpenAPI document, dashboard, metrics."""
    app = web.Application(middlewares=[json_errors], client_max_size=1024 * 1024)
    app[STATE] = state
    for endpoint in ENDPOINTS:
        app.router.add_route(endpoint.method, endpoint.path, endpoint.handler)
    app.router.add_get("/api/openapi.json", openapi_json)
    app.router.add_get("/metrics", metrics_page)
    app.router.add_get("/healthz", health)
    add_dashboard_routes(app)
    return app


class _ServerLog:
    """aiohttp's server logger, except for requests it could not parse.

    aiohttp logs those at ERROR with a traceback whose message quotes the first 100 bytes of
    the offending line: any client could put part of an ``Authorization`` or ``X-Lectr-Key``
    value in the log. Here they get one WARNING line that says what was wrong, never the value.
    """

    def __init__(self, logger: logging.Logger) -> None:
        self._log = logger

    def exception(self, msg, *args, exc_info=True, **kwargs) -> None:
        if not self._refused(logging.WARNING, args, exc_info):
            self._log.exception(msg, *args, exc_info=exc_info, **kwargs)

    def debug(self, msg, *args, exc_info=None, **kwargs) -> None:
        # aiohttp logs a bad method in a connection's first request at DEBUG, with the line.
        if not self._refused(logging.DEBUG, args, exc_info):
            self._log.debug(msg, *args, exc_info=exc_info, **kwargs)

    def _refused(self, level: int, args: tuple, exc_info: object) -> bool:
        """Log a parse error's one line at ``level``, if ``exc_info`` is one; True when it was."""
        if exc_info is True:
            exc_info = sys.exc_info()[1]
        elif isinstance(exc_info, tuple):
            exc_info = exc_info[1]
        if not isinstance(exc_info, HttpProcessingError):
            return False
        remote = args[0] if args else "?"
        self._log.log(level, "refused a malformed request from %s: %s", remote, _what_was_wrong(exc_info))
        return True

    def __getattr__(self, name: str):
        return getattr(self._log, name)


def _what_was_wrong(exc: HttpProcessingError) -> str:
    """A description of a parse error that holds nothing the client sent."""
    if isinstance(exc, LineTooLong):
        return f"a request line or header longer than {exc.args[1]} bytes"
    if isinstance(exc, InvalidHeader):
        return "an invalid header"
    return f"{type(exc).__name__} (status {exc.code})"


class AdminServer:
    """Runs the admin application on its own port."""

    def __init__(self, app: web.Application, host: str, port: int) -> None:
        self.runner = web.AppRunner(app, access_log=None, logger=_ServerLog(logging.getLogger("aiohttp.server")))
        self.host = host
        self.port = port

    async def start(self) -> None:
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.host, self.port, reuse_address=True)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # the real port when 0 was asked

    async def stop(self) -> None:
        await self.runner.cleanup()
