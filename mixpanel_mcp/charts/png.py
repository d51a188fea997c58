"""Draw a chart description as an 800×450 PNG with matplotlib (Agg: no display, no GUI toolkit).

Imported only when a call asks for a chart: matplotlib costs about half a second to import.
"""

from __future__ import annotations

import io
import math
from typing import Any

import matplotlib

matplotlib.use("Agg")  # before anything imports pyplot: never a GUI backend on a server

from matplotlib.colors import LinearSegmentedColormap  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FuncFormatter, MaxNLocator  # noqa: E402

WIDTH, HEIGHT, DPI = 800, 450, 100

# Okabe & Ito's colour-blind-safe palette; grey is kept for "other".
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000"]
OTHER = "#999999"
HEAT = LinearSegmentedColormap.from_list("retention", ["#FFFFFF", "#56B4E9", "#0072B2"])  # one hue: safe for all


def _count(value: float, _pos: Any = None) -> str:
    if abs(value) >= 1_000_000:
        return f"{value / 1_000_000:.1f}M"
    if abs(value) >= 10_000:
        return f"{value / 1_000:.0f}k"
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}"


def _figure(spec: dict[str, Any]) -> Figure:
    figure = Figure(figsize=(WIDTH / DPI, HEIGHT / DPI), dpi=DPI)
    figure.suptitle(spec.get("title", ""), fontsize=12, x=0.02, ha="left")
    return figure


def _no_data(figure: Figure) -> None:
    figure.text(0.5, 0.5, "no data", ha="center", va="center", fontsize=28, color="#555555")


def _line(figure: Figure, spec: dict[str, Any]) -> None:
    ax = figure.add_subplot()
    labels = spec["labels"]
    x = range(len(labels))
    for i, series in enumerate(spec["series"]):
        other = series["name"].startswith("other (")
        color = OTHER if other else PALETTE[i % len(PALETTE)]
        values = [math.nan if v is None else v for v in series["values"]]
        ax.plot(x, values, label=series["name"], color=color, linewidth=2 if not other else 1.5,
                linestyle="--" if other else "-", marker="o" if len(labels) <= 31 else None, markersize=3)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=8, integer=True))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _p: labels[int(v)] if 0 <= int(v) < len(labels) else ""))
    whole = all(float(v).is_integer() for s in spec["series"] for v in s["values"] if v is not None)
    ax.yaxis.set_major_locator(MaxNLocator(integer=whole))
    ax.yaxis.set_major_formatter(FuncFormatter(_count))
    ax.set_ylim(bottom=0)
    ax.grid(axis="y", color="#DDDDDD")
    ax.set_xlabel(spec["x_label"])
    ax.set_ylabel(spec["y_label"])
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=9)
    figure.subplots_adjust(left=0.09, right=0.76, top=0.88, bottom=0.13)
    for label in ax.get_xticklabels():
        label.set_fontsize(8)


def _funnel(figure: Figure, spec: dict[str, Any]) -> None:
    ax = figure.add_subplot()
    counts = [v or 0 for v in spec["series"][0]["values"]]
    bars = ax.bar(range(len(counts)), counts, color=PALETTE[0], width=0.6)
    first = counts[0] if counts else 0
    for i, (bar, count) in enumerate(zip(bars, counts, strict=True)):
        pct = f"{100 * count / first:.1f}%" if first else "n/a"
        step = f"\n{100 * count / counts[i - 1]:.1f}% of previous" if i and counts[i - 1] else ""
        ax.annotate(f"{_count(count)} ({pct}){step}", (bar.get_x() + bar.get_width() / 2, count), xytext=(0, 3),
                    textcoords="offset points", ha="center", va="bottom", fontsize=9)
    ax.set_xticks(range(len(counts)), spec["labels"], fontsize=9)
    ax.yaxis.set_major_formatter(FuncFormatter(_count))
    ax.set_ylim(0, max(counts, default=1) * 1.2 or 1)
    ax.set_xlabel(spec["x_label"])
    ax.set_ylabel(spec["y_label"])
    ax.spines[["top", "right"]].set_visible(False)
    figure.subplots_adjust(left=0.1, right=0.97, top=0.88, bottom=0.15)


def _heat(figure: Figure, spec: dict[str, Any]) -> None:
    ax = figure.add_subplot()
    columns = spec["labels"]
    rows = spec["series"]
    grid = [[math.nan if i >= len(r["values"]) or r["values"][i] is None else r["values"][i] for i in range(len(columns))] for r in rows]
    image = ax.imshow(grid, cmap=HEAT, vmin=0, vmax=100, aspect="auto")
    if len(rows) * len(columns) <= 200:  # the numbers themselves, while they fit
        for y, row in enumerate(grid):
            for x, value in enumerate(row):
                if not math.isnan(value):
                    ax.text(x, y, f"{value:.0f}%", ha="center", va="center", fontsize=8,
                            color="white" if value > 60 else "black")
    ax.set_xticks(range(len(columns)), columns, fontsize=8)
    ax.set_yticks(range(len(rows)), [r["name"] for r in rows], fontsize=8)
    ax.set_xlabel(spec["x_label"])
    ax.set_ylabel(spec["y_label"])
    figure.colorbar(image, ax=ax, format="%d%%", fraction=0.04, pad=0.02).set_label("% of cohort")
    figure.subplots_adjust(left=0.24, right=0.86, top=0.88, bottom=0.13)


_DRAW = {"line": _line, "funnel": _funnel, "heat": _heat}


def _empty(spec: dict[str, Any]) -> bool:
    """Nothing but zeros is no data too: Mixpanel answers an event never sent with a zero per date."""
    return not spec.get("labels") or not any(v for s in spec.get("series") or [] for v in s["values"])


def render(spec: dict[str, Any]) -> bytes:
    """The PNG bytes of a chart description; a chart with nothing to draw says "no data"."""
    figure = _figure(spec)
    if _empty(spec):
        _no_data(figure)
    else:
        _DRAW[spec["kind"]](figure, spec)
    out = io.BytesIO()
    figure.savefig(out, format="png", dpi=DPI)
    return out.getvalue()
