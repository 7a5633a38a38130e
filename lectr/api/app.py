"""The admin port's ``aiohttp.web`` application: management API, dashboard, metrics.

Cold side: it shares no code path with the proxy, only the in-memory directory (to check an
``X-Lectr-Key`` without a query) and the metrics registry.
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from lectr.api.dashboard import add_dashboard_routes
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


class AdminServer:
    """Runs the admin application on its own port."""

    def __init__(self, app: web.Application, host: str, port: int) -> None:
        self.runner = web.AppRunner(app, access_log=None)
        self.host = host
        self.port = port

    async def start(self) -> None:
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.host, self.port, reuse_address=True)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # the real port when 0 was asked

    async def stop(self) -> None:
        await self.runner.cleanup()
