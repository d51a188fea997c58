"""Query API: funnels, retention, frequency (addiction) and JQL, computed from `state.events`.

What the double computes (all days are UTC):
- /funnels: a user enters a date bucket (unit day|week|month, or `interval` days from from_date) with their first
  step-1 event in that bucket, and converts through the steps in order within the conversion window (`length`
  `length_unit`, else the saved funnel's `length`/`length_unit`, else 14 days); events after to_date count toward
  conversion. With `on`, each date holds {"$overall": steps, <value>: steps} and meta.property_values (❓ the
  real segmented shape is undocumented). Unknown funnel_id -> 400.
- /retention birth: a user's cohort is the bucket of their first-ever `born_event` (matching born_where), if in
  the range; interval i holds returns (`event`, or any event; matching `where`) i*interval..(i+1)*interval units
  after that birth (a month counts as 30 days); `unit` and `interval` together are a 400. compounded: per bucket, users who did `event`, and their later
  `event`s. Cohorts with no users are left out. With `on` (❓ shape undocumented): {"$overall": cohorts,
  <value of `on` on the anchor event>: cohorts}, the `limit` largest values, as segmented Insights retention.
- /retention/addiction: per unit bucket in the range, counts[i] = users who did the event in at least i+1
  distinct hours (or days) of that bucket. With `on` (❓ undocumented): {"data": {"$overall": by date,
  <value of `on` on the event>: by date}}.
- /jql: the double cannot run JavaScript. It understands exactly two scripts (whitespace aside):
    function main() { return [params]; }                      -> [params]
    function main() { return Events(params).groupBy(["name"], mixpanel.reducer.count()); }
                                                               -> [{"key": [name], "value": n}, ...]
  Any other script is a 400. In the sandbox (state.sandbox), every JQL request is a 400 saying JQL is not
  available there.
Filters (`where`, `born_where`) and `on` are read by double/expressions.py; an expression it does not
understand is a 400.
"""

from __future__ import annotations

import calendar
import datetime as dt
import json
import re
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from starlette.routing import Route

from mixpanel_mcp.double.expressions import UNDEFINED, compile_expression, condition
from mixpanel_mcp.double.query import QueryError, bucket_start, bucket_starts, query_route, seconds_of
from mixpanel_mcp.double.state import DoubleState, RecordedRequest

DAY = 86_400
LENGTH_SECONDS = {"day": DAY, "hour": 3_600, "minute": 60, "second": 1}
UNIT_SECONDS = {"day": DAY, "week": 7 * DAY, "month": 30 * DAY}
DEFAULT_WINDOW = 14 * DAY


# -- parameters ------------------------------------------------------------------------------


def _date(query: dict[str, str], name: str) -> dt.date:
    if name not in query:
        raise QueryError(f"{name} is a required parameter")
    try:
        return dt.date.fromisoformat(query[name])
    except ValueError:
        raise QueryError(f"{name} must be in the format yyyy-mm-dd, got {query[name]!r}") from None


def _range(query: dict[str, str]) -> tuple[dt.date, dt.date]:
    start, end = _date(query, "from_date"), _date(query, "to_date")
    if start > end:
        raise QueryError("from_date cannot be later than to_date")
    return start, end


def _int(query: dict[str, str], name: str, default: int | None = None, low: int = 1, high: int | None = None) -> int | None:
    if name not in query:
        return default
    try:
        value = int(query[name])
    except ValueError:
        raise QueryError(f"{name} must be an integer, got {query[name]!r}") from None
    if value < low or (high is not None and value > high):
        raise QueryError(f"{name} must be between {low} and {high}" if high else f"{name} must be at least {low}")
    return value


def _choice(query: dict[str, str], name: str, allowed: tuple[str, ...], default: str | None = None) -> str | None:
    value = query.get(name, default)
    if value is None:
        return None
    if value not in allowed:
        raise QueryError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    return value


# -- events and dates ------------------------------------------------------------------------


def _day(t: float) -> dt.date:
    return dt.datetime.fromtimestamp(t, dt.UTC).date()


def _user(event: dict[str, Any]) -> str:
    return str(event.get("properties", {}).get("distinct_id", ""))


def _events(state: DoubleState, keep: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
    return sorted((e for e in state.events if keep(e)), key=seconds_of)


def _filter(query: dict[str, str], name: str) -> Callable[[dict[str, Any]], bool]:
    """The `where`-like parameter `name` as a test of an event."""
    matches = condition(query.get(name))
    return lambda event: matches(event.get("properties", {}))


def _segment_of(on: Callable[[dict[str, Any]], Any], event: dict[str, Any]) -> str:
    value = on(event.get("properties", {}))
    if value is UNDEFINED:
        return "undefined"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).lower() if isinstance(value, bool) else str(value)


