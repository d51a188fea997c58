"""Raw export (NDJSON), the /engage profile query, cohorts and the activity stream.

Answers are computed from the state: events in a UTC date range, profiles paged under a session id.
Test knobs, module-level (restore them after use, e.g. with pytest's monkeypatch):
- ENGAGE_PAGE_SIZE: profiles per /engage page (Mixpanel's is 1000).
- EXPORT_CUT_AFTER: end the export stream after this many events with half an event line, as a
  connection cut mid-line leaves it (None: the whole answer).
- EXPORT_DROP_AFTER: send this many whole events, then drop the connection without ending the response
  (no closing chunk), as a network failure mid-export leaves it.
- EXPORT_STALL_AFTER: ignore `limit`, send this many events, then hold the connection open without
  sending more (for up to STALL_SECONDS, or until the client hangs up), like a huge export in progress.
Cohort members, for filter_by_cohort, are the distinct_ids in a cohort's "members" list (never listed); as in
Mixpanel, `include_all_users` defaults to true: members without a profile come back too, with no properties.
`where` is read by double/expressions.py; an expression it does not understand is a 400.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
from collections.abc import AsyncIterator, Callable
from typing import Any
from zoneinfo import ZoneInfo

import anyio
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from mixpanel_mcp.double.auth import query_auth
from mixpanel_mcp.double.expressions import ExpressionError, condition
from mixpanel_mcp.double.query import QueryError, query_route
from mixpanel_mcp.double.state import DoubleState, RecordedRequest, group_key_id

ENGAGE_PAGE_SIZE = 1000
EXPORT_CUT_AFTER: int | None = None
EXPORT_DROP_AFTER: int | None = None
EXPORT_STALL_AFTER: int | None = None
STALL_SECONDS = 8.0
EXPORT_MAX_LIMIT = 100_000

# session_id -> the ordered profiles matched by the first page's query (Mixpanel caches them likewise);
# the oldest are forgotten past MAX_SESSIONS, so a long-running sandbox does not grow without end.
_sessions: dict[str, list[dict[str, Any]]] = {}
MAX_SESSIONS = 200
_session_numbers = itertools.count(1)

def _day(text: str | None) -> dt.date | None:
    try:
        return dt.date.fromisoformat(text or "")
    except ValueError:
        return None


def _in_range(event: dict[str, Any], start: dt.date, end: dt.date, zone: str | None = None) -> bool:
    time = event.get("properties", {}).get("time")
    if not isinstance(time, (int, float)):
        return False
    day = dt.datetime.fromtimestamp(_stored_time(time, zone), dt.UTC).date()
    return start <= day <= end


def _stored_time(seconds: float, zone: str | None) -> float:
    """An event's time as the project stores it: UTC epoch seconds, or, for a project created before 2023
    (`zone`), the clock time in the project's time zone written as if it were UTC (export docs)."""
    if zone is None:
        return seconds
    offset = dt.datetime.fromtimestamp(seconds, ZoneInfo(zone)).utcoffset() or dt.timedelta()
    return seconds + offset.total_seconds()


_BAD = object()  # a parameter that is not JSON


def _json_param(value: str | None) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value)
    except ValueError:
        return _BAD


# -- GET /api/2.0/export ------------------------------------------------------------------------


