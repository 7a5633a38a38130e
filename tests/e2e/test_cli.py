"""The ``lectr`` command against a real PostgreSQL, run as a user would run it."""

import asyncio
import re

import asyncpg
import pytest

from lectr.platform import db
from tests.conftest import lectr_env, run_cli


@pytest.fixture(scope="module")
def env(database_url, mock, tmp_path_factory):
    return lectr_env(database_url, mock, tmp_path_factory.mktemp("cli"))


def test_help_explains_every_command(env):
    assert "baseURL" in run_cli(env, "--help").stdout
    for args in (["serve"], ["org"], ["org", "create"], ["org", "list"], ["org", "azure"], ["key", "rotate"],
                 ["db", "url"], ["db", "stop"], ["mock-provider"]):
        out = run_cli(env, *args, "--help").stdout
        assert out.startswith("usage: lectr"), args


def test_org_create_prints_the_key_last_and_stores_only_its_hash(env, database_url):
    out = run_cli(env, "org", "create", "globex").stdout
    key = out.strip().splitlines()[-1]
    assert re.fullmatch(r"lc_key_[A-Za-z0-9_-]{32,}", key)

    async def stored() -> list:
        conn = await asyncpg.connect(database_url)
        try:
            return [tuple(r) for r in await conn.fetch("SELECT * FROM org_keys")] + \
                   [tuple(r) for r in await conn.fetch("SELECT * FROM organizations")]
        finally:
            await conn.close()
    assert key not in repr(asyncio.run(stored()))
    listing = run_cli(env, "org", "list").stdout
    assert "globex" in listing and key not in listing and key[:10] in listing


@pytest.mark.parametrize("args,message", [
    (["org", "create", "dup"], "already exists"),
    (["key", "rotate", "no-such-org"], "no org named"),
    (["org", "azure", "dup", "--endpoint", "not a url", "--api-version", "2024-10-21"], "endpoint must be"),
    (["org", "azure", "dup", "--endpoint", "https://x.openai.azure.com", "--api-version", "bad version!"],
     "api version"),
    (["org", "azure", "ghost", "--endpoint", "https://x.openai.azure.com", "--api-version", "2024-10-21"],
     "no org named"),
    *[(["org", "azure", "dup", "--endpoint", url, "--api-version", "2024-10-21"], "endpoint")
      for url in ("https://x y.openai.azure.com", "http://x.openai.azure.com", "https://user:pw@x.openai.azure.com",
                  "https://x.openai.azure.com?api-version=1", "https://x.openai.azure.com#top", "https://-x-.com",
                  "https://x..openai.azure.com", "https://x.openai.azure.com:0", "https://x.openai.azure.com/a b",
                  "https:/x.openai.azure.com", "https://x.openai.azure.com:99999")],
    (["key", "rotate", "99999999999999999999"], "no org named"),
    (["key", "rotate", "99"], "no org named or numbered '99'"),  # an id is not called a name
])
def test_bad_input_exits_non_zero_with_one_clear_line(env, args, message):
    run_cli(env, "org", "create", "dup", check=False)
    result = run_cli(env, *args, check=False)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lectr: error:") and message in lines[0], result.stderr


def test_db_url_prints_the_database_in_use(env, database_url):
    assert run_cli(env, "db", "url").stdout.strip() == database_url


