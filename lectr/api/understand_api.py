"""Org endpoints for what Lectr understood (anomalies, recommendations), and the operator's p95
threshold. An org only ever reads or changes its own rows: every query is keyed by its id, and
another org's id answers 404 as if it did not exist."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime

import orjson
from aiohttp import web

from lectr.api import orgs
from lectr.api.auth import org_caller, require_operator
from lectr.api.errors import ApiError, bad_parameter
from lectr.api.org_api import json
from lectr.api.queries import check_text, decode_cursor, encode_cursor, parse_int, parse_limit, parse_time
from lectr.api.state import STATE

ANOMALY_STATES = ("open", "resolved", "all")
ANOMALY_METRICS = ("cost", "requests", "error_rate", "p95_latency", "model_drift", "latency_threshold")
RECOMMENDATION_STATES = ("open", "dismissed", "applied", "all")
_ANOMALY_COLUMNS = ("id, feature, metric, direction, window_start, window_end, current_value, baseline_mean, "
                    "baseline_std, deviation_sigma, detail::text AS detail, opened_at, resolved_at, acknowledged_at")
_RECOMMENDATION_COLUMNS = ("id, feature, provider, current_model, suggested_model, aggressiveness, confidence, "
                           "reason, signals::text AS signals, monthly_saving_usd, state, created_at, updated_at")


def _choice(query, name: str, choices: tuple[str, ...], default: str) -> str:
    value = query.get(name) or default
    if value not in choices:
        raise bad_parameter(name, f"must be one of {', '.join(choices)}")
    return value


def anomaly_json(row) -> dict:
    out = dict(row)
    out["detail"] = orjson.loads(row["detail"])
    out["state"] = "open" if row["resolved_at"] is None else "resolved"
    return out


def recommendation_json(row) -> dict:
    out = dict(row)
    out["signals"] = orjson.loads(row["signals"])
    return out


async def list_anomalies(conn, org_id: int, *, state: str = "all", feature: str | None = None,
                         metric: str | None = None, since: datetime | None = None, until: datetime | None = None,
                         cursor: str | None = None, limit: int = 50) -> tuple[list[dict], str | None]:
    """One page of the org's anomalies, latest window first, and the next page's cursor.

    ``since``/``until`` keep anomalies whose window overlaps ``[since, until)``. For the API and
    the dashboard's feed alike.
    """
    where, args = ["org_id = $1"], [org_id]

    def add(clause: str, value) -> None:
        args.append(value)
        where.append(clause.format(f"${len(args)}"))

    if state == "open":
        where.append("resolved_at IS NULL")
    elif state == "resolved":
        where.append("resolved_at IS NOT NULL")
    if feature is not None:
        add("feature = {}", feature)
    if metric is not None:
        add("metric = {}", metric)
    if since is not None:
        add("window_end > {}", since)
    if until is not None:
        add("window_start < {}", until)
    if cursor:
        at, row_id = decode_cursor(cursor)
        args.extend([at, row_id])
        where.append(f"(window_start, id) < (${len(args) - 1}, ${len(args)})")
    args.append(limit + 1)
    rows = await conn.fetch(f"SELECT {_ANOMALY_COLUMNS} FROM anomalies WHERE {' AND '.join(where)} "
                            f"ORDER BY window_start DESC, id DESC LIMIT ${len(args)}", *args)
    page = [anomaly_json(r) for r in rows[:limit]]
    more = len(rows) > limit
    return page, encode_cursor(rows[limit - 1]["window_start"], rows[limit - 1]["id"]) if more else None


async def acknowledge_anomaly(conn, org_id: int, anomaly_id: int) -> dict | None:
    """Mark the org's anomaly acknowledged (the first time counts); None when it has no such anomaly."""
    row = await conn.fetchrow(f"""
        UPDATE anomalies SET acknowledged_at = coalesce(acknowledged_at, now())
        WHERE id = $1 AND org_id = $2 RETURNING {_ANOMALY_COLUMNS}""", anomaly_id, org_id)
    return None if row is None else anomaly_json(row)


