"""Cohort retention and usage frequency (GET /retention, /retention/addiction)."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import Any, Literal, Self

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from mixpanel_mcp.client import query
from mixpanel_mcp.client.errors import UnreadableAnswerError
from mixpanel_mcp.tools._base import Access, Needs, Result, Run, ToolGroup
from mixpanel_mcp.tools._empty import explain_if_empty
from mixpanel_mcp.tools._params import DateRange, On, Where, top_limit

group = ToolGroup(
    name="retention",
    title="Retention",
    description="Cohort retention, and frequency (how many hours/days per period users act).",
)

Unit = Literal["day", "week", "month"]


class RetentionQuery(DateRange):
    retention_type: Literal["birth", "compounded"] = Field("birth", description="compounded = recurring.")
    born_event: str | None = Field(None, min_length=1, max_length=255, description="Required for birth.")
    event: str | None = Field(None, min_length=1, max_length=255, description="Counted event; default any.")
    born_where: str | None = Field(None, min_length=1, max_length=10_000)
    where: Where | None = None
    interval: int | None = Field(None, ge=1, le=90, description="Days per interval; not with unit.")
    interval_count: int | None = Field(None, ge=1, description="Intervals after interval 0.")
    unit: Unit | None = Field(None, description="day|week|month; not with interval.")
    unbounded_retention: bool | None = None
    on: On | None = None
    limit: int | None = top_limit()

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.retention_type == "birth" and self.born_event is None:
            raise PydanticCustomError(
                "born_event_required", "birth retention needs born_event", {"example": "born_event=Signed up"}
            )
        if self.retention_type == "compounded" and (self.born_event or self.born_where):
            raise PydanticCustomError(
                "born_event_unused",
                "born_event and born_where apply only to birth retention",
                {"example": "retention_type=compounded, event=Viewed report"},
            )
        if self.unit is not None and self.interval is not None:
            # Mixpanel answers 400 "unit and interval both specified".
            raise PydanticCustomError(
                "unit_and_interval",
                "give unit or interval, not both (Mixpanel refuses both): keep unit for day/week/month intervals, "
                "or interval alone for intervals of that many days",
                {"example": "unit=week (or interval=7)"},
            )
        return self


class FrequencyQuery(DateRange):
    unit: Unit = Field(description="day, week or month.")
    addiction_unit: Literal["hour", "day"]
    event: str | None = Field(None, min_length=1, max_length=255)
    where: Where | None = None
    on: On | None = None
    limit: int | None = top_limit()


@group.operation(
    "query", RetentionQuery, access=Access.READ, needs=Needs.QUERY, summary=""
)
async def query_retention(run: Run, args: RetentionQuery) -> Result:
    body = await query.retention(run.client, **args.model_dump(exclude={"operation"}))
    data = retention_table(body if isinstance(body, dict) else {}, args)
    if not data["overall"]["size"]:
        data["empty"] = True
    result = Result(
        summary=_retention_sentence(data, args),
        data=data,
        narrow_hint="narrow from_date/to_date, use a larger unit, or lower interval_count",
    )
    named = [e for e in (args.born_event, args.event) if e]
    return await explain_if_empty(run, result, events=named, from_date=args.from_date, to_date=args.to_date)


@group.operation(
    "frequency",
    FrequencyQuery,
    access=Access.READ,
    needs=Needs.QUERY,
    summary="users active in >= N hours/days of each period",
)
async def query_frequency(run: Run, args: FrequencyQuery) -> Result:
    body = await query.frequency(run.client, **args.model_dump(exclude={"operation"}))
    data = frequency_table(body if isinstance(body, dict) else {}, args)
    return Result(
        summary=_frequency_sentence(data, args),
        data=data,
        narrow_hint="narrow from_date/to_date or use a smaller unit",
    )


# -- shaping the answers ---------------------------------------------------------------------


DATE_KEY = re.compile(r"^\d{4}-\d{2}-\d{2}")  # a cohort or period key: yyyy-mm-dd (with a time, for hours)


def _pct(part: float, whole: float) -> float | None:
    return round(100 * part / whole, 1) if whole else None


def _is_cohort(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("counts"), list)


def _is_date(key: str) -> bool:
    return bool(DATE_KEY.match(key))


def _by_segment(raw: dict[str, Any], leaf: Callable[[Any], bool], endpoint: str, expected: str) -> dict[str, dict[str, Any]] | None:
    """A segmented answer (with `on`) as {segment: {date: leaf}}, or None when it is not segmented.

    Mixpanel does not document these shapes. Both nestings are read: {segment: {date: ...}} (with "$overall"
    for all users, as its segmented Insights retention answers) and {date: {segment: ...}} (as its segmented
    funnels answer). Anything else is unreadable, and said so: never read as "nobody"."""
    if all(leaf(v) for v in raw.values()):
        return None
    if not all(isinstance(v, dict) and v and all(leaf(x) for x in v.values()) for v in raw.values()):
        raise UnreadableAnswerError(endpoint, expected, _shape(raw))
    if all(_is_date(k) for k in raw):  # {date: {segment: leaf}}
        segments: dict[str, dict[str, Any]] = {}
        for date, by_value in raw.items():
            for value, item in by_value.items():
                segments.setdefault(value, {})[date] = item
        return segments
    if all(_is_date(k) for v in raw.values() for k in v):  # {segment: {date: leaf}}
        return raw
    raise UnreadableAnswerError(endpoint, expected, _shape(raw))


def _shape(value: Any, depth: int = 0) -> str:
    """A short description of an answer's shape, for the error that says it could not be read."""
    if isinstance(value, dict):
        if depth >= 2 or not value:
            return "{...}" if value else "{}"
        key = next(iter(value))
        return "{" + f"{key!r}: {_shape(value[key], depth + 1)}" + (", ...}" if len(value) > 1 else "}")
    if isinstance(value, list):
        return f"[{_shape(value[0], depth + 1)}, ...]" if value else "[]"
    return type(value).__name__