# -- funnels ---------------------------------------------------------------------------------


def _step_table(names: list[str], reached: list[list[tuple[float, ...]]]) -> dict[str, Any]:
    """`reached[i]` = for each user who reached step i, their step times so far."""
    counts = [len(r) for r in reached]
    steps = []
    for i, name in enumerate(names):
        count = counts[i]
        prev = counts[i - 1] if i else count
        # avg_time is "null for step 0" (query.openapi.yaml); avg_time_from_start is an integer throughout.
        avg, avg_start = None, 0
        if i and count:
            avg = round(sum(t[i] - t[i - 1] for t in reached[i]) / count)
            avg_start = round(sum(t[i] - t[0] for t in reached[i]) / count)
        steps.append(
            {
                "count": count,
                "step_conv_ratio": (count / prev if prev else 0) if i else 1,
                "overall_conv_ratio": (count / counts[0] if counts[0] else 0) if i else 1,
                "avg_time": avg,
                "avg_time_from_start": avg_start,
                "goal": name,
                "event": name,
            }
        )
    drops = [(steps[i]["step_conv_ratio"], i) for i in range(1, len(steps))]
    analysis = {
        "completion": counts[-1],
        "starting_amount": counts[0],
        "steps": len(names),
        "worst": min(drops)[1] if drops else 0,
    }
    return {"steps": steps, "analysis": analysis}


def _funnel(state: DoubleState, query: dict[str, str]) -> dict[str, Any]:
    if "funnel_id" not in query:
        raise QueryError("funnel_id is a required parameter")
    funnel_id = _int(query, "funnel_id")
    saved = next((f for f in state.funnels if f.get("funnel_id") == funnel_id), None)
    if saved is None:
        raise QueryError(f"funnel {funnel_id} does not exist")
    start, end = _range(query)
    length = _int(query, "length")
    length_unit = _choice(query, "length_unit", tuple(LENGTH_SECONDS))
    if length is None and "length" in saved:
        length, length_unit = int(saved["length"]), length_unit or saved.get("length_unit", "day")
    window = length * LENGTH_SECONDS[length_unit or "day"] if length else DEFAULT_WINDOW
    if window > 90 * DAY:
        raise QueryError("length may not be greater than 90 days")
    unit = _choice(query, "unit", ("day", "week", "month"))
    interval = _int(query, "interval")
    limit = _int(query, "limit", 255, 1, 10_000)
    on = compile_expression(query["on"]) if query.get("on") else None
    keep = _filter(query, "where")
    names: list[str] = list(saved["steps"])

    by_user: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in _events(state, lambda e: e.get("event") in names and keep(e)):
        by_user[_user(event)].append(event)

    dates = bucket_starts(start, end + dt.timedelta(days=1), unit or "day", interval)
    # (bucket, segment) -> step -> list of time tuples
    reached: dict[tuple[dt.date, str], list[list[tuple[float, ...]]]] = defaultdict(lambda: [[] for _ in names])
    for events in by_user.values():
        entered: set[dt.date] = set()
        for k, event in enumerate(events):
            day = _day(seconds_of(event))
            if event["event"] != names[0] or not start <= day <= end:
                continue
            bucket = bucket_start(day, unit or "day", start, interval)
            if bucket in entered:
                continue
            entered.add(bucket)
            t0 = seconds_of(event)
            times = [t0]
            for later in events[k + 1 :]:
                if len(times) == len(names) or seconds_of(later) > t0 + window:
                    break
                if later["event"] == names[len(times)]:
                    times.append(seconds_of(later))
            segments = ["$overall"] + ([_segment_of(on, event)] if on else [])
            for segment in segments:
                for i in range(len(times)):
                    reached[(bucket, segment)][i].append(tuple(times[: i + 1]))

    meta: dict[str, Any] = {"dates": [d.isoformat() for d in dates]}
    data: dict[str, Any] = {}
    if on is None:
        for d in dates:
            data[d.isoformat()] = _step_table(names, reached[(d, "$overall")])
    else:
        totals: dict[str, int] = defaultdict(int)
        for (_, segment), steps in reached.items():
            if segment != "$overall":
                totals[segment] += len(steps[0])
        top = sorted(totals, key=lambda s: (-totals[s], s))[:limit]
        meta["property_values"] = top
        for d in dates:
            data[d.isoformat()] = {s: _step_table(names, reached[(d, s)])["steps"] for s in ["$overall", *top]}
    return {"meta": meta, "data": data}


