"""Responses Lectr itself writes: status lines and errors in the OpenAI error shape.

Built as bytes ahead of time where they never change, so the hot path only concatenates.
"""

from __future__ import annotations

from http import HTTPStatus

import orjson

STATUS_LINES: dict[int, bytes] = {
    s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode() for s in HTTPStatus
}


def status_line(status: int, reason: str | None = None) -> bytes:
    """``HTTP/1.1 <status> <reason>\\r\\n``; the provider's own reason phrase when it gave one."""
    if reason is None:
        line = STATUS_LINES.get(status)
        if line is not None:
            return line
        reason = ""
    return b"HTTP/1.1 %d %s\r\n" % (status, reason.encode("latin-1", "replace"))


def error_body(message: str, type_: str, code: str | None) -> bytes:
    """The OpenAI error shape: ``{"error": {"message", "type", "param", "code"}}``."""
    return orjson.dumps({"error": {"message": message, "type": type_, "param": None, "code": code}})


def json_response(status: int, body: bytes, *, close: bool = False, head: bool = False) -> bytes:
    """A complete response with a JSON body; ``head`` leaves the body out (HEAD requests)."""
    parts = [
        status_line(status),
        b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body),
        b"connection: close\r\n\r\n" if close else b"\r\n",
    ]
    if not head:
        parts.append(body)
    return b"".join(parts)


def error_response(status: int, message: str, type_: str, code: str | None, *, close: bool = False) -> bytes:
    """A complete error response in the OpenAI shape."""
    return json_response(status, error_body(message, type_, code), close=close)


CONTINUE_100 = b"HTTP/1.1 100 Continue\r\n\r\n"

# Lectr's own errors. Messages name what to fix and never echo a key back.
MISSING_KEY = (401, "Missing X-Lectr-Key header. Add your Lectr org key (lc_key_...) as X-Lectr-Key.",
               "invalid_request_error", "missing_lectr_key")
INVALID_KEY = (401, "Invalid X-Lectr-Key. Check the org key, or rotate it with `lectr key rotate`.",
               "invalid_request_error", "invalid_lectr_key")
AZURE_NOT_CONFIGURED = (
    400, "Azure OpenAI is not configured for this organization. Set its endpoint and API version "
    "first: `lectr org azure ORG --endpoint URL --api-version VERSION`.",
    "invalid_request_error", "azure_not_configured")
NOT_FOUND = (404, "Unknown path. Lectr forwards /v1/... to your provider; point your client's "
             "baseURL at http://<lectr>/v1.", "invalid_request_error", "unknown_url")
UPSTREAM_UNREACHABLE = (502, "Lectr could not reach the provider ({}).", "upstream_error", "upstream_unreachable")
UPSTREAM_CLOSED = (502, "The provider closed the connection without answering ({}).", "upstream_error",
                   "upstream_closed")
UPSTREAM_TIMEOUT = (504, "The provider did not answer in time ({}).", "upstream_error", "upstream_timeout")
BAD_PATH = (400, "Lectr does not forward this path: {}.", "invalid_request_error", "invalid_path")
BAD_REQUEST = (400, "Malformed HTTP request: {}.", "invalid_request_error", "bad_request")
BODY_TOO_LARGE = (413, "Request body is larger than this Lectr accepts ({} bytes).",
                  "invalid_request_error", "request_too_large")
HEADERS_TOO_LARGE = (431, "Request headers are larger than this Lectr accepts ({} bytes).",
                     "invalid_request_error", "headers_too_large")
REQUEST_TIMEOUT = (408, "The request was not received in time.", "invalid_request_error", "request_timeout")
SHUTDOWN_TIMEOUT = (503, "Lectr is shutting down and the provider did not answer before its drain ended; "
                    "send the request again.", "server_error", "shutdown_timeout")
INTERNAL_ERROR = (500, "Lectr hit an internal error handling this request.", "server_error", "internal_error")
REPEATED_LECTR_HEADER = (400, "The {} header was sent more than once; send each X-Lectr-* header once.",
                         "invalid_request_error", "repeated_lectr_header")
BAD_HOST = (400, "Malformed HTTP request: {}.", "invalid_request_error", "bad_host")
VERSION_NOT_SUPPORTED = (505, "HTTP version not supported ({}); Lectr speaks HTTP/1.1 and HTTP/1.0.",
                         "invalid_request_error", "http_version_not_supported")
CONNECT_NOT_ALLOWED = (405, "CONNECT is not supported: Lectr is not a forward proxy; send requests to /v1/... .",
                       "invalid_request_error", "method_not_allowed")
