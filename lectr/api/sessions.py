"""Dashboard sessions: opened with an org key, kept as a hash, ended by logout or key rotation."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta

import asyncpg

from lectr.snapshot.keys import hash_key


@dataclass(frozen=True, slots=True)
class Session:
    org_id: int
    org_name: str
    csrf_token: str


async def open_session(conn: asyncpg.Connection, key: str, hours: float) -> tuple[str, Session] | None:
    """A new session for the org whose active key is ``key``; None when the key is not valid."""
    row = await conn.fetchrow("""
        SELECT k.id AS key_id, o.id AS org_id, o.name FROM org_keys k JOIN organizations o ON o.id = k.org_id
        WHERE k.key_hash = $1 AND k.revoked_at IS NULL""", hash_key(key.strip()))
    if row is None:
        return None
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
    await conn.execute("""
        INSERT INTO dashboard_sessions (token_hash, org_id, key_id, csrf_token, expires_at)
        VALUES ($1, $2, $3, $4, now() + $5::interval)""",
        hash_key(token), row["org_id"], row["key_id"], csrf, timedelta(hours=hours))
    return token, Session(row["org_id"], row["name"], csrf)


async def lookup(conn: asyncpg.Connection, token: str) -> Session | None:
    """The live session for ``token``: not expired, and its key not rotated away."""
    row = await conn.fetchrow("""
        SELECT s.org_id, o.name, s.csrf_token FROM dashboard_sessions s
        JOIN org_keys k ON k.id = s.key_id AND k.revoked_at IS NULL
        JOIN organizations o ON o.id = s.org_id
        WHERE s.token_hash = $1 AND s.expires_at > now()""", hash_key(token))
    return Session(row["org_id"], row["name"], row["csrf_token"]) if row else None


async def close_session(conn: asyncpg.Connection, token: str) -> None:
    await conn.execute("DELETE FROM dashboard_sessions WHERE token_hash = $1", hash_key(token))