# -- retention -------------------------------------------------------------------------------


def _retention(state: DoubleState, query: dict[str, str]) -> dict[str, Any]:
    start, end = _range(query)
    kind = _choice(query, "retention_type", ("birth", "compounded"), "birth")
    if "unit" in query and "interval" in query:
        raise QueryError("unit and interval both specified")  # as the live API answers; interval alone is days
    unit = _choice(query, "unit", tuple(UNIT_SECONDS), "day") or "day"
    interval = _int(query, "interval", 1, 1, 90 if unit == "day" else None) or 1
    count = _int(query, "interval_count", 1) or 1
    unbounded = query.get("unbounded_retention", "false").lower()
    if unbounded not in ("true", "false", "1", "0"):
        raise QueryError("unbounded_retention must be true or false")
    on = compile_expression(query["on"]) if query.get("on") else None
    limit = _int(query, "limit", 255, 1, 10_000) or 255
    born_event, returning = query.get("born_event"), query.get("event")
    if kind == "birth" and not born_event:
        raise QueryError("born_event is required for birth retention")
    born_ok, return_ok = _filter(query, "born_where"), _filter(query, "where")
    span = interval * UNIT_SECONDS[unit]

    def is_return(event: dict[str, Any]) -> bool:
        return (returning is None or event.get("event") == returning) and return_ok(event)

    events = _events(state, lambda e: True)
    by_user: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        by_user[_user(event)].append(event)

    # cohort bucket -> user -> the intervals they came back in; with `on`, per segment of the anchor event too
    cohorts: dict[dt.date, dict[str, set[int]]] = defaultdict(dict)
    segmented: dict[str, dict[dt.date, dict[str, set[int]]]] = defaultdict(lambda: defaultdict(dict))
    for user, user_events in by_user.items():
        anchors: list[int] = []
        if kind == "birth":
            k = next((k for k, e in enumerate(user_events) if e.get("event") == born_event and born_ok(e)), None)
            if k is not None:
                anchors.append(k)
        else:
            seen: set[dt.date] = set()
            for k, e in enumerate(user_events):
                day = _day(seconds_of(e))
                if start <= day <= end and is_return(e) and bucket_start(day, unit) not in seen:
                    seen.add(bucket_start(day, unit))
                    anchors.append(k)
        for k in anchors:
            t0 = seconds_of(user_events[k])
            day = _day(t0)
            if not start <= day <= end:
                continue
            intervals = {
                int((seconds_of(e) - t0) // span) for e in user_events[k + 1 :] if is_return(e)
            }
            cohorts[bucket_start(day, unit)][user] = {i for i in intervals if i <= count}
            if on is not None:
                segmented[_segment_of(on, user_events[k])][bucket_start(day, unit)][user] = {i for i in intervals if i <= count}

    def table(by_bucket: dict[dt.date, dict[str, set[int]]]) -> dict[str, Any]:
        answer: dict[str, Any] = {}
        for bucket in sorted(by_bucket):
            users = by_bucket[bucket]
            counts = []
            for i in range(count + 1):
                if unbounded in ("true", "1"):
                    counts.append(sum(1 for s in users.values() if s and max(s) >= i))
                else:
                    counts.append(sum(1 for s in users.values() if i in s))
            answer[bucket.isoformat()] = {"counts": counts, "first": len(users)}
        return answer

    if on is None:
        return table(cohorts)
    # With `on` (shape undocumented): "$overall" and one entry per segment value, each cohorts by date, as
    # Mixpanel's segmented Insights retention answers; the `limit` most common values.
    sizes = {value: sum(len(users) for users in by_bucket.values()) for value, by_bucket in segmented.items()}
    top = sorted(sizes, key=lambda value: (-sizes[value], value))[:limit]
    return {"$overall": table(cohorts), **{value: table(segmented[value]) for value in top}}


def _addiction(state: DoubleState, query: dict[str, str]) -> dict[str, Any]:
    start, end = _range(query)
    if "unit" not in query or "addiction_unit" not in query:
        raise QueryError("unit and addiction_unit are required parameters")
    unit = _choice(query, "unit", ("day", "week", "month")) or "day"
    slot_unit = _choice(query, "addiction_unit", ("hour", "day")) or "day"
    on = compile_expression(query["on"]) if query.get("on") else None
    limit = _int(query, "limit", 255, 1, 10_000) or 255
    event_name = query.get("event")
    keep = _filter(query, "where")
    events = _events(
        state,
        lambda e: (event_name is None or e.get("event") == event_name) and keep(e) and start <= _day(seconds_of(e)) <= end,
    )
    # segment -> bucket -> user -> the hours (or days) they were active in; "$overall" holds every event
    slots: dict[str, dict[dt.date, dict[str, set[Any]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(set)))
    for event in events:
        t = seconds_of(event)
        day = _day(t)
        slot = (day, int(t % DAY // 3600)) if slot_unit == "hour" else day
        for segment in ["$overall"] + ([_segment_of(on, event)] if on is not None else []):
            slots[segment][bucket_start(day, unit)][_user(event)].add(slot)

    def table(by_bucket: dict[dt.date, dict[str, set[Any]]]) -> dict[str, list[int]]:
        data = {}
        for bucket in bucket_starts(start, end + dt.timedelta(days=1), unit):
            days = {"day": 1, "week": 7, "month": calendar.monthrange(bucket.year, bucket.month)[1]}[unit]
            width = days * (24 if slot_unit == "hour" else 1)
            per_user = [len(s) for s in by_bucket[bucket].values()]
            data[bucket.isoformat()] = [sum(1 for n in per_user if n >= i + 1) for i in range(width)]
        return data

    if on is None:
        return {"data": table(slots["$overall"])}
    # With `on` (shape undocumented): as segmented retention, "$overall" and one entry per segment value.
    sizes = {value: sum(len(users) for users in by_bucket.values()) for value, by_bucket in slots.items() if value != "$overall"}
    top = sorted(sizes, key=lambda value: (-sizes[value], value))[:limit]
    return {"data": {segment: table(slots[segment]) for segment in ["$overall", *top]}}


# -- JQL -------------------------------------------------------------------------------------

_ECHO = "functionmain(){return[params];}"
_COUNT_BY_NAME = 'functionmain(){returnEvents(params).groupBy(["name"],mixpanel.reducer.count());}'


SANDBOX_JQL = (
    "JQL is not available in the sandbox (the local demo project runs no JavaScript): use segmentation, funnels, "
    "retention, events or export instead"
)


def _jql(state: DoubleState, request: RecordedRequest) -> list[Any]:
    if state.sandbox:
        raise QueryError(SANDBOX_JQL)
    form = request.form
    script = form.get("script")
    if not script:
        raise QueryError("script is a required parameter")
    try:
        params = json.loads(form["params"]) if "params" in form else None
    except ValueError:
        raise QueryError("params must be a JSON-encoded object") from None
    if params is not None and not isinstance(params, dict):
        raise QueryError("params must be a JSON-encoded object")
    compact = re.sub(r"\s+", "", script)
    compact = compact if compact.endswith(";}") else compact[:-1] + ";}" if compact.endswith("}") else compact
    if compact == _ECHO:
        return [params]
    if compact == _COUNT_BY_NAME:
        params = params or {}
        try:
            start = dt.date.fromisoformat(str(params["from_date"]))
            end = dt.date.fromisoformat(str(params["to_date"]))
        except (KeyError, ValueError):
            raise QueryError("Events() needs params.from_date and params.to_date as yyyy-mm-dd") from None
        counts: dict[str, int] = defaultdict(int)
        for event in state.events:
            if start <= _day(seconds_of(event)) <= end:
                counts[str(event.get("event"))] += 1
        return [{"key": [name], "value": counts[name]} for name in sorted(counts)]
    raise QueryError("the Mixpanel double cannot run this JQL script (it understands only the scripts its module documents)")


# -- routes ----------------------------------------------------------------------------------


def routes(state: DoubleState) -> list[Route]:
    def list_funnels(recorded: RecordedRequest) -> list[dict[str, Any]]:
        return [{"funnel_id": f["funnel_id"], "name": f["name"]} for f in state.funnels]

    return [
        query_route(state, "/api/query/funnels", lambda r: _funnel(state, r.query)),
        query_route(state, "/api/query/funnels/list", list_funnels),
        query_route(state, "/api/query/retention", lambda r: _retention(state, r.query)),
        query_route(state, "/api/query/retention/addiction", lambda r: _addiction(state, r.query)),
        query_route(state, "/api/query/jql", lambda r: _jql(state, r), method="POST"),
    ]
