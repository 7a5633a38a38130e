"""Real alert receivers on loopback: an SMTP server (aiosmtpd) and a webhook receiver (aiohttp)."""

from __future__ import annotations

import asyncio
import email
import email.policy
import warnings
from dataclasses import dataclass, field

import orjson
from aiohttp import web

from tests.conftest import free_port

SMTP_USER, SMTP_PASSWORD = "alerts@lectr.test", "pa55-Very-Secret-word"


@dataclass
class SmtpSink:
    """Mail an aiosmtpd server received, parsed; ``logins`` counts successful AUTHs."""

    port: int = 0
    messages: list = field(default_factory=list)
    logins: int = 0
    controller: object = None

    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.messages.append((list(envelope.rcpt_tos), msg))
        return "250 OK"

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        from aiosmtpd.smtp import AuthResult, LoginPassword

        ok = (isinstance(auth_data, LoginPassword) and auth_data.login == SMTP_USER.encode()
              and auth_data.password == SMTP_PASSWORD.encode())
        self.logins += ok
        return AuthResult(success=ok, handled=False)

    def url(self, password: str = SMTP_PASSWORD) -> str:
        return f"smtp://{SMTP_USER.replace('@', '%40')}:{password}@127.0.0.1:{self.port}"


def start_smtp() -> SmtpSink:
    from aiosmtpd.controller import Controller

    sink = SmtpSink(port=free_port())
    with warnings.catch_warnings():  # AUTH without TLS: fine on loopback, and what we mean to test
        warnings.simplefilter("ignore")
        sink.controller = Controller(sink, hostname="127.0.0.1", port=sink.port, server_hostname="mail.lectr.test",
                                     authenticator=sink.authenticate,
                                     auth_require_tls=False)
        sink.controller.start()
    return sink


@dataclass
class WebhookReceiver:
    """An aiohttp server that records each POST; the first ``fail_first`` answer 500."""

    fail_first: int = 0
    calls: list = field(default_factory=list)  # (status answered, headers, JSON body)
    received: list = field(default_factory=list)  # bodies answered 200
    runner: web.AppRunner | None = None
    url: str = ""
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        status = 500 if len(self.calls) < self.fail_first else 200
        self.calls.append((status, dict(request.headers), body))
        if status == 200:
            self.received.append(body)
        self.arrived.set()
        return web.json_response({"ok": status == 200}, status=status)

    async def start(self) -> "WebhookReceiver":
        app = web.Application()
        app.router.add_post("/hooks/{token}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/hooks/T0-secret-path"
        return self

    async def stop(self) -> None:
        await self.runner.cleanup()


class ThreadedReceiver:
    """A webhook receiver in a thread of its own (for tests that drive ``lectr serve`` synchronously)."""

    def __init__(self) -> None:
        import http.server
        import threading

        received = self.received = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (the stdlib's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append(orjson.loads(body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/secret-path"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
