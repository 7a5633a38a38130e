"""``lectr jobs run anomalies|recommendations --at TIME`` and ``--from/--to``: jobs at a given time."""

from __future__ import annotations

from datetime import UTC, datetime

from lectr.settings.config import ConfigError


def parse_time(raw: str, option: str) -> datetime:
    """An ISO 8601 time (``Z`` allowed; UTC when no offset is given); ConfigError otherwise."""
    try:
        value = datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
        value = value if value.tzinfo else value.replace(tzinfo=UTC)
        return value.astimezone(UTC)
    except (ValueError, OverflowError):
        raise ConfigError(f"{option} must be an ISO 8601 time, e.g. 2026-11-22T10:00:00Z, got {raw!r}") from None


async def run_at(args, conn, job) -> int:
    """Run ``job`` as of ``--at``, or (anomalies) every hour of ``--from``..``--to``; print what it did."""
    from lectr.jobs.anomalies import run_anomalies, run_range
    from lectr.jobs.recommendations import run_recommendations

    if args.job not in ("anomalies", "recommendations"):
        raise ConfigError(f"--at, --from and --to apply to anomalies and recommendations, not {args.job}")
    if args.from_ or args.to:
        if args.job != "anomalies" or args.at or not (args.from_ and args.to):
            raise ConfigError("--from and --to go together, with anomalies only, instead of --at")
        start, end = parse_time(args.from_, "--from"), parse_time(args.to, "--to")
        if end < start:
            raise ConfigError("--to must not be before --from")
        runs = await run_range(conn, start, end)
        print(f"Ran anomalies for {runs} hours from {start.isoformat()} to {end.isoformat()}.")
        return 0
    at = parse_time(args.at, "--at")
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", job.lock_id)
        if args.job == "anomalies":
            counts = await run_anomalies(conn, at=at)
        else:
            from lectr.settings.config import Settings
            counts = await run_recommendations(conn, at=at,
                                               min_requests=Settings.from_env().admin.recommend_min_requests)
    print(f"Ran {args.job} at {at.isoformat()}: " + ", ".join(f"{k} {v}" for k, v in counts.items()) + ".")
    return 0
