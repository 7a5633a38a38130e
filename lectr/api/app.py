"""The admin port's ``aiohttp.web`` application. Cold side: it never shares code with the proxy."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from lectr.metrics import Metrics

METRICS = web.AppKey("metrics", Metrics)


async def metrics_page(request: web.Request) -> web.Response:
    body = request.app[METRICS].render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def make_admin_app(metrics: Metrics) -> web.Application:
    """The admin application: ``/metrics`` and ``/healthz``."""
    app = web.Application()
    app[METRICS] = metrics
    app.router.add_get("/metrics", metrics_page)
    app.router.add_get("/healthz", health)
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