def _export(state: DoubleState) -> Callable[[Request], Any]:
    async def endpoint(request: Request) -> Response:
        recorded: RecordedRequest = request.state.recorded
        if (denied := query_auth(state, recorded)) is not None:
            return denied
        q = recorded.query
        start, end = _day(q.get("from_date")), _day(q.get("to_date"))
        zone = state.project.legacy_timezone
        if start is None or end is None:
            return PlainTextResponse("'from_date' and 'to_date' are required, as yyyy-mm-dd", 400)
        if start > end:
            return PlainTextResponse("'to_date' is before 'from_date'", 400)
        names = _json_param(q.get("event"))
        if names is _BAD or (names is not None and not (isinstance(names, list) and all(isinstance(n, str) for n in names))):
            return PlainTextResponse("'event' must be a JSON array of event names", 400)
        limit_text = q.get("limit")
        try:
            match = condition(q.get("where"))
            if limit_text is not None and (not limit_text.isdigit() or not 0 < int(limit_text) <= EXPORT_MAX_LIMIT):
                return PlainTextResponse(f"'limit' must be a number from 1 to {EXPORT_MAX_LIMIT}", 400)
            selected = [
                e for e in sorted(state.events, key=lambda e: e.get("properties", {}).get("time", 0))
                if _in_range(e, start, end, zone) and (names is None or e.get("event") in names) and match(e.get("properties", {}))
            ]
        except ExpressionError:
            return PlainTextResponse(f"invalid 'where' expression: {q.get('where')}", 400)
        in_ms = q.get("time_in_ms") == "true"
        stall_after = EXPORT_STALL_AFTER
        if limit_text is not None and stall_after is None:
            selected = selected[: int(limit_text)]
        cut_after = EXPORT_CUT_AFTER
        drop_after = EXPORT_DROP_AFTER

        async def lines() -> AsyncIterator[bytes]:
            for number, event in enumerate(selected):
                if stall_after is not None and number == stall_after:
                    deadline = anyio.current_time() + STALL_SECONDS
                    while anyio.current_time() < deadline and not await request.is_disconnected():
                        await anyio.sleep(0.05)
                    return
                properties = dict(event.get("properties", {}))
                time = _stored_time(properties["time"], zone)
                properties["time"] = int(time * 1000) if in_ms else int(time)
                properties.setdefault("mp_processing_time_ms", int(time * 1000) + 1500)
                line = json.dumps({"event": event["event"], "properties": properties})
                if drop_after is not None and number == drop_after:
                    raise ConnectionAbortedError("the double drops the export connection")
                if cut_after is not None and number == cut_after:
                    yield line[: len(line) // 2].encode()
                    return
                yield (line + "\n").encode()

        return StreamingResponse(lines(), media_type="text/plain")

    return endpoint


# -- POST /api/query/engage ---------------------------------------------------------------------


def _matching_profiles(state: DoubleState, form: dict[str, str]) -> list[dict[str, Any]]:
    """The profiles a first-page query selects, in a stable order."""
    if "data_group_id" in form:
        key_id = form["data_group_id"]
        if not key_id.lstrip("-").isdigit():
            raise QueryError(f"data_group_id must be the numeric id of a group key, got {key_id!r}")
        profiles = [(gid, p) for (gkey, gid), p in state.group_profiles.items() if group_key_id(gkey) == key_id]
    else:
        profiles = list(state.profiles.items())
    ids: Any = None
    if "distinct_id" in form:
        ids = [form["distinct_id"]]
    elif "distinct_ids" in form:
        ids = _json_param(form["distinct_ids"])
        if not isinstance(ids, list):
            raise QueryError("distinct_ids must be a JSON array")
    cohort = _json_param(form.get("filter_by_cohort"))
    if cohort is _BAD or (cohort is not None and not isinstance(cohort, dict)):
        raise QueryError('filter_by_cohort must be JSON like {"id": 123}')
    if cohort is not None:
        found = next((c for c in state.cohorts if c.get("id") == cohort.get("id")), None)
        if found is None:
            raise QueryError(f"cohort {cohort.get('id')} not found")
        members = set(found.get("members", []))
        profiles = [(i, p) for i, p in profiles if i in members]
        # Mixpanel's default: members who have no profile are listed too (with no properties).
        everyone = form.get("include_all_users", "true").lower()
        if everyone not in ("true", "false", "1", "0"):
            raise QueryError("include_all_users must be true or false")
        if everyone in ("true", "1") and "data_group_id" not in form:
            profiles += [(i, {}) for i in members if i not in state.profiles]
    try:
        match = condition(form.get("where"))
        wanted = _json_param(form.get("output_properties"))
        if wanted is _BAD:
            raise QueryError("output_properties must be a JSON array")
        results = []
        for distinct_id, properties in sorted(profiles, key=lambda item: str(item[0])):
            if ids is not None and distinct_id not in [str(i) for i in ids]:
                continue
            if not match(properties):
                continue
            shown = {k: v for k, v in properties.items() if wanted is None or k in wanted}
            results.append({"$distinct_id": distinct_id, "$properties": shown})
    except ExpressionError:
        raise QueryError(f"invalid where expression: {form.get('where')}") from None
    return results


def _engage(state: DoubleState, recorded: RecordedRequest) -> dict[str, Any]:
    form = recorded.form
    page_text = form.get("page", "0")
    if not page_text.isdigit():
        raise QueryError("page must be a non-negative integer")
    page = int(page_text)
    session_id = form.get("session_id")
    if session_id is None:
        if page > 0:
            raise QueryError("session_id is required when page > 0")
        matched = _matching_profiles(state, form)
        session_id = f"{int(dt.datetime.now(dt.UTC).timestamp())}-{next(_session_numbers):06d}"
        _sessions[session_id] = matched
        while len(_sessions) > MAX_SESSIONS:
            del _sessions[next(iter(_sessions))]
    elif session_id not in _sessions:
        raise QueryError("request for page in uncached query for params")
    everything = _sessions[session_id]
    size = ENGAGE_PAGE_SIZE
    return {
        "page": page,
        "page_size": size,
        "session_id": session_id,
        "status": "ok",
        "total": len(everything),
        "results": everything[page * size : (page + 1) * size],
    }


# -- POST /api/query/cohorts/list, GET /api/query/stream/query -----------------------------------


def _cohorts(state: DoubleState) -> list[dict[str, Any]]:
    return [{k: v for k, v in c.items() if k != "members"} for c in state.cohorts]


def _stream(state: DoubleState, recorded: RecordedRequest) -> dict[str, Any]:
    q = recorded.query
    ids = _json_param(q.get("distinct_ids"))
    if not isinstance(ids, list) or not ids:
        raise QueryError("distinct_ids is required: a JSON array of distinct ids")
    start, end = _day(q.get("from_date")), _day(q.get("to_date"))
    if start is None or end is None:
        raise QueryError("from_date and to_date are required, as yyyy-mm-dd")
    wanted = {str(i) for i in ids}
    events = []
    for event in sorted(state.events, key=lambda e: e.get("properties", {}).get("time", 0)):
        properties = dict(event.get("properties", {}))
        if str(properties.get("distinct_id")) not in wanted or not _in_range(event, start, end):
            continue
        properties["$distinct_id"] = properties.pop("distinct_id")
        properties["time"] = int(properties["time"])
        events.append({"event": event["event"], "properties": properties})
    return {"status": "ok", "results": {"events": events}}


def routes(state: DoubleState) -> list[Route]:
    return [
        Route("/api/2.0/export", _export(state), methods=["GET"]),
        query_route(state, "/api/query/engage", lambda r: _engage(state, r), method="POST"),
        query_route(state, "/api/query/cohorts/list", lambda r: _cohorts(state), method="POST"),
        query_route(state, "/api/query/stream/query", lambda r: _stream(state, r)),
    ]
