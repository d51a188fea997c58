"""Saved funnels: list them, and run one over a date range (GET /funnels, /funnels/list)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal, Self

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from mixpanel_mcp.client import query
from mixpanel_mcp.tools._base import Access, Args, Needs, Result, Run, ToolGroup
from mixpanel_mcp.tools._params import DateRange, On, Where, top_limit
from mixpanel_mcp.tools._series import MAX_SEGMENTS, listed, with_raw

group = ToolGroup(
    name="funnels",
    title="Funnels",
    description="Saved funnels: list them, or run one over a date range (API in maintenance mode).",
)

SECONDS = {"day": 86_400, "hour": 3_600, "minute": 60, "second": 1}
MAX_WINDOW_DAYS = 90


class FunnelList(Args):
    pass


class FunnelQuery(DateRange):
    funnel_id: int = Field(ge=1, description="From operation list.", examples=[7509])
    length: int | None = Field(None, ge=1, description="Conversion window (max 90 days); default as saved.")
    length_unit: Literal["day", "hour", "minute", "second"] | None = None
    interval: int | None = Field(None, ge=1, description="Days per bucket.")
    unit: Literal["day", "week", "month"] | None = None
    on: On | None = None
    where: Where | None = None
    limit: int | None = top_limit()

    @model_validator(mode="after")
    def _window(self) -> Self:
        if self.length is not None and self.length * SECONDS[self.length_unit or "day"] > MAX_WINDOW_DAYS * 86_400:
            raise PydanticCustomError(
                "window_too_long",
                "length {length} {unit}(s) is longer than Mixpanel's 90-day conversion window",
                {"length": self.length, "unit": self.length_unit or "day", "example": "length=14, length_unit=day"},
            )
        return self


@group.operation("list", FunnelList, access=Access.READ, needs=Needs.QUERY, summary="")
async def list_funnels(run: Run, args: FunnelList) -> Result:
    body = await query.list_funnels(run.client)
    funnels = [
        {"funnel_id": f.get("funnel_id"), "name": f.get("name")} for f in (body if isinstance(body, list) else []) if isinstance(f, dict)
    ]
    if not funnels:
        summary = "The project has no saved funnels."
    else:
        names = [f"{f['name']} ({f['funnel_id']})" for f in funnels]
        summary = f"{len(funnels)} saved funnel(s): {listed(names)}."
    return Result(summary=summary, data={"funnels": funnels, "count": len(funnels)})


@group.operation(
    "query",
    FunnelQuery,
    access=Access.READ,
    needs=Needs.QUERY,
    summary="step counts and conversion; each user once unless unit/interval split the range",
)
async def query_funnel(run: Run, args: FunnelQuery) -> Result:
    sent = args.model_dump(exclude={"operation"})
    days = (dt.date.fromisoformat(args.to_date) - dt.date.fromisoformat(args.from_date)).days + 1
    if args.interval is None and args.unit is None and days > 1:
        # Mixpanel counts a user once per bucket (a day by default): one bucket spanning the range counts
        # each user once, so the overall figures match Mixpanel's funnel report.
        sent["interval"] = days
    body = await query.funnel(run.client, **sent)
    data = summarize(body, args)
    _say_what_is_counted(data, args)
    summary = _sentence(data, args)
    if "segments_omitted" not in data:
        data = with_raw(data, body)  # Mixpanel's own answer, when small; not when it repeats what was cut
    return Result(summary=summary, data=data, narrow_hint="narrow from_date/to_date, use a larger unit, or lower limit")


# -- shaping the answer ----------------------------------------------------------------------


def _steps_of(entry: Any) -> list[dict[str, Any]] | None:
    """The step list of one date (or one segment of a date): {"steps": [...]} or a bare list."""
    if isinstance(entry, dict) and isinstance(entry.get("steps"), list):
        entry = entry["steps"]
    if isinstance(entry, list) and all(isinstance(s, dict) and "count" in s for s in entry):
        return entry
    return None


def _ratio(part: float, whole: float) -> float | None:
    return round(part / whole, 4) if whole else None


def _pct(ratio: float | None) -> str:
    return "n/a" if ratio is None else f"{ratio * 100:.1f}%"


class _Totals:
    """Step counts (and count-weighted step times) summed over dates."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.counts: list[int] = []
        self.time_sums: list[float] = []
        self.time_counts: list[int] = []

    def add(self, steps: list[dict[str, Any]]) -> None:
        for i, step in enumerate(steps):
            if i == len(self.counts):
                self.names.append(str(step.get("step_label") or step.get("event") or step.get("goal") or f"step {i + 1}"))
                self.counts.append(0)
                self.time_sums.append(0.0)
                self.time_counts.append(0)
            count = int(step.get("count") or 0)
            self.counts[i] += count
            avg = step.get("avg_time")
            if i > 0 and isinstance(avg, (int, float)) and count:
                self.time_sums[i] += avg * count
                self.time_counts[i] += count

    def table(self) -> list[dict[str, Any]]:
        rows = []
        for i, count in enumerate(self.counts):
            row: dict[str, Any] = {
                "step": i + 1,
                "event": self.names[i],
                "count": count,
                "overall_conv_ratio": _ratio(count, self.counts[0]) if i else 1.0,
                "step_conv_ratio": _ratio(count, self.counts[i - 1]) if i else 1.0,
            }
            if self.time_counts[i]:
                row["avg_time_s"] = round(self.time_sums[i] / self.time_counts[i])
            rows.append(row)
        return rows


