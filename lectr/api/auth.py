"""Who is asking: an org (by ``X-Lectr-Key`` or dashboard session) or the operator (by secret)."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from aiohttp import web

from lectr.api import sessions
from lectr.api.errors import ApiError
from lectr.api.state import STATE
from lectr.snapshot.keys import hash_key

SESSION_COOKIE = "lectr_session"


@dataclass(frozen=True, slots=True)
class Caller:
    """The org a request acts for."""

    org_id: int
    org_name: str


async def org_caller(request: web.Request) -> Caller:
    """The org behind ``X-Lectr-Key`` or the session cookie; 401 when neither is valid."""
    state = request.app[STATE]
    key = request.headers.get("X-Lectr-Key")
    if key:
        org = state.directory.current.orgs_by_key_hash.get(hash_key(key.strip()))
        if org is None:
            raise ApiError(401, "invalid_lectr_key", "Invalid X-Lectr-Key.")
        return Caller(org.id, org.name)
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        async with state.pool.acquire() as conn:
            session = await sessions.lookup(conn, token)
        if session is not None:
            request["session"] = session
            return Caller(session.org_id, session.org_name)
    raise ApiError(401, "unauthenticated", "Send X-Lectr-Key, or log in to the dashboard.")


def require_operator(request: web.Request) -> None:
    """Allow only ``Authorization: Bearer $LECTR_ADMIN_SECRET``; the API is off without a secret."""
    secret = request.app[STATE].admin_secret
    if not secret:
        raise ApiError(403, "operator_api_disabled", "The operator API is disabled: set LECTR_ADMIN_SECRET.")
    scheme, _, credentials = request.headers.get("Authorization", "").strip().partition(" ")
    # Auth schemes are case-insensitive (RFC 9110 §11.1): "bearer" and "BEARER" are Bearer.
    # aiohttp keeps a header's non-UTF-8 bytes as surrogates: they must compare, not raise.
    given = credentials.strip().encode("utf-8", "surrogateescape")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given, secret.encode()):
        raise ApiError(401, "invalid_admin_secret", "Send Authorization: Bearer <LECTR_ADMIN_SECRET>.")
