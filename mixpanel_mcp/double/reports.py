"""Query API: event discovery, event counts, segmentation and saved Insights reports, computed from stored events.

Every answer is computed from `state.events` (dates are UTC days; `time` is epoch seconds, or milliseconds),
so a test can store events, query, and compare with numbers it worked out by hand. Insights answers come from
`state.bookmarks[bookmark_id]`. `where` and `on` are parsed by a small evaluator for Mixpanel's expression
language (no Python eval); an expression it does not understand is a 400, as Mixpanel answers a bad one.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import zlib
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mixpanel_mcp.double.auth import query_auth, query_error
from mixpanel_mcp.double.state import DoubleState, RecordedRequest

UTC = dt.UTC
TYPES = ("general", "unique", "average")
# Properties every event carries that discovery endpoints do not report.
INTERNAL_PROPERTIES = frozenset({"time", "token", "distinct_id", "$distinct_id", "$insert_id", "mp_processing_time_ms"})


class QueryError(Exception):
    """A request Mixpanel would refuse with a 400."""


def stored_event(name: str, at: str | float, distinct_id: str = "u1", **properties: Any) -> dict[str, Any]:
    """An event as the double stores it; `at` is epoch seconds or an ISO datetime taken as UTC."""
    if isinstance(at, str):
        moment = dt.datetime.fromisoformat(at)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        at = moment.timestamp()
    return {"event": name, "properties": {"time": at, "distinct_id": distinct_id, **properties}}


# -- the expression language -------------------------------------------------------------------


class ExpressionError(QueryError):
    pass


class _Undefined:
    def __repr__(self) -> str:
        return "undefined"


UNDEFINED: Any = _Undefined()

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<number>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
      | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
      | (?P<name>[A-Za-z_$][A-Za-z0-9_$]*)
      | (?P<op>==|!=|>=|<=|[-+*/%<>()\[\],])
    )""",
    re.VERBOSE,
)
_SOURCES = ("properties", "event", "user")
_FUNCTIONS = ("defined", "number", "string", "boolean", "floor", "round", "ceil")
_COMPARISONS = ("==", "!=", ">", ">=", "<", "<=", "in")

Node = Callable[[dict[str, Any]], Any]


def _tokens(text: str) -> list[tuple[str, str]]:
    tokens, position = [], 0
    text = text.rstrip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            raise ExpressionError(f"unexpected character at position {position} of the expression")
        kind = match.lastgroup or "op"
        tokens.append((kind, match.group(kind)))
        position = match.end()
    return tokens


class _Parser:
    """Recursive descent, lowest precedence first: or, and, not, comparison, + -, * / %, unary -, primary."""

    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.i = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        token = self.peek()
        if token is None or (value is not None and token[1] != value):
            raise ExpressionError(f"expected {value or 'more'} in the expression")
        self.i += 1
        return token

    def at(self, *values: str) -> bool:
        token = self.peek()
        return token is not None and token[0] in ("op", "name") and token[1] in values

    def parse(self) -> Node:
        node = self.or_()
        if self.peek() is not None:
            raise ExpressionError(f"unexpected '{self.peek()[1]}' in the expression")  # type: ignore[index]
        return node

    def or_(self) -> Node:
        node = self.and_()
        while self.at("or"):
            self.take()
            node = _logical(node, self.and_(), any_=True)
        return node

    def and_(self) -> Node:
        node = self.not_()
        while self.at("and"):
            self.take()
            node = _logical(node, self.not_(), any_=False)
        return node

    def not_(self) -> Node:
        if self.at("not"):
            self.take()
            operand = self.not_()
            return lambda p: _negate(operand(p))
        return self.comparison()

    def comparison(self) -> Node:
        node = self.additive()
        while self.at(*_COMPARISONS):
            op = self.take()[1]
            node = _binary(op, node, self.additive())
        return node

    def additive(self) -> Node:
        node = self.multiplicative()
        while self.at("+", "-"):
            op = self.take()[1]
            node = _binary(op, node, self.multiplicative())
        return node

    def multiplicative(self) -> Node:
        node = self.unary()
        while self.at("*", "/", "%"):
            op = self.take()[1]
            node = _binary(op, node, self.unary())
        return node

    def unary(self) -> Node:
        if self.at("-"):
            self.take()
            operand = self.unary()
            return lambda p: -v if _is_number(v := operand(p)) else UNDEFINED
        return self.primary()

    def primary(self) -> Node:
        kind, value = self.take()
        if kind == "number":
            number = float(value)
            return lambda p: number
        if kind == "string":
            text = _unquote(value)
            return lambda p: text
        if kind == "op" and value == "(":
            node = self.or_()
            self.take(")")
            return node
        if kind == "op" and value == "[":
            items: list[Node] = []
            while not self.at("]"):
                items.append(self.or_())
                if not self.at("]"):
                    self.take(",")
            self.take("]")
            return lambda p: [item(p) for item in items]
        if kind == "name" and value in ("true", "false"):
            flag = value == "true"
            return lambda p: flag
        if kind == "name" and value in _SOURCES:
            self.take("[")
            key_kind, key = self.take()
            if key_kind != "string":
                raise ExpressionError(f"{value}[...] needs a quoted property name")
            self.take("]")
            name = _unquote(key)
            if value == "event" and name == "$time":
                name = "time"
            return lambda p: _from_json(p.get(name))
        if kind == "name" and value in _FUNCTIONS:
            self.take("(")
            operand = self.or_()
            self.take(")")
            function = _FUNCTION_IMPLS[value]
            return lambda p: function(operand(p))
        raise ExpressionError(f"'{value}' is not supported in this expression")


