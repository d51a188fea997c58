"""Send events to Mixpanel: recent ones with /track, historical ones with /import, and identity events."""

from __future__ import annotations

import datetime as dt
import math
import re
from typing import Annotated, Any, Self

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, WithJsonSchema, field_validator, model_validator
from pydantic_core import PydanticCustomError

from mixpanel_mcp.client import events as ingest
from mixpanel_mcp.tools._base import Access, Args, Needs, Result, Run, ToolGroup
from mixpanel_mcp.tools._params import MAX_BATCH, PLACEHOLDER_IDS, DistinctId, EventName

group = ToolGroup(
    name="track",
    title="Events",
    description="Send events to Mixpanel and link user identities.",
)

MIN_TIME_MS = 31_536_000_000  # 1971-01-01T00:00:00Z: Mixpanel refuses anything earlier
FUTURE_MS = 3_600_000  # ... and anything more than an hour ahead
TRACK_WINDOW_MS = 5 * 86_400_000  # /track takes only the last 5 days
MAX_FAILED_SHOWN = 50
IDENTITY_EVENTS = frozenset({"$identify", "$create_alias", "$merge"})
_INSERT_ID = re.compile(r"[A-Za-z0-9-]{1,36}")
TIME_EXAMPLE = "2026-01-31T12:00:00Z"


def _epoch_ms(value: Any) -> int | None:
    """ISO-8601 (UTC when no offset is given), epoch seconds or epoch milliseconds -> epoch milliseconds."""
    number: float | None = None
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str) and value.strip():
        text = value.strip()
        try:
            number = float(text)
        except ValueError:
            try:
                parsed = dt.datetime.fromisoformat(text)
            except ValueError:
                number = None
            else:
                number = (parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)).timestamp()
    if number is None or not math.isfinite(number):
        raise PydanticCustomError(
            "time_format",
            "time must be ISO-8601 or epoch seconds or milliseconds, not '{value}'",
            {"value": str(value), "example": TIME_EXAMPLE},
        )
    ms = round(number if abs(number) >= 1e11 else number * 1000)
    if ms < MIN_TIME_MS:
        raise PydanticCustomError("time_range", "time '{value}' is before 1971, which Mixpanel refuses", {"value": value, "example": TIME_EXAMPLE})
    if ms > ingest.now_ms() + FUTURE_MS:
        raise PydanticCustomError(
            "time_range", "time '{value}' is more than an hour in the future, which Mixpanel refuses", {"value": value, "example": TIME_EXAMPLE}
        )
    return ms


