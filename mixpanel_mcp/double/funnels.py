"""Query API: funnels, retention, frequency (addiction) and JQL, computed from `state.events`.

What the double computes (all days are UTC):
- /funnels: a user enters a date bucket (unit day|week|month, or `interval` days from from_date) with their first
  step-1 event in that bucket, and converts through the steps in order within the conversion window (`length`
  `length_unit`, else the saved funnel's `length`/`length_unit`, else 14 days); events after to_date count toward
  conversion. With `on`, each date holds {"$overall": steps, <value>: steps} and meta.property_values (❓ the
  real segmented shape is undocumented). Unknown funnel_id -> 400.
- /retention birth: a user's cohort is the bucket of their first-ever `born_event` (matching born_where), if in
  the range; interval i holds returns (`event`, or any event; matching `where`) i*interval..(i+1)*interval units
  after that birth (a month counts as 30 days). compounded: per bucket, users who did `event`, and their later
  `event`s. Cohorts with no users are left out. `on` is not supported (400).
- /retention/addiction: per unit bucket in the range, counts[i] = users who did the event in at least i+1
  distinct hours (or days) of that bucket. `on` is not supported (400).
- /jql: the double cannot run JavaScript. It understands exactly two scripts (whitespace aside):
    function main() { return [params]; }                      -> [params]
    function main() { return Events(params).groupBy(["name"], mixpanel.reducer.count()); }
                                                               -> [{"key": [name], "value": n}, ...]
  Any other script is a 400.
Filters (`where`, `born_where`) and `on` understand a small expression subset: properties["x"], string, number
and boolean literals, defined(...), == != > >= < <= in, not, and, or, parentheses; anything else is a 400.
"""

from __future__ import annotations

import calendar
import datetime as dt
import json
import re
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mixpanel_mcp.double.auth import query_auth, query_error
from mixpanel_mcp.double.state import DoubleState, RecordedRequest

DAY = 86_400
LENGTH_SECONDS = {"day": DAY, "hour": 3_600, "minute": 60, "second": 1}
UNIT_SECONDS = {"day": DAY, "week": 7 * DAY, "month": 30 * DAY}
DEFAULT_WINDOW = 14 * DAY


class BadQuery(Exception):
    """A parameter Mixpanel would refuse: answered as a 400 with Mixpanel's error shape."""


# -- parameters ------------------------------------------------------------------------------


def _date(query: dict[str, str], name: str) -> dt.date:
    if name not in query:
        raise BadQuery(f"{name} is a required parameter")
    try:
        return dt.date.fromisoformat(query[name])
    except ValueError:
        raise BadQuery(f"{name} must be in the format yyyy-mm-dd, got {query[name]!r}") from None


def _range(query: dict[str, str]) -> tuple[dt.date, dt.date]:
    start, end = _date(query, "from_date"), _date(query, "to_date")
    if start > end:
        raise BadQuery("from_date cannot be later than to_date")
    return start, end


def _int(query: dict[str, str], name: str, default: int | None = None, low: int = 1, high: int | None = None) -> int | None:
    if name not in query:
        return default
    try:
        value = int(query[name])
    except ValueError:
        raise BadQuery(f"{name} must be an integer, got {query[name]!r}") from None
    if value < low or (high is not None and value > high):
        raise BadQuery(f"{name} must be between {low} and {high}" if high else f"{name} must be at least {low}")
    return value


