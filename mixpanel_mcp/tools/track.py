"""Send events to Mixpanel: recent ones with /track, historical ones with /import, and identity events.

track and import take any number of events, inline or from a local file, check every one against
Mixpanel's rules before anything is sent, then send them in batches (see client/batching.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Annotated, Any, Literal, Self

import uuid

import anyio
from pydantic import AfterValidator, Field, WithJsonSchema, field_validator, model_validator
from pydantic_core import PydanticCustomError

from mixpanel_mcp.client import Api, BadRequestError
from mixpanel_mcp.client import events as ingest
from mixpanel_mcp.client.batching import Item, Outcome, Status, render, size
from mixpanel_mcp.errors import describe_error
from mixpanel_mcp.ingest_files import FileProblem, file_format, read_records
from mixpanel_mcp.tools._base import Access, Args, Needs, Result, Run, ToolGroup
from mixpanel_mcp.tools._params import DistinctId, LocalPath, optional

group = ToolGroup(
    name="track",
    title="Events",
    description="Send events to Mixpanel and link user identities (Original ID Merge projects only).",
)

MAX_INLINE_EVENTS = 100_000
TRACK_ANSWER = (
    "Its answer means at least one event per request was valid, not that each was stored; all passed this "
    "server's checks of Mixpanel's rules first. operation import lists any event Mixpanel refuses."
)
SHOWN = 50  # records listed in a result (all are counted)
RANGES_SHOWN = 20


def _known_format(path: str) -> str:
    if file_format(path) is None:
        raise PydanticCustomError(
            "file_type", "'{value}' is not a .ndjson, .jsonl, .json or .csv file", {"value": path, "example": "/home/me/events.ndjson"}
        )
    return path


EventList = Annotated[
    list[dict[str, Any]],
    WithJsonSchema({"type": "array", "items": {"type": "object"}}),
    Field(min_length=1, max_length=MAX_INLINE_EVENTS),
]
FilePath = Annotated[LocalPath, AfterValidator(_known_format)]


class SendArgs(Args):
    events: optional(EventList) = Field(
        None,
        description="{event, properties: {distinct_id, time (ISO-8601/epoch; track: default now), "
        "$insert_id? (default derived from the event; Mixpanel drops a resend with the same event, distinct_id, time "
        "and $insert_id, so give time to make a resend safe), ...}}.",
    )
    file: optional(FilePath) = Field(
        None,
        description="Local .ndjson/.json/.csv path instead of events (CSV: event, distinct_id, time, $insert_id "
        "columns; others are properties).",
    )
    on_invalid: Literal["reject", "skip"] = Field(
        "reject", description="Events breaking Mixpanel's rules: reject sends nothing (default); skip sends the rest."
    )

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.events is None) == (self.file is None):
            raise PydanticCustomError(
                "one_source", "give either events or file", {"example": 'events=[{"event": "Signed up", "properties": {"distinct_id": "user-42"}}]'}
            )
        return self


def _uuid4(value: str) -> str:
    """Mixpanel's rule for $anon_id (ref-create-identity): a UUID v4, in its usual 36-character form."""
    try:
        parsed = uuid.UUID(value)
    except ValueError:
        parsed = None
    if parsed is None or parsed.version != 4 or str(parsed) != value.lower():
        raise PydanticCustomError(
            "anon_id_uuid4",
            "Mixpanel takes only a UUID v4 as $anon_id (one not merged yet), not '{value}'",
            {"value": value[:40], "example": "6f1c2a4e-9b7d-4e3f-8a2b-1c0d9e8f7a6b"},
        )
    return value


# Identity events change nothing in projects on Simplified ID Merge (Mixpanel's default since 2023).
ID_MERGE = "Only projects on Original ID Merge act on it; under Simplified ID Merge it changes nothing."


class IdentifyArgs(Args):
    identified_id: Annotated[DistinctId, Field(description="Known user id.")]
    anon_id: Annotated[DistinctId, Field(description="UUID v4 to link to it."), AfterValidator(_uuid4)]


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


def _records(events: list[dict[str, Any]]) -> Iterator[ingest.Record]:
    return ((index, None, event) for index, event in enumerate(events))


def _reread(path: str, preparer: ingest.Preparer) -> Iterator[Item]:
    """The file's valid events again, encoded; if it vanished meanwhile, what was not reached is not stored."""
    try:
        yield from ingest.items(read_records(path), preparer)
    except (FileProblem, OSError):
        return