def _insert_id(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _INSERT_ID.fullmatch(value) or value.lower() in PLACEHOLDER_IDS:
        raise PydanticCustomError(
            "insert_id",
            "$insert_id must be 1-36 characters of A-Z, a-z, 0-9 and '-' (and not a placeholder); omit it to have one derived",
            {"example": "5d958f87-542d-4c10-9422-0ed75893dc81"},
        )
    return value


class EventProperties(BaseModel):
    """distinct_id, optional time and $insert_id, and any other properties of the event."""

    model_config = ConfigDict(extra="allow")

    distinct_id: DistinctId
    time: Annotated[int | None, PlainValidator(_epoch_ms)] = None
    insert_id: Annotated[str | None, PlainValidator(_insert_id)] = Field(default=None, alias="$insert_id")

    @model_validator(mode="after")
    def _limits(self) -> Self:
        extra = self.model_extra or {}
        if "token" in extra:
            raise PydanticCustomError(
                "token_property", "remove token: the server adds the project token itself", {"example": '{"distinct_id": "user-42"}'}
            )
        if len(extra) + 3 > 255:
            raise PydanticCustomError("too_many_properties", "an event takes fewer than 255 properties", {})
        return self

    def wire(self) -> dict[str, Any]:
        properties: dict[str, Any] = {"distinct_id": self.distinct_id}
        if self.time is not None:
            properties["time"] = self.time
        properties.update(self.model_extra or {})
        if self.insert_id is not None:
            properties["$insert_id"] = self.insert_id
        return properties


class Event(Args):
    event: EventName
    properties: EventProperties

    @field_validator("event")
    @classmethod
    def _not_identity(cls, value: str) -> str:
        if value in IDENTITY_EVENTS:
            raise PydanticCustomError(
                "identity_event", "send {value} with its own operation (identify, alias or merge)", {"value": value, "example": "Signed up"}
            )
        return value


EVENTS_SCHEMA = {"type": "array", "items": {"type": "object"}}

Events = Annotated[
    list[Event],
    WithJsonSchema(EVENTS_SCHEMA),
    Field(
        min_length=1,
        max_length=MAX_BATCH,
        description="1-2000 {event, properties: {distinct_id, time? (ISO-8601 or epoch s/ms; default now), "
        "$insert_id? (default derived from content: resends never duplicate), ...}}.",
    ),
]


class ImportArgs(Args):
    events: Events


class TrackArgs(Args):
    events: Events

    @field_validator("events")
    @classmethod
    def _recent(cls, events: list[Event]) -> list[Event]:
        oldest = ingest.now_ms() - TRACK_WINDOW_MS
        for index, event in enumerate(events):
            if event.properties.time is not None and event.properties.time < oldest:
                raise PydanticCustomError(
                    "too_old_for_track",
                    "events[{index}] is from {when}, more than 5 days ago; /track refuses it: use operation import",
                    {"index": index, "when": _iso(event.properties.time), "example": "operation=import"},
                )
        return events


class IdentifyArgs(Args):
    identified_id: Annotated[DistinctId, Field(description="Known user id.")]
    anon_id: Annotated[DistinctId, Field(description="Anonymous id to link to it.")]


class AliasArgs(Args):
    distinct_id: Annotated[DistinctId, Field(description="Existing id.")]
    alias: Annotated[DistinctId, Field(description="New id pointing to it.")]


class MergeArgs(Args):
    distinct_ids: Annotated[
        list[DistinctId],
        WithJsonSchema({"type": "array", "items": {"type": "string"}, "maxItems": 2}),
        Field(min_length=2, max_length=2),
    ]

    @field_validator("distinct_ids")
    @classmethod
    def _different(cls, ids: list[str]) -> list[str]:
        if ids[0] == ids[1]:
            raise PydanticCustomError("same_ids", "must be two different ids", {"example": '["device-1", "user-42"]'})
        return ids


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _prepared(args: TrackArgs | ImportArgs) -> list[dict[str, Any]]:
    return ingest.prepare([(e.event, e.properties.wire()) for e in args.events])


def _span(events: list[dict[str, Any]]) -> dict[str, str]:
    times = [e["properties"]["time"] for e in events]
    return {"from": _iso(min(times)), "to": _iso(max(times))}


def _users(events: list[dict[str, Any]]) -> int:
    return len({e["properties"]["distinct_id"] for e in events})


@group.operation("track", TrackArgs, access=Access.WRITE, needs=Needs.TOKEN, summary="only the last 5 days")
async def track(run: Run, args: TrackArgs) -> Result:
    events = _prepared(args)
    response = await ingest.track(run.client, events)
    span = _span(events)
    return Result(
        summary=f"Mixpanel accepted {len(events):,} event(s) for {_users(events):,} user(s) via /track, "
        f"timed {span['from']} to {span['to']}.",
        data={"operation": "track", "events_sent": len(events), "time_range": span, "mixpanel": response},
        narrow_hint="send fewer events per call",
    )


@group.operation("import", ImportArgs, access=Access.WRITE, needs=Needs.IMPORT, summary="any age; lists failed records")
async def import_(run: Run, args: ImportArgs) -> Result:
    events = _prepared(args)
    outcome = await ingest.import_events(run.client, events)
    span = _span(events)
    data: dict[str, Any] = {
        "operation": "import",
        "events_sent": outcome.sent,
        "num_records_imported": outcome.imported,
        "failed": len(outcome.failed),
        "time_range": span,
    }
    summary = f"Imported {outcome.imported:,} of {outcome.sent:,} event(s), timed {span['from']} to {span['to']}."
    if outcome.failed:
        data["failed_records"] = [r.as_dict() for r in outcome.failed[:MAX_FAILED_SHOWN]]
        if len(outcome.failed) > MAX_FAILED_SHOWN:
            data["failed_records_not_shown"] = len(outcome.failed) - MAX_FAILED_SHOWN
        summary = (
            f"Partly imported: {outcome.imported:,} of {outcome.sent:,} event(s) stored; {len(outcome.failed):,} failed "
            "validation and were not stored (failed_records: index in events, field, reason). "
            "Fix those and import only them again."
        )
    return Result(summary=summary, data=data, narrow_hint="send fewer events per call")


@group.operation("identify", IdentifyArgs, access=Access.WRITE, needs=Needs.TOKEN, summary="$identify")
async def identify(run: Run, args: IdentifyArgs) -> Result:
    response = await ingest.identify(run.client, args.identified_id, args.anon_id)
    return Result(
        summary=f"Sent $identify: anonymous id {args.anon_id!r} linked to user {args.identified_id!r}.",
        data={"operation": "identify", "identified_id": args.identified_id, "anon_id": args.anon_id, "mixpanel": response},
    )


@group.operation("alias", AliasArgs, access=Access.WRITE, needs=Needs.TOKEN, summary="$create_alias")
async def alias(run: Run, args: AliasArgs) -> Result:
    response = await ingest.create_alias(run.client, args.distinct_id, args.alias)
    return Result(
        summary=f"Sent $create_alias: {args.alias!r} now points to {args.distinct_id!r}.",
        data={"operation": "alias", "distinct_id": args.distinct_id, "alias": args.alias, "mixpanel": response},
    )


@group.operation("merge", MergeArgs, access=Access.DESTRUCTIVE, needs=Needs.IMPORT, summary="$merge, irreversible")
async def merge(run: Run, args: MergeArgs) -> Result:
    first, second = args.distinct_ids
    outcome = await ingest.merge(run.client, (first, second))
    return Result(
        summary=f"Sent $merge: {first!r} and {second!r} are now one user (this cannot be undone).",
        data={"operation": "merge", "distinct_ids": [first, second], "num_records_imported": outcome.imported},
    )
