"""Checking a base URL an operator gives (an Azure endpoint, an upstream): the one place it is done."""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_PATH = re.compile(r"[A-Za-z0-9\-._~/%!$&'()*+,;=:@]*")  # RFC 3986 path characters, nothing else


class InvalidURL(ValueError):
    """The URL cannot be used; the message says why, in one line."""


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    name = host[:-1] if host.endswith(".") else host
    if not name or len(name) > 253:
        return False
    labels = name.split(".")
    return all(_LABEL.fullmatch(label) for label in labels) and not labels[-1].isdigit()


def check_base_url(raw: str, *, what: str = "URL", https_only: bool = False) -> str:
    """``raw`` without surrounding space and trailing slashes, if it is an absolute http(s) URL
    with a valid host, an optional port and path, and nothing else; InvalidURL otherwise.

    ``https_only``: plain ``http`` is then allowed only to a loopback host (a local test
    server), never across a network where the traffic (and a provider key) would be readable.
    """
    text = raw.strip()
    example = "https://NAME.openai.azure.com" if https_only else "https://api.example.com/v1"
    if not text or any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise InvalidURL(f"{what} must be a URL such as {example} with no spaces, got {raw!r}")
    try:
        parts = urlsplit(text)
        port = parts.port  # urlsplit checks the port only when asked
    except ValueError:
        raise InvalidURL(f"{what} has an invalid host or port: {raw!r}") from None
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https") or not host or not text.lower().startswith(parts.scheme + "://"):
        raise InvalidURL(f"{what} must be an http(s) URL such as {example}, got {raw!r}")
    if "@" in parts.netloc:
        raise InvalidURL(f"{what} must not carry a user name or password: {raw!r}")
    if parts.query or parts.fragment or text.endswith(("?", "#")):
        raise InvalidURL(f"{what} must not carry a query or fragment, got {raw!r}")
    if not _valid_host(host):
        raise InvalidURL(f"{what} has an invalid host name {host!r}")
    if port == 0:
        raise InvalidURL(f"{what} has an invalid port: {raw!r}")
    if not _PATH.fullmatch(parts.path):
        raise InvalidURL(f"{what} has characters a URL path cannot hold: {raw!r}")
    if https_only and parts.scheme == "http" and not is_loopback(host):
        raise InvalidURL(f"{what} must use https (plain http only to a loopback host), got {raw!r}")
    return text.rstrip("/")
