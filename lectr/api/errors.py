"""Errors of the management API: JSON in one stable shape, the same one the proxy uses."""

from __future__ import annotations

import logging

import orjson
from aiohttp import web

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error to answer with ``{"error": {"message", "type", "code"}}`` and ``status``."""

    def __init__(self, status: int, code: str, message: str, type_: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.type = type_


def bad_parameter(name: str, problem: str) -> ApiError:
    return ApiError(400, "invalid_parameter", f"{name}: {problem}")


def error_response(status: int, code: str, message: str, type_: str) -> web.Response:
    body = orjson.dumps({"error": {"message": message, "type": type_, "code": code}})
    return web.Response(status=status, body=body, content_type="application/json")


@web.middleware
async def json_errors(request: web.Request, handler):
    """Turn API errors, unknown routes and unexpected failures under /api into JSON errors."""
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message, exc.type)
    except web.HTTPException as exc:
        if not request.path.startswith("/api/") or exc.status < 400:
            raise
        return error_response(exc.status, exc.reason.lower().replace(" ", "_"), exc.reason, "invalid_request_error")
    except Exception:
        if not request.path.startswith("/api/"):
            raise
        log.exception("management API failed on %s %s", request.method, request.path)
        return error_response(500, "internal_error", "internal error", "server_error")
