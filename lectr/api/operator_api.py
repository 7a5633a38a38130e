"""Operator endpoints (``Authorization: Bearer $LECTR_ADMIN_SECRET``): orgs, keys, Azure, prices.

They call the same functions as the CLI, so both change the same things the same way.
"""

from __future__ import annotations

from datetime import datetime

import orjson
from aiohttp import web

from lectr.api import orgs
from lectr.api.auth import require_operator
from lectr.api.errors import ApiError, bad_parameter
from lectr.api.org_api import json
from lectr.api.queries import check_text, parse_int, parse_limit, parse_time
from lectr.api.state import STATE
from lectr.pricing import prices as pricing


async def _body(request: web.Request) -> dict:
    """The JSON object the operator sent, read only after the caller is known to be the operator,
    so an unauthenticated caller learns nothing about what a valid body looks like."""
    require_operator(request)
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raise ApiError(400, "invalid_json", "The request body must be a JSON object.") from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", "The request body must be a JSON object.")
    return body


def _org_id(request: web.Request) -> int:
    require_operator(request)
    return parse_int(request.match_info["org_id"], "org_id")


def _string(body: dict, name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value.strip():
        raise bad_parameter(name, "is required and must be a non-empty string")
    return check_text(value, name)


def _optional_string(body: dict, name: str) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise bad_parameter(name, "must be a string or null")
    return check_text(value, name, control=True)


async def _run(request: web.Request, action):
    require_operator(request)
    try:
        async with request.app[STATE].pool.acquire() as conn:
            return await action(conn)
    except orgs.OrgNotFound as exc:
        raise ApiError(404, "org_not_found", str(exc)) from None
    except (orgs.OrgError, pricing.PricingError) as exc:
        raise ApiError(400, "invalid_request", str(exc)) from None


def _org_json(o: orgs.OrgSummary) -> dict:
    return {"id": o.id, "name": o.name, "key_hint": o.key_hint, "created_at": o.created_at,
            "azure": {"endpoint": o.azure_endpoint, "api_version": o.azure_api_version} if o.azure_endpoint else None}


async def list_orgs(request: web.Request) -> web.Response:
    rows = await _run(request, orgs.list_orgs)
    return json({"orgs": [_org_json(o) for o in rows]})


async def create_org(request: web.Request) -> web.Response:
    body = await _body(request)
    name = _string(body, "name")
    org_id, key = await _run(request, lambda conn: orgs.create_org(conn, name))
    return json({"id": org_id, "name": body["name"].strip(), "key": key}, status=201)


async def rename_org(request: web.Request) -> web.Response:
    org_id = _org_id(request)
    body = await _body(request)
    name = _string(body, "name")
    await _run(request, lambda conn: orgs.rename_org(conn, org_id, name))
    return json({"id": org_id, "name": body["name"].strip()})


async def delete_org(request: web.Request) -> web.Response:
    org_id = _org_id(request)
    await _run(request, lambda conn: orgs.delete_org(conn, org_id))
    return web.Response(status=204)


async def rotate_key(request: web.Request) -> web.Response:
    org_id = _org_id(request)
    key = await _run(request, lambda conn: orgs.rotate_key_for(conn, org_id))
    return json({"id": org_id, "key": key}, status=201)


async def set_azure(request: web.Request) -> web.Response:
    org_id = _org_id(request)
    body = await _body(request)
    endpoint, version = _string(body, "endpoint"), _string(body, "api_version")
    await _run(request, lambda conn: orgs.set_azure_for(conn, org_id, endpoint, version))
    return json({"id": org_id, "azure": {"endpoint": endpoint.strip().rstrip("/"), "api_version": version.strip()}})


async def list_prices(request: web.Request) -> web.Response:
    require_operator(request)
    provider, model = request.query.get("provider") or None, request.query.get("model") or None
    if model is not None:
        check_text(model, "model")
    limit = parse_limit(request.query, default=500, most=5000)
    rows = await _run(request, lambda conn: pricing.list_prices(conn, provider=provider, model=model, limit=limit))
    return json({"prices": rows})


async def add_price(request: web.Request) -> web.Response:
    body = await _body(request)
    effective_from: datetime | None = parse_time(body, "effective_from")
    provider, model, note = _string(body, "provider"), _string(body, "model"), _optional_string(body, "note")
    row_id = await _run(request, lambda conn: pricing.add_operator_price(
        conn, provider=provider, model=model,
        input_per_mtok=body.get("input_usd_per_mtok"), output_per_mtok=body.get("output_usd_per_mtok"),
        cached_input_per_mtok=body.get("cached_input_usd_per_mtok"),
        cache_write_per_mtok=body.get("cache_write_usd_per_mtok"),
        reasoning_per_mtok=body.get("reasoning_usd_per_mtok"), tiers=body.get("tiers"),
        effective_from=effective_from, note=note))
    return json({"id": row_id}, status=201)
