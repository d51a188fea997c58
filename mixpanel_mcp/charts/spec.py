"""A report's data -> a chart description both renderers read.

The description is plain JSON (it also travels to the MCP Apps view in the result's `_meta`):

    {"kind": "line" | "funnel" | "heat", "title", "x_label", "y_label",
     "labels": [x categories or heat columns], "series": [{"name", "values": [number | null]}]}

Series charts keep the largest `TOP_SERIES` series and fold the rest into one "other" series, so a
chart stays readable whatever the breakdown.
"""

from __future__ import annotations

from typing import Any

from mcp.server.apps import APP_MIME_TYPE

VIEW_URI = "ui://mixpanel-mcp/chart.html"
VIEW_MIME = APP_MIME_TYPE
META_KEY = "mixpanel-mcp/chart"  # where a result carries its chart description for the view

TOP_SERIES = 7  # plus "other": eight colours of the colour-blind-safe palette
MAX_HEAT_ROWS = 30

# The tools and operations that can draw a chart, i.e. take `chart: true`.
CHARTED: dict[str, frozenset[str]] = {
    "segmentation": frozenset({"segment"}),
    "funnels": frozenset({"query"}),
    "retention": frozenset({"query", "frequency"}),
    "insights": frozenset({"insights"}),
    "events": frozenset({"counts"}),
}

_MEASURE = {"general": "events", "unique": "unique users", "average": "events per user"}


def charted(tool: str, operation: str) -> bool:
    return operation in CHARTED.get(tool, ())


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _folded(named: list[tuple[str, dict[str, Any]]], labels: list[str]) -> list[dict[str, Any]]:
    """(name, {label: value}) in rank order -> the top series, then one "other" summing the rest."""
    series = [{"name": name, "values": [_number(values.get(x)) for x in labels]} for name, values in named[:TOP_SERIES]]
    rest = named[TOP_SERIES:]
    if rest:
        other = [sum(_number(values.get(x)) or 0.0 for _, values in rest) for x in labels]
        series.append({"name": f"other ({len(rest)})", "values": other})
    return series


def _short(label: str) -> str:
    """'2026-11-02T00:00:00+00:00' -> '2026-11-02' (Insights' dates); a time of day is kept as hh:mm."""
    if len(label) > 10 and label[4:5] == "-" and label[10:11] in ("T", " "):
        return label[:10] if label[11:19] in ("", "00:00:00") else label[:16].replace("T", " ")
    return label


def _line(title: str, x_label: str, y_label: str, named: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    labels = sorted({str(x) for _, values in named for x in values})
    named = [(name, {str(k): v for k, v in values.items()}) for name, values in named]
    return {
        "kind": "line",
        "title": title,
        "x_label": x_label,
        "y_label": y_label,
        "labels": [_short(x) for x in labels],
        "series": _folded(named, labels) if labels else [],
    }


def _segments(data: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(str(s.get("segment")), s.get("values") or {}) for s in data.get("segments") or [] if isinstance(s, dict)]


def _span(labels: list[str]) -> str:
    return f", {labels[0]} to {labels[-1]}" if labels else ""


def _with_span(spec: dict[str, Any]) -> dict[str, Any]:
    spec["title"] += _span(spec["labels"])
    return spec


def _segmentation(args: Any, data: dict[str, Any]) -> dict[str, Any]:
    where = f" where {args.where}" if getattr(args, "where", None) else ""
    by = f" by {args.on}" if getattr(args, "on", None) else ""
    unit = f"{args.interval}-day bucket" if getattr(args, "interval", None) else args.unit
    title = f"{args.event}{where}{by}"
    return _with_span(_line(title, f"date (per {unit})", _MEASURE.get(args.type, "events"), _segments(data)))


def _event_counts(args: Any, data: dict[str, Any]) -> dict[str, Any]:
    return _with_span(_line("Event counts", f"date (per {args.unit})", _MEASURE.get(args.type, "events"), _segments(data)))


def _insights(args: Any, data: dict[str, Any]) -> dict[str, Any]:
    named = [(str(s.get("series")), s.get("values") or {}) for s in data.get("series") or [] if isinstance(s, dict)]
    return _with_span(_line(f"Insights report {args.bookmark_id}", "date", "value", named))


def _funnel(args: Any, data: dict[str, Any]) -> dict[str, Any]:
    steps = [s for s in data.get("steps") or [] if isinstance(s, dict)]
    return {
        "kind": "funnel",
        "title": f"Funnel {args.funnel_id}, {args.from_date} to {args.to_date}",
        "x_label": "step",
        "y_label": "users (% of step 1)",
        "labels": [f"{s.get('step')}. {s.get('event')}" for s in steps],
        "series": [{"name": "users", "values": [_number(s.get("count")) for s in steps]}] if steps else [],
    }


def _retention(args: Any, data: dict[str, Any]) -> dict[str, Any]:
    rows = [(str(r["cohort"]), r) for r in data.get("cohorts") or []]
    for name, cohorts in (data.get("segments") or {}).items():
        rows.extend((f"{name} · {r['cohort']}", r) for r in cohorts)
    returning = f"'{args.event}'" if getattr(args, "event", None) else "any event"
    return {
        "kind": "heat",
        "title": f"Retention of {returning}, {args.from_date} to {args.to_date}",
        "x_label": f"{data.get('unit', 'day')}s since the cohort's first",
        "y_label": "cohort (users)",
        "labels": [str(i) for i in data.get("intervals") or []],
        "series": [
            {"name": f"{name} ({r.get('size', 0):,})", "values": [_number(p) for p in r.get("retained_pct") or []]}
            for name, r in rows[:MAX_HEAT_ROWS]
        ],
    }


def _frequency(args: Any, data: dict[str, Any]) -> dict[str, Any]:
    periods = [p for p in data.get("periods") or [] if isinstance(p, dict)]
    width = max((len(p.get("at_least_pct") or []) for p in periods), default=0)
    what = f"'{args.event}'" if getattr(args, "event", None) else "any event"
    return {
        "kind": "heat",
        "title": f"Frequency of {what} per {args.unit}, {args.from_date} to {args.to_date}",
        "x_label": f"active in at least N {args.addiction_unit}s",
        "y_label": f"{args.unit} (active users)",
        "labels": [str(n) for n in range(1, width + 1)],
        "series": [
            {"name": f"{p.get('date')} ({p.get('active_users', 0):,})", "values": [_number(v) for v in p.get("at_least_pct") or []]}
            for p in periods[:MAX_HEAT_ROWS]
        ],
    }


_BUILDERS = {
    ("segmentation", "segment"): _segmentation,
    ("events", "counts"): _event_counts,
    ("insights", "insights"): _insights,
    ("funnels", "query"): _funnel,
    ("retention", "query"): _retention,
    ("retention", "frequency"): _frequency,
}


def chart_spec(tool: str, operation: str, args: Any, data: dict[str, Any]) -> dict[str, Any] | None:
    """The chart of one report call, or None for an operation that has none."""
    build = _BUILDERS.get((tool, operation))
    return None if build is None else build(args, data)