def _listed(data: dict[str, Any], key: str, entries: list[dict[str, Any]], count: int) -> None:
    data[key] = entries[:SHOWN]
    if count > SHOWN:
        data[f"{key}_not_shown"] = count - SHOWN


def _not_sent(operation: str, reason: str, **data: Any) -> Result:
    return Result(
        summary=f"Nothing was sent to Mixpanel: {reason}",
        data={"operation": operation, "events_sent": 0, **data},
        refused=True,
    )


def _rejected(operation: str, found: ingest.Survey) -> Result:
    invalid = len(found.invalid_indexes)
    if found.valid:
        reason = (
            f"{invalid:,} of {found.total:,} event(s) break its rules (invalid_records: index, field, message). "
            f'Fix them, or call again with on_invalid="skip" to send the {found.valid:,} valid one(s).'
        )
    else:
        reason = f"none of the {found.total:,} event(s) can be sent (invalid_records: index, field, message)."
    result = _not_sent(operation, reason, invalid=invalid)
    _listed(result.data, "invalid_records", found.invalid, invalid)
    return result


async def _send(run: Run, args: SendArgs, endpoint: ingest.Endpoint) -> Result:
    preparer = ingest.preparer_for(run.client, endpoint)
    if args.file is not None and not run.settings.local_files:
        return _not_sent(
            endpoint,
            "this server is reached over HTTP, so it does not read files on the machine it runs on; "
            "pass the events inline in events instead of file.",
        )
    records = read_records(args.file) if args.file is not None else _records(args.events or [])
    try:
        # Checking and encoding 100,000 events takes about a second: off the event loop, so other calls go on.
        found = await anyio.to_thread.run_sync(lambda: ingest.survey(records, preparer, keep=args.file is None))
    except FileProblem as exc:
        return _not_sent(endpoint, f"cannot read {args.file}: {exc}.")
    if found.total == 0:
        return _not_sent(endpoint, f"{args.file} holds no events.")
    if found.invalid_indexes and (args.on_invalid == "reject" or not found.valid):
        return _rejected(endpoint, found)

    source: Iterable[Item]
    if found.items is not None:
        source = found.items
    else:
        assert args.file is not None
        source = _reread(args.file, ingest.Preparer(endpoint, preparer.now, preparer.token))

    async def progress(done: int, total: int) -> None:
        await run.progress(done, total, f"{done:,} of {total:,} events sent")

    outcome = await ingest.send_events(run.client, endpoint, source, universe=found.universe(), progress=progress)
    result = _report(endpoint, args, found, outcome)
    if preparer.timed_now:
        result.data["timed_now"] = preparer.timed_now
        result.summary += (
            f" {preparer.timed_now:,} event(s) had no time and were timed now: sending them again later stores them"
            " again (Mixpanel drops only a resend with the same event, distinct_id, time and $insert_id); give time"
            " to make a resend safe."
        )
    return result


