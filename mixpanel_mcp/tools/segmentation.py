"""Count an event over time, optionally segmented by a property (GET /api/query/segmentation*).

Also home of what the report tools share: the count `type`, the optional-period rule, and the shaping of
Mixpanel's {"data": {"series", "values"}} answers into date-ordered, ranked segments with totals.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import Field, TypeAdapter, WithJsonSchema, model_validator
from pydantic_core import PydanticCustomError

from mixpanel_mcp.client import query
from mixpanel_mcp.results import size
from mixpanel_mcp.tools._base import Access, Args, Needs, Result, Run, ToolGroup
from mixpanel_mcp.tools._params import DateRange, EventName, On, Where

group = ToolGroup(
    name="segmentation",
    title="Segmentation",
    description="Count an event over time, optionally segmented by a property.",
)

CountType = Annotated[
    Literal["general", "unique", "average"],
    Field(description="unique = users; average = events per user."),
]


def optional(kind: Any) -> Any:
    """`kind | None`: validated as nullable (one clear error), advertised as just `kind` (omitting it is the null)."""
    return Annotated[kind | None, WithJsonSchema(TypeAdapter(kind).json_schema())]


MAX_SEGMENTS = 50  # segments shown; the rest are counted, not listed
RAW_LIMIT = 6_000  # Mixpanel's own JSON is included when it is at most this many characters
NARROW_HINT = "narrow from_date/to_date, add where, or lower limit"


# -- shared by the report tools --------------------------------------------------------------


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


def check_period(model: Any) -> None:
    """from_date + to_date, or interval: one of the two, dates in order."""
    has_dates = model.from_date is not None or model.to_date is not None
    if model.interval is not None and has_dates:
        raise PydanticCustomError(
            "period_conflict", "give from_date/to_date or interval, not both", {"example": "interval=7"}
        )
    if model.interval is None and (model.from_date is None or model.to_date is None):
        raise PydanticCustomError(
            "period_missing",
            "needs from_date and to_date (or interval)",
            {"example": "from_date=2026-01-01, to_date=2026-01-31"},
        )
    if model.from_date is not None and model.to_date is not None and model.from_date > model.to_date:
        raise PydanticCustomError(
            "date_order",
            "from_date {from_date} is after to_date {to_date}",
            {"from_date": model.from_date, "to_date": model.to_date, "example": "from_date=2026-01-01, to_date=2026-01-31"},
        )


# -- operations ------------------------------------------------------------------------------


SegmentUnit = Literal["minute", "hour", "day", "month"]


class Segment(DateRange):
    event: EventName
    on: optional(On) = None
    unit: SegmentUnit = "day"
    interval: optional(Annotated[int, Field(ge=1, le=366, description="Days per bucket, for unique/average.")]) = None
    where: optional(Where) = None
    limit: optional(Annotated[int, Field(ge=1, le=10_000)]) = None
    type: CountType = "general"

    @model_validator(mode="after")
    def _interval_needs_type(self) -> Self:
        if self.interval is not None and self.type == "general":
            raise PydanticCustomError(
                "interval_type", "interval works with type unique or average only", {"example": "type=unique, interval=7"}
            )
        return self


class Aggregate(DateRange):
    event: EventName
    on: On
    unit: SegmentUnit = "day"
    where: optional(Where) = None

    @model_validator(mode="after")
    def _hour_or_day(self) -> Self:
        if self.unit not in ("hour", "day"):
            raise PydanticCustomError(
                "unit_hour_day", "unit must be hour or day here, not {unit}", {"unit": self.unit, "example": "unit=day"}
            )
        return self


class Numeric(Aggregate):
    type: CountType = "general"


def _head(args: Any) -> str:
    where = f" where {args.where}" if args.where else ""
    return f"{args.event}{where}, by {getattr(args, 'unit', 'day')}"


@group.operation("segment", Segment, access=Access.READ, needs=Needs.QUERY, summary="")
async def segment(run: Run, args: Segment) -> Result:
    raw = await query.segmentation(
        run.client,
        event=args.event,
        from_date=args.from_date,
        to_date=args.to_date,
        on=args.on,
        unit=None if args.interval else args.unit,
        interval=args.interval,
        where=args.where,
        limit=args.limit,
        type=args.type,
    )
    data = ranked_series(raw)
    head = _head(args) if args.interval is None else f"{args.event}, {args.interval}-day buckets"
    summary = series_summary(data, head=head, type=args.type, segmented=args.on is not None)
    return Result(summary, {"event": args.event, "type": args.type, **data}, narrow_hint=NARROW_HINT)


@group.operation("numeric", Numeric, access=Access.READ, needs=Needs.QUERY, summary="counts per numeric range of on")
async def numeric(run: Run, args: Numeric) -> Result:
    raw = await query.segmentation_numeric(
        run.client,
        event=args.event,
        from_date=args.from_date,
        to_date=args.to_date,
        on=args.on,
        unit=args.unit,
        where=args.where,
        type=args.type,
    )
    data = ranked_series(raw)
    summary = series_summary(data, head=f"{_head(args)}, {args.on} in buckets", type=args.type, segmented=True, what="bucket")
    return Result(summary, {"event": args.event, "on": args.on, **data}, narrow_hint=NARROW_HINT)


def _results(raw: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    results = by_date(raw.get("results") if isinstance(raw, dict) else None)
    data: dict[str, Any] = {"results": results}
    if isinstance(raw, dict) and raw.get("computed_at"):
        data["computed_at"] = raw["computed_at"]
    return results, data


@group.operation("sum", Aggregate, access=Access.READ, needs=Needs.QUERY, summary="")
async def sum_(run: Run, args: Aggregate) -> Result:
    raw = await query.segmentation_sum(
        run.client,
        event=args.event,
        from_date=args.from_date,
        to_date=args.to_date,
        on=args.on,
        unit=args.unit,
        where=args.where,
    )
    results, data = _results(raw)
    total = tidy(sum(number(v) for v in results.values()))
    data = {"event": args.event, "on": args.on, "total": total, **data}
    summary = f"Sum of {args.on} over {_head(args)} from {args.from_date} to {args.to_date}: {fmt(total)}"
    if results:
        peak = max(results.items(), key=lambda kv: number(kv[1]))
        summary += f"; highest {peak[0]} ({fmt(peak[1])})"
    return Result(summary + ".", with_raw(data, raw), narrow_hint=NARROW_HINT)


@group.operation("average", Aggregate, access=Access.READ, needs=Needs.QUERY, summary="")
async def average(run: Run, args: Aggregate) -> Result:
    raw = await query.segmentation_average(
        run.client,
        event=args.event,
        from_date=args.from_date,
        to_date=args.to_date,
        on=args.on,
        unit=args.unit,
        where=args.where,
    )
    results, data = _results(raw)
    data = {"event": args.event, "on": args.on, **data}
    summary = f"Average of {args.on} over {_head(args)} from {args.from_date} to {args.to_date}"
    if results:
        low = min(results.items(), key=lambda kv: number(kv[1]))
        high = max(results.items(), key=lambda kv: number(kv[1]))
        summary += f": from {fmt(low[1])} ({low[0]}) to {fmt(high[1])} ({high[0]}) over {len(results)} period(s)."
    else:
        summary += ": no data."
    return Result(summary, with_raw(data, raw), narrow_hint=NARROW_HINT)
