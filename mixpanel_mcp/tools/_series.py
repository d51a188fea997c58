"""Shaping of the Query API's report answers, shared by the report tools.

Numbers are printed the same way everywhere, Mixpanel's {"data": {"series", "values"}} answers become
date-ordered segments ranked by total, and Mixpanel's own JSON is kept only where it holds more than the
shaped answer (and is small).
"""

from __future__ import annotations

import datetime as dt
import re
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


# Keys of a metric that is a ratio or an average: adding such values up means nothing.
NOT_ADDITIVE = re.compile(r"ratio|conv|rate|avg|average|mean|median|percent|pct|percentile|^p\d+$", re.I)


def per_period_figures(values: dict[str, Any]) -> dict[str, Any]:
    """Averages or ratios per period: their mean over the periods and their range, never a sum."""
    numbers = [number(v) for v in values.values() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if not numbers:
        return {"mean_of_periods": None, "range": None}
    return {"mean_of_periods": tidy(sum(numbers) / len(numbers)), "range": [tidy(min(numbers)), tidy(max(numbers))]}


def ranked_series(raw: Any, *, cap: int = MAX_SEGMENTS, additive: bool = True) -> dict[str, Any]:
    """{"data": {"series", "values"}} -> dates in order, segments ranked by total (top `cap` shown).

    With `additive` false (per-period averages), a segment has its mean over the periods and its range
    instead of a total, and there is no grand total.
    """
    body = raw.get("data") if isinstance(raw, dict) else None
    body = body if isinstance(body, dict) else {}
    values = body.get("values") if isinstance(body.get("values"), dict) else {}
    dates = {str(d) for d in body.get("series") or []}
    segments = []
    for name, counts in values.items():
        ordered = by_date(counts)
        dates.update(ordered)
        if additive:
            segments.append({"segment": name, "total": tidy(sum(number(v) for v in ordered.values())), "values": ordered})
        else:
            segments.append({"segment": name, **per_period_figures(ordered), "values": ordered})
    rank = "total" if additive else "mean_of_periods"
    segments.sort(key=lambda s: (-(s[rank] or 0), str(s["segment"])))
    data: dict[str, Any] = {"dates": sorted(dates), "segment_count": len(segments)}
    if additive:
        data["grand_total"] = tidy(sum(s["total"] for s in segments))
    data["segments"] = segments[:cap]
    if len(segments) > cap:
        data["segments_omitted"] = len(segments) - cap
        data["hint"] = f"{len(segments) - cap} smaller segments not shown; use limit or where to focus."
    # Mixpanel's own answer is left out: it holds the same numbers as the segments, only unordered.
    return data


def series_summary(data: dict[str, Any], *, head: str, type: str | None, segmented: bool, what: str = "segment") -> str:
    """One or two sentences quoting the numbers: the overall total, then the top segments or the peak."""
    segments = data["segments"]
    dates = data["dates"]
    span = f" from {dates[0]} to {dates[-1]}" if dates else ""
    if not segments:
        return f"{head}{span}: no data."
    if type == "average":
        return _averages_summary(data, head + span, segmented=segmented, what=what)
    if type == "unique":
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


def _averages_summary(data: dict[str, Any], head: str, *, segmented: bool, what: str) -> str:
    """Per-period averages are quoted as their mean over the periods and their range, never added up."""
    measure = "average events per user per period"

    def figures(segment: dict[str, Any]) -> str:
        low, high = segment["range"] or (None, None)
        return f"mean of periods {fmt(segment['mean_of_periods'])} (range {fmt(low)} to {fmt(high)})"

    segments = data["segments"]
    if not segmented:
        return f"{head}: {measure}, {figures(segments[0])}."
    shown = "; ".join(f"{s['segment']}: {figures(s)}" for s in segments[:5])
    more = f"; {data['segments_omitted']} more not shown" if data.get("segments_omitted") else ""
    return f"{head}: {measure} over {data['segment_count']} {what}(s); top: {shown}{more}."


def partial_periods(
    dates: list[str], unit: str, from_date: str | None, to_date: str | None, today: dt.date | None = None
) -> dict[str, str]:
    """Buckets that are not a whole `unit`: cut by the date range, or not over yet. {bucket: what it covers}."""
    if unit not in ("day", "week", "month"):
        return {}
    today = today or dt.datetime.now(dt.UTC).date()
    first = _date(from_date)
    last = _date(to_date)
    found = {}
    for key in dates:
        start = _date(key)
        if start is None:
            continue
        if unit == "week":
            end = start + dt.timedelta(days=6)
        elif unit == "month":
            end = dt.date(start.year + start.month // 12, start.month % 12 + 1, 1) - dt.timedelta(days=1)
        else:
            end = start
        covered_from = max(start, first) if first else start
        covered_to = min(end, last) if last else end
        notes = []
        if (covered_from, covered_to) != (start, end):
            notes.append(f"covers {covered_from.isoformat()}..{covered_to.isoformat()} only, not the whole {unit}")
        if covered_to >= today:
            notes.append("not over yet")
        if notes:
            found[key] = "; ".join(notes)
    return found


def _date(text: str | None) -> dt.date | None:
    try:
        return dt.date.fromisoformat(str(text)[:10]) if text else None
    except ValueError:
        return None


def series_result(
    raw: Any,
    fields: dict[str, Any],
    *,
    head: str,
    type: str | None,
    segmented: bool = True,
    what: str = "segment",
    period: tuple[str, str | None, str | None] | None = None,
) -> Result:
    """A {"data": {"series", "values"}} answer as a Result: `fields` (the request's own), then the ranked series.

    `period` (unit, from_date, to_date) lets the answer say which buckets are not a whole unit.
    """
    data = ranked_series(raw, additive=type != "average")
    if not any(number(v) for s in data["segments"] for v in s["values"].values()):
        # Nothing but zeros: no page of them. The caller checks the names (tools/_empty.py).
        dates = data["dates"]
        span = f" from {dates[0]} to {dates[-1]}" if dates else ""
        data = {"dates": dates[:1] + dates[-1:], "empty": True, "segments": [s["segment"] for s in data["segments"]]}
        return Result(f"{head}{span}: nothing counted (every period is 0).", {**fields, **data}, narrow_hint=NARROW_HINT)
    summary = series_summary(data, head=head, type=type, segmented=segmented, what=what)
    if period is not None and data["segments"]:
        partial = partial_periods(data["dates"], *period)
        if partial:
            data["partial_periods"] = partial
            summary += " Not whole periods: " + "; ".join(f"{k} {v}" for k, v in partial.items()) + "."
    return Result(summary, {**fields, **data}, narrow_hint=NARROW_HINT)
