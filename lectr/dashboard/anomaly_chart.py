"""A small inline SVG of one metric over the week before an anomaly, the anomaly's hours marked.

Pure: hourly (time, value) points in, escaped SVG markup out (no script, nothing fetched).
"""

from __future__ import annotations

from datetime import datetime

from markupsafe import Markup, escape

WIDTH, HEIGHT, PAD_X, PAD_TOP, PAD_BOTTOM = 900, 130, 6, 8, 20


def anomaly_chart_svg(points: list[tuple[datetime, float | None]], *, window_start: datetime,
                      window_end: datetime, baseline_mean: float | None, baseline_std: float | None,
                      label: str) -> Markup:
    """The series as a line; the anomaly window as a shaded band; the baseline mean ± σ as a
    lighter band. ``label`` is the chart's accessible name."""
    if not points:
        return Markup(f'<p class="muted small" data-testid="chart-empty">No hourly data for {escape(label)}.</p>')
    values = [v for _, v in points if v is not None]
    top = max(values + [0.0])
    if baseline_mean is not None:
        top = max(top, baseline_mean + (baseline_std or 0.0))
    top = top * 1.1 or 1.0
    t0, t1 = points[0][0], points[-1][0]
    span = max((t1 - t0).total_seconds(), 3600.0)
    inner_w, inner_h = WIDTH - 2 * PAD_X, HEIGHT - PAD_TOP - PAD_BOTTOM

    def x(t: datetime) -> float:
        return PAD_X + inner_w * min(max((t - t0).total_seconds() / span, 0.0), 1.0)

    def y(v: float) -> float:
        return PAD_TOP + inner_h * (1 - min(max(v / top, 0.0), 1.0))

    parts = [f'<svg class="anomaly-chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
             f'aria-label="{escape(label)}" data-testid="anomaly-chart">',
             f'<title>{escape(label)}</title>']
    if baseline_mean is not None:
        spread = baseline_std or 0.0
        y_hi, y_lo = y(baseline_mean + spread), y(max(baseline_mean - spread, 0.0))
        parts.append(f'<rect class="band" x="{PAD_X}" y="{y_hi:.1f}" width="{inner_w}" '
                     f'height="{max(y_lo - y_hi, 1):.1f}"><title>baseline mean ± σ</title></rect>')
    x0, x1 = x(window_start), x(window_end)
    parts.append(f'<rect class="window" data-testid="anomaly-window" x="{x0:.1f}" y="{PAD_TOP}" '
                 f'width="{max(x1 - x0, 3):.1f}" height="{inner_h}"><title>anomaly window</title></rect>')
    segment: list[str] = []
    for t, v in points:
        if v is None:
            if len(segment) > 1:
                parts.append(f'<polyline class="line" points="{" ".join(segment)}"/>')
            segment = []
            continue
        segment.append(f"{x(t):.1f},{y(v):.1f}")
    if len(segment) > 1:
        parts.append(f'<polyline class="line" points="{" ".join(segment)}"/>')
    parts.append(f'<line class="axis" x1="{PAD_X}" x2="{WIDTH - PAD_X}" y1="{PAD_TOP + inner_h}" '
                 f'y2="{PAD_TOP + inner_h}"/>')
    parts.append(f'<text x="{PAD_X}" y="{HEIGHT - 4}">{t0:%b %d}</text>')
    parts.append(f'<text x="{WIDTH - PAD_X}" y="{HEIGHT - 4}" text-anchor="end">{t1:%b %d %H:%M} UTC</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