def _choice(query: dict[str, str], name: str, allowed: tuple[str, ...], default: str | None = None) -> str | None:
    value = query.get(name, default)
    if value is None:
        return None
    if value not in allowed:
        raise BadQuery(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    return value


# -- events and dates ------------------------------------------------------------------------


def _time(event: dict[str, Any]) -> float:
    t = float(event.get("properties", {}).get("time", 0))
    return t / 1000 if t > 1e11 else t


def _day(t: float) -> dt.date:
    return dt.datetime.fromtimestamp(t, dt.UTC).date()


def _user(event: dict[str, Any]) -> str:
    return str(event.get("properties", {}).get("distinct_id", ""))


def _bucket(day: dt.date, unit: str, start: dt.date, interval: int | None = None) -> dt.date:
    if unit == "week":
        return day - dt.timedelta(days=day.weekday())
    if unit == "month":
        return day.replace(day=1)
    if interval:
        return start + dt.timedelta(days=(day - start).days // interval * interval)
    return day


def _buckets(start: dt.date, end: dt.date, unit: str, interval: int | None = None) -> list[dt.date]:
    seen: list[dt.date] = []
    day = start
    while day <= end:
        b = _bucket(day, unit, start, interval)
        if not seen or seen[-1] != b:
            seen.append(b)
        day += dt.timedelta(days=1)
    return seen


def _events(state: DoubleState, keep: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
    return sorted((e for e in state.events if keep(e)), key=_time)


# -- the expression subset -------------------------------------------------------------------

_TOKEN = re.compile(r'\s*(?:(?P<str>"(?:[^"\\]|\\.)*")|(?P<num>-?\d+(?:\.\d+)?)|(?P<op>==|!=|>=|<=|[><()\[\]])|(?P<word>[A-Za-z_$][\w$]*))')
_UNDEFINED = object()


class _Expr:
    """Parses once; `evaluate(properties)` gives the value (or _UNDEFINED)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens: list[tuple[str, str]] = []
        pos = 0
        while pos < len(text):
            if text[pos:].strip() == "":
                break
            m = _TOKEN.match(text, pos)
            if not m:
                raise BadQuery(f"the double cannot parse the expression {text!r}")
            kind = m.lastgroup or ""
            self.tokens.append((kind, m.group(kind)))
            pos = m.end()
        self.pos = 0
        self.tree = self._or()
        if self.pos != len(self.tokens):
            raise BadQuery(f"the double cannot parse the expression {text!r}")

    def _peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _take(self, value: str | None = None) -> tuple[str, str]:
        token = self._peek()
        if token is None or (value is not None and token[1] != value):
            raise BadQuery(f"the double cannot parse the expression {self.text!r}")
        self.pos += 1
        return token

    def _or(self) -> Any:
        node = self._and()
        while self._peek() == ("word", "or"):
            self._take()
            node = ("or", node, self._and())
        return node

    def _and(self) -> Any:
        node = self._not()
        while self._peek() == ("word", "and"):
            self._take()
            node = ("and", node, self._not())
        return node

    def _not(self) -> Any:
        if self._peek() == ("word", "not"):
            self._take()
            return ("not", self._not())
        return self._compare()

    def _compare(self) -> Any:
        left = self._operand()
        token = self._peek()
        if token and (token[0] == "op" and token[1] in ("==", "!=", ">", ">=", "<", "<=") or token == ("word", "in")):
            self._take()
            return ("cmp", token[1], left, self._operand())
        return left

    def _operand(self) -> Any:
        kind, value = self._take()
        if kind == "str":
            return ("lit", json.loads(value))
        if kind == "num":
            return ("lit", float(value))
        if (kind, value) == ("op", "("):
            node = self._or()
            self._take(")")
            return node
        if kind == "word" and value in ("true", "false"):
            return ("lit", value == "true")
        if kind == "word" and value == "properties":
            self._take("[")
            key = self._take()
            if key[0] != "str":
                raise BadQuery(f"the double cannot parse the expression {self.text!r}")
            self._take("]")
            return ("prop", json.loads(key[1]))
        if kind == "word" and value == "defined":
            self._take("(")
            inner = self._operand()
            self._take(")")
            return ("defined", inner)
        raise BadQuery(f"the double cannot parse the expression {self.text!r}")

    def evaluate(self, properties: dict[str, Any]) -> Any:
        return _eval(self.tree, properties)

    def test(self, event: dict[str, Any]) -> bool:
        return self.evaluate(event.get("properties", {})) is True


def _eval(node: Any, props: dict[str, Any]) -> Any:
    kind = node[0]
    if kind == "lit":
        return node[1]
    if kind == "prop":
        value = props.get(node[1], _UNDEFINED)
        return float(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if kind == "defined":
        return _eval(node[1], props) is not _UNDEFINED
    if kind == "not":
        return _eval(node[1], props) is not True
    if kind in ("and", "or"):
        left, right = _eval(node[1], props) is True, _eval(node[2], props) is True
        return (left and right) if kind == "and" else (left or right)
    _, op, left, right = node
    a, b = _eval(left, props), _eval(right, props)
    if op in ("==", "!="):
        same = type(a) is type(b) and a == b
        return same if op == "==" else not same
    if op == "in":
        return isinstance(a, str) and isinstance(b, str) and a in b
    if not all(isinstance(v, float) for v in (a, b)):
        return _UNDEFINED
    return {">": a > b, ">=": a >= b, "<": a < b, "<=": a <= b}[op]


def _filter(query: dict[str, str], name: str) -> Callable[[dict[str, Any]], bool]:
    if not query.get(name):
        return lambda event: True
    return _Expr(query[name]).test


def _segment_of(expr: _Expr, event: dict[str, Any]) -> str:
    value = expr.evaluate(event.get("properties", {}))
    if value is _UNDEFINED or value is None:
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
        avg = avg_start = None
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
        raise BadQuery("funnel_id is a required parameter")
    funnel_id = _int(query, "funnel_id")
    saved = next((f for f in state.funnels if f.get("funnel_id") == funnel_id), None)
    if saved is None:
        raise BadQuery(f"funnel {funnel_id} does not exist")
    start, end = _range(query)
    length = _int(query, "length")
    length_unit = _choice(query, "length_unit", tuple(LENGTH_SECONDS))
    if length is None and "length" in saved:
        length, length_unit = int(saved["length"]), length_unit or saved.get("length_unit", "day")
    window = length * LENGTH_SECONDS[length_unit or "day"] if length else DEFAULT_WINDOW
    if window > 90 * DAY:
        raise BadQuery("length may not be greater than 90 days")
    unit = _choice(query, "unit", ("day", "week", "month"))
    interval = _int(query, "interval")
    limit = _int(query, "limit", 255, 1, 10_000)
    on = _Expr(query["on"]) if query.get("on") else None
    keep = _filter(query, "where")
    names: list[str] = list(saved["steps"])

    by_user: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in _events(state, lambda e: e.get("event") in names and keep(e)):
        by_user[_user(event)].append(event)

    dates = _buckets(start, end, unit or "day", interval)
    # (bucket, segment) -> step -> list of time tuples
    reached: dict[tuple[dt.date, str], list[list[tuple[float, ...]]]] = defaultdict(lambda: [[] for _ in names])
    for events in by_user.values():
        entered: set[dt.date] = set()
        for k, event in enumerate(events):
            day = _day(_time(event))
            if event["event"] != names[0] or not start <= day <= end:
                continue
            bucket = _bucket(day, unit or "day", start, interval)
            if bucket in entered:
                continue
            entered.add(bucket)
            t0 = _time(event)
            times = [t0]
            for later in events[k + 1 :]:
                if len(times) == len(names) or _time(later) > t0 + window:
                    break
                if later["event"] == names[len(times)]:
                    times.append(_time(later))
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
    unit = _choice(query, "unit", tuple(UNIT_SECONDS), "day") or "day"
    interval = _int(query, "interval", 1, 1, 90 if unit == "day" else None) or 1
    count = _int(query, "interval_count", 1) or 1
    unbounded = query.get("unbounded_retention", "false").lower()
    if unbounded not in ("true", "false", "1", "0"):
        raise BadQuery("unbounded_retention must be true or false")
    if query.get("on"):
        raise BadQuery("the double does not support on for retention")
    born_event, returning = query.get("born_event"), query.get("event")
    if kind == "birth" and not born_event:
        raise BadQuery("born_event is required for birth retention")
    born_ok, return_ok = _filter(query, "born_where"), _filter(query, "where")
    span = interval * UNIT_SECONDS[unit]

    def is_return(event: dict[str, Any]) -> bool:
        return (returning is None or event.get("event") == returning) and return_ok(event)

    events = _events(state, lambda e: True)
    by_user: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        by_user[_user(event)].append(event)

    # cohort bucket -> user -> the intervals they came back in
    cohorts: dict[dt.date, dict[str, set[int]]] = defaultdict(dict)
    for user, user_events in by_user.items():
        anchors: list[int] = []
        if kind == "birth":
            k = next((k for k, e in enumerate(user_events) if e.get("event") == born_event and born_ok(e)), None)
            if k is not None:
                anchors.append(k)
        else:
            seen: set[dt.date] = set()
            for k, e in enumerate(user_events):
                day = _day(_time(e))
                if start <= day <= end and is_return(e) and _bucket(day, unit, start) not in seen:
                    seen.add(_bucket(day, unit, start))
                    anchors.append(k)
        for k in anchors:
            t0 = _time(user_events[k])
            day = _day(t0)
            if not start <= day <= end:
                continue
            intervals = {
                int((_time(e) - t0) // span) for e in user_events[k + 1 :] if is_return(e)
            }
            cohorts[_bucket(day, unit, start)][user] = {i for i in intervals if i <= count}

    answer: dict[str, Any] = {}
    for bucket in sorted(cohorts):
        users = cohorts[bucket]
        counts = []
        for i in range(count + 1):
            if unbounded in ("true", "1"):
                counts.append(sum(1 for s in users.values() if s and max(s) >= i))
            else:
                counts.append(sum(1 for s in users.values() if i in s))
        answer[bucket.isoformat()] = {"counts": counts, "first": len(users)}
    return answer


def _addiction(state: DoubleState, query: dict[str, str]) -> dict[str, Any]:
    start, end = _range(query)
    if "unit" not in query or "addiction_unit" not in query:
        raise BadQuery("unit and addiction_unit are required parameters")
    unit = _choice(query, "unit", ("day", "week", "month")) or "day"
    slot_unit = _choice(query, "addiction_unit", ("hour", "day")) or "day"
    if query.get("on"):
        raise BadQuery("the double does not support on for frequency")
    event_name = query.get("event")
    keep = _filter(query, "where")
    events = _events(
        state,
        lambda e: (event_name is None or e.get("event") == event_name) and keep(e) and start <= _day(_time(e)) <= end,
    )
    slots: dict[dt.date, dict[str, set[Any]]] = defaultdict(lambda: defaultdict(set))
    for event in events:
        t = _time(event)
        day = _day(t)
        slot = (day, int(t % DAY // 3600)) if slot_unit == "hour" else day
        slots[_bucket(day, unit, start)][_user(event)].add(slot)
    data = {}
    for bucket in _buckets(start, end, unit):
        days = {"day": 1, "week": 7, "month": calendar.monthrange(bucket.year, bucket.month)[1]}[unit]
        width = days * (24 if slot_unit == "hour" else 1)
        per_user = [len(s) for s in slots[bucket].values()]
        data[bucket.isoformat()] = [sum(1 for n in per_user if n >= i + 1) for i in range(width)]
    return {"data": data}


# -- JQL -------------------------------------------------------------------------------------

_ECHO = "functionmain(){return[params];}"
_COUNT_BY_NAME = 'functionmain(){returnEvents(params).groupBy(["name"],mixpanel.reducer.count());}'


def _jql(state: DoubleState, request: RecordedRequest) -> list[Any]:
    form = request.form
    script = form.get("script")
    if not script:
        raise BadQuery("script is a required parameter")
    try:
        params = json.loads(form["params"]) if "params" in form else None
    except ValueError:
        raise BadQuery("params must be a JSON-encoded object") from None
    if params is not None and not isinstance(params, dict):
        raise BadQuery("params must be a JSON-encoded object")
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
            raise BadQuery("Events() needs params.from_date and params.to_date as yyyy-mm-dd") from None
        counts: dict[str, int] = defaultdict(int)
        for event in state.events:
            if start <= _day(_time(event)) <= end:
                counts[str(event.get("event"))] += 1
        return [{"key": [name], "value": counts[name]} for name in sorted(counts)]
    raise BadQuery("the Mixpanel double cannot run this JQL script (it understands only the scripts its module documents)")


# -- routes ----------------------------------------------------------------------------------


def routes(state: DoubleState) -> list[Route]:
    def endpoint(compute: Callable[[RecordedRequest], Any]) -> Callable[[Request], Any]:
        async def handle(request: Request) -> Response:
            recorded: RecordedRequest = request.state.recorded
            denied = query_auth(state, recorded)
            if denied is not None:
                return denied
            try:
                return JSONResponse(compute(recorded))
            except BadQuery as exc:
                return query_error(recorded, 400, str(exc))

        return handle

    def list_funnels(recorded: RecordedRequest) -> list[dict[str, Any]]:
        return [{"funnel_id": f["funnel_id"], "name": f["name"]} for f in state.funnels]

    return [
        Route("/api/query/funnels", endpoint(lambda r: _funnel(state, r.query)), methods=["GET"]),
        Route("/api/query/funnels/list", endpoint(list_funnels), methods=["GET"]),
        Route("/api/query/retention", endpoint(lambda r: _retention(state, r.query)), methods=["GET"]),
        Route("/api/query/retention/addiction", endpoint(lambda r: _addiction(state, r.query)), methods=["GET"]),
        Route("/api/query/jql", endpoint(lambda r: _jql(state, r)), methods=["POST"]),
    ]
