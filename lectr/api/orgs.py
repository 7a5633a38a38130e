"""Org management: create, list, rotate keys, configure Azure. Used by the CLI (and the API).

Every write fires the ``lectr_config`` NOTIFY (a trigger does it), so running servers pick
the change up within moments, with no restart.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import asyncpg

from lectr.snapshot.keys import hash_key, key_hint, new_org_key
from lectr.settings.urls import InvalidURL, check_base_url

_API_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.\-]{0,63}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class OrgError(ValueError):
    """A request about orgs that cannot be carried out; the message says why, in one line."""


class OrgNotFound(OrgError):
    """No org has that name or id."""


@dataclass(frozen=True, slots=True)
class OrgSummary:
    """An org as listed to an operator: never a key, only its hint."""

    id: int
    name: str
    key_hint: str | None
    azure_endpoint: str | None
    azure_api_version: str | None
    created_at: object


def validate_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > 200:
        raise OrgError("org name must be 1 to 200 characters")
    if _CONTROL.search(name):
        raise OrgError("org name must not contain control characters")
    return name


def validate_endpoint(endpoint: str) -> str:
    """The Azure OpenAI endpoint as stored: https (http only to loopback, for tests), a valid
    host, no spaces, user info, query or fragment. The CLI and the API both come through here."""
    try:
        return check_base_url(endpoint, what="endpoint", https_only=True)
    except InvalidURL as exc:
        raise OrgError(str(exc)) from None


def validate_api_version(version: str) -> str:
    if not _API_VERSION.match(version.strip()):
        raise OrgError(f"api version must look like 2024-10-21 or 2025-04-01-preview, got {version!r}")
    return version.strip()


async def create_org(conn: asyncpg.Connection, name: str) -> tuple[int, str]:
    """Create an org and its first key; return (org id, key). The key is not stored."""
    name = validate_name(name)
    key = new_org_key()
    async with conn.transaction():
        try:
            org_id = await conn.fetchval("INSERT INTO organizations (name) VALUES ($1) RETURNING id", name)
        except asyncpg.UniqueViolationError:
            raise OrgError(f"an org named {name!r} already exists") from None
        await conn.execute("INSERT INTO org_keys (org_id, key_hash, key_hint) VALUES ($1, $2, $3)",
                           org_id, hash_key(key), key_hint(key))
    return org_id, key


async def find_org(conn: asyncpg.Connection, ref: str) -> int:
    """The id of the org named ``ref`` (or with id ``ref``); OrgError when there is none."""
    org_id = await conn.fetchval("SELECT id FROM organizations WHERE name = $1", ref)
    if org_id is None and re.fullmatch(r"[0-9]{1,18}", ref):  # within bigint; a longer number is no id
        org_id = await conn.fetchval("SELECT id FROM organizations WHERE id = $1", int(ref))
    if org_id is None:
        numbered = " or numbered" if ref.isascii() and ref.isdigit() else ""
        raise OrgNotFound(f"no org named{numbered} {ref!r}")
    return org_id


async def rotate_key(conn: asyncpg.Connection, ref: str) -> tuple[str, str]:
    """Revoke the keys of the org named (or numbered) ``ref`` and issue a new one; return
    (the org's name, the new key)."""
    org_id = await find_org(conn, ref)
    key = await rotate_key_for(conn, org_id)
    return await org_name(conn, org_id), key


async def org_name(conn: asyncpg.Connection, org_id: int) -> str:
    """The name of the org with id ``org_id``; OrgNotFound when there is none."""
    name = await conn.fetchval("SELECT name FROM organizations WHERE id = $1", org_id)
    if name is None:
        raise OrgNotFound(f"no org with id {org_id}")
    return name


async def rotate_key_for(conn: asyncpg.Connection, org_id: int) -> str:
    """Revoke the org's keys and issue a new one; return it."""
    key = new_org_key()
    async with conn.transaction():
        await _require(conn, org_id)
        await conn.execute("UPDATE org_keys SET revoked_at = now() WHERE org_id = $1 AND revoked_at IS NULL",
                           org_id)
        await conn.execute("INSERT INTO org_keys (org_id, key_hash, key_hint) VALUES ($1, $2, $3)",
                           org_id, hash_key(key), key_hint(key))
    return key


async def set_azure(conn: asyncpg.Connection, ref: str, endpoint: str, api_version: str) -> str:
    """Set the Azure OpenAI endpoint of the org named (or numbered) ``ref``; return the org's name."""
    endpoint = validate_endpoint(endpoint)
    api_version = validate_api_version(api_version)
    org_id = await find_org(conn, ref)
    await set_azure_for(conn, org_id, endpoint, api_version)
    return await org_name(conn, org_id)


async def set_azure_for(conn: asyncpg.Connection, org_id: int, endpoint: str, api_version: str) -> None:
    """Set (or replace) the org's Azure OpenAI endpoint and API version."""
    endpoint = validate_endpoint(endpoint)
    api_version = validate_api_version(api_version)
    await _require(conn, org_id)
    await conn.execute("""
        INSERT INTO azure_configs (org_id, endpoint, api_version) VALUES ($1, $2, $3)
        ON CONFLICT (org_id) DO UPDATE
            SET endpoint = EXCLUDED.endpoint, api_version = EXCLUDED.api_version, updated_at = now()
        """, org_id, endpoint, api_version)


async def _require(conn: asyncpg.Connection, org_id: int) -> None:
    if not await conn.fetchval("SELECT 1 FROM organizations WHERE id = $1", org_id):
        raise OrgNotFound(f"no org with id {org_id}")


async def rename_org(conn: asyncpg.Connection, org_id: int, name: str) -> None:
    name = validate_name(name)
    await _require(conn, org_id)
    try:
        await conn.execute("UPDATE organizations SET name = $2, updated_at = now() WHERE id = $1", org_id, name)
    except asyncpg.UniqueViolationError:
        raise OrgError(f"an org named {name!r} already exists") from None


async def delete_org(conn: asyncpg.Connection, org_id: int) -> None:
    """Delete the org, its keys, settings and recorded requests."""
    async with conn.transaction():
        await _require(conn, org_id)
        await conn.execute("DELETE FROM request_logs WHERE org_id = $1", org_id)
        await conn.execute("DELETE FROM organizations WHERE id = $1", org_id)


async def list_orgs(conn: asyncpg.Connection) -> list[OrgSummary]:
    rows = await conn.fetch("""
        SELECT o.id, o.name, o.created_at, k.key_hint, a.endpoint, a.api_version
        FROM organizations o
        LEFT JOIN LATERAL (
            SELECT key_hint FROM org_keys
            WHERE org_id = o.id AND revoked_at IS NULL ORDER BY created_at DESC LIMIT 1
        ) k ON true
        LEFT JOIN azure_configs a ON a.org_id = o.id
        ORDER BY o.id""")
    return [OrgSummary(r["id"], r["name"], r["key_hint"], r["endpoint"], r["api_version"], r["created_at"])
            for r in rows]


# -- per-org latency threshold (the anomaly job's latency_threshold) -------------------------

P95_THRESHOLD_MAX_MS = 3_600_000  # an hour: anything above is a typo, not a latency target


def parse_p95_threshold(value: object) -> int | None:
    """A threshold in ms from a CLI or API value: a positive integer, or ``0``/``none``/``None``
    (clears it). Raises OrgError naming what is wrong."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "off", "0")):
        return None
    if isinstance(value, bool):
        raise OrgError("p95 threshold must be a whole number of milliseconds, or 0/none to clear it")
    if isinstance(value, str) and re.fullmatch(r"\s*[0-9]{1,10}\s*", value):
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int):
        raise OrgError("p95 threshold must be a whole number of milliseconds, or 0/none to clear it")
    if value == 0:
        return None
    if not 0 < value <= P95_THRESHOLD_MAX_MS:
        raise OrgError(f"p95 threshold must be from 1 to {P95_THRESHOLD_MAX_MS} ms (0 or none clears it)")
    return value


async def set_p95_threshold(conn: asyncpg.Connection, org_id: int, threshold_ms: object) -> int | None:
    """Set (or, with 0/None, clear) the org's p95 latency threshold in ms; return the stored value.

    The anomaly job opens a ``latency_threshold`` anomaly when an hour's p95 crosses it. Raises
    OrgError for a bad value, OrgNotFound for an unknown org. For the CLI, the API and the
    dashboard's settings page alike.
    """
    value = parse_p95_threshold(threshold_ms)
    await _require(conn, org_id)
    await conn.execute("UPDATE organizations SET p95_threshold_ms = $2, updated_at = now() WHERE id = $1",
                       org_id, value)
    return value


async def get_p95_threshold(conn: asyncpg.Connection, org_id: int) -> int | None:
    """The org's p95 latency threshold in ms, or None when it has none; OrgNotFound when no org."""
    await _require(conn, org_id)
    return await conn.fetchval("SELECT p95_threshold_ms FROM organizations WHERE id = $1", org_id)
