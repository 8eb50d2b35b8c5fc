"""The report's charts, drawn with matplotlib's object API (no pyplot, no global backend) into SVG
strings to inline in the page. Text stays text (``svg.fonttype: none``) so the page is small and
its numbers can be read back from the DOM. Every bar gets an SVG id (``gid``) naming its chart, so
a test can count what was drawn."""

from __future__ import annotations

import io
import math
from collections import Counter
from dataclasses import dataclass

import numpy as np
from matplotlib import rc_context
from matplotlib.figure import Figure

from refine.report.thresholds import Threshold

KEPT = "#4c72b0"
DROPPED = "#dd8452"
THRESHOLD = "#c44e52"
BEFORE = "#a0a0a0"
BINS = 30

_RC = {
    "svg.fonttype": "none",
    "font.family": "sans-serif",
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlesize": 10,
}


def to_svg(fig: Figure, key: str) -> str:
    """The figure as an ``<svg>`` element; ``key`` salts its internal ids (clip paths), so many
    figures can share one page without id clashes."""
    buf = io.StringIO()
    with rc_context({**_RC, "svg.hashsalt": key}):
        fig.savefig(buf, format="svg", bbox_inches="tight")
    text = buf.getvalue()
    return text[text.index("<svg") :]


def _figure(width: float, height: float) -> Figure:
    with rc_context(_RC):
        return Figure(figsize=(width, height), layout="constrained")


def _pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def funnel(labels: list[str], values: list[int], base: int, unit: str, key: str) -> str:
    """Share of ``base`` left after each stage (RefinedWeb's figure 2), one bar per stage, top
    to bottom in pipeline order; each bar is labelled with its absolute value and share."""
    with rc_context(_RC):
        fig = _figure(5.5, 0.32 * len(labels) + 0.9)
        ax = fig.add_subplot()
        y = np.arange(len(labels))
        shares = [100 * v / base if base else 0.0 for v in values]
        bars = ax.barh(y, shares, color=KEPT, height=0.7)
        for i, (bar, v) in enumerate(zip(bars, values, strict=True)):
            bar.set_gid(f"{key}-bar-{i}")
            ax.text(
                bar.get_width() + 1,
                i,
                f"{_fmt_value(v, unit)} ({_pct(v, base)})",
                va="center",
                fontsize=8,
            )
        ax.set_yticks(y, labels)
        ax.invert_yaxis()
        ax.set_xlim(0, 140)
        ax.set_xticks([0, 25, 50, 75, 100])
        ax.set_xlabel(f"% of {_fmt_value(base, unit)} remaining after the stage")
        ax.grid(axis="x", alpha=0.3)
        return to_svg(fig, key)


def _fmt_value(v: float, unit: str) -> str:
    if unit == "bytes":
        return f"{v / 1e6:,.1f} MB"
    return f"{int(v):,} docs"


def reason_bars(reasons: dict[str, int], docs_in: int, key: str) -> str:
    """One bar per drop reason, labelled ``count (share of the stage's input)``."""
    with rc_context(_RC):
        names = list(reasons)
        fig = _figure(4.6, 0.28 * len(names) + 0.7)
        ax = fig.add_subplot()
        y = np.arange(len(names))
        counts = [reasons[n] for n in names]
        bars = ax.barh(y, counts, color=DROPPED, height=0.65)
        top = max(counts) if counts else 1
        for i, (bar, c) in enumerate(zip(bars, counts, strict=True)):
            bar.set_gid(f"{key}-bar-{i}")
            ax.text(c + top * 0.02, i, f"{c:,} ({_pct(c, docs_in)})", va="center", fontsize=8)
        ax.set_yticks(y, names)
        ax.invert_yaxis()
        ax.set_xlim(0, top * 1.45)
        ax.set_xlabel("documents dropped")
        return to_svg(fig, key)


@dataclass
class Histogram:
    svg: str
    bins: int
    notes: list[str]


def _bin_edges(
    values: np.ndarray, integer: bool, marks: list[float]
) -> tuple[np.ndarray, float | None]:
    """Edges over the data, widened to show thresholds near it; a long tail beyond the 99th
    percentile is folded into the last bin (returned as the clip value)."""
    lo, hi = float(values.min()), float(values.max())
    clip = None
    if len(values) >= 50 and not (integer and hi - lo <= BINS):
        p99 = float(np.percentile(values, 99))
        if p99 > lo and hi - lo > 10 * (p99 - lo):
            hi, clip = p99, p99
    span = max(hi - lo, abs(hi) / 10, 1e-9)
    ratios = 0 <= lo and hi <= 1
    for m in marks:
        near = lo - 4 * span <= m <= hi + 4 * span or (ratios and 0 <= m <= 1)
        if near:
            lo, hi = min(lo, m), max(hi, m)
    if integer and hi - lo <= BINS:
        return np.arange(math.floor(lo), math.floor(hi) + 2) - 0.5, clip
    if hi == lo:
        lo, hi = lo - 0.5, hi + 0.5
    return np.linspace(lo, hi, BINS + 1), clip


