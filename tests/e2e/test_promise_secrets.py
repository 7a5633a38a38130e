""""Never the prompt, never your provider key", nor an org key or the operator's secret.

The test sends secrets of its own (so it cannot pass on what other tests happened to send)
through every path — success, stream, provider error, Lectr's own errors, 401, the dashboard's
login form, the operator API — checks they really travelled (the mock saw the provider key,
rows were written), and then searches the server's whole output, every column of every table
(from information_schema) and every file under the data directory.
"""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import openai
import pytest
import requests as http

from tests.conftest import sdk_client, wait_for

TAG = uuid.uuid4().hex[:10]
PROVIDER_KEY = f"sk-proj-SECRETPROVIDER{TAG}"
PROMPT = f"confidential prompt text {TAG} about the merger"
WRONG_ORG_KEY = f"lc_key_WRONGORGKEY{TAG}"
ADMIN_SECRET = f"ADMINSECRET{TAG}"
WRONG_ADMIN_SECRET = f"WRONGADMINSECRET{TAG}"


async def _all_text(database_url: str) -> dict[str, str]:
    """Every value of every column of every table in the public schema, as text, per table."""
    conn = await asyncpg.connect(database_url)
    try:
        columns = await conn.fetch("SELECT table_name, column_name FROM information_schema.columns "
                                   "WHERE table_schema = 'public' ORDER BY table_name, ordinal_position")
        tables: dict[str, list[str]] = {}
        for row in columns:
            tables.setdefault(row["table_name"], []).append(row["column_name"])
        dump = {}
        for table, names in tables.items():
            cols = ", ".join(f'coalesce("{n}"::text, \'\')' for n in names)
            rows = await conn.fetch(f'SELECT concat_ws(\'|\', {cols}) FROM "{table}"')
            dump[table] = "\n".join(r[0] for r in rows)
        return dump
    finally:
        await conn.close()


def _rows(database_url: str, org_name: str) -> int:
    async def count() -> int:
        conn = await asyncpg.connect(database_url)
        try:
            return await conn.fetchval("SELECT count(*) FROM request_logs r JOIN organizations o ON o.id = r.org_id "
                                       "WHERE o.name = $1", org_name)
        finally:
            await conn.close()
    return asyncio.run(count())


def test_secrets_sent_on_every_path_are_never_logged_or_stored(lectr_factory, mock, database_url):
    server = lectr_factory.start(("secret-co",), LECTR_ADMIN_SECRET=ADMIN_SECRET, LECTR_FLUSH_INTERVAL="0.1",
                                 LECTR_LOG_LEVEL="DEBUG", LECTR_UPSTREAM_READ_TIMEOUT="1")
    org_key = server.extra["key"]
    api = server.extra["api"]
    messages = [{"role": "user", "content": PROMPT}]
    client = sdk_client(server.base_url, api_key=PROVIDER_KEY, **{"X-Lectr-Key": org_key})
    received = mock.received
    sent = 0
    # Success, on two providers whose key travels in different headers.
    for model in ("gpt-4o-mini", "claude-3-5-haiku-20241022"):
        client.chat.completions.create(model=model, messages=messages)
        sent += 1
        assert PROVIDER_KEY in (mock.last().header("authorization") or mock.last().header("x-api-key"))
    # A stream, without usage (so the cold path counts its text).
    assert "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="gpt-4o-mini", messages=messages, stream=True) if c.choices)
    sent += 1
    # Provider errors.
    for status in ("400", "401", "500"):
        with pytest.raises(openai.APIStatusError):
            client.chat.completions.create(model="gpt-4o", messages=messages, extra_headers={"x-mock-status": status})
        sent += 1
    assert mock.received == received + sent
    # Lectr's own errors for a known org: Azure not configured (400), too slow (504).
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="x", messages=messages, extra_headers={"X-Lectr-Provider": "azure"})
    with pytest.raises(openai.APIStatusError):
        client.chat.completions.create(model="gpt-4o", messages=messages, extra_headers={"x-mock-delay-ms": "1500"})
    sent += 2
    # A malformed body and a path outside /v1 with the same secrets in the headers.
    for path, body in (("/v1/chat/completions", b"{" + PROMPT.encode()), ("/elsewhere", PROMPT.encode())):
        http.post(f"http://127.0.0.1:{server.port}{path}", data=body,
                  headers={"Authorization": f"Bearer {PROVIDER_KEY}", "X-Lectr-Key": org_key})
    # 401: a wrong org key, and none.
    for headers in ({"X-Lectr-Key": WRONG_ORG_KEY}, {}):
        with pytest.raises(openai.AuthenticationError):
            sdk_client(server.base_url, api_key=PROVIDER_KEY, **headers).chat.completions.create(
                model="gpt-4o-mini", messages=messages)
    # The dashboard's login form, with the right key and a wrong one.
    for key, expected in ((org_key, 303), (WRONG_ORG_KEY, 401)):
        session = http.Session()
        page = session.get(api + "/login")
        token = page.text.split('name="csrf_token" value="')[1].split('"')[0]
        assert session.post(api + "/login", data={"key": key, "csrf_token": token},
                            allow_redirects=False).status_code == expected
    # The org API with the key; the operator API with the right and a wrong secret.
    assert http.get(api + "/api/v1/requests", headers={"X-Lectr-Key": org_key}).status_code == 200
    assert http.get(api + "/api/v1/summary", headers={"X-Lectr-Key": WRONG_ORG_KEY}).status_code == 401
    operator = {"Authorization": f"Bearer {ADMIN_SECRET}"}
    created = http.post(api + "/api/v1/orgs", json={"name": f"made-{TAG}"}, headers=operator).json()
    rotated = http.post(api + f"/api/v1/orgs/{created['id']}/keys", headers=operator).json()["key"]
    assert http.get(api + "/api/v1/orgs", headers={"Authorization": f"Bearer {WRONG_ADMIN_SECRET}"}).status_code == 401
    # The rows were written (so the search below looks where the secrets would have gone).
    wait_for(lambda: _rows(database_url, "secret-co") >= sent, timeout=15, message="the rows of the requests sent")

    secrets = {"provider key": PROVIDER_KEY, "prompt": PROMPT, "org key": org_key, "wrong org key": WRONG_ORG_KEY,
               "admin secret": ADMIN_SECRET, "wrong admin secret": WRONG_ADMIN_SECRET,
               "key created by the API": created["key"], "rotated key": rotated}
    # Fragments, in case something logged part of a value (a prefix, a truncated header).
    fragments = {"provider key tail": PROVIDER_KEY[-16:], "org key tail": org_key[-16:], "prompt tag": TAG}
    log = server.log_text()
    assert "DEBUG" in log and len(log) > 500  # the log is there and verbose
    tables = asyncio.run(_all_text(database_url))
    assert {"request_logs", "organizations", "org_keys", "dashboard_sessions", "model_pricing"} <= set(tables)
    files = {str(p): p.read_bytes().decode("latin-1") for p in (server.log_path.parent / "data").rglob("*")
             if p.is_file() and p.stat().st_size < 50_000_000}
    for what, value in {**secrets, **fragments}.items():
        if what == "prompt tag":  # the org name made by the API carries the tag, by design
            places = {"log": log, **{f"table {t}": text for t, text in tables.items() if t != "organizations"}}
        else:
            places = {"log": log, **{f"table {t}": text for t, text in tables.items()}, **files}
        for where, text in places.items():
            assert value not in text, f"the {what} was found in {where}"
