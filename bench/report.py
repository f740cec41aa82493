"""Turns the rows into a terminal table, a Markdown table, a latency plot, and docs/performance.md."""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any, Sequence

from .figures import Row
from .util import ms, p50, p99

BEGIN = "<!-- bench:begin (written by `python -m bench`; edit outside these markers) -->"
END = "<!-- bench:end -->"


def _num(value: float | None, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, int):
        return f"{value} {unit}".rstrip()
    a = abs(value)
    text = f"{value:.0f}" if a >= 100 else f"{value:.1f}" if a >= 10 else f"{value:.2f}" if a >= 0.1 else f"{value:.3f}"
    return f"{text} {unit}".rstrip()


def _relation(row: Row) -> str:
    rel = row.relation
    if rel is None:
        return "-"
    if row.compare == "ratio":
        return f"{rel:.2f}x"
    return f"{rel:+.2f} {row.unit}" if abs(rel) < 10 else f"{rel:+.0f} {row.unit}"


def _verdict(row: Row) -> str:
    return "-" if row.ok is None else ("PASS" if row.ok else "MISS")


def cells(row: Row) -> list[str]:
    return [row.figure, row.metric, _num(row.value, row.unit),
            f"{row.baseline_label}: {_num(row.baseline, row.unit)}" if row.baseline is not None else "-",
            _relation(row), row.target, _verdict(row)]


HEADER = ["figure", "metric", "Siesta / value", "baseline", "ratio / delta", "target", "result"]


def text_table(rows: Sequence[Row]) -> str:
    data = [HEADER] + [cells(r) for r in rows]
    widths = [max(len(r[i]) for r in data) for i in range(len(HEADER))]
    lines = []
    for i, r in enumerate(data):
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(rows: Sequence[Row]) -> str:
    def esc(text: str) -> str:
        return text.replace("|", "\\|")

    out = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for r in rows:
        c = cells(r)
        c[6] = {"PASS": "**pass**", "MISS": "**MISS**"}.get(c[6], c[6])
        out.append("| " + " | ".join(esc(x) for x in c) + " |")
    return "\n".join(out)


# ---- the plot ---------------------------------------------------------------------------------

PANELS = [
    ("16-token completion, llama-server -t 1", [("llama_direct", "direct (Siesta's backend)", "#1f77b4"),
                                                 ("llama_siesta", "through Siesta", "#d62728"),
                                                 ("router_direct", "direct (router's child)", "#7f7f7f"),
                                                 ("router", "through llama.cpp router", "#2ca02c")]),
    ("zero-work fake backend", [("fake_direct", "direct", "#1f77b4"), ("fake_siesta", "through Siesta", "#d62728")]),
]


def plot(samples: dict[str, list[float]], path: Path) -> Path | None:
    """Latency CDFs (log x) direct vs through Siesta; matplotlib if present, else a hand-made SVG."""
    panels = [(title, [(k, label, color) for k, label, color in series if samples.get(k)])
              for title, series in PANELS]
    panels = [p for p in panels if p[1]]
    if not panels:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        path.write_text(_svg(samples, panels))
        return path
    plt.rcParams["svg.hashsalt"] = "siesta-bench"  # stable ids: a re-run diffs only where data changed
    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 4.2))
    axes = axes if len(panels) > 1 else [axes]
    for ax, (title, series) in zip(axes, panels):
        for key, label, color in series:
            data = sorted(ms(v) for v in samples[key])
            y = [(i + 1) / len(data) for i in range(len(data))]
            ax.step(data, y, where="post", color=color,
                    label=f"{label}: p50 {p50(data):.2f}, p99 {p99(data):.2f} ms")
        ax.set_xscale("log")
        from matplotlib.ticker import FuncFormatter

        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _pos: f"{v:g}" if f"{v:.0e}"[0] in "25" else ""))
        ax.set_xlabel("latency (ms, log scale)")
        ax.set_ylabel("fraction of requests")
        ax.set_title(title)
        ax.axhline(0.5, color="#bbbbbb", lw=0.6, ls=":")
        ax.axhline(0.99, color="#bbbbbb", lw=0.6, ls=":")
        ax.grid(True, which="both", lw=0.3, alpha=0.5)
        ax.legend(fontsize=7.5, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, format="svg", metadata={"Date": None})
    plt.close(fig)
    return path


