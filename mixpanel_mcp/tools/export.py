"""Raw events, user profiles, cohorts and a user's activity feed."""

from __future__ import annotations

import datetime as dt
import sys
from collections import Counter
from typing import Annotated, Any, Self

from pydantic import AfterValidator, BeforeValidator, Field, WithJsonSchema, model_validator
from pydantic_core import PydanticCustomError

from mixpanel_mcp.client.errors import OutputFileError
from mixpanel_mcp.client.export import (
    EXPORT_MAX_LIMIT,
    ExportSummary,
    Progress,
    activity_stream,
    export_events,
    export_events_to_file,
    file_format,
    list_cohorts,
    query_profiles,
)
from mixpanel_mcp.tools._base import Access, Args, Needs, Result, Run, ToolGroup
from mixpanel_mcp.tools._params import DateRange, LocalPath, Where, listish, optional

group = ToolGroup(
    name="export",
    title="Export",
    description="Raw events, user profiles, cohorts and a user's activity feed.",
)

PROFILES_MAX = 5000  # inline; a file takes any number
LIMIT_DOC = "Max items: events 50 (max 100000), profiles 100 (max 5000); with output_file, all."
FILE_DOC = "Write all to this local .ndjson/.jsonl/.csv file; returns a summary."


Name = Annotated[str, Field(min_length=1, max_length=255)]


def names(most: int, description: str) -> Any:
    """A list of names: a JSON-encoded list or a single name is accepted too."""
    return Annotated[list[Name], BeforeValidator(listish), Field(min_length=1, max_length=most, description=description)]


def _file_name(value: str) -> str:
    if file_format(value) is None:
        raise PydanticCustomError(
            "file_type", "must end in .ndjson, .jsonl or .csv (the format to write)", {"example": "/tmp/events.ndjson"}
        )
    return value


EventFilter = names(100, "Only these event names.")
DistinctIds = names(2000, "User distinct_ids.")
Limit = Annotated[int, WithJsonSchema({"type": "integer", "description": LIMIT_DOC})]
OutputFile = Annotated[LocalPath, Field(description=FILE_DOC), AfterValidator(_file_name)]


def _top(counts: Counter[str] | dict[str, int], n: int = 3) -> str:
    ranked = counts.most_common(n) if isinstance(counts, Counter) else sorted(counts.items(), key=lambda kv: -kv[1])[:n]
    return ", ".join(f"{name} ({count:,})" for name, count in ranked)


# Exported `time`s are UTC for projects created from 2023 on; older projects store them in the project's time
# zone (export.openapi.yaml, from_date/to_date; export docs). The project's age is not known here: say both.
TIME_BASIS = "UTC if the project was created in 2023 or later; the project's time zone if it is older"


def _clock(seconds: float) -> str | None:
    """An exported time as a clock reading, without a zone (see TIME_BASIS)."""
    try:
        return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    except (ValueError, OverflowError, OSError):  # event data is untrusted: a time out of any range
        return None


def _megabytes(size: int) -> str:
    return f"{size / 1_000_000:,.1f} MB" if size >= 100_000 else f"{size:,} bytes"


def _progress(run: Run, what: str) -> Progress:
    """The client's progress callback: items and bytes read so far, reported to the agent."""

    async def report(done: int, total: int | None, size: int) -> None:
        read = f"{done:,} {what}" + (f", {_megabytes(size)}" if size else "") + " so far"
        await run.progress(done, total, read)

    return report


def _local(run: Run, path: str | None) -> None:
    """Refuse a file path where the server's disk is not the agent's (an HTTP server), before any request."""
    if path is not None and not run.settings.local_files:
        raise OutputFileError(path, "local files are off", disabled=True)


# -- events ---------------------------------------------------------------------------------


class WritesAFile(Args):
    """An export that may go to a local file instead of the answer."""

    output_file: optional(OutputFile) = None
    overwrite: bool = Field(False, description="Replace an existing output_file.")

    @model_validator(mode="after")
    def _overwrite_with_a_file(self) -> Self:
        if self.overwrite and self.output_file is None:
            raise PydanticCustomError(
                "overwrite_needs_file", "overwrite applies only with output_file", {"example": "output_file=/tmp/events.csv"}
            )
        return self


class ExportEvents(DateRange, WritesAFile):
    event: optional(EventFilter) = None
    where: optional(Where) = None
    limit: optional(Limit) = Field(None, ge=1, le=EXPORT_MAX_LIMIT)
    time_in_ms: bool = Field(False, description="Times in milliseconds, not seconds.")


EVENTS_INLINE = 50
EVENTS_HINT = "narrow from_date/to_date, filter by event or where, or lower limit"


