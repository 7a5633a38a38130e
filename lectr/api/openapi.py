"""The management API's endpoints, declared once: the app registers them, the document describes them.

Because routes and ``/api/openapi.json`` come from the same table, they cannot disagree; a
test also checks every live route against the document and responses against its schemas.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Awaitable, Callable

from aiohttp import web

from lectr import __version__
from lectr.api import alerts_api as alerts
from lectr.api import operator_api as op
from lectr.api import org_api as org
from lectr.api import understand_api as understand
from lectr.providers.registry import PROVIDER_NAMES

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PERIODS = ["last_24h", "last_7d", "last_30d"]


@dataclass(frozen=True)
class Param:
    name: str
    where: str  # "query" or "path"
    schema: dict
    description: str
    required: bool = False


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    handler: Handler
    summary: str
    security: str  # "org" or "operator"
    response: dict
    status: int = 200
    params: tuple[Param, ...] = ()
    body: dict | None = None
    tags: list[str] = field(default_factory=list)


def _obj(required: list[str] | None = None, **props) -> dict:
    schema = {"type": "object", "properties": props}
    if required:
        schema["required"] = required
    return schema


_NUM = {"type": "number"}
_NUM_N = {"type": ["number", "null"]}
_INT = {"type": "integer"}
_INT_N = {"type": ["integer", "null"]}
_STR = {"type": "string"}
_STR_N = {"type": ["string", "null"]}
_BOOL = {"type": "boolean"}
_TIME = {"type": "string", "format": "date-time"}
_TIME_N = {"type": ["string", "null"], "format": "date-time"}

ERROR = _obj(["error"], error=_obj(["message", "type", "code"], message=_STR, type=_STR, param=_STR_N, code=_STR))
MODEL_ROW = _obj(["model", "provider", "requests", "cost_usd"], model=_STR_N, provider=_STR, requests=_INT,
                 errors=_INT, cost_usd=_NUM, latency_avg_ms=_NUM_N, latency_p95_ms=_NUM_N, tokens=_INT,
                 unpriced_requests=_INT)
PROVIDER_ROW = _obj(["provider", "requests", "error_rate", "cost_usd"], provider=_STR, requests=_INT, errors=_INT,
                    error_rate=_NUM, cost_usd=_NUM, previous_cost_usd=_NUM, latency_p95_ms=_NUM_N,
                    unpriced_requests=_INT, previous_unpriced_requests=_INT, provider_errors=_INT,
                    provider_error_rate=_NUM, connection_errors=_INT, lectr_errors=_INT, client_errors=_INT)
FEATURE_ROW = _obj(["feature", "requests", "cost_usd"], feature=_STR, requests=_INT, errors=_INT, error_rate=_NUM,
                   cost_usd=_NUM, latency_avg_ms=_NUM_N, latency_p95_ms=_NUM_N, tokens=_INT, unpriced_requests=_INT)
TOTALS = _obj(["requests", "errors", "error_rate", "cost_usd"], requests=_INT, errors=_INT, error_rate=_NUM,
              cost_usd=_NUM, prompt_tokens=_INT, completion_tokens=_INT, total_tokens=_INT, latency_avg_ms=_NUM_N,
              latency_p50_ms=_NUM_N, latency_p95_ms=_NUM_N, latency_p99_ms=_NUM_N, ttfb_avg_ms=_NUM_N,
              ttfb_p95_ms=_NUM_N, measured_requests=_INT, partial_cost_requests=_INT, unpriced_requests=_INT,
              unread_requests=_INT)
SUMMARY = _obj(["period", "totals", "previous", "series", "models", "providers", "features", "dropped_events"],
               period=_STR, computed_at=_TIME, totals=TOTALS, previous=TOTALS,
               window=_obj(start=_TIME, end=_TIME), previous_window=_obj(start=_TIME, end=_TIME),
               series=_obj(["bucket_seconds", "points"], bucket_seconds=_INT, points={"type": "array", "items": _obj(
                   ["start", "requests"], start=_TIME, requests=_INT, errors=_INT, cost_usd=_NUM,
                   latency_p95_ms=_NUM_N)}),
               models={"type": "array", "items": MODEL_ROW}, providers={"type": "array", "items": PROVIDER_ROW},
               features={"type": "array", "items": FEATURE_ROW}, dropped_events=_INT)
REQUEST_ROW = _obj(
    ["id", "created_at", "provider", "status_code", "token_source"], id=_INT, created_at=_TIME, provider=_STR,
    model=_STR_N, model_used=_STR_N, feature=_STR, task=_STR_N, status_code=_INT, error_type=_STR_N,
    error_origin=_STR_N, stream=_BOOL, latency_ms=_NUM, ttfb_ms=_NUM_N, overhead_us=_INT, prompt_tokens=_INT_N,
    completion_tokens=_INT_N, cached_tokens=_INT_N, reasoning_tokens=_INT_N,
    token_source={"type": "string", "enum": ["provider", "measured", "none"]}, cost_usd=_NUM_N, cost_partial=_BOOL,
    provider_unknown=_BOOL, bytes_in=_INT, bytes_out=_INT,
    usage_note={"type": ["string", "null"], "enum": ["undecodable", "truncated", "not_counted", None]})
ORG = _obj(["id", "name"], id=_INT, name=_STR, key_hint=_STR_N, created_at=_TIME,
           azure={"type": ["object", "null"], "properties": {"endpoint": _STR, "api_version": _STR}})
# A long-context tier: above ``start`` input tokens these prices apply to the whole request.
PRICE_TIER = _obj(["start"], start=_INT, input_usd_per_mtok=_NUM, output_usd_per_mtok=_NUM,
                  cached_input_usd_per_mtok=_NUM, cache_write_usd_per_mtok=_NUM, reasoning_usd_per_mtok=_NUM)
PRICE = _obj(["id", "provider", "model", "input_usd_per_mtok", "output_usd_per_mtok", "tiers", "source"], id=_INT,
             provider=_STR, model=_STR, input_usd_per_mtok=_NUM, output_usd_per_mtok=_NUM,
             cached_input_usd_per_mtok=_NUM_N, cache_write_usd_per_mtok=_NUM_N, reasoning_usd_per_mtok=_NUM_N,
             tiers={"type": "array", "items": PRICE_TIER}, effective_from=_TIME, source=_STR, note=_STR_N)

ANOMALY = _obj(["id", "metric", "direction", "window_start", "window_end", "current_value", "state"], id=_INT,
               feature=_STR_N, metric={"type": "string", "enum": list(understand.ANOMALY_METRICS)},
               direction={"type": "string", "enum": ["up", "down"]}, window_start=_TIME, window_end=_TIME,
               current_value=_NUM, baseline_mean=_NUM_N, baseline_std=_NUM_N, deviation_sigma=_NUM_N,
               detail={"type": "object"}, opened_at=_TIME, resolved_at=_TIME_N, acknowledged_at=_TIME_N,
               state={"type": "string", "enum": ["open", "resolved"]})
RECOMMENDATION = _obj(["id", "feature", "provider", "current_model", "suggested_model", "confidence", "state"],
                      id=_INT, feature=_STR, provider=_STR, current_model=_STR, suggested_model=_STR,
                      aggressiveness={"type": "string", "enum": ["aggressive", "moderate", "conservative"]},
                      confidence={"type": "string", "enum": ["high", "medium"]}, reason=_STR,
                      signals={"type": "object"}, monthly_saving_usd=_NUM_N,
                      state={"type": "string", "enum": ["open", "dismissed", "applied"]}, created_at=_TIME,
                      updated_at=_TIME)
_PERIOD = Param("period", "query", {"type": "string", "enum": PERIODS, "default": "last_24h"}, "Which period.")
_PROVIDER = Param("provider", "query", {"type": "string", "enum": list(PROVIDER_NAMES)}, "Only this provider.")
_LIMIT = Param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}, "Rows per page.")
_ORG_ID = Param("org_id", "path", {"type": "integer"}, "The org's id.", required=True)
_SUMMARY_HEAD = {"period": _STR, "computed_at": _TIME_N}
ALERT_SETTINGS = _obj(["email_recipients", "email_enabled", "webhook_url", "webhook_enabled"],
                      email_recipients={"type": "array", "items": _STR}, email_enabled=_BOOL, webhook_url=_STR_N,
                      webhook_enabled=_BOOL, email_configured=_BOOL)

ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("GET", "/api/v1/summary", org.summary, "The org's summary for a period, against the previous one",
             "org", _obj(["period", "summary"], **_SUMMARY_HEAD, summary={"oneOf": [SUMMARY, {"type": "null"}]}),
             params=(_PERIOD,)),
    Endpoint("GET", "/api/v1/models", org.models, "Requests, cost and latency per model", "org",
             _obj(["models"], **_SUMMARY_HEAD, provider=_STR_N, models={"type": "array", "items": MODEL_ROW}),
             params=(_PERIOD, _PROVIDER)),
    Endpoint("GET", "/api/v1/providers", org.providers, "Cost and health (error rate) per provider", "org",
             _obj(["providers"], **_SUMMARY_HEAD, providers={"type": "array", "items": PROVIDER_ROW}),
             params=(_PERIOD,)),
    Endpoint("GET", "/api/v1/features", org.features, "Requests, cost and latency per feature", "org",
             _obj(["features"], **_SUMMARY_HEAD, features={"type": "array", "items": FEATURE_ROW}),
             params=(_PERIOD,)),
    Endpoint("GET", "/api/v1/requests", org.requests, "The org's requests, newest first, a page at a time", "org",
             _obj(["requests", "next_cursor"], requests={"type": "array", "items": REQUEST_ROW}, next_cursor=_STR_N),
             params=(_PROVIDER, _LIMIT,
                     Param("cursor", "query", _STR, "next_cursor of the previous page."),
                     Param("model", "query", _STR, "Only this model (as requested)."),
                     Param("feature", "query", _STR, "Only this feature tag."),
                     Param("task", "query", _STR, "Only this task type."),
                     Param("status", "query", _STR, "A status code, 2xx/3xx/4xx/5xx, or error."),
                     Param("since", "query", _TIME, "From this time (inclusive)."),
                     Param("until", "query", _TIME, "Until this time (exclusive)."))),
    Endpoint("GET", "/api/v1/failures", org.failures, "Recent failed requests", "org",
             _obj(["failures"], period=_STR, failures={"type": "array", "items": REQUEST_ROW}),
             params=(_PERIOD, _LIMIT)),
    Endpoint("GET", "/api/v1/anomalies", understand.anomalies, "The org's anomalies, latest window first", "org",
             _obj(["anomalies", "next_cursor"], anomalies={"type": "array", "items": ANOMALY}, next_cursor=_STR_N),
             params=(Param("state", "query", {"type": "string", "enum": list(understand.ANOMALY_STATES),
                                              "default": "all"}, "Open, resolved, or all."),
                     Param("feature", "query", _STR, "Only this feature."),
                     Param("metric", "query", {"type": "string", "enum": list(understand.ANOMALY_METRICS)},
                           "Only this metric."),
                     Param("since", "query", _TIME, "Windows ending after this time."),
                     Param("until", "query", _TIME, "Windows starting before this time."),
                     _LIMIT, Param("cursor", "query", _STR, "next_cursor of the previous page."))),
    Endpoint("POST", "/api/v1/anomalies/{anomaly_id}/acknowledge", understand.acknowledge,
             "Acknowledge one of the org's anomalies", "org", ANOMALY,
             params=(Param("anomaly_id", "path", {"type": "integer"}, "The anomaly's id.", required=True),)),
    Endpoint("GET", "/api/v1/recommendations", understand.recommendations,
             "The org's model recommendations, largest saving first", "org",
             _obj(["recommendations"], recommendations={"type": "array", "items": RECOMMENDATION}),
             params=(Param("state", "query", {"type": "string", "enum": list(understand.RECOMMENDATION_STATES),
                                              "default": "open"}, "Which state, or all."),)),
    Endpoint("POST", "/api/v1/recommendations/{recommendation_id}/dismiss", understand.dismiss,
             "Dismiss a recommendation (until its signals change materially)", "org", RECOMMENDATION,
             params=(Param("recommendation_id", "path", {"type": "integer"}, "The recommendation's id.",
                           required=True),)),
    Endpoint("GET", "/api/v1/alert-settings", alerts.get_alert_settings, "Where the org's anomaly alerts go", "org",
             ALERT_SETTINGS),
    Endpoint("PUT", "/api/v1/alert-settings", alerts.put_alert_settings,
             "Set where the org's anomaly alerts go (fields left out keep their value)", "org", ALERT_SETTINGS,
             body=_obj(email_recipients={"type": "array", "items": _STR}, email_enabled=_BOOL, webhook_url=_STR_N,
                       webhook_enabled=_BOOL)),
    Endpoint("POST", "/api/v1/alert-settings/test", alerts.test_alert_settings,
             "Send a test alert to every configured channel now; one result per channel", "org",
             _obj(["results", "ok"], ok=_BOOL, results={"type": "array", "items": _obj(
                 ["channel", "target", "ok"], channel=_STR, target=_STR, ok=_BOOL, error=_STR_N)})),
    Endpoint("GET", "/api/v1/orgs", op.list_orgs, "List orgs", "operator",
             _obj(["orgs"], orgs={"type": "array", "items": ORG})),
    Endpoint("POST", "/api/v1/orgs", op.create_org, "Create an org; the response holds its key, shown once",
             "operator", _obj(["id", "name", "key"], id=_INT, name=_STR, key=_STR), status=201,
             body=_obj(["name"], name=_STR)),
    Endpoint("PATCH", "/api/v1/orgs/{org_id}", op.rename_org, "Rename an org", "operator",
             _obj(["id", "name"], id=_INT, name=_STR), params=(_ORG_ID,), body=_obj(["name"], name=_STR)),
    Endpoint("DELETE", "/api/v1/orgs/{org_id}", op.delete_org, "Delete an org and everything recorded for it",
             "operator", {}, status=204, params=(_ORG_ID,)),
    Endpoint("POST", "/api/v1/orgs/{org_id}/keys", op.rotate_key, "Rotate the org's key; the old one stops working",
             "operator", _obj(["id", "key"], id=_INT, key=_STR), status=201, params=(_ORG_ID,)),
    Endpoint("PUT", "/api/v1/orgs/{org_id}/azure", op.set_azure, "Set the org's Azure OpenAI endpoint", "operator",
             _obj(["id", "azure"], id=_INT, azure=_obj(endpoint=_STR, api_version=_STR)), params=(_ORG_ID,),
             body=_obj(["endpoint", "api_version"], endpoint=_STR, api_version=_STR)),
    Endpoint("PUT", "/api/v1/orgs/{org_id}/p95-threshold", understand.set_threshold,
             "Set the org's p95 latency threshold (ms; 0 or null clears it)", "operator",
             _obj(["id", "p95_threshold_ms"], id=_INT, p95_threshold_ms=_INT_N), params=(_ORG_ID,),
             body=_obj(["p95_threshold_ms"], p95_threshold_ms=_INT_N)),
    Endpoint("GET", "/api/v1/pricing", op.list_prices, "Price rows, newest version first", "operator",
             _obj(["prices"], prices={"type": "array", "items": PRICE}),
             params=(_PROVIDER, Param("model", "query", _STR, "Only this model."),
                     Param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 5000}, "Most rows."))),
    Endpoint("POST", "/api/v1/pricing", op.add_price, "Add a price version (an operator's row wins over seeded ones)",
             "operator", _obj(["id"], id=_INT), status=201,
             body=_obj(["provider", "model", "input_usd_per_mtok", "output_usd_per_mtok"], provider=_STR, model=_STR,
                       input_usd_per_mtok=_NUM, output_usd_per_mtok=_NUM, cached_input_usd_per_mtok=_NUM_N,
                       cache_write_usd_per_mtok=_NUM_N, reasoning_usd_per_mtok=_NUM_N,
                       tiers={"type": "array", "items": PRICE_TIER}, effective_from=_TIME, note=_STR_N)),
)


def _operation(ep: Endpoint) -> dict:
    responses: dict = {str(ep.status): {"description": "OK"} if not ep.response else {
        "description": "OK", "content": {"application/json": {"schema": ep.response}}}}
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    responses["400"] = {"description": "A parameter or the body is invalid", **error}
    responses["401"] = {"description": "Not authenticated", **error}
    if ep.security == "operator":
        responses["403"] = {"description": "The operator API is disabled (no LECTR_ADMIN_SECRET)", **error}
    if "{" in ep.path:
        responses["404"] = {"description": "No such org" if "{org_id}" in ep.path else "Not found", **error}
    operation = {"summary": ep.summary, "operationId": ep.handler.__name__ + "_" + ep.method.lower(),
                 "tags": ["org" if ep.security == "org" else "operator"],
                 "security": [{"orgKey": []}, {"session": []}] if ep.security == "org" else [{"adminSecret": []}],
                 "responses": responses}
    if ep.params:
        operation["parameters"] = [{"name": p.name, "in": p.where, "required": p.required or p.where == "path",
                                    "description": p.description, "schema": p.schema} for p in ep.params]
    if ep.body is not None:
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": ep.body}}}
    return operation


def document() -> dict:
    """The OpenAPI 3.1 document of the management API."""
    paths: dict[str, dict] = {}
    for ep in ENDPOINTS:
        paths.setdefault(ep.path, {})[ep.method.lower()] = _operation(ep)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Lectr management API", "version": __version__,
                 "description": "Org-scoped reads of recorded traffic, and operator management of orgs and prices."},
        "paths": paths,
        "components": {
            "schemas": {"Error": ERROR},
            "securitySchemes": {
                "orgKey": {"type": "apiKey", "in": "header", "name": "X-Lectr-Key"},
                "session": {"type": "apiKey", "in": "cookie", "name": "lectr_session"},
                "adminSecret": {"type": "http", "scheme": "bearer", "description": "LECTR_ADMIN_SECRET"},
            },
        },
    }