async def test_migrations_apply_once_when_processes_race(pg_server_url):
    name = "lectr_race"
    admin = await asyncpg.connect(pg_server_url)
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = pg_server_url.replace("/postgres?", f"/{name}?") if "/postgres?" in pg_server_url \
        else pg_server_url.rsplit("/", 1)[0] + f"/{name}"
    try:
        conns = [await asyncpg.connect(url) for _ in range(4)]
        results = await asyncio.gather(*(db.migrate(c) for c in conns))
        applied = [name for r in results for name in r]
        assert sorted(applied) == sorted(f for _, f, _ in db.migration_files())
        assert await conns[0].fetchval("SELECT count(*) FROM schema_migrations") == len(db.migration_files())
        assert await db.migrate(conns[0]) == []
        for c in conns:
            await c.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def test_key_rotate_and_azure_name_the_org_even_when_given_its_id(env):
    created = run_cli(env, "org", "create", "namedco").stdout
    org_id = re.search(r"\(id (\d+)\)", created).group(1)
    rotated = run_cli(env, "key", "rotate", org_id).stdout
    assert "'namedco'" in rotated.splitlines()[0] and f"'{org_id}'" not in rotated
    azure = run_cli(env, "org", "azure", org_id, "--endpoint", "https://namedco.openai.azure.com/",
                    "--api-version", "2024-10-21").stdout
    assert "'namedco'" in azure and "https://namedco.openai.azure.com " in azure


@pytest.mark.parametrize("url", ["http://x y/v1", "ftp://x/v1", "http://u:p@x/v1", "http://x/v1?k=1", "https://"])
def test_a_bad_upstream_url_is_one_line(env, url):
    result = run_cli({**env, "LECTR_UPSTREAM_GROQ": url}, "serve", check=False)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "LECTR_UPSTREAM_GROQ" in lines[0], result.stderr


def test_db_stop_stops_the_embedded_postgres_that_db_url_left_running(mock, tmp_path):
    import os
    import subprocess
    import sys

    from tests.conftest import free_port

    env = {k: v for k, v in os.environ.items() if not k.startswith("LECTR_")}
    env.update(LECTR_DATA_DIR=str(tmp_path / "data"), LECTR_PROXY_PORT=str(free_port()),
               LECTR_ADMIN_PORT=str(free_port()), LECTR_WORKERS="1")
    pid_file = tmp_path / "data" / "pg" / "postmaster.pid"

    def running() -> bool:
        from lectr.platform.db import _alive
        return pid_file.exists() and _alive(int(pid_file.read_text().split()[0]))

    url = run_cli(env, "db", "url").stdout.strip()
    assert url.startswith("postgresql://") and running()  # left running, as the help says
    # While a lectr serve uses it, it is not stopped under the server's feet.
    serve = subprocess.Popen([sys.executable, "-m", "lectr", "serve"], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        import socket
        import time
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", int(env["LECTR_PROXY_PORT"])), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        refused = run_cli(env, "db", "stop", check=False)
        assert refused.returncode == 1 and "in use" in refused.stderr and running()
    finally:
        serve.terminate()
        assert serve.wait(60) == 0
    run_cli(env, "db", "url")  # and again with no server: still running afterwards
    assert running()
    stopped = run_cli(env, "db", "stop")
    assert "stopped" in stopped.stdout and not running()
    assert "not running" in run_cli(env, "db", "stop").stdout  # stopping twice is fine
    assert "stop" in run_cli(env, "db", "--help").stdout


def test_db_stop_with_an_external_database_is_one_clear_line(env):
    result = run_cli(env, "db", "stop", check=False)
    assert result.returncode == 1 and result.stderr.count("\n") == 1 and "LECTR_DATABASE_URL" in result.stderr


@pytest.mark.parametrize("override", [{"LECTR_DATABASE_URL": "foo://x/y"},
                                      {"LECTR_DATABASE_URL": "postgresql://127.0.0.1:99999/x"},
                                      {"LECTR_DATABASE_URL": "postgresql://127.0.0.1:1/x"},
                                      {"LECTR_DATABASE_URL": "", "LECTR_DATA_DIR": "/proc/no/such"}])
def test_a_database_that_cannot_be_reached_is_one_line_for_every_command(env, override):
    for args in (["org", "list"], ["db", "url"], ["key", "rotate", "x"]):
        result = run_cli({**env, **override}, *args, check=False)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 1 and len(lines) == 1 and lines[0].startswith("lectr: error:"), result.stderr