def histogram(
    name: str,
    values: np.ndarray,
    kept: np.ndarray,
    thresholds: list[Threshold],
    integer: bool,
    key: str,
) -> Histogram | None:
    """Kept and dropped documents stacked per bin, with the stage's thresholds as vertical
    lines. None when the column has no value at all."""
    finite = np.isfinite(values)
    if not finite.any():
        return None
    notes = []
    missing = int((~finite).sum())
    if missing:
        notes.append(f"{missing:,} without a value (not drawn)")
    v, k = values[finite], kept[finite]
    edges, clip = _bin_edges(v, integer, [t.value for t in thresholds])
    over = int((v > edges[-1]).sum())
    if clip is not None and over:
        notes.append(
            f"long tail: {over:,} above {edges[-1]:.4g} (past the 99th percentile, "
            f"max {v.max():.4g}) counted in the last bin"
        )
    v = np.clip(v, edges[0], edges[-1])
    kept_counts, _ = np.histogram(v[k], edges)
    dropped_counts, _ = np.histogram(v[~k], edges)
    with rc_context(_RC):
        fig = _figure(3.9, 2.4)
        ax = fig.add_subplot()
        widths = np.diff(edges)
        left = edges[:-1]
        for label, counts, bottom, color in (
            ("kept", kept_counts, None, KEPT),
            ("dropped", dropped_counts, kept_counts, DROPPED),
        ):
            bars = ax.bar(
                left,
                counts,
                widths,
                bottom=bottom,
                align="edge",
                color=color,
                label=label,
                linewidth=0,
            )
            for i, bar in enumerate(bars):
                bar.set_gid(f"{key}-{label}-{i}")
        lo, hi = edges[0], edges[-1]
        for t in thresholds:
            if lo <= t.value <= hi:
                line = ax.axvline(
                    t.value,
                    color=THRESHOLD,
                    linestyle="--",
                    linewidth=1.2,
                    label=f"{t.param} = {t.value:g}",
                )
                line.set_gid(f"{key}-threshold-{t.param}")
            else:
                notes.append(f"{t.param} = {t.value:g} is off the chart")
        ax.set_title(name, loc="left")
        ax.set_ylabel("documents")
        ax.legend(fontsize=7, frameon=False, loc="best")
        return Histogram(to_svg(fig, key), len(edges) - 1, notes)


def languages(before: Counter, after: Counter, key: str, top: int = 15) -> str:
    """Documents per top language before (all rows of the log) and after (kept rows)."""
    names = [lang for lang, _ in before.most_common(top)]
    rest_before = sum(before.values()) - sum(before[n] for n in names)
    rest_after = sum(after.values()) - sum(after[n] for n in names)
    b = [before[n] for n in names]
    a = [after[n] for n in names]
    if rest_before:
        names.append("other")
        b.append(rest_before)
        a.append(rest_after)
    with rc_context(_RC):
        fig = _figure(6.2, 0.3 * len(names) + 0.9)
        ax = fig.add_subplot()
        y = np.arange(len(names))
        top_count = max(b) if b else 1
        for label, counts, offset, color in (
            ("before", b, -0.2, BEFORE),
            ("after", a, 0.2, KEPT),
        ):
            bars = ax.barh(y + offset, counts, height=0.4, color=color, label=label)
            for i, (bar, c) in enumerate(zip(bars, counts, strict=True)):
                bar.set_gid(f"{key}-{label}-{i}")
                if c:
                    ax.text(c + top_count * 0.01, i + offset, f"{c:,}", va="center", fontsize=7)
        ax.set_yticks(y, names)
        ax.invert_yaxis()
        ax.set_xlim(0, top_count * 1.15)
        ax.set_xlabel("documents")
        ax.legend(frameon=False, loc="lower right")
        return to_svg(fig, key)


def cluster_sizes(sizes: Counter, key: str) -> str:
    """Number of duplicate clusters per cluster size (documents, survivor included)."""
    xs = sorted(sizes)
    with rc_context(_RC):
        fig = _figure(min(4.2, 1.6 + 0.3 * len(xs)), 2.4)
        ax = fig.add_subplot()
        bars = ax.bar([str(x) for x in xs], [sizes[x] for x in xs], color=DROPPED)
        for i, bar in enumerate(bars):
            bar.set_gid(f"{key}-bar-{i}")
            ax.text(i, bar.get_height(), f"{sizes[xs[i]]:,}", ha="center", va="bottom", fontsize=8)
        ax.set_xlabel("documents in the cluster (survivor included)")
        ax.set_ylabel("clusters")
        return to_svg(fig, key)
