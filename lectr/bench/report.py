"""Turning a run's report into a terminal table, Markdown, JSON and a latency chart."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

DASH = "—"
COLORS = {"direct": "#7f7f7f", "lectr": "#1f77b4"}
PEER_COLORS = ["#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]


def _ms(value: float) -> str:
    if value is None or math.isnan(value):
        return DASH
    return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}" if abs(value) < 1000 else f"{value:.0f}"


def _pair(a: float, b: float, signed: bool = False) -> str:
    if signed:
        return f"{_signed(a)} / {_signed(b)}"
    return f"{_ms(a)} / {_ms(b)}"


def _signed(value: float) -> str:
    text = _ms(value)
    return text if text == DASH or text.startswith("-") else "+" + text


def _peaks(peaks: list[dict]) -> str:
    return " / ".join(f"{p['peak_rss_mb']:.0f}" for p in peaks) or DASH


def main_table(report: dict) -> tuple[list[str], list[list[str]]]:
    """One row per scenario and target: latency, what the proxy added, rate, CPU and memory."""
    head = ["scenario", "target", "p50 / p99 ms", "added p50 / p99 ms", "req/s", "vs direct", "CPU ms/req",
            "peak RSS MB/process", "errors"]
    rows = []
    for s in report["scenarios"]:
        for i, (name, t) in enumerate(s["targets"].items()):
            direct = name == "direct"
            rows.append([s["title"] if i == 0 else "", name, _pair(t["p50_ms"], t["p99_ms"]),
                         DASH if direct else _pair(t["added_p50_ms"], t["added_p99_ms"], signed=True),
                         f"{t['rps']:,.0f}", DASH if direct else f"{t['rps_ratio']:.2f}",
                         _ms(t["server_cpu_ms_per_request"]), _peaks(t["peak_rss_mb"]), str(t["errors"])])
    return head, rows


def stream_table(report: dict) -> tuple[list[str], list[list[str]]]:
    head = ["scenario", "target", "TTFB p50 / p99 ms", "added TTFB p50 / p99 ms", "chunk gap p50 / p99 ms",
            "added gap p50 / p99 ms"]
    rows = []
    for s in (s for s in report["scenarios"] if any("gap_p50_ms" in t for t in s["targets"].values())):
        for i, (name, t) in enumerate(s["targets"].items()):
            direct = name == "direct"
            rows.append([s["title"] if i == 0 else "", name, _pair(t["ttfb_p50_ms"], t["ttfb_p99_ms"]),
                         DASH if direct else _pair(t["added_ttfb_p50_ms"], t["added_ttfb_p99_ms"], signed=True),
                         _pair(t.get("gap_p50_ms", math.nan), t.get("gap_p99_ms", math.nan)),
                         DASH if direct else _pair(t.get("added_gap_p50_ms", math.nan),
                                                   t.get("added_gap_p99_ms", math.nan), signed=True)])
    return head, rows


def idle_table(report: dict) -> tuple[list[str], list[list[str]]]:
    head = ["target", "connections", "RSS before → after MB", "added MB", "KB per connection"]
    rows = []
    for s in (s for s in report["scenarios"] if s["kind"] == "idle"):
        for name, t in s["targets"].items():
            label = "direct (the mock)" if name == "direct" else name
            rows.append([label, f"{t['connections']:.0f}", f"{t['rss_before_mb']:.1f} → {t['rss_after_mb']:.1f}",
                         f"{t['rss_added_mb']:.1f}", f"{t['kb_per_connection']:.1f}"])
    return head, rows


def headroom_lines(report: dict) -> list[str]:
    """Evidence that the load generator is not the bottleneck: the direct rate against the best proxied
    one, and how busy the client cores (load generator, mock, Postgres) were during each."""
    lines = []
    for s in report["scenarios"]:
        if s["kind"] != "load" or s["paced"] or len(s["targets"]) < 2:
            continue
        direct = s["targets"]["direct"]
        name, best = max(((n, t) for n, t in s["targets"].items() if n != "direct"), key=lambda nt: nt[1]["rps"])
        factor = direct["rps"] / best["rps"] if best["rps"] else math.inf
        line = (f"- {s['title']}: direct {direct['rps']:,.0f} req/s vs {name} {best['rps']:,.0f} req/s "
                f"({factor:.1f}× headroom); load generator {direct['loadgen_cpu_pct']:.0f}% of a core during "
                f"direct runs, {best['loadgen_cpu_pct']:.0f}% during {name} runs")
        client = best.get("client_cores_busy_pct")
        if client is not None:
            line += (f"; client cores {direct['client_cores_busy_pct']:.0f}% / {client:.0f}% busy, "
                     f"{name}'s cores {best['lectr_cores_busy_pct']:.0f}% busy")
        if factor < 2:
            line += " — WARNING: too close, the load generator may be the bottleneck"
        elif client is not None and client > 90 > best["lectr_cores_busy_pct"]:
            line += (f" — NOTE: the client cores were saturated, not {name}'s: the mock, the load generator "
                     f"and Postgres limit this rate")
        lines.append(line)
    return lines


def recording_line(rec: dict) -> str:
    return (f"Recording at the top rate (concurrency {rec['concurrency']}): {rec['requests']:,} requests served at "
            f"{rec['requests_per_s']:,.0f} req/s, {rec['rows_written']:,.0f} rows written at "
            f"{rec['rows_per_s']:,.0f} rows/s (ring empty {rec['drain_after_load_s']:.2f} s after the load ended), "
            f"{rec['dropped']:.0f} dropped, {rec['errors']} errors.")


def setup_line(report: dict) -> str:
    m = report["machine"]
    pin = (f"Lectr and peers pinned to cores {m['lectr_cores']}, mock + load generator + Postgres to "
           f"{m['client_cores']}" if m["pinned"] else "not pinned")
    peers = "".join(f"; peer {p['name']}: `{p['command']}`" for p in report["peers"])
    return (f"Medians of {report['rounds']} interleaved rounds (time cap {report['seconds']:g} s per run), "
            f"{m['cores']} cores, {pin}; LECTR_WORKERS={report['workers']}{peers}. "
            f"Added = target minus direct. CPU = user + system time of the serving process tree (for direct: "
            f"the mock), cold path included. Peak RSS = VmHWM per process during the scenario, parent first.")


def processes_line(report: dict) -> str:
    """Which process each peak RSS figure belongs to, in the column's order."""
    last = report["scenarios"][-1]["targets"] if report["scenarios"] else {}
    parts = []
    for name, t in last.items():
        cmds = []
        for p in t["peak_rss_mb"]:
            first, _, rest = p.get("cmd", "?").partition(" ")
            cmds.append(f"`{(Path(first).name + ' ' + rest).strip()}`")
        parts.append(f"{name}: {' · '.join(cmds)}")
    return "Processes, in the order of the peak RSS column: " + "; ".join(parts) + "." if parts else ""