def _cohorts(raw: dict[str, Any], unit: str, step: int, today: dt.date) -> list[dict[str, Any]]:
    rows = []
    for date in sorted(k for k, v in raw.items() if _is_cohort(v)):
        counts = [int(c or 0) for c in raw[date]["counts"]]
        size = int(raw[date].get("first") or 0)
        row = {"cohort": date, "size": size, "retained": counts, "retained_pct": [_pct(c, size) for c in counts]}
        complete = _complete_intervals(date, unit, step, len(counts), today)
        if complete < len(counts):
            row["incomplete_from"] = complete  # intervals from this one on have not ended for every member yet
        rows.append(row)
    return rows


def _complete_intervals(cohort: str, unit: str, step: int, width: int, today: dt.date) -> int:
    """How many of a cohort's intervals have ended for every member.

    A member born on the cohort's last day has interval i until (i + 1) intervals later, so interval i is
    over once the cohort's own period plus (i + 1) intervals have passed. A period counts as over only from
    the day after it ends (UTC): no project time zone has reached its end before then.
    """
    try:
        start = dt.date.fromisoformat(cohort[:10])
    except ValueError:
        return width
    days = {"day": 1, "week": 7, "month": 30}.get(unit, 1)  # Mixpanel's retention month is 30 days
    cohort_end = _next_month(start) if unit == "month" else start + dt.timedelta(days=days)
    for i in range(width):
        if cohort_end + dt.timedelta(days=days * step * (i + 1)) >= today:
            return i
    return width


