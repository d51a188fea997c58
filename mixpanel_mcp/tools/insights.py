"""Run a saved Insights report by its bookmark_id (GET /api/query/insights)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from mixpanel_mcp.client import query
from mixpanel_mcp.tools._base import Access, Args, Needs, Result, Run, ToolGroup
from mixpanel_mcp.tools._series import MAX_SEGMENTS, NOT_ADDITIVE, by_date, fmt, number, per_period_figures, tidy

group = ToolGroup(
    name="insights",
    title="Saved report",
    description="Run a saved Insights report by its bookmark_id.",
    single=True,
)


class Report(Args):
    bookmark_id: int = Field(ge=1, description="The number after report- in the report's URL.")


def _leaves(node: Any, path: list[str], out: list[dict[str, Any]]) -> None:
    """Each innermost {key: number} mapping of the nested series, named by its path of keys."""
    if not isinstance(node, dict):
        return
    nested = {k: v for k, v in node.items() if isinstance(v, dict)}
    numbers = {k: v for k, v in node.items() if not isinstance(v, dict)}
    if numbers:
        name = " / ".join(path) or "(all)"
        # Ratios (a funnel's step_conv_ratio next to its count) and averages are shown, never added up.
        ratios = {k: v for k, v in numbers.items() if NOT_ADDITIVE.search(str(k))}
        counts = by_date({k: v for k, v in numbers.items() if k not in ratios})
        if any(NOT_ADDITIVE.search(part) for part in path):  # a series of averages or rates over time
            out.append({"series": name, **per_period_figures(counts), "values": counts})
        elif counts:
            out.append({"series": name, "total": tidy(sum(number(v) for v in counts.values())), "values": counts})
        if ratios:
            out.append({"series": name, "not_added_up": ratios})
    for key, child in nested.items():
        _leaves(child, [*path, str(key)], out)


def _figure(series: dict[str, Any]) -> str:
    """One series in the summary: a total only for counts; averages by their mean and range; ratios as given."""
    if "total" in series:
        return f"{series['series']} (total {fmt(series['total'])})"
    if "mean_of_periods" in series:
        low, high = series["range"] or (None, None)
        return f"{series['series']} (mean of periods {fmt(series['mean_of_periods'])}, range {fmt(low)} to {fmt(high)})"
    ratios = ", ".join(f"{k} {fmt(v)}" for k, v in series["not_added_up"].items())
    return f"{series['series']} ({ratios})"


@group.operation("insights", Report, access=Access.READ, needs=Needs.QUERY, summary="")
async def insights(run: Run, args: Report) -> Result:
    raw = await query.insights(run.client, bookmark_id=args.bookmark_id)
    raw = raw if isinstance(raw, dict) else {}
    series: list[dict[str, Any]] = []
    _leaves(raw.get("series"), [], series)
    series.sort(key=lambda s: ("total" not in s, -number(s.get("total")), s["series"]))
    data: dict[str, Any] = {
        "bookmark_id": args.bookmark_id,
        "computed_at": raw.get("computed_at"),
        "date_range": raw.get("date_range"),
        "headers": raw.get("headers"),
        "series_count": len(series),
        "series": series[:MAX_SEGMENTS],
    }
    if len(series) > MAX_SEGMENTS:
        data["series_omitted"] = len(series) - MAX_SEGMENTS
        data["hint"] = "smaller series not shown; narrow the saved report's breakdown in Mixpanel."
    date_range = raw.get("date_range") if isinstance(raw.get("date_range"), dict) else {}
    span = ""
    if date_range.get("from_date") and date_range.get("to_date"):
        span = f", {str(date_range['from_date'])[:10]} to {str(date_range['to_date'])[:10]}"
    shown = ", ".join(_figure(s) for s in series[:5])
    summary = f"Insights report {args.bookmark_id}{span}: {len(series)} series" + (f"; top: {shown}." if shown else ".")
    # Mixpanel's own answer is not repeated: its series, dates and headers are all above.
    return Result(summary, data, narrow_hint="narrow the saved report's date range or breakdown")
