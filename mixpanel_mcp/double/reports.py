"""Query API: event discovery, event counts, segmentation and saved Insights reports, computed from stored events.

Every answer is computed from `state.events` (dates are UTC days; `time` is epoch seconds, or milliseconds),
so a test can store events, query, and compare with numbers it worked out by hand. Insights answers come from
`state.bookmarks[bookmark_id]`: the answer stored there or, for a bookmark holding a "definition" (the
sandbox's), event counts computed now. `where` and `on` are read by double/expressions.py; an expression it
does not understand is a 400, as Mixpanel answers a bad one.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import zlib
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from starlette.routing import Route

from mixpanel_mcp.double.expressions import compile_expression, condition, from_json, is_number, segment_keys
from mixpanel_mcp.double.query import (
    QueryError,
    bucket_key,
    bucket_keys,
    bucket_start,
    bucket_starts,
    previous_bucket,
    query_route,
    seconds_of,
)
from mixpanel_mcp.double.state import DoubleState, RecordedRequest

UTC = dt.UTC
TYPES = ("general", "unique", "average")
# Properties every event carries that discovery endpoints do not report.
INTERNAL_PROPERTIES = frozenset({"time", "token", "distinct_id", "$distinct_id", "$insert_id", "mp_processing_time_ms"})


# -- parameters -------------------------------------------------------------------------------


UNITS = ("minute", "hour", "day", "week", "month")


def _day(text: str | None, name: str) -> dt.date:
    if not text:
        raise QueryError(f"{name} is a required parameter")
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise QueryError(f"{name} must be in yyyy-mm-dd format, got {text!r}") from None


@dataclass
class Period:
    start: dt.datetime
    end: dt.datetime  # exclusive


def date_period(query: dict[str, str]) -> Period:
    from_date, to_date = _day(query.get("from_date"), "from_date"), _day(query.get("to_date"), "to_date")
    if from_date > to_date:
        raise QueryError("from_date cannot be after to_date")
    start = dt.datetime.combine(from_date, dt.time(), UTC)
    return Period(start, dt.datetime.combine(to_date + dt.timedelta(days=1), dt.time(), UTC))


def period_or_interval(query: dict[str, str], unit: str) -> Period:
    """/events style: from_date + to_date, or `interval` units back from now (the current one included)."""
    if query.get("interval") and not query.get("from_date"):
        count = _positive(query, "interval")
        now = dt.datetime.now(UTC)
        start = bucket_start(now, unit)
        for _ in range(count - 1):
            start = previous_bucket(start, unit)
        return Period(start, now + dt.timedelta(seconds=1))
    return date_period(query)


def _positive(query: dict[str, str], name: str, default: int | None = None, maximum: int | None = None) -> int:
    text = query.get(name)
    if not text:
        if default is None:
            raise QueryError(f"{name} is a required parameter")
        return default
    if not text.isdigit() or int(text) < 1:
        raise QueryError(f"{name} must be a positive integer, got {text!r}")
    if maximum is not None and int(text) > maximum:
        raise QueryError(f"{name} must be at most {maximum}")
    return int(text)


def _choice(query: dict[str, str], name: str, allowed: Iterable[str], default: str | None = None) -> str:
    value = query.get(name) or default
    if value is None:
        raise QueryError(f"{name} is a required parameter")
    if value not in allowed:
        raise QueryError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    return value


def _required(query: dict[str, str], name: str) -> str:
    value = query.get(name)
    if not value:
        raise QueryError(f"{name} is a required parameter")
    return value


def _json_list(query: dict[str, str], name: str) -> list[Any] | None:
    text = query.get(name)
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        raise QueryError(f"{name} must be a JSON-encoded array") from None
    if not isinstance(value, list):
        raise QueryError(f"{name} must be a JSON-encoded array")
    return value


# -- selecting and counting events ----------------------------------------------------------


def moment_of(event: dict[str, Any]) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds_of(event), UTC)


def user_of(event: dict[str, Any]) -> Any:
    properties = event.get("properties", {})
    return properties.get("distinct_id", properties.get("$distinct_id"))


def select(state: DoubleState, period: Period, names: Iterable[str] | None, where: str | None) -> list[dict[str, Any]]:
    """Events in the period, with one of the names, matching `where`."""
    wanted = None if names is None else set(names)
    matches = condition(where)
    return [
        event
        for event in list(state.events)
        if (wanted is None or event.get("event") in wanted)
        and period.start <= moment_of(event) < period.end
        and matches(event.get("properties", {}))
    ]


def measure(events: list[dict[str, Any]], type_: str) -> float | int:
    """general: how many; unique: how many users; average: events per user."""
    if type_ == "general":
        return len(events)
    users = len({user_of(e) for e in events})
    if type_ == "unique":
        return users
    return len(events) / users if users else 0


def scrambled(keys: list[str]) -> list[str]:
    """Mixpanel's `series` comes in no particular order; so does the double's (deterministically)."""
    return sorted(keys, key=lambda k: (zlib.crc32(k.encode()), k))


def series_answer(
    grouped: dict[str, dict[str, list[dict[str, Any]]]], keys: list[str], type_: str, *, dense: bool
) -> dict[str, Any]:
    """{"data": {"series", "values": {segment: {date: n}}}, "legend_size"}; dense fills every date with 0."""
    values: dict[str, dict[str, Any]] = {}
    for segment, by_key in grouped.items():
        values[segment] = {
            key: measure(by_key[key], type_) if key in by_key else 0 for key in scrambled(keys) if dense or key in by_key
        }
    return {"data": {"series": scrambled(keys), "values": values}, "legend_size": len(values)}


def group_by(
    events: list[dict[str, Any]], unit: str, segment: Callable[[dict[str, Any]], list[str]], *,
    start: dt.datetime | None = None, interval: int | None = None,
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    grouped: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for event in events:
        key = bucket_key(moment_of(event), unit, start, interval)
        for name in segment(event):
            grouped.setdefault(name, {}).setdefault(key, []).append(event)
    return grouped


def top_segments(grouped: dict[str, dict[str, list[Any]]], limit: int) -> dict[str, dict[str, list[Any]]]:
    totals = {name: sum(len(v) for v in by_key.values()) for name, by_key in grouped.items()}
    keep = sorted(totals, key=lambda n: (-totals[n], n))[:limit]
    return {name: grouped[name] for name in keep}


def on_segments(on: str) -> Callable[[dict[str, Any]], list[str]]:
    expression = compile_expression(on)
    return lambda event: segment_keys(expression(event.get("properties", {})))


def tidy(value: float) -> float | int:
    return int(value) if float(value).is_integer() else value


def computed_at() -> str:
    return dt.datetime.now(UTC).isoformat()


# -- endpoints ------------------------------------------------------------------------------


def segmentation(state: DoubleState, q: dict[str, str]) -> Any:
    event = _required(q, "event")
    period = date_period(q)
    type_ = _choice(q, "type", TYPES, "general")
    unit = _choice(q, "unit", ("minute", "hour", "day", "month"), "day")
    interval = _positive(q, "interval", default=0) if q.get("interval") else None
    limit = _positive(q, "limit", default=60, maximum=10_000)
    events = select(state, period, [event], q.get("where"))
    segment = on_segments(q["on"]) if q.get("on") else (lambda e: [event])
    if interval:
        unit = "day"  # buckets of `interval` days from from_date
    grouped = group_by(events, unit, segment, start=period.start, interval=interval)
    keys = bucket_keys(period.start, period.end, unit, interval)
    if q.get("on"):
        grouped = top_segments(grouped, limit)
    else:
        grouped.setdefault(event, {})
    return series_answer(grouped, keys, type_, dense=True)


def numeric_bucket_width(low: float, high: float) -> float:
    """A round bucket width giving at most about ten buckets."""
    raw = (high - low) / 10
    if raw <= 0:
        return 1.0
    magnitude = 10 ** math.floor(math.log10(raw))
    return next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)


def _label(value: float) -> str:
    return f"{int(value):,}" if float(value).is_integer() else f"{value:,.6g}"


def segmentation_numeric(state: DoubleState, q: dict[str, str]) -> Any:
    event = _required(q, "event")
    on = _required(q, "on")
    period = date_period(q)
    unit = _choice(q, "unit", ("hour", "day"), "day")
    type_ = _choice(q, "type", TYPES, "general")
    expression = compile_expression(on)
    events = select(state, period, [event], q.get("where"))
    numbers = [(e, v) for e in events if is_number(v := expression(e.get("properties", {})))]
    grouped: dict[str, dict[str, list[dict[str, Any]]]] = {}
    if numbers:
        width = numeric_bucket_width(min(v for _, v in numbers), max(v for _, v in numbers))
        for e, v in numbers:
            low = math.floor(v / width) * width
            name = f"{_label(low)} - {_label(low + width)}"
            grouped.setdefault(name, {}).setdefault(bucket_key(moment_of(e), unit), []).append(e)
    return series_answer(grouped, bucket_keys(period.start, period.end, unit), type_, dense=True)


def _per_bucket(state: DoubleState, q: dict[str, str]) -> tuple[list[str], dict[str, list[float]]]:
    event = _required(q, "event")
    on = _required(q, "on")
    period = date_period(q)
    unit = _choice(q, "unit", ("hour", "day"), "day")
    expression = compile_expression(on)
    found: dict[str, list[float]] = {}
    for e in select(state, period, [event], q.get("where")):
        value = expression(e.get("properties", {}))
        found.setdefault(bucket_key(moment_of(e), unit), []).append(value if is_number(value) else 0.0)
    return bucket_keys(period.start, period.end, unit), found


def segmentation_sum(state: DoubleState, q: dict[str, str]) -> Any:
    keys, found = _per_bucket(state, q)
    results = {key: tidy(sum(found.get(key, []))) for key in scrambled(keys)}
    return {"status": "ok", "computed_at": computed_at(), "results": results}


def segmentation_average(state: DoubleState, q: dict[str, str]) -> Any:
    keys, found = _per_bucket(state, q)
    results = {key: tidy(sum(found[key]) / len(found[key])) for key in scrambled(keys) if found.get(key)}
    return {"results": results, "status": "ok"}


def event_names(state: DoubleState, q: dict[str, str]) -> Any:
    type_ = _choice(q, "type", TYPES)
    limit = _positive(q, "limit", default=255)
    now = dt.datetime.now(UTC)
    events = select(state, Period(now - dt.timedelta(days=31), now + dt.timedelta(seconds=1)), None, None)
    by_name: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        by_name.setdefault(e["event"], []).append(e)
    ranked = sorted(by_name, key=lambda n: (-measure(by_name[n], type_), n))
    return ranked[:limit]


def top_events(state: DoubleState, q: dict[str, str]) -> Any:
    type_ = _choice(q, "type", TYPES)
    limit = _positive(q, "limit", default=100)
    now = dt.datetime.now(UTC)
    today = bucket_start(now, "day")
    day = dt.timedelta(days=1)
    now_events = select(state, Period(today, today + day), None, None)
    # "Normalized" (Mixpanel's word, undefined): today so far against yesterday up to the same time of day, so
    # that a morning is not read as a collapse (see docs/fidelity.md).
    before = select(state, Period(today - day, now - day + dt.timedelta(seconds=1)), None, None)
    rows = []
    for name in sorted({e["event"] for e in now_events}):
        amount = measure([e for e in now_events if e["event"] == name], type_)
        previous = measure([e for e in before if e["event"] == name], type_)
        change = (amount - previous) / previous if previous else 1
        rows.append({"amount": amount, "event": name, "percent_change": change})
    rows.sort(key=lambda r: -r["amount"])
    return {"events": rows[:limit], "type": type_}


def event_counts(state: DoubleState, q: dict[str, str]) -> Any:
    names = _json_list(q, "event")
    if not names:
        raise QueryError("event is a required parameter")
    type_ = _choice(q, "type", TYPES)
    unit = _choice(q, "unit", UNITS)
    if type_ == "unique" and unit in ("minute", "hour"):
        raise QueryError("You cannot get hourly uniques")
    period = period_or_interval(q, unit)
    events = select(state, period, names, None)
    grouped = group_by(events, unit, lambda e: [e["event"]])
    for name in names:
        grouped.setdefault(str(name), {})
    return series_answer(grouped, bucket_keys(period.start, period.end, unit), type_, dense=False)


def event_top_properties(state: DoubleState, q: dict[str, str]) -> Any:
    event = _required(q, "event")
    limit = _positive(q, "limit", default=10)
    counts: Counter[str] = Counter()
    for e in state.events:
        if e.get("event") == event:
            counts.update(k for k in e.get("properties", {}) if k not in INTERNAL_PROPERTIES)
    ranked = sorted(counts, key=lambda k: (-counts[k], k))[:limit]
    return {name: {"count": counts[name]} for name in ranked}


def event_property_values(state: DoubleState, q: dict[str, str]) -> Any:
    event, name = _required(q, "event"), _required(q, "name")
    limit = _positive(q, "limit", default=255)
    counts: Counter[str] = Counter()
    for e in state.events:
        if e.get("event") == event:
            counts.update(segment_keys(from_json(e.get("properties", {}).get(name))))
    return sorted(counts, key=lambda v: (-counts[v], v))[:limit]


def event_property_counts(state: DoubleState, q: dict[str, str]) -> Any:
    event, name = _required(q, "event"), _required(q, "name")
    type_ = _choice(q, "type", TYPES)
    unit = _choice(q, "unit", UNITS)
    limit = _positive(q, "limit", default=255)
    wanted = _json_list(q, "values")
    period = period_or_interval(q, unit)
    events = select(state, period, [event], None)

    def segment(e: dict[str, Any]) -> list[str]:
        keys = segment_keys(from_json(e.get("properties", {}).get(name)))
        return [k for k in keys if wanted is None or k in wanted]

    grouped = top_segments(group_by(events, unit, segment), limit)
    return series_answer(grouped, bucket_keys(period.start, period.end, unit), type_, dense=False)


def insights(state: DoubleState, q: dict[str, str]) -> Any:
    text = _required(q, "bookmark_id")
    if not text.isdigit():
        raise QueryError(f"bookmark_id must be an integer, got {text!r}")
    report = state.bookmarks.get(int(text))
    if report is None:
        raise QueryError(f"bookmark_id {text} not found")
    if "definition" in report and "series" not in report:
        return live_report(state, report["definition"])
    return report


def live_report(state: DoubleState, definition: dict[str, Any]) -> dict[str, Any]:
    """A saved report kept as its definition (the sandbox's): event counts per unit over the last days, now."""
    unit = definition.get("unit", "day")
    today = dt.datetime.now(UTC).date()
    start = today - dt.timedelta(days=int(definition.get("last_days", 30)) - 1)
    period = Period(dt.datetime.combine(start, dt.time(), UTC), dt.datetime.combine(today + dt.timedelta(days=1), dt.time(), UTC))
    starts = bucket_starts(period.start, period.end, unit)
    series: dict[str, dict[str, int]] = {}
    for name in definition.get("events", []):
        counts = Counter(bucket_start(moment_of(e), unit) for e in select(state, period, [name], None))
        series[name] = {moment.isoformat(): counts.get(moment, 0) for moment in starts}
    return {
        "computed_at": computed_at(),
        "date_range": {"from_date": f"{start.isoformat()}T00:00:00+00:00", "to_date": f"{today.isoformat()}T23:59:59.999000+00:00"},
        "headers": ["$event"],
        "series": series,
    }


ENDPOINTS: dict[str, Callable[[DoubleState, dict[str, str]], Any]] = {
    "/api/query/events/names": event_names,
    "/api/query/events/top": top_events,
    "/api/query/events": event_counts,
    "/api/query/events/properties/top": event_top_properties,
    "/api/query/events/properties/values": event_property_values,
    "/api/query/events/properties": event_property_counts,
    "/api/query/segmentation": segmentation,
    "/api/query/segmentation/numeric": segmentation_numeric,
    "/api/query/segmentation/sum": segmentation_sum,
    "/api/query/segmentation/average": segmentation_average,
    "/api/query/insights": insights,
}


def routes(state: DoubleState) -> list[Route]:
    def answer(compute: Callable[[DoubleState, dict[str, str]], Any]) -> Callable[[RecordedRequest], Any]:
        return lambda recorded: compute(state, recorded.query)

    return [query_route(state, path, answer(compute)) for path, compute in ENDPOINTS.items()]