def _seen(summary: ExportSummary, *, time_in_ms: bool) -> dict[str, Any]:
    """What an export contained, as data: counts by name (top 100), distinct users, time span."""
    ranked = sorted(summary.by_event.items(), key=lambda kv: (-kv[1], kv[0]))
    scale = 1000 if time_in_ms else 1
    data: dict[str, Any] = {
        "by_event": dict(ranked[:100]),
        "event_names": len(ranked) + (1 if summary.other_names else 0),
        "distinct_users": len(summary.users),
        "first_time": _clock(summary.first_time / scale) if summary.first_time is not None else None,
        "last_time": _clock(summary.last_time / scale) if summary.last_time is not None else None,
        "time_zone": TIME_BASIS,
        "skipped_lines": summary.skipped_lines,
    }
    if len(ranked) > 100 or summary.other_names:
        data["by_event_omitted"] = len(ranked) - min(len(ranked), 100) + (1 if summary.other_names else 0)
    if not summary.users.exact:
        data["distinct_users_estimated"] = True
    return data


def _seen_sentence(data: dict[str, Any]) -> str:
    about = "about " if data.get("distinct_users_estimated") else ""
    return (
        f"{data['event_names']} event name(s), top {_top(data['by_event'])}; {about}{data['distinct_users']:,} "
        f"distinct user(s); times {data['first_time']} to {data['last_time']} ({TIME_BASIS})."
    )


@group.operation("events", ExportEvents, access=Access.READ, needs=Needs.QUERY, summary="raw events, summarised")
async def events(run: Run, args: ExportEvents) -> Result:
    _local(run, args.output_file)
    query = args.model_dump(exclude={"operation", "output_file", "overwrite", "limit"})
    period = f"from {args.from_date} to {args.to_date}"
    if args.output_file is not None:
        read = await export_events_to_file(
            run.client, path=args.output_file, limit=args.limit, **query, overwrite=args.overwrite,
            progress=_progress(run, "events"),
        )
    else:
        read = await export_events(run.client, limit=args.limit or EVENTS_INLINE, **query, progress=_progress(run, "events"))
    seen = _seen(read.summary, time_in_ms=args.time_in_ms)
    count = read.summary.count
    if read.path is not None:
        what = f"{read.format.upper() if read.format else ''}, {_megabytes(read.written_bytes)}"
        summary = f"Wrote {count:,} events {period} to {read.path} ({what})"
        summary += ": " + _seen_sentence(seen) if count else "; none matched."
    elif count:
        summary = f"{count:,} events {period}: " + _seen_sentence(seen)
    else:
        summary = f"No events {period} matched."
    if read.summary.skipped_lines:
        summary += f" Skipped {read.summary.skipped_lines} unreadable line(s)."
    if read.interrupted:
        where_to = "the file" if read.path else "the list"
        summary += f" The stream broke off ({read.interrupted}): {where_to} is incomplete."
    if read.more:
        how = "narrow dates/event/where or raise limit"
        if read.path is None and run.settings.local_files:
            how = "save them all with output_file (.ndjson or .csv), or " + how
        elif read.path is not None:
            how = "leave limit out to write them all"
        summary += f" Read {count:,}; more may exist — {how}."
    data: dict[str, Any] = {"from_date": args.from_date, "to_date": args.to_date}
    if read.path is not None:
        data.update(output_file=read.path, format=read.format, written=count, bytes=read.written_bytes)
    else:
        data["returned"] = count
    data["more_may_exist"] = read.more
    data.update(seen)
    if read.interrupted:
        data["interrupted"] = read.interrupted
    if read.path is None:
        data["events"] = read.events
    return Result(summary, data, narrow_hint=EVENTS_HINT)


# -- profiles -------------------------------------------------------------------------------


def _group_key_id(value: Any) -> str:
    """Mixpanel's numeric id of a group key (query.openapi.yaml: "the ID of the group key"), never its name."""
    text = str(value).strip() if isinstance(value, (int, str)) and not isinstance(value, bool) else ""
    if not text.lstrip("-").isdigit() or len(text) > 20:
        raise PydanticCustomError(
            "group_key_id",
            "must be the group key's numeric id, not its name (e.g. company_id): Mixpanel shows it as "
            "data_group_id in the address of the group's profiles (Users, group selected)",
            {"example": "-1405123841946871899"},
        )
    return text


GroupKeyId = Annotated[
    str,
    BeforeValidator(_group_key_id),
    WithJsonSchema({"type": "string", "description": "Group key's numeric id (data_group_id in its Users page URL)."}),
]