def _svg(samples: dict[str, list[float]], panels: list[tuple[str, list[tuple[str, str, str]]]]) -> str:
    """A plain SVG of the same CDFs, for machines without matplotlib."""
    pw, ph, left, top, bottom = 520, 330, 60, 30, 45
    width = pw * len(panels)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{ph}" font-family="sans-serif" '
             f'font-size="11"><rect width="100%" height="100%" fill="white"/>']
    for n, (title, series) in enumerate(panels):
        ox = n * pw
        all_ms = [ms(v) for k, _, _ in series for v in samples[k]]
        lo, hi = math.log10(min(all_ms) * 0.9), math.log10(max(all_ms) * 1.1)
        x0, x1, y0, y1 = ox + left, ox + pw - 15, ph - bottom, top

        def sx(v: float) -> float:
            return x0 + (math.log10(v) - lo) / (hi - lo) * (x1 - x0)

        def sy(f: float) -> float:
            return y0 - f * (y0 - y1)

        parts.append(f'<text x="{(x0 + x1) / 2}" y="18" text-anchor="middle" font-weight="bold">'
                     f'{html.escape(title)}</text>')
        parts.append(f'<rect x="{x0}" y="{y1}" width="{x1 - x0}" height="{y0 - y1}" fill="none" stroke="#333"/>')
        for f in (0.5, 0.99):
            parts.append(f'<line x1="{x0}" x2="{x1}" y1="{sy(f):.1f}" y2="{sy(f):.1f}" stroke="#bbb" '
                         f'stroke-dasharray="2,3"/><text x="{x0 - 4}" y="{sy(f) + 4:.1f}" text-anchor="end">{f:g}</text>')
        decade = math.floor(lo)
        while decade <= hi:
            for m in (1, 2, 5):
                v = m * 10 ** decade
                if lo <= math.log10(v) <= hi:
                    parts.append(f'<line x1="{sx(v):.1f}" x2="{sx(v):.1f}" y1="{y0}" y2="{y0 + 4}" stroke="#333"/>'
                                 f'<text x="{sx(v):.1f}" y="{y0 + 16}" text-anchor="middle">{v:g}</text>')
            decade += 1
        parts.append(f'<text x="{(x0 + x1) / 2}" y="{ph - 8}" text-anchor="middle">latency (ms, log scale)</text>')
        for i, (key, label, color) in enumerate(series):
            data = sorted(ms(v) for v in samples[key])
            pts = []
            for j, v in enumerate(data):
                pts.append(f"{sx(v):.1f},{sy(j / len(data)):.1f}")
                pts.append(f"{sx(v):.1f},{sy((j + 1) / len(data)):.1f}")
            parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.3" points="{" ".join(pts)}"/>')
            ly = y0 - 12 - 14 * (len(series) - 1 - i)
            parts.append(f'<line x1="{x1 - 250}" x2="{x1 - 235}" y1="{ly - 4}" y2="{ly - 4}" stroke="{color}" '
                         f'stroke-width="2"/><text x="{x1 - 230}" y="{ly}">{html.escape(label)}: p50 '
                         f'{p50(data):.2f}, p99 {p99(data):.2f} ms</text>')
    parts.append("</svg>")
    return "\n".join(parts)


# ---- docs/performance.md ------------------------------------------------------------------------


