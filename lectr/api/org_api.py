"""Org-scoped endpoints: what one org's traffic looks like. An org only ever sees its own rows."""

from __future__ import annotations

from decimal import Decimal

import orjson
from aiohttp import web

from lectr.api.auth import Caller, org_caller
from lectr.api.errors import bad_parameter
from lectr.api.queries import (RequestFilters, fetch_summary, list_failures, list_requests, parse_limit,
                               parse_period)
from lectr.api.state import STATE
from lectr.providers.registry import PROVIDER_NAMES


def _default(value):
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError


def json(data, status: int = 200) -> web.Response:
    """A JSON response; datetimes as ISO 8601, Decimals as numbers."""
    return web.Response(body=orjson.dumps(data, default=_default), status=status, content_type="application/json")


async def _summary_for(request: web.Request, caller: Caller | None = None) -> tuple[str, object, dict | None]:
    caller = caller or await org_caller(request)
    period = parse_period(request.query)
    async with request.app[STATE].pool.acquire() as conn:
        computed_at, data = await fetch_summary(conn, caller.org_id, period)
    return period, computed_at, data


async def summary(request: web.Request) -> web.Response:
    period, computed_at, data = await _summary_for(request)
    return json({"period": period, "computed_at": computed_at, "summary": data})


async def models(request: web.Request) -> web.Response:
    caller = await org_caller(request)  # who asks first: a stranger learns nothing of the parameters
    provider = request.query.get("provider") or None
    if provider is not None and provider not in PROVIDER_NAMES:
        raise bad_parameter("provider", f"must be one of {', '.join(PROVIDER_NAMES)}")
    period, computed_at, data = await _summary_for(request, caller)
    rows = (data or {}).get("models", [])
    if provider:
        rows = [r for r in rows if r["provider"] == provider]
    return json({"period": period, "computed_at": computed_at, "provider": provider, "models": rows})


async def providers(request: web.Request) -> web.Response:
    period, computed_at, data = await _summary_for(request)
    return json({"period": period, "computed_at": computed_at, "providers": (data or {}).get("providers", [])})


async def features(request: web.Request) -> web.Response:
    period, computed_at, data = await _summary_for(request)
    return json({"period": period, "computed_at": computed_at, "features": (data or {}).get("features", [])})


async def requests(request: web.Request) -> web.Response:
    caller = await org_caller(request)
    filters = RequestFilters.from_query(request.query)
    limit = parse_limit(request.query)
    async with request.app[STATE].pool.acquire() as conn:
        rows, next_cursor = await list_requests(conn, caller.org_id, filters, cursor=request.query.get("cursor"),
                                                limit=limit)
    return json({"requests": rows, "next_cursor": next_cursor})


async def failures(request: web.Request) -> web.Response:
    caller = await org_caller(request)
    period = parse_period(request.query)
    limit = parse_limit(request.query)
    async with request.app[STATE].pool.acquire() as conn:
        rows = await list_failures(conn, caller.org_id, period, limit)
    return json({"period": period, "failures": rows})
