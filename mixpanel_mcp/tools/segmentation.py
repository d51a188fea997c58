"""Count an event over time, optionally segmented by a property (GET /api/query/segmentation*)."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from mixpanel_mcp.client import query
from mixpanel_mcp.tools._base import Access, Needs, Result, Run, ToolGroup
from mixpanel_mcp.tools._empty import explain_if_empty
from mixpanel_mcp.tools._params import CountType, DateRange, EventName, On, Where, optional
from mixpanel_mcp.tools._series import NARROW_HINT, by_date, fmt, number, series_result, tidy

group = ToolGroup(
    name="segmentation",
    title="Segmentation",
    description="Count an event over time, optionally by a property (API in maintenance mode).",
)


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
    head = _head(args) if args.interval is None else f"{args.event}, {args.interval}-day buckets"
    fields = {"event": args.event, "type": args.type}
    period = None if args.interval else (args.unit, args.from_date, args.to_date)
    result = series_result(raw, fields, head=head, type=args.type, segmented=args.on is not None, period=period)
    return await explain_if_empty(run, result, events=[args.event], on=args.on, from_date=args.from_date, to_date=args.to_date)


@group.operation("numeric", Numeric, access=Access.READ, needs=Needs.QUERY, summary="counts per numeric range of on")
async def numeric(run: Run, args: Numeric) -> Result:
    raw = await query.segmentation_on(run.client, "numeric", **args.model_dump(exclude={"operation"}))
    head = f"{_head(args)}, {args.on} in buckets"
    result = series_result(raw, {"event": args.event, "on": args.on}, head=head, type=args.type, what="bucket")
    return await explain_if_empty(run, result, events=[args.event], on=args.on, from_date=args.from_date, to_date=args.to_date)


async def _per_period(run: Run, kind: Literal["sum", "average"], args: Aggregate) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """Mixpanel's answer, its {date: x} results in date order, and the data around them."""
    raw = await query.segmentation_on(run.client, kind, **args.model_dump(exclude={"operation"}))
    results = by_date(raw.get("results") if isinstance(raw, dict) else None)
    data: dict[str, Any] = {"results": results}
    if not any(number(v) for v in results.values()):
        data["empty"] = True
    if isinstance(raw, dict) and raw.get("computed_at"):
        data["computed_at"] = raw["computed_at"]
    return raw, results, data


@group.operation("sum", Aggregate, access=Access.READ, needs=Needs.QUERY, summary="")
async def sum_(run: Run, args: Aggregate) -> Result:
    raw, results, data = await _per_period(run, "sum", args)
    total = tidy(sum(number(v) for v in results.values()))
    data = {"event": args.event, "on": args.on, "total": total, **data}
    summary = f"Sum of {args.on} over {_head(args)} from {args.from_date} to {args.to_date}: {fmt(total)}"
    if results:
        peak = max(results.items(), key=lambda kv: number(kv[1]))
        summary += f"; highest {peak[0]} ({fmt(peak[1])})"
    result = Result(summary + ".", data, narrow_hint=NARROW_HINT)  # results are Mixpanel's own, in date order
    return await explain_if_empty(run, result, events=[args.event], on=args.on, from_date=args.from_date, to_date=args.to_date)


@group.operation("average", Aggregate, access=Access.READ, needs=Needs.QUERY, summary="")
async def average(run: Run, args: Aggregate) -> Result:
    raw, results, data = await _per_period(run, "average", args)
    data = {"event": args.event, "on": args.on, **data}
    summary = f"Average of {args.on} over {_head(args)} from {args.from_date} to {args.to_date}"
    if results:
        low = min(results.items(), key=lambda kv: number(kv[1]))
        high = max(results.items(), key=lambda kv: number(kv[1]))
        summary += f": from {fmt(low[1])} ({low[0]}) to {fmt(high[1])} ({high[0]}) over {len(results)} period(s)."
    else:
        summary += ": no data."
    result = Result(summary, data, narrow_hint=NARROW_HINT)
    return await explain_if_empty(run, result, events=[args.event], on=args.on, from_date=args.from_date, to_date=args.to_date)
