"""Run a saved Insights report by its bookmark_id (GET /api/query/insights)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from mixpanel_mcp.client import query
from mixpanel_mcp.tools._base import Access, Args, Needs, Result, Run, ToolGroup
from mixpanel_mcp.tools._series import MAX_SEGMENTS, by_date, fmt, number, tidy, with_raw

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
        values = by_date(numbers)
        out.append({"series": " / ".join(path) or "(all)", "total": tidy(sum(number(v) for v in values.values())), "values": values})
    for key, child in nested.items():
        _leaves(child, [*path, str(key)], out)


@group.operation("insights", Report, access=Access.READ, needs=Needs.QUERY, summary="")
async def insights(run: Run, args: Report) -> Result:
    raw = await query.insights(run.client, bookmark_id=args.bookmark_id)
    raw = raw if isinstance(raw, dict) else {}
    series: list[dict[str, Any]] = []
    _leaves(raw.get("series"), [], series)
    series.sort(key=lambda s: (-number(s["total"]), s["series"]))
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
    shown = ", ".join(f"{s['series']} ({fmt(s['total'])})" for s in series[:5])
    summary = f"Insights report {args.bookmark_id}{span}: {len(series)} series" + (f"; top: {shown}." if shown else ".")
    if "series_omitted" not in data:
        data = with_raw(data, raw)
    return Result(summary, data, narrow_hint="narrow the saved report's date range or breakdown")