async def list_recommendations(conn, org_id: int, state: str = "open") -> list[dict]:
    """The org's recommendations in ``state`` (or all), largest saving first."""
    rows = await conn.fetch(f"""
        SELECT {_RECOMMENDATION_COLUMNS} FROM recommendations
        WHERE org_id = $1 AND ($2::text = 'all' OR state = $2)
        ORDER BY monthly_saving_usd DESC NULLS LAST, feature, current_model""", org_id, state)
    return [recommendation_json(r) for r in rows]


async def dismiss_recommendation(conn, org_id: int, recommendation_id: int) -> dict | None:
    """Dismiss the org's recommendation (it stays dismissed until its signals change materially);
    None when the org has no such recommendation. An applied one is refused with ApiError 409."""
    row = await conn.fetchrow(f"""
        UPDATE recommendations SET state = 'dismissed', updated_at = now()
        WHERE id = $1 AND org_id = $2 AND state <> 'applied' RETURNING {_RECOMMENDATION_COLUMNS}""",
                              recommendation_id, org_id)
    if row is None and await conn.fetchval("SELECT 1 FROM recommendations WHERE id = $1 AND org_id = $2",
                                           recommendation_id, org_id):
        raise ApiError(409, "already_applied", "This recommendation has been applied; it cannot be dismissed.")
    return None if row is None else recommendation_json(row)


# -- handlers ------------------------------------------------------------------------------

async def anomalies(request: web.Request) -> web.Response:
    caller = await org_caller(request)
    q = request.query
    state = _choice(q, "state", ANOMALY_STATES, "all")
    metric = _choice(q, "metric", ANOMALY_METRICS, "") if q.get("metric") else None
    feature = check_text(q["feature"], "feature", control=True) if q.get("feature") else None
    since, until, limit = parse_time(q, "since"), parse_time(q, "until"), parse_limit(q)
    async with request.app[STATE].pool.acquire() as conn:
        rows, next_cursor = await list_anomalies(conn, caller.org_id, state=state, feature=feature, metric=metric,
                                                 since=since, until=until, cursor=q.get("cursor"), limit=limit)
    return json({"anomalies": rows, "next_cursor": next_cursor})


async def _change_own(request: web.Request, noun: str, change: Callable[..., Awaitable[dict | None]]) -> web.Response:
    """``change(conn, org_id, id)`` on the caller's ``noun`` named by the path's ``{noun}_id``; its
    row as JSON, or 404 ``{noun}_not_found`` when the org has no such row (another org's id alike)."""
    caller = await org_caller(request)
    row_id = parse_int(request.match_info[f"{noun}_id"], f"{noun}_id")
    async with request.app[STATE].pool.acquire() as conn:
        row = await change(conn, caller.org_id, row_id)
    if row is None:
        raise ApiError(404, f"{noun}_not_found", f"no {noun} with id {row_id}")
    return json(row)


async def acknowledge(request: web.Request) -> web.Response:
    return await _change_own(request, "anomaly", acknowledge_anomaly)


async def recommendations(request: web.Request) -> web.Response:
    caller = await org_caller(request)
    state = _choice(request.query, "state", RECOMMENDATION_STATES, "open")
    async with request.app[STATE].pool.acquire() as conn:
        rows = await list_recommendations(conn, caller.org_id, state)
    return json({"recommendations": rows})


async def dismiss(request: web.Request) -> web.Response:
    return await _change_own(request, "recommendation", dismiss_recommendation)


async def set_threshold(request: web.Request) -> web.Response:
    """Operator: ``PUT /api/v1/orgs/{org_id}/p95-threshold`` with ``{"p95_threshold_ms": N | 0 | null}``."""
    require_operator(request)
    org_id = parse_int(request.match_info["org_id"], "org_id")
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict) or "p95_threshold_ms" not in body:
        raise bad_parameter("p95_threshold_ms", "send a JSON object with p95_threshold_ms: milliseconds, 0 or null")
    if isinstance(body["p95_threshold_ms"], str):
        raise bad_parameter("p95_threshold_ms", "must be a number of milliseconds, 0 or null")
    try:
        async with request.app[STATE].pool.acquire() as conn:
            value = await orgs.set_p95_threshold(conn, org_id, body["p95_threshold_ms"])
    except orgs.OrgNotFound as exc:
        raise ApiError(404, "org_not_found", str(exc)) from None
    except orgs.OrgError as exc:
        raise bad_parameter("p95_threshold_ms", str(exc)) from None
    return json({"id": org_id, "p95_threshold_ms": value})
