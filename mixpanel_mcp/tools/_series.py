"""Shaping of the Query API's report answers, shared by the report tools.

Numbers are printed the same way everywhere, Mixpanel's {"data": {"series", "values"}} answers become
date-ordered segments ranked by total, and Mixpanel's own JSON is kept when it is small.
"""

from __future__ import annotations

from typing import Any

from mixpanel_mcp.results import size
from mixpanel_mcp.tools._base import Result

MAX_SEGMENTS = 50  # segments shown; the rest are counted, not listed
RAW_LIMIT = 6_000  # Mixpanel's own JSON is included when it is at most this many characters
NARROW_HINT = "narrow from_date/to_date, add where, or lower limit"


def fmt(value: Any) -> str:
    """1234 -> '1,234'; 3.14159 -> '3.14'; anything else as text."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.2f}"
    return f"{int(value):,}"


def number(value: Any) -> float | int:
    """A number from Mixpanel's JSON, or 0 for anything else."""
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


def tidy(value: float | int) -> float | int:
    """Whole floats as ints, others rounded to 4 places: sums of floats print cleanly."""
    if isinstance(value, float):
        return int(value) if value.is_integer() else round(value, 4)
    return value


def listed(items: list[Any], shown: int = 10) -> str:
    """The first `shown` items, comma-separated, then how many more there are."""
    text = ", ".join(str(n) for n in items[:shown])
    return text + (f", and {len(items) - shown} more" if len(items) > shown else "")


def by_date(values: Any) -> dict[str, Any]:
    """A {date: n} mapping in date order (Mixpanel's is unordered)."""
    if not isinstance(values, dict):
        return {}
    return {key: values[key] for key in sorted(values)}


def with_raw(data: dict[str, Any], raw: Any) -> dict[str, Any]:
    """Add Mixpanel's own answer under "mixpanel" when it is small enough to be worth the tokens."""
    if size(raw) <= RAW_LIMIT:
        data["mixpanel"] = raw
    return data


def ranked_series(raw: Any, *, cap: int = MAX_SEGMENTS) -> dict[str, Any]:
    """{"data": {"series", "values"}} -> dates in order, segments ranked by total (top `cap` shown)."""
    body = raw.get("data") if isinstance(raw, dict) else None
    body = body if isinstance(body, dict) else {}
    values = body.get("values") if isinstance(body.get("values"), dict) else {}
    dates = {str(d) for d in body.get("series") or []}
    segments = []
    for name, counts in values.items():
        ordered = by_date(counts)
        dates.update(ordered)
        segments.append({"segment": name, "total": tidy(sum(number(v) for v in ordered.values())), "values": ordered})
    segments.sort(key=lambda s: (-s["total"], str(s["segment"])))
    data: dict[str, Any] = {
        "dates": sorted(dates),
        "segment_count": len(segments),
        "grand_total": tidy(sum(s["total"] for s in segments)),
        "segments": segments[:cap],
    }
    if len(segments) > cap:
        data["segments_omitted"] = len(segments) - cap
        data["hint"] = f"{len(segments) - cap} smaller segments not shown; use limit or where to focus."
        return data  # Mixpanel's own answer would repeat what was just cut
    return with_raw(data, raw)


def series_summary(data: dict[str, Any], *, head: str, type: str | None, segmented: bool, what: str = "segment") -> str:
    """One or two sentences quoting the numbers: the overall total, then the top segments or the peak."""
    segments = data["segments"]
    dates = data["dates"]
    span = f" from {dates[0]} to {dates[-1]}" if dates else ""
    if not segments:
        return f"{head}{span}: no data."
    if type == "average":
        measure = "average events per user per period"
    elif type == "unique":
        measure = "sum of per-period unique users"
    else:
        measure = "events"
    if not segmented:
        top = segments[0]
        peak = max(top["values"].items(), key=lambda kv: number(kv[1]), default=None)
        peak_text = f"; peak {peak[0]} ({fmt(peak[1])})" if peak else ""
        return f"{head}{span}: {fmt(top['total'])} {measure}{peak_text}."
    shown = ", ".join(f"{s['segment']} ({fmt(s['total'])})" for s in segments[:5])
    more = f"; {data['segments_omitted']} more not shown" if data.get("segments_omitted") else ""
    return (
        f"{head}{span}: {fmt(data['grand_total'])} {measure} over {data['segment_count']} {what}(s); "
        f"top: {shown}{more}."
    )


def series_result(
    raw: Any, fields: dict[str, Any], *, head: str, type: str | None, segmented: bool = True, what: str = "segment"
) -> Result:
    """A {"data": {"series", "values"}} answer as a Result: `fields` (the request's own), then the ranked series."""
    data = ranked_series(raw)
    summary = series_summary(data, head=head, type=type, segmented=segmented, what=what)
    return Result(summary, {**fields, **data}, narrow_hint=NARROW_HINT)
