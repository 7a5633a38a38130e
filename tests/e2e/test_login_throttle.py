"""Dashboard login throttling over real HTTP, with concurrent attempts, against real Postgres."""

from __future__ import annotations

import asyncio
import re

import aiohttp
import pytest
from aiohttp import web

from lectr.platform import db

from lectr.api import orgs
from lectr.admin import make_admin_app
from lectr.dashboard.routes import THROTTLE, LoginThrottle
from lectr.api.state import AdminState
from lectr.snapshot.directory import DirectoryHolder
from lectr.proxy.ring import EventRing
from lectr.platform.metrics import Metrics


class QuickThrottle(LoginThrottle):
    MAX_DELAY = 0.02  # the same rules, without the tests waiting seconds for them


@pytest.fixture
async def dashboard(database_url):
    pool = await db.open_pool(database_url, min_size=1, max_size=10)
    async with pool.acquire() as conn:
        _, key = await orgs.create_org(conn, f"throttled-{id(pool)}")
    state = AdminState(pool=pool, directory=DirectoryHolder(), metrics=Metrics(EventRing(16)), admin_secret=None,
                       session_hours=1.0)
    app = make_admin_app(state)
    app[THROTTLE] = QuickThrottle()
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as client:
        page = await client.get("/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', await page.text()).group(1)
        cookie = page.cookies["lectr_login_csrf"].value

        async def login(key: str) -> int:
            reply = await client.post("/login", data={"key": key, "csrf_token": token}, allow_redirects=False,
                                      headers={"Cookie": f"lectr_login_csrf={cookie}"})
            await reply.read()
            return reply.status

        yield login, key
    await runner.cleanup()
    await pool.close()


async def test_parallel_wrong_keys_are_counted_before_they_are_checked(dashboard):
    login, _ = dashboard
    statuses = await asyncio.gather(*(login(f"lc_key_guess_{i}") for i in range(200)))
    assert statuses.count(401) <= LoginThrottle.LOCKOUT_FAILURES  # evaluated at most up to the limit
    assert statuses.count(429) >= 200 - LoginThrottle.LOCKOUT_FAILURES
    assert set(statuses) <= {401, 429}


async def test_a_valid_login_does_not_erase_the_failures_of_other_keys(dashboard):
    login, key = dashboard
    evaluated_wrong = 0
    for _ in range(30):  # a guesser who also holds a valid key of its own, logging in between guesses
        statuses = await asyncio.gather(*(login(f"lc_key_guess_{i}") for i in range(3)))
        evaluated_wrong += statuses.count(401)
        await login(key)
    assert evaluated_wrong <= LoginThrottle.LOCKOUT_FAILURES
    assert await login("lc_key_more") == 429
    assert await login(key) == 429  # locked out for everyone at that address, for a while


async def test_a_valid_login_still_works_below_the_limit(dashboard):
    login, key = dashboard
    assert [await login("lc_key_wrong") for _ in range(5)] == [401] * 5
    assert await login(key) == 303
    assert await login(key) == 303
