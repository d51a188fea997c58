"""How long a chart takes: our PNG of 10 series × 90 points, beside matplotlib's bare plot of the same data.

    python bench/charts.py

Median of 20 renders each, after one warm-up render (the first chart of a process also pays matplotlib's
import, printed separately: it is measured in a fresh interpreter). The bound: our render under 300 ms.
"""

from __future__ import annotations

import io
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mixpanel_mcp.charts.png import DPI, HEIGHT, WIDTH, render  # noqa: E402

RUNS = 20
BOUND_MS = 300


def spec() -> dict:
    rng = random.Random(7)
    labels = [f"2026-{1 + d // 30:02d}-{1 + d % 30:02d}" for d in range(90)]
    series = [{"name": f"segment {i}", "values": [rng.randint(0, 1000 * (i + 1)) for _ in labels]} for i in range(10)]
    # As spec.py would hand it over: the top 7 and "other".
    other = [sum(s["values"][j] for s in series[7:]) for j in range(90)]
    return {
        "kind": "line",
        "title": "Bench, 10 series × 90 days",
        "x_label": "date (per day)",
        "y_label": "events",
        "labels": labels,
        "series": series[:7] + [{"name": "other (3)", "values": other}],
        "raw": series,
    }


def bare(chart: dict) -> bytes:
    """The floor: matplotlib's defaults, one line per raw series, no labels or formatting."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(WIDTH / DPI, HEIGHT / DPI), dpi=DPI)
    ax = figure.add_subplot()
    for s in chart["raw"]:
        ax.plot(s["values"])
    out = io.BytesIO()
    figure.savefig(out, format="png", dpi=DPI)
    return out.getvalue()


def median_ms(fn, arg) -> float:
    fn(arg)  # warm-up: font cache, first-use paths
    times = []
    for _ in range(RUNS):
        started = time.perf_counter()
        fn(arg)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def import_ms() -> float:
    code = "import time; t = time.perf_counter(); import mixpanel_mcp.charts.png; print((time.perf_counter() - t) * 1000)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path(__file__).parent.parent)
    return float(out.stdout.strip())


def main() -> None:
    chart = spec()
    ours = median_ms(render, chart)
    unfolded = median_ms(render, {**chart, "series": chart["raw"]})
    floor = median_ms(bare, chart)
    print(f"{'render (median of 20)':<34}{'ms':>8}")
    print(f"{'bare matplotlib plot (baseline)':<34}{floor:>8.1f}")
    print(f"{'mixpanel-mcp chart, 7 + other':<34}{ours:>8.1f}   {ours / floor:.2f}x the baseline")
    print(f"{'mixpanel-mcp chart, 10 lines':<34}{unfolded:>8.1f}   {unfolded / floor:.2f}x the baseline")
    ours = max(ours, unfolded)
    print(f"{'first chart: import matplotlib':<34}{import_ms():>8.1f}   (once per process)")
    print(f"PNG {len(render(chart)):,} bytes, {WIDTH}x{HEIGHT}")
    if ours >= BOUND_MS:
        print(f"FAIL: {ours:.0f} ms is over the {BOUND_MS} ms bound", file=sys.stderr)
        sys.exit(1)
    print(f"ok: under {BOUND_MS} ms")


if __name__ == "__main__":
    main()
