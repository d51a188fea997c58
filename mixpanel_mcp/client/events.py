"""Events and identity events: POST /track (recent events, token in each event) and /import (historical).

Wire form chosen here, once for both endpoints: `properties.time` is an integer of epoch milliseconds
(Mixpanel reads seconds or milliseconds on both). Every event carries a `$insert_id`; one the caller did not
give is derived from the event's content, so resending the same event (a retry, a split batch, or the same
call made again with the same `time`) never stores it twice: Mixpanel deduplicates on (event, distinct_id,
time, $insert_id). An event without `time` is timed "now", so the same call made again later is a new event.

Bulk sending is two steps, so nothing is sent when the caller asked for all-or-nothing:
`survey` checks every record against Mixpanel's rules (and reports each problem with its index), then
`send_events` sends the valid ones through `batching.send_all`, gzip-compressed, several requests at once.
"""

from __future__ import annotations

import datetime as dt
import gc
import gzip
import hashlib
import json
import math
import re
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio

from mixpanel_mcp.client import batching
from mixpanel_mcp.client.batching import Item, Outcome, Progress, Sent
from mixpanel_mcp.client.errors import Api, BadRequestError
from mixpanel_mcp.client.http import MixpanelClient, error_detail, raise_for_body_status
from mixpanel_mcp.text import scrub, strip_controls

# Ingestion flags: a JSON status answer, and no distinct_id made up from the server's address. (Geolocation is
# turned off per event, with the property ip=0: the query flag does not do that on /track.)
TRACK_PARAMS = {"verbose": 1, "ip": 0}
GZIP_LEVEL = 1  # JSON shrinks ~5x already; higher levels cost more CPU than they save on the wire

Endpoint = Literal["track", "import"]

# Mixpanel refuses these as distinct_id or $insert_id: they are what broken clients send.
PLACEHOLDER_IDS = frozenset(
    {
        "00000000-0000-0000-0000-000000000000", "anon", "anonymous", "nil", "none", "null", "n/a", "na",
        "undefined", "unknown", "<nil>", "0", "-1", "true", "false", "[]", "{}",
    }
)
IDENTITY_EVENTS = frozenset({"$identify", "$create_alias", "$merge"})
MIN_TIME_MS = 31_536_000_000  # 1971-01-01T00:00:00Z: Mixpanel refuses anything earlier
FUTURE_MS = 3_600_000  # ... and anything more than an hour ahead
TRACK_WINDOW_MS = 5 * 86_400_000  # /track takes only the last 5 days
MAX_PROPERTIES = 255
MAX_DEPTH = 3  # objects and lists nested in a property value
MAX_ID_LENGTH = 255
INSERT_ID = re.compile(r"[A-Za-z0-9-]{1,36}")
TIME_EXAMPLE = "2026-01-31T12:00:00Z"


def now_ms() -> int:
    return int(time.time() * 1000)


def iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class RecordError(ValueError):
    """One record breaks a rule: `field` is Mixpanel's name for it (e.g. properties.time)."""

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def derive_insert_id(event: str, properties: Mapping[str, Any], occurrence: int = 0) -> str:
    """32 hex characters from the event's name and properties (without $insert_id and token).

    `occurrence` counts identical events earlier in the same call, so two deliberately identical events
    sent together stay two events, while the same events sent again get the same ids.
    """
    content = {k: v for k, v in properties.items() if k not in ("$insert_id", "token")}
    canonical = json.dumps([event, content, occurrence], sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


# -- Mixpanel's rules, one record at a time -------------------------------------------------------


def _clip(value: Any) -> str:
    text = strip_controls(str(value))
    return text if len(text) <= 40 else text[:40] + "…"


def parse_time(value: Any) -> int:
    """ISO-8601 (UTC when no offset is given), epoch seconds or epoch milliseconds -> epoch milliseconds."""
    if type(value) is int:  # the common case, exactly
        return value if abs(value) >= 100_000_000_000 else value * 1000
    number: float | None = None
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
        raise RecordError("properties.time", f"time must be ISO-8601 or epoch seconds or milliseconds, not '{_clip(value)}' (e.g. {TIME_EXAMPLE})")
    return round(number if abs(number) >= 1e11 else number * 1000)


def _depth(value: Any, limit: int) -> int:
    """Levels of objects/lists in `value` (a scalar is 0), counted only up to `limit` + 1."""
    if limit < 0 or not isinstance(value, (dict, list)):
        return 0
    children = value.values() if isinstance(value, dict) else value
    return 1 + max((_depth(child, limit - 1) for child in children), default=0)


def _too_wide(value: Any) -> str | None:
    """ref-import-events: every object has fewer than MAX_PROPERTIES keys, every list fewer elements."""
    if isinstance(value, dict):
        if len(value) >= MAX_PROPERTIES:
            return f"an object with {len(value)} keys; Mixpanel takes fewer than {MAX_PROPERTIES}"
        children: Any = value.values()
    elif isinstance(value, list):
        if len(value) >= MAX_PROPERTIES:
            return f"a list of {len(value)} elements; Mixpanel takes fewer than {MAX_PROPERTIES}"
        children = value
    else:
        return None
    return next((problem for child in children if (problem := _too_wide(child)) is not None), None)


def _distinct_id(properties: Mapping[str, Any]) -> str:
    value = properties.get("distinct_id")
    if type(value) is str and 0 < len(value) <= MAX_ID_LENGTH and value.strip().lower() not in PLACEHOLDER_IDS:
        return value  # the common case
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if value == "":
        return value  # ref-import-events: an event of no user; left out of behavioural analysis
    if value is None:
        raise RecordError("properties.distinct_id", 'distinct_id is required: the user\'s id ("" for an event of no user)')
    if not isinstance(value, str):
        raise RecordError("properties.distinct_id", "distinct_id must be a string")
    if len(value) > MAX_ID_LENGTH:
        raise RecordError("properties.distinct_id", f"distinct_id is longer than {MAX_ID_LENGTH} characters")
    if value.strip().lower() in PLACEHOLDER_IDS:
        raise RecordError(
            "properties.distinct_id", f"'{_clip(value)}' is a placeholder Mixpanel refuses as an id; use the real user or device id"
        )
    return value


def _given_insert_id(properties: Mapping[str, Any]) -> str | None:
    value = properties.get("$insert_id")
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not INSERT_ID.fullmatch(value) or value.lower() in PLACEHOLDER_IDS:
        raise RecordError(
            "properties.$insert_id",
            "$insert_id must be 1-36 characters of A-Z, a-z, 0-9 and '-' (and not a placeholder); omit it to have one derived",
        )
    return value


def _time(properties: Mapping[str, Any], endpoint: Endpoint, now: int) -> int:
    value = properties.get("time")
    if value is None or value == "":
        if endpoint == "import":
            raise RecordError("properties.time", f"time is required for import (ISO-8601 or epoch seconds/ms, e.g. {TIME_EXAMPLE})")
        return now
    ms = parse_time(value)
    if ms < MIN_TIME_MS:
        raise RecordError("properties.time", f"time '{_clip(value)}' is before 1971, which Mixpanel refuses")
    if ms > now + FUTURE_MS:
        raise RecordError("properties.time", f"time '{_clip(value)}' is more than an hour in the future, which Mixpanel refuses")
    if endpoint == "track" and ms < now - TRACK_WINDOW_MS:
        raise RecordError("properties.time", f"time {iso(ms)} is more than 5 days ago; /track refuses it: use operation import")
    return ms


class Preparer:
    """Checks records and turns valid ones into wire events, each with its $insert_id.

    Deterministic: the same records in the same order (with the same `now`) give the same bytes, so a
    second pass over a file, a retry and a split all carry the same ids.
    """

    def __init__(self, endpoint: Endpoint, now: int, token: str | None = None) -> None:
        self.endpoint = endpoint
        self.now = now
        self.token = token  # /track: the project token goes into each event
        self._seen: Counter[str] = Counter()
        self.timed_now = 0  # events given no time, so timed `now`: sent again later, they are new events

    def prepare(self, record: Any) -> tuple[str, int, bytes]:
        """(distinct_id, time in ms, the event's JSON as sent); raises RecordError.

        Hot path (runs for every event): the properties are encoded once, with sorted keys; that text is
        both what the $insert_id is derived from and the body that is sent.
        """
        if isinstance(record, RecordError):
            raise record
        if type(record) is not dict and not isinstance(record, Mapping):
            raise RecordError(None, "each event must be an object {event, properties}")
        if len(record) != 2 or "event" not in record or "properties" not in record:
            extra = sorted(set(record) - {"event", "properties"})
            if extra:
                raise RecordError(str(extra[0]), f"unknown key '{_clip(extra[0])}': an event has only event and properties")
        name = record.get("event")
        if not isinstance(name, str) or not name or name.isspace():
            raise RecordError("event", "event is required: the event's name")
        if len(name) > MAX_ID_LENGTH:
            raise RecordError("event", f"the event name is longer than {MAX_ID_LENGTH} characters")
        if name in IDENTITY_EVENTS:
            raise RecordError("event", f"send {name} with its own operation (identify, alias or merge)")
        given = record.get("properties")
        if type(given) is not dict and not isinstance(given, Mapping):
            raise RecordError("properties", "properties is required: an object with at least distinct_id")
        if "token" in given:
            raise RecordError("properties.token", "remove token: the server adds the project token itself")
        distinct_id = _distinct_id(given)
        at = _time(given, self.endpoint, self.now)
        if at == self.now and given.get("time") in (None, ""):
            self.timed_now += 1
        insert_id = _given_insert_id(given)
        properties: dict[str, Any] = {"distinct_id": distinct_id, "time": at}
        for key, value in given.items():
            if key == "distinct_id" or key == "time" or key == "$insert_id":
                continue
            if isinstance(value, (dict, list)):
                if _depth(value, MAX_DEPTH) > MAX_DEPTH:
                    raise RecordError(f"properties.{_clip(key)}", f"nested deeper than {MAX_DEPTH} levels, which Mixpanel refuses")
                problem = _too_wide(value)
                if problem is not None:
                    raise RecordError(f"properties.{_clip(key)}", f"holds {problem}")
            properties[key] = value
        if len(properties) + 1 >= MAX_PROPERTIES:  # with the $insert_id; the token and ip are not properties
            raise RecordError("properties", f"{len(properties) + 1} properties; Mixpanel takes fewer than {MAX_PROPERTIES} per event")
        try:
            encoded = _ENCODE(properties)
        except (TypeError, ValueError):
            raise RecordError("properties", "values must be JSON: strings, finite numbers, booleans, null, lists, objects") from None
        name_json = _ENCODE(name)
        first = None
        if insert_id is None:
            # derive_insert_id(name, properties, occurrence), without encoding the properties again
            canonical = "[" + name_json + "," + encoded + ","
            first = hashlib.sha256((canonical + "0]").encode()).hexdigest()[:32]
            seen = self._seen[first]
            insert_id = first if not seen else hashlib.sha256(f"{canonical}{seen}]".encode()).hexdigest()[:32]
        tail = f',"$insert_id":"{insert_id}"'
        if "ip" not in given:
            tail += ',"ip":0'  # else Mixpanel geolocates the event from this server's address
        if self.token is not None:
            tail += ',"token":' + _ENCODE(self.token)
        body = ('{"event":' + name_json + ',"properties":' + encoded[:-1] + tail + "}}").encode()
        if len(body) > batching.MAX_RECORD_BYTES:
            raise RecordError(None, f"the event is {len(body):,} bytes of JSON; Mixpanel takes at most 1 MB per event")
        if first is not None:  # counted only once the record is known to be valid
            self._seen[first] += 1
        return distinct_id, at, body


def _not_json(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} is not JSON")


def _encoder() -> Any:
    """Compact JSON with sorted keys and no NaN: the C encoder built once (json.dumps builds one per call)."""
    from json import encoder

    make = getattr(encoder, "c_make_encoder", None)
    if make is None:
        return json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode
    # markers=None: no cycle check, which JSON input cannot need (and depth is checked before encoding)
    iterencode = make(None, _not_json, encoder.encode_basestring, None, ":", ",", True, False, False)
    return lambda value: "".join(iterencode(value, 0))


_ENCODE = _encoder()


# A record as read: (index in the input, line in a file or None, the record or why it could not be read)
Record = tuple[int, int | None, Any]


@dataclass
class Survey:
    """Pass one over the records: how many, which break a rule, and (when kept) the valid ones encoded."""

    total: int = 0
    invalid: list[dict[str, Any]] = field(default_factory=list)  # at most batching.MAX_DETAILS_KEPT
    invalid_indexes: list[int] = field(default_factory=list)
    first_ms: int | None = None
    last_ms: int | None = None
    users: set[str] = field(default_factory=set)
    items: list[Item] | None = None

    @property
    def valid(self) -> int:
        return self.total - len(self.invalid_indexes)

    def universe(self) -> batching.Ranges:
        """Index ranges of the valid records."""
        everything = [(0, self.total - 1)] if self.total else []
        return batching.subtract(everything, batching.runs(self.invalid_indexes))


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Encoding allocates a few objects per event, none in a cycle; the cyclic garbage collector would walk
    every live object again and again meanwhile (a third of the time for 200,000 events)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def survey(records: Iterable[Record], preparer: Preparer, *, keep: bool) -> Survey:
    with _collector_paused():
        return _survey(records, preparer, keep)


def _survey(records: Iterable[Record], preparer: Preparer, keep: bool) -> Survey:
    found = Survey(items=[] if keep else None)
    prepare, kept, users = preparer.prepare, found.items, found.users
    first = last = None
    total = 0
    for index, line, record in records:
        total += 1
        try:
            distinct_id, at, body = prepare(record)
        except RecordError as problem:
            found.invalid_indexes.append(index)
            if len(found.invalid) < batching.MAX_DETAILS_KEPT:
                entry: dict[str, Any] = {"index": index}
                if line is not None:
                    entry["line"] = line
                entry.update(field=problem.field, message=problem.message)
                found.invalid.append(entry)
            continue
        if first is None or at < first:
            first = at
        if last is None or at > last:
            last = at
        users.add(distinct_id)
        if kept is not None:
            kept.append(Item(index, body, None, True, line))
    found.total, found.first_ms, found.last_ms = total, first, last
    return found


def items(records: Iterable[Record], preparer: Preparer) -> Iterator[Item]:
    """Pass two: the valid records encoded, lazily (a fresh `Preparer` gives the same bytes as pass one)."""
    prepare = preparer.prepare
    for index, line, record in records:
        try:
            body = prepare(record)[2]
        except RecordError:
            continue
        yield Item(index, body, None, True, line)


# -- sending ---------------------------------------------------------------------------------------


def _token(client: MixpanelClient) -> str:
    client.credentials(Api.INGESTION)  # raises if there is no token
    token = client.settings.project_token
    assert token is not None
    return token.get_secret_value()


def preparer_for(client: MixpanelClient, endpoint: Endpoint, now: int | None = None) -> Preparer:
    """A Preparer for this client; raises CredentialMissingError before anything is read when the
    endpoint's credential is not configured."""
    token = _token(client) if endpoint == "track" else None
    if endpoint == "import":
        client.credentials(Api.IMPORT)
    return Preparer(endpoint, now_ms() if now is None else now, token)


def _gzipped_array(bodies: Sequence[bytes]) -> bytes:
    return gzip.compress(b"[" + b",".join(bodies) + b"]", compresslevel=GZIP_LEVEL, mtime=0)


async def _compressed(bodies: Sequence[bytes]) -> bytes:
    """A batch's body, compressed in a worker thread (zlib lets go of the GIL): the event loop keeps
    encoding the next batch and handling answers meanwhile."""
    return await anyio.to_thread.run_sync(_gzipped_array, bodies)


GZIP_JSON = {"Content-Type": "application/json", "Content-Encoding": "gzip"}


async def _post_track(client: MixpanelClient, batch: list[Item]) -> Sent:
    """POST /track: all or nothing per request (a failure is a 200 with status 0)."""
    response = await client.request(
        Api.INGESTION, "POST", "/track", params=TRACK_PARAMS, content=await _compressed([i.body for i in batch]),
        headers=GZIP_JSON, idempotent=True,
    )
    return Sent(answer=raise_for_body_status(response, Api.INGESTION, "/track", client.settings.secrets()))


async def _post_import(client: MixpanelClient, bodies: Sequence[bytes]) -> tuple[Any, ImportOutcome]:
    """POST /import?strict=1: a 400 listing failed_records still stored every other record.

    Raises BadRequestError for a 400 without failed_records (the request itself was refused).
    """
    response = await client.request(
        Api.IMPORT, "POST", "/import", params={"strict": 1}, content=await _compressed(bodies),
        headers=GZIP_JSON, idempotent=True, accept=frozenset({400}),
    )
    secrets = client.settings.secrets()
    if response.status_code != 400:
        answer = raise_for_body_status(response, Api.IMPORT, "/import", secrets)
        imported = answer.get("num_records_imported") if isinstance(answer, Mapping) else None
        return answer, ImportOutcome(sent=len(bodies), imported=imported if isinstance(imported, int) else len(bodies))
    try:
        answer = response.json()
    except ValueError:
        answer = None
    outcome = _partial(answer, len(bodies), secrets)
    if outcome is None:
        credential = client.credentials(Api.IMPORT)[0]
        raise BadRequestError(api=Api.IMPORT, status=400, detail=error_detail(response, secrets), credential=credential, endpoint="/import")
    return answer, outcome


async def _post_import_batch(client: MixpanelClient, batch: list[Item]) -> Sent:
    answer, outcome = await _post_import(client, [i.body for i in batch])
    failed = {r.index: r.as_dict() for r in outcome.failed if isinstance(r.index, int) and 0 <= r.index < len(batch)}
    return Sent(failed=failed, answer=answer)


async def send_events(
    client: MixpanelClient,
    endpoint: Endpoint,
    records: Iterable[Item],
    *,
    universe: batching.Ranges,
    progress: Progress | None = None,
    pace: bool = True,
) -> Outcome:
    """Send encoded events (from `survey` or `items`) to /track or /import in bounded-concurrency batches."""

    async def post(batch: list[Item]) -> Sent:
        return await (_post_track(client, batch) if endpoint == "track" else _post_import_batch(client, batch))

    return await batching.send_all(
        records, post, universe=universe, progress=progress, pacer=batching.pacer_for(client) if pace else None,
        what=f"events to /{endpoint}",
    )


async def _track_one(client: MixpanelClient, event: str, properties: dict[str, Any]) -> Any:
    """An identity event as Mixpanel documents it: a form POST /track with data=<one JSON object>."""
    data = json.dumps({"event": event, "properties": {**properties, "token": _token(client)}}, separators=(",", ":"))
    # Linking the same ids again changes nothing, so a resend is harmless.
    response = await client.request(Api.INGESTION, "POST", "/track", params=TRACK_PARAMS, data={"data": data}, idempotent=True)
    return raise_for_body_status(response, Api.INGESTION, "/track", client.settings.secrets())


async def identify(client: MixpanelClient, identified_id: str, anon_id: str) -> Any:
    return await _track_one(client, "$identify", {"$identified_id": identified_id, "$anon_id": anon_id})


async def create_alias(client: MixpanelClient, distinct_id: str, alias: str) -> Any:
    return await _track_one(client, "$create_alias", {"distinct_id": distinct_id, "alias": alias})


@dataclass
class FailedRecord:
    index: int | None
    insert_id: str | None
    field: str | None
    message: str | None

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "$insert_id": self.insert_id, "field": self.field, "message": self.message}


