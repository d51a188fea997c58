"""What the double's Query API endpoints share: their 400, their route, and UTC time buckets.

A bucket is named by its start: "yyyy-mm-dd" for day, week (from Monday) and month, "yyyy-mm-dd hh:mm:00" for
minute and hour. `interval` (with unit day only) makes buckets of that many days counted from `origin`.
Bucket functions take datetimes, or dates for day, week and month.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mixpanel_mcp.double.auth import query_auth, query_error
from mixpanel_mcp.double.responses import JSONResponse
from mixpanel_mcp.double.state import DoubleState, RecordedRequest

Moment = TypeVar("Moment", dt.date, dt.datetime)


class QueryError(Exception):
    """A request Mixpanel would refuse with a 400."""


def query_route(state: DoubleState, path: str, compute: Callable[[RecordedRequest], Any], method: str = "GET") -> Route:
    """A Query API route: auth checked, then `compute`'s answer as JSON, or its QueryError as a 400."""

    async def endpoint(request: Request) -> Response:
        recorded: RecordedRequest = request.state.recorded
        denied = query_auth(state, recorded)
        if denied is not None:
            return denied
        try:
            return JSONResponse(compute(recorded))
        except QueryError as exc:
            return query_error(recorded, 400, str(exc))
        except OverflowError:  # a date at the calendar's edge (9999-12-31 plus a day)
            return query_error(recorded, 400, "a date is out of the supported range")

    return Route(path, endpoint, methods=[method])


def seconds_of(event: dict[str, Any]) -> float:
    """An event's time in epoch seconds (stored as seconds, or milliseconds)."""
    seconds = float(event.get("properties", {}).get("time", 0))
    return seconds / 1000 if seconds > 1e11 else seconds


def bucket_start(moment: Moment, unit: str, origin: Moment | None = None, interval: int | None = None) -> Moment:
    if unit == "day" and interval and origin is not None:
        return origin + dt.timedelta(days=(moment - origin).days // interval * interval)
    if isinstance(moment, dt.datetime):
        if unit == "minute":
            return moment.replace(second=0, microsecond=0)
        if unit == "hour":
            return moment.replace(minute=0, second=0, microsecond=0)
        moment = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if unit == "week":
        return moment - dt.timedelta(days=moment.weekday())
    if unit == "month":
        return moment.replace(day=1)
    return moment


def bucket_key(moment: Moment, unit: str, origin: Moment | None = None, interval: int | None = None) -> str:
    start = bucket_start(moment, unit, origin, interval)
    if unit == "minute":
        return start.strftime("%Y-%m-%d %H:%M:00")
    if unit == "hour":
        return start.strftime("%Y-%m-%d %H:00:00")
    return start.strftime("%Y-%m-%d")


def next_bucket(moment: Moment, unit: str) -> Moment:
    if unit == "month":
        return (moment.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    step = {"minute": dt.timedelta(minutes=1), "hour": dt.timedelta(hours=1), "day": dt.timedelta(days=1),
            "week": dt.timedelta(weeks=1)}[unit]
    return moment + step


def previous_bucket(moment: Moment, unit: str) -> Moment:
    if unit == "month":
        return (moment - dt.timedelta(days=1)).replace(day=1)
    return moment - (next_bucket(moment, unit) - moment)


# The most buckets one answer may hold: ~27 years of days, ~4 years of hours. The double answers a wider
# question with a 400 rather than spend its event loop (and the sandbox's) building a series for it.
MAX_BUCKETS = 10_000
_UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86_400, "week": 7 * 86_400, "month": 28 * 86_400}


def bucket_starts(start: Moment, end: Moment, unit: str, interval: int | None = None) -> list[Moment]:
    """The start of every bucket touching [start, end), in order; a QueryError past MAX_BUCKETS."""
    span = (end - start).total_seconds() / (_UNIT_SECONDS[unit] * (interval or 1))
    if span > MAX_BUCKETS:
        raise QueryError(
            f"the date range holds about {span:,.0f} {unit} buckets, more than {MAX_BUCKETS:,}: ask for a shorter "
            "range or a coarser unit"
        )
    if unit == "day" and interval:
        return [start + dt.timedelta(days=d) for d in range(0, (end - start).days, interval)]
    starts, moment = [], bucket_start(start, unit)
    while moment < end:
        starts.append(moment)
        moment = next_bucket(moment, unit)
    return starts


def bucket_keys(start: Moment, end: Moment, unit: str, interval: int | None = None) -> list[str]:
    """The key of every bucket touching [start, end), in order."""
    return [bucket_key(moment, unit) for moment in bucket_starts(start, end, unit, interval)]
