"""The dashboard's reads: a summary row, and the two raw reads on indexes (requests, failures)."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from datetime import datetime, timezone

import asyncpg
import orjson

from lectr.analysis.summary import DEFAULT_PERIOD, ERROR_CONDITION, PERIODS
from lectr.api.errors import bad_parameter
from lectr.providers.registry import PROVIDER_NAMES

REQUEST_FIELDS = ("id", "created_at", "provider", "model", "model_used", "feature", "task", "status_code",
                  "error_type", "error_origin", "stream", "latency_ms", "ttfb_ms", "overhead_us", "prompt_tokens",
                  "completion_tokens", "cached_tokens", "reasoning_tokens", "token_source", "cost_usd",
                  "cost_partial", "provider_unknown", "bytes_in", "bytes_out", "usage_note")
_SELECT = f"SELECT {', '.join(REQUEST_FIELDS)} FROM request_logs"
_ERROR = ERROR_CONDITION
PERIOD_LENGTH = {p.name: p.length for p in PERIODS}
BIGINT_MAX = 2**63 - 1  # ids are Postgres bigints
_ASCII_DIGITS = re.compile(r"[0-9]{1,19}")  # str.isdigit() also takes "²" and "٣", which int() may refuse
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
TEXT_MAX = 1000  # longest free-text filter or field the API accepts


def parse_int(raw: object, name: str, *, low: int = 1, high: int = BIGINT_MAX) -> int:
    """An integer given as ASCII digits within ``low..high``; a 400 naming ``name`` otherwise."""
    if not isinstance(raw, str) or not _ASCII_DIGITS.fullmatch(raw) or not low <= int(raw) <= high:
        raise bad_parameter(name, f"must be an integer from {low} to {high}")
    return int(raw)


def check_text(value: str, name: str, *, most: int = TEXT_MAX, control: bool = False) -> str:
    """``value`` if PostgreSQL can store it and it is at most ``most`` characters; else a 400.

    NUL is never storable in ``text``; other control characters only where ``control`` allows.
    """
    if len(value) > most:
        raise bad_parameter(name, f"must be at most {most} characters")
    if "\x00" in value or (not control and _CONTROL.search(value)):
        raise bad_parameter(name, "must not contain control characters")
    return value


@dataclass(frozen=True, slots=True)
class RequestFilters:
    """Filters of the requests table; every field optional."""

    provider: str | None = None
    model: str | None = None
    feature: str | None = None
    task: str | None = None
    status: str | None = None  # "200", "4xx", "5xx" or "error"
    since: datetime | None = None
    until: datetime | None = None

    @classmethod
    def from_query(cls, query) -> "RequestFilters":
        """Parse and check query parameters; a bad one is a 400 that names it."""
        provider = query.get("provider") or None
        if provider is not None and provider not in PROVIDER_NAMES:
            raise bad_parameter("provider", f"must be one of {', '.join(PROVIDER_NAMES)}")
        status = query.get("status") or None
        if status is not None and not (status in ("error", "2xx", "3xx", "4xx", "5xx")
                                       or (_ASCII_DIGITS.fullmatch(status) and 100 <= int(status) <= 599)):
            raise bad_parameter("status", "must be a status code, 2xx/3xx/4xx/5xx, or error")
        text = {name: check_text(query[name], name, control=True) if query.get(name) else None
                for name in ("model", "feature", "task")}  # stored as sent: match them as sent
        return cls(provider, text["model"], text["feature"], text["task"],
                   status, parse_time(query, "since"), parse_time(query, "until"))

    def as_dict(self) -> dict[str, str | None]:
        return {k: (v.isoformat() if isinstance(v, datetime) else v)
                for k, v in ((f, getattr(self, f)) for f in self.__slots__)}


def parse_time(query, name: str) -> datetime | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    try:
        if not isinstance(raw, str):
            raise TypeError
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        value = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        value.astimezone(timezone.utc)  # raises for times that have no UTC equivalent (year 1, ahead of UTC)
    except (ValueError, TypeError, OverflowError):
        raise bad_parameter(name, "must be an ISO 8601 time, e.g. 2026-11-22T10:00:00Z") from None
    return value


def parse_period(query) -> str:
    period = query.get("period") or DEFAULT_PERIOD.name
    if period not in PERIOD_LENGTH:
        raise bad_parameter("period", f"must be one of {', '.join(PERIOD_LENGTH)}")
    return period


def parse_limit(query, default: int = 50, most: int = 200) -> int:
    raw = query.get("limit")
    if raw is None:
        return default
    return parse_int(raw, "limit", low=1, high=most)


def encode_cursor(created_at: datetime, row_id: int) -> str:
    return base64.urlsafe_b64encode(f"{created_at.isoformat()}|{row_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, row_id = text.split("|")
        if not _ASCII_DIGITS.fullmatch(row_id) or int(row_id) > BIGINT_MAX:
            raise ValueError(row_id)
        value = datetime.fromisoformat(at)
        if value.tzinfo is None:
            raise ValueError(at)
        return value, int(row_id)
    except (ValueError, UnicodeDecodeError):
        raise bad_parameter("cursor", "is not a cursor this API returned") from None


async def fetch_summary(conn: asyncpg.Connection, org_id: int, period: str) -> tuple[datetime | None, dict | None]:
    row = await conn.fetchrow("SELECT computed_at, data::text AS data FROM dashboard_summaries "
                              "WHERE org_id = $1 AND period = $2", org_id, period)
    if row is None:
        return None, None
    return row["computed_at"], orjson.loads(row["data"])


async def list_requests(conn: asyncpg.Connection, org_id: int, filters: RequestFilters, *,
                        cursor: str | None, limit: int) -> tuple[list[dict], str | None]:
    """One page of the org's requests, newest first, and the cursor of the next page."""
    where, args = ["org_id = $1"], [org_id]

    def add(clause: str, value) -> None:
        args.append(value)
        where.append(clause.format(f"${len(args)}"))

    for column in ("provider", "model", "feature", "task"):
        value = getattr(filters, column)
        if value is not None:
            add(f"{column} = {{}}", value)
    if filters.status == "error":
        where.append(_ERROR)
    elif filters.status and filters.status.endswith("xx"):
        add("status_code / 100 = {}", int(filters.status[0]))
    elif filters.status:
        add("status_code = {}", int(filters.status))
    if filters.since:
        add("created_at >= {}", filters.since)
    if filters.until:
        add("created_at < {}", filters.until)
    if cursor:
        at, row_id = decode_cursor(cursor)
        args.extend([at, row_id])
        where.append(f"(created_at, id) < (${len(args) - 1}, ${len(args)})")
    args.append(limit + 1)
    rows = await conn.fetch(f"{_SELECT} WHERE {' AND '.join(where)} "
                            f"ORDER BY created_at DESC, id DESC LIMIT ${len(args)}", *args)
    page = [dict(r) for r in rows[:limit]]
    next_cursor = encode_cursor(rows[limit - 1]["created_at"], rows[limit - 1]["id"]) if len(rows) > limit else None
    return page, next_cursor


async def list_failures(conn: asyncpg.Connection, org_id: int, period: str, limit: int) -> list[dict]:
    since = datetime.now(timezone.utc) - PERIOD_LENGTH[period]
    rows = await conn.fetch(f"{_SELECT} WHERE org_id = $1 AND {_ERROR} AND created_at >= $2 "
                            "ORDER BY created_at DESC, id DESC LIMIT $3", org_id, since, limit)
    return [dict(r) for r in rows]