def _worst(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The step entered by the smallest share of the previous step's users."""
    candidates = [r for r in rows[1:] if r["step_conv_ratio"] is not None]
    if not candidates:
        return None
    worst = min(candidates, key=lambda r: r["step_conv_ratio"])
    return {"step": worst["step"], "event": worst["event"], "step_conv_ratio": worst["step_conv_ratio"]}


def summarize(body: Any, args: FunnelQuery) -> dict[str, Any]:
    """Mixpanel's per-date funnel -> totals per step over the range, the biggest drop, and per-date counts."""
    dates_data = body.get("data") if isinstance(body, dict) else None
    dates_data = dates_data if isinstance(dates_data, dict) else {}
    order = body.get("meta", {}).get("dates") if isinstance(body, dict) and isinstance(body.get("meta"), dict) else None
    dates = [d for d in order if d in dates_data] if isinstance(order, list) else []
    dates += sorted(d for d in dates_data if d not in dates)

    total = _Totals()
    segments: dict[str, _Totals] = {}
    by_date = []
    for date in dates:
        entry = dates_data[date]
        steps = _steps_of(entry)
        if steps is None and isinstance(entry, dict):  # segmented with `on`: {segment: steps}
            per_segment = {str(k): s for k, v in entry.items() if (s := _steps_of(v)) is not None}
            for name, seg_steps in per_segment.items():
                if name != "$overall":
                    segments.setdefault(name, _Totals()).add(seg_steps)
            steps = per_segment.get("$overall") or _sum_steps([s for k, s in per_segment.items() if k != "$overall"])
        if not steps:
            continue
        total.add(steps)
        counts = [int(s.get("count") or 0) for s in steps]
        by_date.append({"date": date, "counts": counts, "overall_conv_ratio": _ratio(counts[-1], counts[0])})

    rows = total.table()
    data: dict[str, Any] = {
        "funnel_id": args.funnel_id,
        "from_date": args.from_date,
        "to_date": args.to_date,
        "steps": rows,
        "overall_conv_ratio": _ratio(rows[-1]["count"], rows[0]["count"]) if rows else None,
        "biggest_drop": _worst(rows),
        "by_date": by_date,
    }
    if segments:
        seg_rows = []
        for name, seg in segments.items():
            counts = seg.counts
            seg_rows.append({"segment": name, "counts": counts, "overall_conv_ratio": _ratio(counts[-1], counts[0])})
        seg_rows.sort(key=lambda r: -r["counts"][0])
        data["segment_count"] = len(seg_rows)
        data["segments"] = seg_rows[:MAX_SEGMENTS]
        if len(seg_rows) > MAX_SEGMENTS:
            data["segments_omitted"] = len(seg_rows) - MAX_SEGMENTS
    return data


def _sum_steps(lists: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    if not lists:
        return []
    summed = [dict(s) for s in lists[0]]
    for steps in lists[1:]:
        for i, step in enumerate(steps[: len(summed)]):
            summed[i]["count"] = int(summed[i].get("count") or 0) + int(step.get("count") or 0)
    for s in summed:
        s.pop("avg_time", None)  # a sum of averages means nothing
    return summed


def _say_what_is_counted(data: dict[str, Any], args: FunnelQuery) -> None:
    buckets = len(data["by_date"])
    if buckets <= 1:
        data["counted"] = "users: each user who entered step 1 in the range counts once"
        return
    size = f"{args.interval}-day" if args.interval else (args.unit or "day")
    data["counted"] = (
        f"entries summed over {buckets} {size} buckets: Mixpanel counts a user once per bucket, so a user who "
        "entered in several buckets counts in each; leave out unit and interval to count each user once"
    )


def _sentence(data: dict[str, Any], args: FunnelQuery) -> str:
    rows = data["steps"]
    span = f"{args.from_date}..{args.to_date}"
    if not rows:
        return f"Funnel {args.funnel_id}: Mixpanel returned no steps for {span}."
    path = " → ".join(r["event"] for r in rows)
    head = f"Funnel {args.funnel_id} ({path})"
    first, last = rows[0]["count"], rows[-1]["count"]
    if not first:
        return f"{head}: nobody entered step 1 in {span}."
    if len(data["by_date"]) <= 1:
        text = f"{head}: {first:,} → {last:,} users ({_pct(data['overall_conv_ratio'])}) over {span}"
    else:
        text = (
            f"{head}: {first:,} → {last:,} ({_pct(data['overall_conv_ratio'])}) over {span}, entries summed over "
            f"{len(data['by_date'])} buckets (a user who entered in several counts in each: see counted)"
        )
    worst = data["biggest_drop"]
    if worst:
        text += f"; biggest drop at step {worst['step']} ({worst['event']}, {_pct(worst['step_conv_ratio'])} of the step before)"
    if "segments" in data:
        top = data["segments"][0]
        text += f"; {data['segment_count']} segment(s), largest '{top['segment']}' ({_pct(top['overall_conv_ratio'])})"
        if data.get("segments_omitted"):
            text += f", {data['segments_omitted']} smaller not shown"
    return text + "."