@dataclass
class ImportOutcome:
    """What /import?strict=1 stored: a 400 with failed_records still stored every other record."""

    sent: int
    imported: int
    failed: list[FailedRecord] = field(default_factory=list)


async def import_events(client: MixpanelClient, events: list[dict[str, Any]]) -> ImportOutcome:
    """One POST /import?strict=1 of ready events (at most 2,000).

    Raises BadRequestError when nothing was imported; returns the outcome (with the failed records) when
    some were.
    """
    bodies = [json.dumps(e, separators=(",", ":"), ensure_ascii=False).encode() for e in events]
    _, outcome = await _post_import(client, bodies)
    if outcome.imported <= 0 and outcome.failed:
        credential = client.credentials(Api.IMPORT)[0]
        raise BadRequestError(api=Api.IMPORT, status=400, detail=failure_detail(outcome.sent, outcome.failed), credential=credential, endpoint="/import")
    return outcome


def _partial(body: Any, sent: int, secrets: list[str]) -> ImportOutcome | None:
    """The strict-mode 400 body, or None when it is some other 400 (a malformed request)."""
    if not isinstance(body, Mapping) or not isinstance(body.get("failed_records"), list) or not body["failed_records"]:
        return None
    failed = []
    for record in body["failed_records"]:
        if not isinstance(record, Mapping):
            continue
        # The spec names the key insert_id; Mixpanel's documented example uses $insert_id.
        insert_id = record.get("$insert_id", record.get("insert_id"))
        failed.append(
            FailedRecord(
                index=record.get("index") if isinstance(record.get("index"), int) else None,
                insert_id=_text(insert_id, secrets),
                field=_text(record.get("field"), secrets),
                message=_text(record.get("message"), secrets),
            )
        )
    imported = body.get("num_records_imported")
    return ImportOutcome(sent=sent, imported=imported if isinstance(imported, int) else 0, failed=failed)


