"""The dashboard's pure formatters (registered as Jinja filters; used by the charts too).

Numbers, money, durations, times and changes, each to the short text a page shows; a missing
value is ``DASH``, never an invented zero.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import jinja2

DASH = "—"

# ---------------------------------------------------------------------------------------------
# Formatters (pure; registered as Jinja filters)
# ---------------------------------------------------------------------------------------------

def _is_number(value: Any) -> bool:
    if isinstance(value, jinja2.Undefined):   # a missing context key: fail loudly, never print "—"
        value._fail_with_undefined_error()
    return isinstance(value, (int, float, Decimal)) and not isinstance(value, bool) and math.isfinite(value)


def fmt_ms(value: float | None) -> str:
    """A duration in milliseconds: ``4.2 ms``, ``812 ms``, ``1.38 s``, ``12.4 s``, ``184 s``."""
    if not _is_number(value):
        return DASH
    ms = float(value)
    if abs(round(ms, 1)) < 10:
        return f"{ms:.1f} ms"
    if round(ms) < 1000:
        return f"{round(ms):d} ms"
    s = ms / 1000
    if round(s, 2) < 10:
        return f"{s:.2f} s"
    if round(s, 1) < 100:
        return f"{s:.1f} s"
    return f"{round(s):,d} s"


def fmt_usd(value: float | None) -> str:
    """Dollars: ``$142.00``, ``$1,234.50``; under a dollar, four significant digits: ``$0.0042``."""
    if not _is_number(value):
        return DASH
    v = float(value)
    sign = "-" if v < 0 else ""
    v = abs(v)
    if v == 0:
        return "$0.00"
    decimals = max(2, 3 - math.floor(math.log10(v)))   # four significant digits under a dollar
    if v >= 1 or round(v, decimals) >= 1:
        return f"{sign}${v:,.2f}"
    text = f"{v:.{decimals}f}".rstrip("0")
    whole, _, frac = text.partition(".")
    frac = frac.ljust(2, "0")
    return f"{sign}${whole}.{frac}"


def fmt_cost(cost: float | None, unpriced: int | None = 0) -> str:
    """A cost that says how many requests it leaves out: ``$1.23``, ``$1.23 + 4 unpriced``,
    ``4 unpriced`` (nothing priced). Unknown is not zero."""
    n = int(unpriced) if _is_number(unpriced) else 0
    if n <= 0:
        return fmt_usd(cost)
    if not _is_number(cost) or float(cost) == 0:
        return f"{fmt_int(n)} unpriced"
    return f"{fmt_usd(cost)} + {fmt_int(n)} unpriced"


def fmt_int(value: float | None) -> str:
    """A count with thousands separators: ``1,234,567``."""
    if not _is_number(value):
        return DASH
    return f"{round(value):,d}"


def fmt_pct(value: float | None) -> str:
    """A ratio in 0..1 as a percentage: ``0%``, ``0.42%``, ``4.2%``, ``37.5%``, ``100%``."""
    if not _is_number(value):
        return DASH
    pct = float(value) * 100
    if pct == 0:
        return "0%"
    if abs(pct) < 1:
        text = f"{pct:.2f}"
    else:
        text = f"{pct:.1f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return f"{text}%"


def _change_amount(current: float | None, previous: float | None, mode: str) -> tuple[str, float] | None:
    """``(kind, rounded delta)``; kind is ``new`` / ``none`` / ``same`` / ``delta``."""
    if not _is_number(current):
        return ("none", 0.0)
    if not _is_number(previous):
        return ("new", 0.0)
    if mode == "points":
        delta = (float(current) - float(previous)) * 100
    else:
        if previous == 0:
            return ("same", 0.0) if current == 0 else ("new", 0.0)
        delta = (float(current) - float(previous)) / abs(float(previous)) * 100
    rounded = round(delta, 1) if abs(delta) < 10 else float(round(delta))
    if rounded == 0:
        return ("same", 0.0)
    return ("delta", rounded)


def fmt_change(current: float | None, previous: float | None, mode: str = "relative") -> str:
    """The change from ``previous`` to ``current``.

    ``mode="relative"``: ``▲ 12%`` / ``▼ 3.4%``; ``mode="points"`` (for rates in 0..1):
    ``▲ 1.2 pp``. ``new`` when there is nothing to compare with (previous 0 or None),
    ``no change`` when the rounded change is zero, ``—`` when there is no current value.
    """
    kind, delta = _change_amount(current, previous, mode)
    if kind == "none":
        return DASH
    if kind == "new":
        return "new"
    if kind == "same":
        return "no change"
    arrow = "▲" if delta > 0 else "▼"
    magnitude = abs(delta)
    number = f"{magnitude:.1f}".rstrip("0").rstrip(".") if magnitude < 10 else f"{magnitude:,.0f}"
    return f"{arrow} {number}{' pp' if mode == 'points' else '%'}"


def change_tone(current: float | None, previous: float | None, higher: str = "neutral",
                mode: str = "relative") -> str:
    """``bad`` / ``good`` / ``neutral`` for colouring a change; ``higher`` says what an increase is."""
    kind, delta = _change_amount(current, previous, mode)
    if kind != "delta" or higher not in ("bad", "good"):
        return "neutral"
    up_is_bad = higher == "bad"
    return "bad" if (delta > 0) == up_is_bad else "good"


def _parse_iso(value: str | datetime | None) -> datetime | None:
    if isinstance(value, jinja2.Undefined):
        value._fail_with_undefined_error()
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        dt = value
    else:
        try:
            dt = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
        except ValueError:
            return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc)


def fmt_time(value: str | datetime | None) -> str:
    """``HH:MM:SS`` in UTC, or ``—``."""
    dt = _parse_iso(value)
    return dt.strftime("%H:%M:%S") if dt else DASH


def fmt_datetime(value: str | datetime | None) -> str:
    """``May 01 14:03:22`` in UTC (the table headers say UTC), or the raw text if unparseable."""
    dt = _parse_iso(value)
    if dt is None:
        return DASH if value in (None, "") else str(value)
    return dt.strftime("%b %d %H:%M:%S")


def datetime_local(value: str | None) -> str:
    """A value for ``<input type=datetime-local>``: ``YYYY-MM-DDTHH:MM`` (UTC), or as given."""
    if not value:
        return ""
    dt = _parse_iso(value)
    return dt.strftime("%Y-%m-%dT%H:%M") if dt else str(value)


def fmt_bucket(seconds: int | None) -> str:
    """``per hour``, ``per 6 hours``, ``per day``, ``per 15 minutes``."""
    if not seconds or seconds <= 0:
        return ""
    for size, unit in ((86400, "day"), (3600, "hour"), (60, "minute")):
        if seconds % size == 0:
            n = seconds // size
            return f"per {unit}" if n == 1 else f"per {n} {unit}s"
    return f"per {seconds} seconds"


def health_status(error_rate: float | None, requests: int | None = None) -> str:
    """``ok`` (<1% errors), ``degraded`` (<5%), ``failing``; ``idle`` with no traffic."""
    if requests is not None and requests <= 0:
        return "idle"
    if not _is_number(error_rate):
        return "idle"
    if error_rate < 0.01:
        return "ok"
    if error_rate < 0.05:
        return "degraded"
    return "failing"


def _plural(n: int, one: str, many: str) -> str:
    return f"{fmt_int(n)} {one if n == 1 else many}"


def coverage_notes(totals: dict) -> list[str]:
    """Sentences saying where the figures are estimates or undercount."""
    notes = []
    measured = int(totals.get("measured_requests") or 0)
    partial = int(totals.get("partial_cost_requests") or 0)
    unpriced = int(totals.get("unpriced_requests") or 0)
    if measured:
        verb = "has" if measured == 1 else "have"
        notes.append(f"{_plural(measured, 'streamed request', 'streamed requests')} {verb} measured token "
                     "counts (counted by Lectr; the provider did not report usage).")
    if partial:
        verb = "is" if partial == 1 else "are"
        notes.append(f"{_plural(partial, 'request', 'requests')} {verb} priced on the completion only "
                     "(the prompt is never read), so cost undercounts.")
    if unpriced:
        verb = "uses a model" if unpriced == 1 else "use models"
        notes.append(f"{_plural(unpriced, 'request', 'requests')} {verb} with no known price, "
                     "so cost undercounts.")
    unread = int(totals.get("unread_requests") or 0)
    if unread:
        verb = "has usage" if unread == 1 else "have usage"
        notes.append(f"{_plural(unread, 'request', 'requests')} {verb} Lectr could not read in full (an "
                     "unreadable encoding, a body past the capture limit, or a stream left uncounted).")
    return notes