def _markdown_table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head),
            *("| " + " | ".join(r) + " |" for r in rows)]


def _text_table(head: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    fmt = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
    return [fmt(head), "  ".join("-" * w for w in widths), *(fmt(r) for r in rows)]


def render(report: dict, markdown: bool) -> str:
    """The whole report, as Markdown or as aligned plain text for the terminal."""
    table = _markdown_table if markdown else _text_table
    out = [f"# Lectr benchmark, {report['started']}", ""] if markdown else []
    if report["scenarios"]:
        out += table(*main_table(report))
    for title, (head, rows) in (("Streams", stream_table(report)), ("Idle connections", idle_table(report))):
        if rows:
            out += ["", f"{'## ' if markdown else ''}{title}", "", *table(head, rows)]
    headroom = headroom_lines(report)
    if headroom:
        out += ["", f"{'## ' if markdown else ''}Load generator headroom", "", *headroom]
    if report.get("recording"):
        out += ["", recording_line(report["recording"])]
    out += ["", setup_line(report), "", processes_line(report)]
    if markdown and report.get("chart"):
        out += ["", f"![Latency distributions]({report['chart']})"]
    return "\n".join(out)


def write(report: dict, samples: dict, results_dir: Path) -> list[Path]:
    """Write the JSON, Markdown and (if matplotlib is there) PNG, each also as ``latest.*``."""
    results_dir.mkdir(parents=True, exist_ok=True)
    stem = results_dir / f"bench-{report['stamp']}"
    png = stem.with_suffix(".png")
    report["chart"] = png.name if samples and chart(samples, report, png) else None
    stem.with_suffix(".json").write_text(json.dumps(_finite(report), indent=2) + "\n")
    stem.with_suffix(".md").write_text(render(report, markdown=True) + "\n")
    latest = {**report, "chart": report["chart"] and "latest.png"}
    (results_dir / "latest.md").write_text(render(latest, markdown=True) + "\n")
    written = [stem.with_suffix(".json"), stem.with_suffix(".md")] + ([png] if report["chart"] else [])
    for path in written:
        if path.suffix != ".md":
            shutil.copyfile(path, results_dir / f"latest{path.suffix}")
    return written


def _finite(value):
    """``value`` with NaN and infinities as null, so the JSON is strict."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _minor_label(value: float, _pos) -> str:
    """Label the 2 and 5 of each decade on a log axis, so that a narrow axis still reads."""
    return f"{value:g}" if value > 0 and round(value / 10 ** math.floor(math.log10(value))) in (2, 5) else ""


def chart(samples: dict[str, dict[str, dict[str, list[float]]]], report: dict, path: Path) -> bool:
    """Latency CDFs, direct against each proxy, one panel per scenario (streams: first byte dotted).

    ``samples[scenario][target]`` holds ``latency`` and ``ttfb`` in seconds. False without matplotlib.
    """
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FuncFormatter
    except ImportError:
        print("bench: matplotlib is not installed (pip install -e '.[bench]'), so no chart")
        return False
    titles = {s["scenario"]: s["title"] for s in report["scenarios"]}
    streams = {s["scenario"] for s in report["scenarios"] if s.get("stream")}
    names = [n for n in titles if n in samples]
    cols = 2 if len(names) > 1 else 1
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(7 * cols, 3.8 * rows), squeeze=False)
    targets = list(dict.fromkeys(t for series in samples.values() for t in series))
    peers = [t for t in targets if t not in COLORS]
    colors = {**COLORS, **{t: PEER_COLORS[i % len(PEER_COLORS)] for i, t in enumerate(peers)}}
    for ax, name in zip(axes.flat, names):
        for target, series in samples[name].items():
            color = colors[target]
            for kind, style in (("latency", "-"), ("ttfb", ":")):
                values = sorted(v * 1000 for v in series.get(kind, []))
                if not values or (kind == "ttfb" and name not in streams):
                    continue
                step = max(1, len(values) // 2000)
                xs = values[::step] + [values[-1]]
                ys = [i * step / len(values) for i in range(len(xs) - 1)] + [1.0]
                p50, p99 = values[len(values) // 2], values[min(len(values) - 1, int(0.99 * len(values)))]
                label = f"{target}{' first byte' if kind == 'ttfb' else ''}: p50 {_ms(p50)}, p99 {_ms(p99)} ms"
                ax.plot(xs, ys, style, color=color, lw=1.6, label=label)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(FuncFormatter(_minor_label))
        ax.tick_params(axis="x", which="minor", labelsize=7)
        ax.set_ylim(0, 1.02)
        ax.set_title(titles[name], fontsize=10)
        ax.set_xlabel("latency (ms, log scale)", fontsize=9)
        ax.set_ylabel("fraction of requests", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    for ax in list(axes.flat)[len(names):]:
        ax.set_visible(False)
    fig.suptitle(f"Latency distribution (CDF, all rounds pooled), direct vs proxied — {report['started']}", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