def _unquote(literal: str) -> str:
    """The text of a quoted string token, with backslash escapes resolved."""
    escapes = {"n": "\n", "t": "\t", "r": "\r"}
    return re.sub(r"\\(.)", lambda m: escapes.get(m.group(1), m.group(1)), literal[1:-1])


def _from_json(value: Any) -> Any:
    if value is None:
        return UNDEFINED
    if isinstance(value, bool) or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    return UNDEFINED


def _is_number(value: Any) -> bool:
    return isinstance(value, float)


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    return "undefined"


def _equal(a: Any, b: Any) -> bool:
    return _kind(a) == _kind(b) and _kind(a) != "undefined" and a == b


def _truth(value: Any) -> bool:
    if value is UNDEFINED:
        return False
    if isinstance(value, bool):
        return value
    raise ExpressionError(f"and/or/not need booleans, not a {_kind(value)}")


def _negate(value: Any) -> bool:
    return not _truth(value)


def _logical(left: Node, right: Node, *, any_: bool) -> Node:
    if any_:
        return lambda p: _truth(left(p)) or _truth(right(p))
    return lambda p: _truth(left(p)) and _truth(right(p))


def _binary(op: str, left: Node, right: Node) -> Node:
    def evaluate(p: dict[str, Any]) -> Any:
        a, b = left(p), right(p)
        if op == "==":
            return _equal(a, b)
        if op == "!=":
            return not _equal(a, b)
        if op == "in":
            if isinstance(b, list):
                return any(_equal(a, item) for item in b)
            if isinstance(a, str) and isinstance(b, str):
                return a in b
            return UNDEFINED
        if op == "+" and isinstance(a, str) and isinstance(b, str):
            return a + b
        if not (_is_number(a) and _is_number(b)):
            return UNDEFINED
        if op in (">", ">=", "<", "<="):
            return {">": a > b, ">=": a >= b, "<": a < b, "<=": a <= b}[op]
        if op == "+":
            return a + b
        if op == "-":
            return a - b
        if op == "*":
            return a * b
        if b == 0:
            return UNDEFINED
        return a / b if op == "/" else math.fmod(a, b)

    return evaluate


def _to_number(value: Any) -> Any:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, float):
        return value
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return UNDEFINED
    return UNDEFINED


def _to_string(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, str):
        return value
    return UNDEFINED


def _to_boolean(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, float):
        return value != 0
    if isinstance(value, str):
        return value != ""
    return UNDEFINED


def _math(function: Callable[[float], float]) -> Callable[[Any], Any]:
    return lambda v: float(function(v)) if _is_number(v) else UNDEFINED


_FUNCTION_IMPLS: dict[str, Callable[[Any], Any]] = {
    "defined": lambda v: v is not UNDEFINED,
    "number": _to_number,
    "string": _to_string,
    "boolean": _to_boolean,
    "floor": _math(math.floor),
    "round": _math(lambda v: math.floor(v + 0.5)),
    "ceil": _math(math.ceil),
}


def compile_expression(text: str) -> Node:
    """Parse a `where`/`on` expression into a function of an event's properties."""
    return _Parser(text).parse()


def segment_keys(value: Any) -> list[str]:
    """The segment names an `on` value falls in: a list property counts in each of its values."""
    if isinstance(value, list):
        return [key for item in value for key in segment_keys(item)]
    text = _to_string(value)
    return [] if text is UNDEFINED else [text]


# -- dates and buckets ------------------------------------------------------------------------


UNITS = ("minute", "hour", "day", "week", "month")


