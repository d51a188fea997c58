"""Raw events, user profiles, cohorts and a user's activity feed."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Annotated, Any, Self

from pydantic import BeforeValidator, Field, WithJsonSchema, model_validator
from pydantic_core import PydanticCustomError

from mixpanel_mcp.client.export import EXPORT_MAX_LIMIT, Progress, activity_stream, export_events, list_cohorts, query_profiles
from mixpanel_mcp.tools._base import Access, Args, Needs, Result, Run, ToolGroup
from mixpanel_mcp.tools._params import DateRange, Where, json_list, optional

group = ToolGroup(
    name="export",
    title="Export",
    description="Raw events, user profiles, cohorts and a user's activity feed.",
)

PROFILES_MAX = 5000
LIMIT_DOC = "Max items: events default 50 (max 100000), profiles default 100 (max 5000)."


def _listish(value: Any) -> Any:
    """Where a list is expected: a JSON-encoded list is decoded, a single string becomes a one-item list."""
    if isinstance(value, str) and not value.strip().startswith("["):
        return [value]
    return json_list(value)


Name = Annotated[str, Field(min_length=1, max_length=255)]


def names(most: int, description: str) -> Any:
    """A list of names: a JSON-encoded list or a single name is accepted too."""
    return Annotated[list[Name], BeforeValidator(_listish), Field(min_length=1, max_length=most, description=description)]


EventFilter = names(100, "Only these event names.")
DistinctIds = names(2000, "User distinct_ids.")
Limit = Annotated[int, WithJsonSchema({"type": "integer", "description": LIMIT_DOC})]


def _top(counts: Counter[str], n: int = 3) -> str:
    return ", ".join(f"{name} ({count:,})" for name, count in counts.most_common(n))


def _utc(seconds: float) -> str | None:
    try:
        return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (ValueError, OverflowError, OSError):  # event data is untrusted: a time out of any range
        return None


def _distinct_id(properties: dict[str, Any]) -> str | None:
    value = properties.get("distinct_id", properties.get("$distinct_id"))
    return None if value in (None, "") else str(value)


def _progress(run: Run, what: str) -> Progress:
    """The client's progress callback: `done` items read so far, reported to the agent."""

    async def report(done: int, total: int | None) -> None:
        await run.progress(done, total, f"{done:,} {what} read")

    return report


# -- events ---------------------------------------------------------------------------------


class ExportEvents(DateRange):
    event: optional(EventFilter) = None
    where: optional(Where) = None
    limit: Limit = Field(50, ge=1, le=EXPORT_MAX_LIMIT)
    time_in_ms: bool = Field(False, description="Times in milliseconds, not seconds.")


@group.operation("events", ExportEvents, access=Access.READ, needs=Needs.QUERY, summary="raw events, summarised")
async def events(run: Run, args: ExportEvents) -> Result:
    read = await export_events(run.client, **args.model_dump(exclude={"operation"}), progress=_progress(run, "events"))
    by_name = Counter(e["event"] for e in read.events)
    users = {_distinct_id(e["properties"]) for e in read.events} - {None}
    times = [t for e in read.events if isinstance(t := e["properties"].get("time"), (int, float)) and not isinstance(t, bool)]
    scale = 1000 if args.time_in_ms else 1
    span = (_utc(min(times) / scale), _utc(max(times) / scale)) if times else (None, None)
    period = f"from {args.from_date} to {args.to_date}"
    if read.events:
        summary = (
            f"{len(read.events):,} events {period}: {len(by_name)} event name(s), top {_top(by_name)}; "
            f"{len(users):,} distinct user(s); times {span[0]} to {span[1]}."
        )
    else:
        summary = f"No events {period} matched."
    if read.skipped_lines:
        summary += f" Skipped {read.skipped_lines} unreadable line(s)."
    if read.interrupted:
        summary += f" The stream broke off ({read.interrupted}): the list is incomplete."
    if read.more:
        summary += f" Read {len(read.events):,}; more may exist — narrow dates/event/where or raise limit."
    data: dict[str, Any] = {
        "from_date": args.from_date,
        "to_date": args.to_date,
        "returned": len(read.events),
        "more_may_exist": read.more,
        "by_event": dict(by_name.most_common()),
        "distinct_users": len(users),
        "first_time": span[0],
        "last_time": span[1],
        "skipped_lines": read.skipped_lines,
    }
    if read.interrupted:
        data["interrupted"] = read.interrupted
    data["events"] = read.events
    return Result(summary, data, narrow_hint="narrow from_date/to_date, filter by event or where, or lower limit")