def generated_section(rows: Sequence[Row], meta: dict[str, Any], plot_rel: str | None,
                      notes: dict[str, Any]) -> str:
    lines = [BEGIN, "", f"Last run: `{meta['command']}` on {meta['date']}, {meta['runtime']:.0f} s wall.",
             f"Machine: {meta['machine']}. {meta['versions']}." + _load(meta), "",
             markdown_table(rows), ""]
    skipped = meta.get("skipped") or []
    for item in skipped:
        lines.append(f"- Skipped: {item}")
    if skipped:
        lines.append("")
    if plot_rel:
        lines += [f"![Latency CDFs, direct vs through Siesta]({plot_rel})", "",
                  "Latency distributions (empirical CDFs, log scale) of the alternating direct and proxied "
                  "requests above; the dotted lines mark p50 and p99.", ""]
    noted = [r for r in rows if r.note]
    if noted:
        lines.append("Notes to the rows:")
        lines.append("")
        lines += [f"- {r.figure}, {r.metric}: {r.note}" for r in noted]
        lines.append("")
    idle = notes.get("idle")
    if idle:
        names = {"serve": "`siesta serve`", "tray": "tray app, menu closed", "window": "tray app, Models window open"}
        parts = []
        for key, info in idle.items():
            threads = sorted(info["cpu_percent_by_thread"].items(), key=lambda kv: -kv[1])[:4]
            wake = info["wakeups_per_s"]
            parts.append(f"{names.get(key, key)}: " + ", ".join(
                f"{t} {cpu:.3f}% ({wake.get(t, 0.0):.1f}/s)" for t, cpu in threads if cpu > 0 or wake.get(t)))
        lines.append("Idle CPU by thread, with wake-ups per second (context switches): " + "; ".join(parts) + ".")
        lines.append("")
    lag = notes.get("loop_lag")
    if lag:
        lines.append("Event-loop lag, every run (the loop thread's figures from /proc/self/schedstat and its "
                     "thread CPU time at each tick; \"own lag\" is each tick's lateness less the run-queue wait "
                     "in its gap):")
        lines.append("")
        lines.append("| run | p99 | max | run-queue wait over the run | loop thread on a CPU | own lag p99 | "
                     "Siesta process CPU | ticks > 5 ms late (share of those gaps waiting for a CPU) | GC, longest |")
        lines.append("|---|---|---|---|---|---|---|---|---|")
        for key, info in lag.items():
            lines.append(f"| {key} | {info['p99_ms']:.1f} ms | {info['max_ms']:.1f} ms | "
                         f"{info['runqueue_wait_ms']:.0f} ms of {info['run_seconds']:.1f} s | "
                         f"{info['loop_thread_cpu_ms']:.0f} ms | {info['own_lag_p99_ms']:.2f} ms | "
                         f"{info['cpu_percent']:.0f}% of a core | {info['late_ticks_over_5ms']} "
                         f"({100 * info['runqueue_share_of_late_ticks']:.0f}%) | {info['gc_collections']}x, "
                         f"{info['gc_max_ms']:.1f} ms |")
        lines.append("")
    retries = notes.get("retries")
    if retries:
        lines.append(f"Requests retried once because llama-server had closed a pooled keep-alive connection after "
                     f"a streamed answer (see below): {retries['direct']} of the benchmark client's direct requests, "
                     f"{retries['siesta-502']} answered 502 by Siesta.")
        lines.append("")
    imports = notes.get("ps_import")
    if imports:
        lines.append("Slowest imports of `app.cli` (cumulative, `python -X importtime`): "
                     + ", ".join(f"{name} {t:.0f} ms" for name, t in imports) + ".")
        lines.append("")
    lines.append(END)
    return "\n".join(lines)


def _load(meta: dict[str, Any]) -> str:
    """How busy the machine was: its load average (1, 5, 15 min) before and after the run."""
    load = meta.get("loadavg")
    if not load:
        return ""
    fmt = lambda values: " / ".join(f"{v:.2f}" for v in values)  # noqa: E731
    return (f" Load average (1 / 5 / 15 min) before the run {fmt(load['before'])}, after it {fmt(load['after'])}"
            ".")


def write_doc(path: Path, section: str, template: str) -> None:
    """Replaces the generated section of ``path`` (keeping everything outside the markers)."""
    text = path.read_text() if path.exists() else template
    if BEGIN in text and END in text:
        start = text.index(BEGIN)
        end = text.index(END) + len(END)
        text = text[:start] + section + text[end:]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


TEMPLATE = """# Performance

Run the benchmark suite with:

```
python -m bench            # the full run, a few minutes
python -m bench --quick    # a ~1 minute smoke run
```

## Results

{begin}
{end}
"""
