"""Errors of the management API: JSON in one stable shape, the same one the proxy uses."""

from __future__ import annotations

import logging

import asyncpg
import orjson
from aiohttp import web

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error to answer with ``{"error": {"message", "type", "param", "code"}}`` and ``status``."""

    def __init__(self, status: int, code: str, message: str, type_: str = "invalid_request_error",
                 param: str | None = None) -> None:
        super().__init__(message)
        self.param = param
        self.status = status
        self.code = code
        self.message = message
        self.type = type_


def bad_parameter(name: str, problem: str) -> ApiError:
    return ApiError(400, "invalid_parameter", f"{name}: {problem}", param=name)


def error_response(status: int, code: str, message: str, type_: str, param: str | None = None) -> web.Response:
    body = orjson.dumps({"error": {"message": message, "type": type_, "param": param, "code": code}})
    return web.Response(status=status, body=body, content_type="application/json")


@web.middleware
async def json_errors(request: web.Request, handler):
    """Turn API errors, unknown routes and unexpected failures under /api into JSON errors."""
    api = request.path.startswith("/api/")
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message, exc.type, exc.param)
    except asyncpg.DataError:
        # A value PostgreSQL refused (out of range, not storable): the caller's input, not our failure.
        log.debug("refused input on %s %s", request.method, request.path, exc_info=True)
        if not api:
            raise web.HTTPBadRequest(text="A value in the request is out of range or not allowed.") from None
        return error_response(400, "invalid_parameter", "A value in the request is out of range or not allowed.",
                              "invalid_request_error")
    except web.HTTPException as exc:
        if not request.path.startswith("/api/") or exc.status < 400:
            raise
        return error_response(exc.status, exc.reason.lower().replace(" ", "_"), exc.reason, "invalid_request_error")
    except Exception:
        if not request.path.startswith("/api/"):
            raise
        log.exception("management API failed on %s %s", request.method, request.path)
        return error_response(500, "internal_error", "internal error", "server_error")
