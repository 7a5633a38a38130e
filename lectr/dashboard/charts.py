"""Inline SVG charts for the dashboard: pure functions from data points to markup.

No JavaScript and no external assets: each chart is one ``<svg>`` element sized by its
``viewBox`` (so it scales to the width of its container), with a ``<title>`` per bucket for
hover tooltips, ``role="img"`` and an ``aria-label`` summarising the series. Colours are
presentation attributes, not inline styles, so a strict Content-Security-Policy is fine.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from markupsafe import Markup, escape

from lectr.dashboard.formats import fmt_int, fmt_ms, fmt_usd

__all__ = ["time_series_svg", "share_bar_svg", "COLORS"]

COLORS = {
    "requests": "#3b5bdb",
    "errors": "#e03131",
    "ms": "#7048e8",
    "usd": "#0c8599",
    "grid": "#e3e6ec",
    "axis": "#b8bec9",
    "text": "#5c6470",
}

_MARGIN_LEFT = 56
_MARGIN_RIGHT = 16
_MARGIN_TOP = 12
_MARGIN_BOTTOM = 26
_FONT_SIZE = 12


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        return None
    return float(value) if math.isfinite(value) else None


def _parse(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, str) and value:
        try:
            dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    else:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc)


def _nice_step(raw: float, integer: bool) -> float:
    """The smallest 1/2/2.5/5 × 10^k at least ``raw`` (no 2.5 for integer series)."""
    if raw <= 0:
        return 1.0
    exp = math.floor(math.log10(raw))
    base = 10.0 ** exp
    for m in ((1, 2, 5, 10) if integer else (1, 2, 2.5, 5, 10)):
        step = m * base
        if step >= raw * (1 - 1e-9):
            break
    if integer:
        step = max(1.0, step)
    return step


def _scale(max_value: float, unit: str) -> tuple[float, list[float]]:
    """The top of the y axis and its tick values (0 included), about three intervals."""
    integer = unit not in ("ms", "usd")
    if max_value <= 0:
        top = 0.01 if unit == "usd" else 1.0
        return top, [0.0, top]
    step = _nice_step(max_value / 3, integer)
    top = step * math.ceil(max_value / step - 1e-9)
    ticks = [round(i * step, 10) for i in range(int(round(top / step)) + 1)]
    return top, ticks


def _g(value: float) -> str:
    return f"{round(value, 6):g}"


def _tick_label(value: float, unit: str) -> str:
    if value == 0:
        return "$0" if unit == "usd" else "0"
    if unit == "ms":
        return f"{_g(value)} ms" if value < 1000 else f"{_g(value / 1000)} s"
    prefix = "$" if unit == "usd" else ""
    if value >= 1_000_000:
        return f"{prefix}{_g(value / 1_000_000)}M"
    if value >= 1000:
        return f"{prefix}{_g(value / 1000)}k"
    return f"{prefix}{_g(value)}"


def _value_text(value: float | None, unit: str) -> str:
    if value is None:
        return "no data"
    if unit == "ms":
        return fmt_ms(value)
    if unit == "usd":
        return fmt_usd(value)
    text = fmt_int(value)
    return f"{text} {unit}" if unit else text


def _infer_bucket(times: list[datetime | None]) -> int | None:
    known = [t for t in times if t is not None]
    if len(known) < 2:
        return None
    deltas = [(b - a).total_seconds() for a, b in zip(known, known[1:]) if b > a]
    return int(min(deltas)) if deltas else None


def time_series_svg(points: list[dict], value_key: str, *, title: str, unit: str, width: int = 640,
                    height: int = 160, secondary_key: str | None = None, kind: str = "bar",
                    bucket_seconds: int | None = None) -> Markup:
    """A chart of ``point[value_key]`` per time bucket (``point["start"]`` is the bucket's ISO start).

    ``kind="bar"`` draws columns; with ``secondary_key`` (e.g. ``"errors"``) that part of each
    column is stacked on top in red. ``kind="line"`` draws a line with a light area, broken where
    a value is ``None``. ``unit`` is ``"ms"``, ``"usd"`` or a noun for counts (``"requests"``).
    An empty series, or one with no values at all, renders a labelled empty chart.
    """
    points = list(points or [])
    width = int(width)
    height = int(height)
    values = [_number(p.get(value_key)) for p in points]
    extra = [_number(p.get(secondary_key)) if secondary_key else None for p in points]
    times = [_parse(p.get("start")) for p in points]
    bucket = bucket_seconds or _infer_bucket(times)
    color = COLORS.get(unit, COLORS["requests"])

    plot_l, plot_r = _MARGIN_LEFT, width - _MARGIN_RIGHT
    plot_t, plot_b = _MARGIN_TOP, height - _MARGIN_BOTTOM
    plot_w, plot_h = plot_r - plot_l, plot_b - plot_t

    known = [v for v in values if v is not None]
    label = f"{title}: no data for this period"
    if known:
        peak_i = max(range(len(values)), key=lambda i: values[i] if values[i] is not None else -math.inf)
        peak_at = f" at {_time_label(times[peak_i], bucket, long=True)}" if times[peak_i] else ""
        summary = f"peak {_value_text(values[peak_i], unit)}{peak_at}"
        if kind != "line":
            summary = f"total {_value_text(sum(known), unit)}, " + summary
            if secondary_key:
                total_extra = sum(e for e in extra if e is not None)
                summary += f", {fmt_count(total_extra)} {secondary_key}"
        label = f"{title}: {len(points)} buckets, {summary}"

    out: list[str] = [
        f'<svg class="chart" role="img" aria-label="{escape(label)}" viewBox="0 0 {width} {height}" '
        f'width="100%" preserveAspectRatio="xMidYMid meet" focusable="false">',
        f'<g font-size="{_FONT_SIZE}" fill="{COLORS["text"]}">',
    ]

    if not known:
        out.append(f'<line x1="{plot_l}" y1="{plot_b}" x2="{plot_r}" y2="{plot_b}" stroke="{COLORS["axis"]}"/>')
        out.append(f'<text x="{(plot_l + plot_r) / 2:.1f}" y="{(plot_t + plot_b) / 2 + 4:.1f}" '
                   f'text-anchor="middle">No data for this period</text>')
        out.append("</g></svg>")
        return Markup("".join(out))

    top, ticks = _scale(max(known), unit)

    def y_of(v: float) -> float:
        return plot_b - (v / top) * plot_h

    # Grid and y labels.
    for t in ticks:
        y = y_of(t)
        stroke = COLORS["axis"] if t == 0 else COLORS["grid"]
        dash = "" if t == 0 else ' stroke-dasharray="3 3"'
        out.append(f'<line x1="{plot_l}" y1="{y:.1f}" x2="{plot_r}" y2="{y:.1f}" stroke="{stroke}"{dash}/>')
        out.append(f'<text x="{plot_l - 8}" y="{y + 4:.1f}" text-anchor="end">{escape(_tick_label(t, unit))}</text>')

    n = len(points)
    slot = plot_w / n
    centers = [plot_l + slot * (i + 0.5) for i in range(n)]

    for i in _label_positions(times, bucket):
        x = centers[i]
        anchor = "middle"
        if x + 22 > width:
            anchor, x = "end", min(x, width - 2.0)
        out.append(f'<text x="{x:.1f}" y="{plot_b + 17}" text-anchor="{anchor}">'
                   f'{escape(_time_label(times[i], bucket))}</text>')

    if kind == "line":
        out.extend(_line(values, centers, y_of, color, plot_b))
    bar_w = max(1.0, min(slot * 0.72, 48.0))
    for i, v in enumerate(values):
        when = _time_label(times[i], bucket, long=True) if times[i] else f"bucket {i + 1}"
        tip = f"{when}: {_value_text(v, unit)}"
        e = extra[i]
        if secondary_key and v is not None:
            tip += f", {fmt_count(e or 0)} {secondary_key}"
        parts = [f"<g><title>{escape(tip)}</title>",
                 f'<rect x="{plot_l + slot * i:.1f}" y="{plot_t}" width="{slot:.1f}" height="{plot_h}" '
                 f'fill="#000" fill-opacity="0"/>']
        if kind == "line":
            if v is not None:
                isolated = (i == 0 or values[i - 1] is None) and (i == n - 1 or values[i + 1] is None)
                if n <= 60 or isolated:
                    parts.append(f'<circle cx="{centers[i]:.1f}" cy="{y_of(v):.1f}" r="{3 if isolated else 2.5}" '
                                 f'fill="{color}"/>')
        elif v is not None and v > 0:
            x = centers[i] - bar_w / 2
            err = min(max(e or 0.0, 0.0), v) if secondary_key else 0.0
            ok = v - err
            if ok > 0:
                parts.append(f'<rect x="{x:.1f}" y="{y_of(ok):.1f}" width="{bar_w:.1f}" '
                             f'height="{plot_b - y_of(ok):.1f}" fill="{color}" rx="1"/>')
            if err > 0:
                parts.append(f'<rect x="{x:.1f}" y="{y_of(v):.1f}" width="{bar_w:.1f}" '
                             f'height="{y_of(ok) - y_of(v):.1f}" fill="{COLORS["errors"]}" rx="1"/>')
        parts.append("</g>")
        out.append("".join(parts))

    out.append("</g></svg>")
    return Markup("".join(out))


# Tick spacings a reader expects, in seconds: whole hours, then whole days.
_TICK_STEPS = (3600, 2 * 3600, 3 * 3600, 4 * 3600, 6 * 3600, 12 * 3600, 86400, 2 * 86400, 5 * 86400, 7 * 86400,
               14 * 86400, 28 * 86400)
_MOST_LABELS = 8


def _label_positions(times: list[datetime | None], bucket: int | None) -> list[int]:
    """Indexes of the points to label: those starting on a whole hour or day in UTC, a round
    step apart (every 4 hours over a day, every day over a week); evenly spaced, about six,
    when the buckets do not start on whole hours."""
    n = len(times)
    known = [t for t in times if t is not None]
    if bucket and known and bucket % 3600 == 0:
        span = bucket * n
        for step in _TICK_STEPS:
            if step % bucket == 0 and step * _MOST_LABELS >= span:
                aligned = [i for i, t in enumerate(times) if t is not None and int(t.timestamp()) % step == 0]
                if aligned:
                    return aligned
                break
    every = max(1, math.ceil(n / 6))
    return [i for i in range(0, n, every) if times[i] is not None]


def fmt_count(value: float) -> str:
    return f"{round(value):,d}"


def _line(values: list[float | None], centers: list[float], y_of, color: str, base: float) -> list[str]:
    out = []
    segment: list[tuple[float, float]] = []
    segments = []
    for x, v in zip(centers, values):
        if v is None:
            if segment:
                segments.append(segment)
            segment = []
        else:
            segment.append((x, y_of(v)))
    if segment:
        segments.append(segment)
    for seg in segments:
        if len(seg) < 2:
            continue
        coords = " L".join(f"{x:.1f},{y:.1f}" for x, y in seg)
        area = f"M{seg[0][0]:.1f},{base:.1f} L{coords} L{seg[-1][0]:.1f},{base:.1f} Z"
        out.append(f'<path d="{area}" fill="{color}" fill-opacity="0.10" stroke="none"/>')
        out.append(f'<path d="M{coords}" fill="none" stroke="{color}" stroke-width="2" '
                   f'stroke-linejoin="round" stroke-linecap="round"/>')
    return out


def _time_label(dt: datetime | None, bucket: int | None, long: bool = False) -> str:
    if dt is None:
        return ""
    daily = bool(bucket and bucket >= 86400)
    if long:
        return dt.strftime("%b %d") if daily else dt.strftime("%b %d %H:%M UTC")
    if daily or (bucket and bucket >= 6 * 3600):
        return dt.strftime("%b %d")
    return dt.strftime("%H:%M")


def share_bar_svg(fraction: float | None, *, label: str = "") -> Markup:
    """A tiny horizontal bar showing a share in 0..1 (for table cells)."""
    f = _number(fraction)
    f = 0.0 if f is None else min(max(f, 0.0), 1.0)
    aria = escape(label or f"{f * 100:.0f}%")
    return Markup(
        f'<svg class="share" role="img" aria-label="{aria}" viewBox="0 0 100 6" width="100%" '
        f'preserveAspectRatio="none" focusable="false">'
        f'<rect width="100" height="6" rx="3" fill="{COLORS["grid"]}"/>'
        f'<rect width="{f * 100:.1f}" height="6" rx="3" fill="{COLORS["requests"]}"/></svg>'
    )