# -- profiles -------------------------------------------------------------------------------


class ExportProfiles(Args):
    distinct_id: optional(Name) = None
    distinct_ids: optional(DistinctIds) = None
    where: optional(Where) = None
    data_group_id: optional(Annotated[Name, Field(description="Group key id: query group profiles.")]) = None
    output_properties: optional(names(1000, "Profile properties to return.")) = None
    filter_by_cohort: optional(Annotated[int, Field(ge=1, description="Cohort id.")]) = None
    session_id: optional(Annotated[Name, Field(description="From an earlier answer, to keep paging.")]) = None
    page: optional(Annotated[int, Field(ge=0, description="0-based; >0 needs session_id.")]) = None
    limit: Limit = Field(100, ge=1, le=PROFILES_MAX)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.distinct_id is not None and self.distinct_ids is not None:
            raise PydanticCustomError(
                "one_selector", "give distinct_id or distinct_ids, not both", {"example": 'distinct_ids=["u1","u2"]'}
            )
        if self.page and self.session_id is None:
            raise PydanticCustomError(
                "session_required",
                "page > 0 needs the session_id of the first page",
                {"example": "session_id from the earlier answer"},
            )
        return self


@group.operation("profiles", ExportProfiles, access=Access.READ, needs=Needs.QUERY, summary="user or group profiles, paged")
async def profiles(run: Run, args: ExportProfiles) -> Result:
    found = await query_profiles(run.client, **args.model_dump(exclude={"operation"}), progress=_progress(run, "profiles"))
    kind = "group profile(s)" if args.data_group_id else "profile(s)"
    of_total = f" of {found.total:,}" if isinstance(found.total, int) else ""
    summary = f"{len(found.results):,}{of_total} {kind} in {found.pages} page(s)."
    data: dict[str, Any] = {
        "returned": len(found.results),
        "total": found.total,
        "pages": found.pages,
        "session_id": found.session_id,
        "more_may_exist": found.more,
    }
    if found.more:
        if found.resume_page is not None:
            data["next_page"] = found.resume_page
            how = f"continue with session_id={found.session_id} page={found.resume_page}, raise limit or narrow where"
        else:
            how = "raise limit or narrow where"
        summary += f" Read {len(found.results):,}; more may exist — {how}."
    data["profiles"] = found.results
    return Result(summary, data, narrow_hint="add where, output_properties or filter_by_cohort, or lower limit")


# -- cohorts --------------------------------------------------------------------------------


class ExportCohorts(Args):
    pass


@group.operation("cohorts", ExportCohorts, access=Access.READ, needs=Needs.QUERY, summary="list saved cohorts")
async def cohorts(run: Run, args: ExportCohorts) -> Result:
    found = await list_cohorts(run.client)
    named = [f"{c.get('name')} (id {c.get('id')}, {c.get('count', '?')} users)" for c in found[:5] if isinstance(c, dict)]
    more = f", and {len(found) - 5} more" if len(found) > 5 else ""
    summary = f"{len(found)} cohort(s)" + (": " + "; ".join(named) + more if named else "") + "."
    return Result(summary, {"count": len(found), "cohorts": found}, narrow_hint="the list is long; look cohorts up by id")


# -- activity feed --------------------------------------------------------------------------


class ExportActivity(DateRange):
    distinct_ids: DistinctIds


@group.operation("activity", ExportActivity, access=Access.READ, needs=Needs.QUERY, summary="the events of given users")
async def activity(run: Run, args: ExportActivity) -> Result:
    found = await activity_stream(run.client, distinct_ids=args.distinct_ids, from_date=args.from_date, to_date=args.to_date)
    by_name = Counter(e.get("event") for e in found if isinstance(e, dict) and isinstance(e.get("event"), str))
    who = f"{len(args.distinct_ids)} user(s)" if len(args.distinct_ids) > 1 else f"user {args.distinct_ids[0]}"
    summary = f"{len(found):,} event(s) of {who} from {args.from_date} to {args.to_date}"
    summary += f"; top {_top(by_name)}." if by_name else "."
    data = {"returned": len(found), "by_event": dict(by_name.most_common()), "events": found}
    return Result(summary, data, narrow_hint="narrow from_date/to_date or ask for fewer distinct_ids")