def _day(text: str | None, name: str) -> dt.date:
    if not text:
        raise QueryError(f"{name} is a required parameter")
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise QueryError(f"{name} must be in yyyy-mm-dd format, got {text!r}") from None


def bucket_start(moment: dt.datetime, unit: str) -> dt.datetime:
    if unit == "minute":
        return moment.replace(second=0, microsecond=0)
    if unit == "hour":
        return moment.replace(minute=0, second=0, microsecond=0)
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if unit == "week":
        return day - dt.timedelta(days=day.weekday())
    if unit == "month":
        return day.replace(day=1)
    return day


def bucket_key(moment: dt.datetime, unit: str) -> str:
    start = bucket_start(moment, unit)
    if unit == "minute":
        return start.strftime("%Y-%m-%d %H:%M:00")
    if unit == "hour":
        return start.strftime("%Y-%m-%d %H:00:00")
    return start.strftime("%Y-%m-%d")


def _next(moment: dt.datetime, unit: str) -> dt.datetime:
    if unit == "month":
        return (moment.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    step = {"minute": dt.timedelta(minutes=1), "hour": dt.timedelta(hours=1), "day": dt.timedelta(days=1),
            "week": dt.timedelta(weeks=1)}[unit]
    return moment + step


def bucket_keys(start: dt.datetime, end: dt.datetime, unit: str) -> list[str]:
    """Every bucket touching [start, end), in order."""
    keys, moment = [], bucket_start(start, unit)
    while moment < end:
        keys.append(bucket_key(moment, unit))
        moment = _next(moment, unit)
    return keys


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
            start = _previous(start, unit)
        return Period(start, now + dt.timedelta(seconds=1))
    return date_period(query)


def _previous(moment: dt.datetime, unit: str) -> dt.datetime:
    if unit == "month":
        return (moment - dt.timedelta(days=1)).replace(day=1)
    return moment - (_next(moment, unit) - moment)


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
    seconds = float(event.get("properties", {}).get("time", 0))
    if seconds > 1e11:  # milliseconds
        seconds /= 1000
    return dt.datetime.fromtimestamp(seconds, UTC)


def user_of(event: dict[str, Any]) -> Any:
    properties = event.get("properties", {})
    return properties.get("distinct_id", properties.get("$distinct_id"))


def select(state: DoubleState, period: Period, names: Iterable[str] | None, where: str | None) -> list[dict[str, Any]]:
    """Events in the period, with one of the names, matching `where`."""
    wanted = None if names is None else set(names)
    condition = compile_expression(where) if where else None
    chosen = []
    for event in list(state.events):
        if wanted is not None and event.get("event") not in wanted:
            continue
        if not period.start <= moment_of(event) < period.end:
            continue
        if condition is not None and condition(event.get("properties", {})) is not True:
            continue
        chosen.append(event)
    return chosen


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
    start: dt.datetime | None = None, days: int | None = None,
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    grouped: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for event in events:
        if days is not None and start is not None:
            index = (moment_of(event) - start).days // days
            key = (start + dt.timedelta(days=index * days)).strftime("%Y-%m-%d")
        else:
            key = bucket_key(moment_of(event), unit)
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
        grouped = group_by(events, "day", segment, start=period.start, days=interval)
        keys = [(period.start + dt.timedelta(days=d)).strftime("%Y-%m-%d")
                for d in range(0, (period.end - period.start).days, interval)]
    else:
        grouped = group_by(events, unit, segment)
        keys = bucket_keys(period.start, period.end, unit)
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
    numbers = [(e, v) for e in events if _is_number(v := expression(e.get("properties", {})))]
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
        found.setdefault(bucket_key(moment_of(e), unit), []).append(value if _is_number(value) else 0.0)
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
    today = bucket_start(dt.datetime.now(UTC), "day")
    day = dt.timedelta(days=1)
    now_events = select(state, Period(today, today + day), None, None)
    before = select(state, Period(today - day, today), None, None)
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
            counts.update(segment_keys(_from_json(e.get("properties", {}).get(name))))
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
        keys = segment_keys(_from_json(e.get("properties", {}).get(name)))
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
    return report


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
    def handler(compute: Callable[[DoubleState, dict[str, str]], Any]) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            recorded: RecordedRequest = request.state.recorded
            denied = query_auth(state, recorded)
            if denied is not None:
                return denied
            try:
                return JSONResponse(compute(state, recorded.query))
            except QueryError as exc:
                return query_error(recorded, 400, str(exc))

        return endpoint

    return [Route(path, handler(compute), methods=["GET"]) for path, compute in ENDPOINTS.items()]


__all__ = ["compile_expression", "routes", "stored_event"]
