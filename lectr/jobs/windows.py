"""A summary window as rollup pieces: which rows of which level cover each part of it.

The dashboard aggregator's reading plan. A window [lo, hi) is cut into whole units of the
coarsest rollup level that fits each part of it (``pieces``); the part-hours left at its edges
come from the raw rows, each aggregated once per run (``Edges``); ``source`` turns the pieces of
several windows into one UNION ALL the aggregator groups.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import asyncpg

from lectr.jobs.rollups import KEY, MEASURES, rollup_select

# Every bucket starts on a whole hour (or day) in UTC, so chart ticks fall on whole hours and days.
BUCKET_ORIGIN = datetime(2000, 1, 1, tzinfo=timezone.utc)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)

# Figures come from the coarsest rollups that fit each part of a window: request_rollups_16d and
# request_rollups_4d for its whole blocks of 16 and 4 days (from 2000-01-01), request_rollups_daily
# for the whole UTC days left, request_rollups_6h for the whole six-hour blocks left at either end,
# request_rollups for the whole hours left. What is left are part-hours at the window's edges; a
# part-hour that is most of a past hour is that hour's rollups less the raw rows of the rest, any
# other part-hour (and the present hour, whose rollups move while they are read) is read raw. So
# every count and sum is what a scan of the raw rows gives, at the cost of at most half an hour of
# raw rows at each past edge, each read once per run (``Edges``). A window whose chart points are
# shorter than a level skips that level.
SIX_HOURS = timedelta(hours=6)
LEVELS = ((16 * DAY, "request_rollups_16d", "day"), (4 * DAY, "request_rollups_4d", "day"),
          (DAY, "request_rollups_daily", "day"), (SIX_HOURS, "request_rollups_6h", "hour"),
          (HOUR, "request_rollups", "hour"))

# The columns a piece is read by, which a negated piece keeps as they are.
DIMENSIONS = ("org_id", "hour", "feature", "provider", "model_used")


def bucket_floor(at: datetime, bucket: timedelta) -> datetime:
    """``at`` rounded down to a whole ``bucket`` (from ``BUCKET_ORIGIN``)."""
    return BUCKET_ORIGIN + (at - BUCKET_ORIGIN) // bucket * bucket


def bucket_ceil(at: datetime, bucket: timedelta) -> datetime:
    """``at`` rounded up to a whole ``bucket``."""
    return BUCKET_ORIGIN - (BUCKET_ORIGIN - at) // bucket * bucket


def negated(column: str) -> str:
    """``column`` of a piece that is subtracted: its sums and histogram counts negated."""
    if column in DIMENSIONS:
        return column
    if column.endswith("_buckets"):
        return f"ARRAY(SELECT -n FROM unnest({column}) n) AS {column}"
    return f"-{column} AS {column}"


class Edges:
    """The raw part-hours a run reads, each aggregated once into a temporary table of rollup rows
    (``piece`` numbers them) however many windows and groupings use it."""

    TABLE = "lectr_aggregator_edges"

    def __init__(self) -> None:
        self.pieces: dict[tuple[datetime, datetime], int] = {}
        self._stored = 0

    def piece(self, start: datetime, end: datetime) -> int:
        return self.pieces.setdefault((start, end), len(self.pieces))

    async def store(self, conn: asyncpg.Connection) -> None:
        """Aggregate the pieces named since the last call."""
        if not self._stored:
            await conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS {self.TABLE} (piece int, LIKE request_rollups);"
                               f"TRUNCATE {self.TABLE}")
        for (start, end), n in list(self.pieces.items())[self._stored:]:
            select = rollup_select("request_logs l WHERE l.created_at >= $2 AND l.created_at < $3")
            await conn.execute(f"INSERT INTO {self.TABLE} (piece, {', '.join(KEY + MEASURES)}) "
                               f"SELECT $1::int, * FROM ({select}) edge", n, start, end)
        self._stored = len(self.pieces)


def part_hours(lo: datetime, hi: datetime, present: datetime) -> list[tuple[str | None, str, datetime, datetime, int]]:
    """[lo, hi) with no whole hour inside, as ``(table, time column, start, end, sign)``: raw
    part-hours (``table`` None), or a past hour's rollups (sign 1) less raw part-hours (sign -1)."""
    out = []
    while lo < hi:
        hour = bucket_floor(lo, HOUR)
        end = min(hi, hour + HOUR)
        # Only an hour well past: the rows of the last one may still be on their way to its rollups.
        if hour + 2 * HOUR <= present and end - lo > HOUR / 2:
            out.append(("request_rollups", "hour", hour, hour + HOUR, 1))
            out += [(None, "created_at", a, b, -1) for a, b in ((hour, lo), (end, hour + HOUR)) if a < b]
        else:
            out.append((None, "created_at", lo, end, 1))
        lo = end
    return out


def pieces(lo: datetime, hi: datetime, levels: tuple, present: datetime
           ) -> list[tuple[str | None, str, datetime, datetime, int]]:
    """[lo, hi) as ``(table, time column, start, end, sign)`` ranges, each whole units of the
    coarsest level that fits there, the part-hours left as ``part_hours``."""
    if lo >= hi:
        return []
    if not levels:
        return part_hours(lo, hi, present)
    (length, table, column), finer = levels[0], levels[1:]
    first, last = bucket_ceil(lo, length), bucket_floor(hi, length)
    if first >= last:
        return pieces(lo, hi, finer, present)
    return (pieces(lo, first, finer, present) + [(table, column, first, last, 1)]
            + pieces(last, hi, finer, present))


def source(windows: list[tuple[bool, datetime, datetime, tuple]], columns: tuple[str, ...], args: list,
           edges: Edges, present: datetime) -> str:
    """A UNION ALL of ``columns`` and ``current`` over the pieces of ``(current, start, end, levels)``
    windows; their bounds are appended to ``args`` (numbered after what it holds)."""
    selects = []
    for current, lo, hi, levels in windows:
        for table, column, start, end, sign in pieces(lo, hi, levels, present):
            read = ", ".join(negated(c) if sign < 0 else c for c in columns)
            if table is None:
                args.append(edges.piece(start, end))
                selects.append(f"SELECT {read}, {current} AS current FROM {Edges.TABLE} WHERE piece = ${len(args)}")
                continue
            args += [start, end]
            read = ", ".join(f"{column} AS hour" if c == "hour" and column != "hour" else c for c in columns)
            selects.append(f"SELECT {read}, {current} AS current FROM {table} "
                           f"WHERE {column} >= ${len(args) - 1} AND {column} < ${len(args)}")
    if not selects:
        selects.append(f"SELECT {', '.join(columns)}, true AS current FROM request_rollups WHERE false")
    return "\n    UNION ALL\n    ".join(selects)