def _report(endpoint: ingest.Endpoint, args: SendArgs, found: ingest.Survey, outcome: Outcome) -> Result:
    stored, failed = outcome.count(Status.STORED), outcome.count(Status.FAILED)
    unsure = outcome.count(Status.UNCONFIRMED) + outcome.count(Status.IN_DOUBT)
    if outcome.error is not None and not (stored or failed or unsure):
        raise outcome.error  # nothing was sent, or all was refused: the error says what to do, and a resend is safe
    if failed and not (stored or unsure or outcome.error):
        raise BadRequestError(
            api=Api.IMPORT, status=400, detail=ingest.failure_detail(outcome.total, outcome.failed),
            credential=None, endpoint="/import",
        )
    span = {"from": ingest.iso(found.first_ms or 0), "to": ingest.iso(found.last_ms or 0)}
    data: dict[str, Any] = {"operation": endpoint}
    if args.file is not None:
        data["file"] = args.file
    data["events_sent"] = outcome.total
    if endpoint == "track":
        # /track's "1" says one or more events of a request were valid, not which were stored.
        data.update(accepted=stored, note=TRACK_ANSWER)
    else:
        data["stored"] = stored
    data.update(
        failed=failed,
        time_range=span,
        batches=outcome.batches,
        requests=outcome.requests,
        retries=outcome.retries,
        seconds=round(outcome.seconds, 2),
        events_per_second=round(outcome.rate),
    )
    if found.invalid_indexes:
        data["invalid"] = len(found.invalid_indexes)
        _listed(data, "invalid_records", found.invalid, len(found.invalid_indexes))
    if failed:
        _listed(data, "failed_records", outcome.failed, failed)
    for status in (Status.NOT_STORED, Status.UNCONFIRMED):
        ranges = outcome.ranges[status]
        if ranges:
            data[status.value] = {"count": size(ranges), "ranges": render(ranges, RANGES_SHOWN)}
            if len(ranges) > RANGES_SHOWN:
                data[status.value]["ranges_not_shown"] = len(ranges) - RANGES_SHOWN
    if outcome.error is not None:
        data["stopped_by"] = describe_error(outcome.error)

    timing = f"{outcome.batches:,} request(s) in {outcome.seconds:.1f} s ({outcome.rate:,.0f} events/s)"
    timed = f"timed {span['from']} to {span['to']}"
    if endpoint == "track":
        summary = (
            f"Mixpanel accepted {stored:,} event(s) for {len(found.users):,} user(s) via /track, {timed}; {timing}. "
            + TRACK_ANSWER
        )
    else:
        summary = f"Imported {stored:,} of {outcome.total:,} event(s) for {len(found.users):,} user(s), {timed}; {timing}."
    if failed:
        summary = (
            f"Partly imported: {stored:,} of {outcome.total:,} event(s) stored; {failed:,} failed validation and were "
            "not stored (failed_records: index in the input, field, reason). Fix those and import only them again."
        )
    if outcome.error is not None:
        left = [f"{outcome.count(Status.NOT_STORED):,} not stored (not_stored)"]
        if unsure:
            left.append(f"{unsure:,} sent but unconfirmed: no answer came, so they may be stored (unconfirmed)")
        summary = (
            f"Stopped early: {describe_error(outcome.error)} Stored {stored:,} of {outcome.total:,} event(s), "
            f"confirmed by Mixpanel; {' and '.join(left)}, as index ranges. Once the cause is fixed, send those "
            "again: events already stored are deduplicated by $insert_id."
        )
    if found.invalid_indexes:
        summary = f"Skipped {len(found.invalid_indexes):,} invalid event(s) (invalid_records). " + summary
    return Result(summary=summary, data=data, narrow_hint="send fewer events per call")


@group.operation("track", SendArgs, access=Access.WRITE, needs=Needs.TOKEN, summary="only the last 5 days")
async def track(run: Run, args: SendArgs) -> Result:
    return await _send(run, args, "track")


@group.operation("import", SendArgs, access=Access.WRITE, needs=Needs.IMPORT, summary="any age; lists failed records")
async def import_(run: Run, args: SendArgs) -> Result:
    return await _send(run, args, "import")


@group.operation("identify", IdentifyArgs, access=Access.WRITE, needs=Needs.TOKEN, summary="")
async def identify(run: Run, args: IdentifyArgs) -> Result:
    response = await ingest.identify(run.client, args.identified_id, args.anon_id)
    return Result(
        summary=f"Sent $identify: anonymous id {args.anon_id!r} linked to user {args.identified_id!r}. {ID_MERGE}",
        data={"operation": "identify", "identified_id": args.identified_id, "anon_id": args.anon_id, "mixpanel": response, "note": ID_MERGE},
    )


@group.operation("alias", AliasArgs, access=Access.WRITE, needs=Needs.TOKEN, summary="")
async def alias(run: Run, args: AliasArgs) -> Result:
    response = await ingest.create_alias(run.client, args.distinct_id, args.alias)
    return Result(
        summary=f"Sent $create_alias: {args.alias!r} now points to {args.distinct_id!r}. {ID_MERGE}",
        data={"operation": "alias", "distinct_id": args.distinct_id, "alias": args.alias, "mixpanel": response, "note": ID_MERGE},
    )


# $merge carries the project token (required by Mixpanel) and goes to /import, which the token alone can
# authenticate: so it needs the token, and nothing more.
@group.operation("merge", MergeArgs, access=Access.DESTRUCTIVE, needs=Needs.TOKEN, summary="$merge, irreversible")
async def merge(run: Run, args: MergeArgs) -> Result:
    first, second = args.distinct_ids
    outcome = await ingest.merge(run.client, (first, second))
    return Result(
        summary=f"Sent $merge: {first!r} and {second!r} are now one user (this cannot be undone). {ID_MERGE}",
        data={"operation": "merge", "distinct_ids": [first, second], "num_records_imported": outcome.imported, "note": ID_MERGE},
    )
