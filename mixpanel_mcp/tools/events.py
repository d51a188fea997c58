"""Event names, counts and properties of the project (GET /api/query/events*)."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from mixpanel_mcp.client import query
from mixpanel_mcp.tools._base import Access, Args, Needs, Result, Run, ToolGroup
from mixpanel_mcp.tools._empty import explain_if_empty
from mixpanel_mcp.tools._params import CountType, EventName, EventNames, FromDate, StringList, ToDate, check_order, optional
from mixpanel_mcp.tools._series import fmt, listed, number, series_result

group = ToolGroup(
    name="events",
    title="Event discovery",
    description="Event names, counts and properties of the project.",
)

Unit = Literal["minute", "hour", "day", "week", "month"]
PropertyName = Annotated[str, Field(min_length=1, max_length=255, description="Property name.")]
Interval = Annotated[int, Field(ge=1, le=3650, description="Last N units, instead of dates.")]


class Ranked(Args):
    type: CountType = "general"
    limit: int = Field(255, ge=1, le=10_000)


class TopToday(Ranked):
    limit: int = Field(100, ge=1, le=10_000)


class Period(Args):
    """from_date + to_date, or interval; no hourly uniques (Mixpanel refuses them)."""

    type: CountType = "general"
    unit: Unit = "day"
    from_date: optional(FromDate) = None
    to_date: optional(ToDate) = None
    interval: optional(Interval) = None

    @model_validator(mode="after")
    def _period(self) -> Self:
        has_dates = self.from_date is not None or self.to_date is not None
        if self.interval is not None and has_dates:
            raise PydanticCustomError(
                "period_conflict", "give from_date/to_date or interval, not both", {"example": "interval=7"}
            )
        if self.interval is None and (self.from_date is None or self.to_date is None):
            raise PydanticCustomError(
                "period_missing",
                "needs from_date and to_date (or interval)",
                {"example": "from_date=2026-01-01, to_date=2026-01-31"},
            )
        check_order(self.from_date, self.to_date)
        if self.type == "unique" and self.unit in ("minute", "hour"):
            raise PydanticCustomError(
                "hourly_uniques", "Mixpanel has no unique counts by {unit}", {"unit": self.unit, "example": "unit=day"}
            )
        return self


class Counts(Period):
    event: EventNames


class Properties(Args):
    event: EventName
    limit: int = Field(10, ge=1, le=10_000)


class PropertyValues(Args):
    event: EventName
    name: PropertyName
    limit: int = Field(255, ge=1, le=10_000)


class PropertyCounts(Period):
    event: EventName
    name: PropertyName
    values: optional(Annotated[StringList, Field(min_length=1, max_length=1000)]) = None
    limit: int = Field(255, ge=1, le=10_000)


def _period_text(args: Period) -> str:
    if args.interval is not None:
        return f"last {args.interval} {args.unit}(s)"
    return f"by {args.unit}"


@group.operation("names", Ranked, access=Access.READ, needs=Needs.QUERY, summary="last 31 days")
async def names(run: Run, args: Ranked) -> Result:
    raw = await query.event_names(run.client, type=args.type, limit=args.limit)
    found = raw if isinstance(raw, list) else []
    summary = f"{len(found)} event name(s) in the last 31 days" + (f": {listed(found)}." if found else ".")
    return Result(summary, {"names": found, "count": len(found)}, narrow_hint="lower limit")


SHOWN = 5


def _change(ratio: Any) -> str:
    """Mixpanel's percent_change is 1 both when an event doubled and when it had no events yesterday."""
    value = number(ratio)
    if value == 1:
        return "+100%, or none yesterday"
    return f"{value * 100:+.0f}%"


@group.operation("top", TopToday, access=Access.READ, needs=Needs.QUERY, summary="today vs yesterday")
async def top(run: Run, args: TopToday) -> Result:
    raw = await query.top_events(run.client, type=args.type, limit=args.limit)
    events = raw.get("events") if isinstance(raw, dict) else None
    events = [e for e in events or [] if isinstance(e, dict)]
    events.sort(key=lambda e: -number(e.get("amount")))
    shown = ", ".join(f"{e.get('event')} {fmt(e.get('amount'))} ({_change(e.get('percent_change'))})" for e in events[:SHOWN])
    if not events:
        summary = f"No events today ({args.type})."
    elif len(events) <= SHOWN:
        summary = f"{len(events)} event(s) today ({args.type}, change vs yesterday): {shown}."
    else:
        summary = f"{len(events)} event(s) today ({args.type}, change vs yesterday); the top {SHOWN}: {shown}."
    return Result(summary, {"type": args.type, "events": events}, narrow_hint="lower limit")


@group.operation("counts", Counts, access=Access.READ, needs=Needs.QUERY, summary="event is a list")
async def counts(run: Run, args: Counts) -> Result:
    raw = await query.event_counts(run.client, **args.model_dump(exclude={"operation"}))
    fields = {"type": args.type, "unit": args.unit}
    period = (args.unit, args.from_date, args.to_date)
    result = series_result(raw, fields, head=f"Event counts {_period_text(args)}", type=args.type, what="event", period=period)
    return await explain_if_empty(run, result, events=args.event, from_date=args.from_date, to_date=args.to_date)


@group.operation("properties", Properties, access=Access.READ, needs=Needs.QUERY, summary="top property names")
async def properties(run: Run, args: Properties) -> Result:
    raw = await query.event_top_properties(run.client, event=args.event, limit=args.limit)
    found = [
        {"name": name, "count": value.get("count") if isinstance(value, dict) else value}
        for name, value in (raw.items() if isinstance(raw, dict) else [])
    ]
    found.sort(key=lambda p: (-number(p["count"]), str(p["name"])))
    shown = ", ".join(f"{p['name']} ({fmt(p['count'])})" for p in found[:10])
    summary = f"{len(found)} top propert{'y' if len(found) == 1 else 'ies'} of {args.event}" + (f": {shown}." if shown else ".")
    return Result(summary, {"event": args.event, "properties": found}, narrow_hint="lower limit")


@group.operation("property_values", PropertyValues, access=Access.READ, needs=Needs.QUERY, summary="")
async def property_values(run: Run, args: PropertyValues) -> Result:
    raw = await query.event_property_values(run.client, event=args.event, name=args.name, limit=args.limit)
    found = raw if isinstance(raw, list) else []
    summary = f"{len(found)} value(s) of {args.name} on {args.event}" + (f": {listed(found)}." if found else ".")
    return Result(summary, {"event": args.event, "name": args.name, "values": found}, narrow_hint="lower limit")


@group.operation("property_counts", PropertyCounts, access=Access.READ, needs=Needs.QUERY, summary="")
async def property_counts(run: Run, args: PropertyCounts) -> Result:
    raw = await query.event_property_counts(run.client, **args.model_dump(exclude={"operation"}))
    head = f"{args.event} by {args.name}, {_period_text(args)}"
    fields = {"event": args.event, "name": args.name, "type": args.type}
    period = (args.unit, args.from_date, args.to_date)
    result = series_result(raw, fields, head=head, type=args.type, what="value", period=period)
    return await explain_if_empty(
        run, result, events=[args.event], on=f'properties["{args.name}"]', from_date=args.from_date, to_date=args.to_date
    )