class ExportProfiles(WritesAFile):
    distinct_id: optional(Name) = None
    distinct_ids: optional(DistinctIds) = None
    where: optional(Where) = None
    data_group_id: optional(GroupKeyId) = None
    output_properties: optional(names(1000, "Profile properties to return.")) = None
    filter_by_cohort: optional(Annotated[int, Field(ge=1, description="Cohort id.")]) = None
    include_all_users: bool = Field(False, description="Cohort members without a profile too.")
    session_id: optional(Annotated[Name, Field(description="From an earlier answer, to keep paging.")]) = None
    page: optional(Annotated[int, Field(ge=0, description="0-based; >0 needs session_id.")]) = None
    skip: optional(Annotated[int, Field(ge=0, description="From an earlier answer: profiles of that page already read.")]) = None
    limit: optional(Limit) = Field(None, ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.distinct_id is not None and self.distinct_ids is not None:
            raise PydanticCustomError(
                "one_selector", "give distinct_id or distinct_ids, not both", {"example": 'distinct_ids=["u1","u2"]'}
            )
        if self.include_all_users and self.filter_by_cohort is None:
            raise PydanticCustomError(
                "cohort_only", "include_all_users applies only with filter_by_cohort", {"example": "filter_by_cohort=1000"}
            )
        if (self.page or self.skip) and self.session_id is None:
            raise PydanticCustomError(
                "session_required",
                "page > 0 needs the session_id of the first page; so does skip",
                {"example": "session_id from the earlier answer"},
            )
        if self.output_file is None and self.limit is not None and self.limit > PROFILES_MAX:
            raise PydanticCustomError(
                "inline_limit",
                "at most {most} profiles inline; write more with output_file",
                {"most": PROFILES_MAX, "example": "output_file=/tmp/profiles.csv"},
            )
        return self


PROFILES_INLINE = 100


@group.operation("profiles", ExportProfiles, access=Access.READ, needs=Needs.QUERY, summary="user or group profiles, paged")
async def profiles(run: Run, args: ExportProfiles) -> Result:
    _local(run, args.output_file)
    limit = args.limit or (PROFILES_INLINE if args.output_file is None else sys.maxsize)
    found = await query_profiles(
        run.client, **args.model_dump(exclude={"operation", "limit", "skip"}), skip=args.skip or 0, limit=limit,
        progress=_progress(run, "profiles"),
    )
    kind = "group profile(s)" if args.data_group_id else "profile(s)"
    of_total = f" of {found.total:,}" if isinstance(found.total, int) else ""
    count = found.written if found.path is not None else len(found.results)
    if found.path is not None:
        what = f"{found.format.upper() if found.format else ''}, {_megabytes(found.written_bytes)}"
        summary = f"Wrote {count:,}{of_total} {kind} in {found.pages} page(s) to {found.path} ({what})."
    else:
        summary = f"{count:,}{of_total} {kind} in {found.pages} page(s)."
    data: dict[str, Any] = {"returned": count} if found.path is None else {
        "output_file": found.path,
        "format": found.format,
        "written": count,
        "bytes": found.written_bytes,
    }
    data.update(total=found.total, pages=found.pages, session_id=found.session_id, more_may_exist=found.more)
    if found.more:
        if found.resume_page is not None:
            data["next_page"] = found.resume_page
            data["continue_with"] = {"session_id": found.session_id, "page": found.resume_page, "skip": found.resume_skip}
            how = (
                f"continue with session_id={found.session_id} page={found.resume_page} skip={found.resume_skip} "
                "(the same where and selectors), raise limit or narrow where"
            )
        else:
            how = "raise limit or narrow where"
        summary += f" Read {count:,}; more may exist — {how}."
    if found.path is None:
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


@group.operation("activity", ExportActivity, access=Access.READ, needs=Needs.QUERY, summary="the events of given users (API in maintenance mode)")
async def activity(run: Run, args: ExportActivity) -> Result:
    found = await activity_stream(run.client, distinct_ids=args.distinct_ids, from_date=args.from_date, to_date=args.to_date)
    by_name = Counter(e.get("event") for e in found if isinstance(e, dict) and isinstance(e.get("event"), str))
    who = f"{len(args.distinct_ids)} user(s)" if len(args.distinct_ids) > 1 else f"user {args.distinct_ids[0]}"
    summary = f"{len(found):,} event(s) of {who} from {args.from_date} to {args.to_date}"
    summary += f"; top {_top(by_name)}." if by_name else "."
    data = {"returned": len(found), "by_event": dict(by_name.most_common()), "events": found}
    return Result(summary, data, narrow_hint="narrow from_date/to_date or ask for fewer distinct_ids")