def _text(value: Any, secrets: list[str]) -> str | None:
    """Mixpanel's words about one record: untrusted, so cleaned, scrubbed of secrets and kept short."""
    if value is None:
        return None
    return scrub(str(value), secrets)[:300]


def failure_detail(sent: int, failed: Sequence[FailedRecord | Mapping[str, Any]], shown: int = 5) -> str:
    """'none of the N records was imported; #i field: message; ...'"""
    def one(r: FailedRecord | Mapping[str, Any]) -> str:
        d = r.as_dict() if isinstance(r, FailedRecord) else r
        return f"#{d.get('index')} {d.get('field') or '?'}: {d.get('message') or 'invalid'}"

    more = f"; and {len(failed) - shown} more" if len(failed) > shown else ""
    return f"none of the {sent} records was imported; " + "; ".join(one(r) for r in failed[:shown]) + more


async def merge(client: MixpanelClient, distinct_ids: tuple[str, str]) -> ImportOutcome:
    """A $merge event through /import (Mixpanel takes it nowhere else), authenticated as /import is. The spec
    requires the project token in its properties: without one configured, this raises before sending."""
    properties: dict[str, Any] = {"$distinct_ids": list(distinct_ids), "token": _token(client)}
    return await import_events(client, [{"event": "$merge", "properties": properties}])