def _next_month(day: dt.date) -> dt.date:
    return dt.date(day.year + day.month // 12, day.month % 12 + 1, 1)


def _overall(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per interval, retained users over the sizes of the cohorts for which that interval is over.

    Cohorts still inside an interval would count as not retained what may yet come back: they are left out
    of that interval's figure (and the table marks them with incomplete_from).
    """
    width = max((len(r["retained"]) for r in rows), default=0)
    pct = []
    partial = False
    for i in range(width):
        having = [r for r in rows if len(r["retained"]) > i]
        complete = [r for r in having if r.get("incomplete_from", len(r["retained"])) > i]
        partial = partial or len(complete) < len(having)
        pct.append(_pct(sum(r["retained"][i] for r in complete), sum(r["size"] for r in complete)))
    overall: dict[str, Any] = {"size": sum(r["size"] for r in rows), "retained_pct": pct}
    if partial:
        overall["counts_complete_cohorts_only"] = True
    return overall


def retention_table(raw: dict[str, Any], args: RetentionQuery) -> dict[str, Any]:
    unit, step = args.unit or "day", args.interval or 1
    data: dict[str, Any] = {"retention_type": args.retention_type, "unit": unit, "interval": step}
    today = dt.datetime.now(dt.UTC).date()
    segmented = _by_segment(raw, _is_cohort, "/retention", "cohorts by date ({date: {counts, first}}), or by segment")
    if segmented is None:
        rows = _cohorts(raw, unit, step, today)
        data["cohorts"] = rows
    else:
        overall = segmented.pop("$overall", None)
        data["segments"] = {name: _cohorts(cohorts, unit, step, today) for name, cohorts in segmented.items()}
        # "$overall" counts every user once; without it, the segments' cohorts add up (one value per user).
        rows = _cohorts(overall, unit, step, today) if overall is not None else [r for seg in data["segments"].values() for r in seg]
    overall_row = _overall(rows)
    data["intervals"] = [f"{unit} {i * step}" for i in range(len(overall_row["retained_pct"]))]
    data["overall"] = overall_row
    return data  # Mixpanel's answer is not repeated: the table holds all of it (an unreadable one is an error)


def _retention_sentence(data: dict[str, Any], args: RetentionQuery) -> str:
    returning = f"'{args.event}'" if args.event else "any event"
    if args.retention_type == "birth":
        head = f"Birth retention, '{args.born_event}' then {returning}, by {data['unit']}"
    else:
        head = f"Compounded retention of {returning}, by {data['unit']}"
    overall = data["overall"]
    if not overall["size"]:
        return f"{head}: no users in any cohort from {args.from_date} to {args.to_date}."
    cohorts = len(data.get("cohorts") or [r for s in data.get("segments", {}).values() for r in s])
    quoted = ", ".join(
        f"{label}: {pct}%"
        for label, pct in list(zip(data["intervals"], overall["retained_pct"], strict=False))[1:5]
        if pct is not None
    )
    text = f"{head}: {cohorts} cohort(s), {overall['size']:,} users, {args.from_date}..{args.to_date}"
    if overall.get("counts_complete_cohorts_only"):
        rows = data.get("cohorts") or [r for s in data.get("segments", {}).values() for r in s]
        young = sum(1 for r in rows if "incomplete_from" in r)
        text += (
            f"; {young} cohort(s) have intervals not over yet (incomplete_from in the table), left out of the figures"
            " for those intervals"
        )
    return text + (f"; retained {quoted}." if quoted else ".")


def _periods(series: dict[str, Any]) -> list[dict[str, Any]]:
    periods = []
    for date in sorted(series):
        counts = [int(c or 0) for c in series[date]]
        active = counts[0] if counts else 0
        periods.append({"date": date, "active_users": active, "at_least": counts, "at_least_pct": [_pct(c, active) for c in counts]})
    return periods


def _is_counts(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(c, (int, float)) or c is None for c in value)


def frequency_table(raw: dict[str, Any], args: FrequencyQuery) -> dict[str, Any]:
    series = raw.get("data")
    expected = '{"data": {date: [counts]}}, or by segment'
    if not isinstance(series, dict):
        raise UnreadableAnswerError("/retention/addiction", expected, _shape(raw))
    data: dict[str, Any] = {
        "unit": args.unit,
        "addiction_unit": args.addiction_unit,
        "event": args.event,
        "note": f"at_least[i] = users who did it in at least i+1 distinct {args.addiction_unit}s of the {args.unit}",
    }
    segmented = _by_segment(series, _is_counts, "/retention/addiction", expected)
    if segmented is None:
        data["periods"] = _periods(series)
    else:
        overall = segmented.pop("$overall", None)
        data["segments"] = {name: _periods(by_date) for name, by_date in segmented.items()}
        data["periods"] = _periods(overall) if overall is not None else _sum_periods(list(segmented.values()))
    return data


def _sum_periods(segments: list[dict[str, list[Any]]]) -> list[dict[str, Any]]:
    """Without "$overall", the segments add up: each user-period falls in one segment value."""
    total: dict[str, list[int]] = {}
    for by_date in segments:
        for date, counts in by_date.items():
            row = total.setdefault(date, [])
            row.extend([0] * (len(counts) - len(row)))
            for i, c in enumerate(counts):
                row[i] += int(c or 0)
    return _periods(total)


def _frequency_sentence(data: dict[str, Any], args: FrequencyQuery) -> str:
    what = f"'{args.event}'" if args.event else "any event"
    head = f"Frequency of {what} per {args.unit}, counted in {args.addiction_unit}s"
    periods = [p for p in data["periods"] if p["active_users"]]
    if not periods:
        return f"{head}: nobody did it from {args.from_date} to {args.to_date}."
    active = sum(p["active_users"] for p in periods)
    parts = []
    for n in (2, 3, 5):
        repeat = sum(p["at_least"][n - 1] for p in periods if len(p["at_least"]) >= n)
        if any(len(p["at_least"]) >= n for p in periods):
            parts.append(f"{n}+ {args.addiction_unit}s: {_pct(repeat, active)}%")
    text = f"{head}: {len(periods)} period(s) with activity, {active:,} active user-periods"
    return text + (f"; {', '.join(parts)}." if parts else ".")
