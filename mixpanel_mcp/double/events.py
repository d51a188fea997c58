"""POST /track and /import: events and identity events, validated as Mixpanel does.

/track takes a JSON array body, or a form `data=` holding a JSON object or array (what the SDKs send). The
project token must be in each event's properties. The answer is `{"status": 1|0, "error": ...}` with
verbose=1, else a plain `1`/`0`. `1` means one or more events were valid (ingestion.openapi.yaml): those are
stored and the invalid ones (bad token, older than 5 days, malformed) dropped; `0`, none was.

/import takes a JSON array or NDJSON (gzip is undone by the recorder), authenticated as /import is. With
strict=1 (the default) each record is validated; the valid ones are stored and counted, and any invalid
one turns the answer into a 400 listing `failed_records`.

Stored events are `{"event", "properties"}` with `time` as integer epoch seconds and without the token.
Identity events are stored too, with the distinct_id Mixpanel infers: `$identified_id` for $identify,
the first of `$distinct_ids` for $merge. An event whose (event, distinct_id, time, $insert_id) matches a
stored one is not stored again, as Mixpanel deduplicates.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mixpanel_mcp.double.auth import import_auth
from mixpanel_mcp.double.profiles import answer
from mixpanel_mcp.double.responses import JSONResponse
from mixpanel_mcp.double.state import DoubleState, RecordedRequest

PLACEHOLDER_IDS = frozenset(
    {
        "00000000-0000-0000-0000-000000000000", "anon", "anonymous", "nil", "none", "null", "n/a", "na",
        "undefined", "unknown", "<nil>", "0", "-1", "true", "false", "[]", "{}",
    }
)
INSERT_ID = re.compile(r"[A-Za-z0-9-]{1,36}")
UUID4 = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-4[0-9a-fA-F]{3}-[89abAB][0-9a-fA-F]{3}-[0-9a-fA-F]{12}")
MIN_TIME = 31_536_000  # 1971-01-01T00:00:00Z
TRACK_WINDOW = 5 * 86_400
MAX_RECORDS = 2000
MAX_IMPORT_BYTES = 10 * 1024 * 1024


class Invalid(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def seconds(value: Any) -> int | None:
    """Epoch seconds from a time in seconds or milliseconds; None when it is not a number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return int(value // 1000) if abs(value) >= 1e11 else int(value)


def dedup_key(event: dict[str, Any]) -> tuple[Any, ...]:
    p = event["properties"]
    return (event["event"], str(p.get("distinct_id")), p.get("time"), p.get("$insert_id"))


def store(state: DoubleState, events: list[dict[str, Any]]) -> None:
    """Append events, skipping any Mixpanel would deduplicate (only events carrying a $insert_id). On another
    region's hosts, accepted events are kept nowhere: they never show up, as with Mixpanel."""
    if state.foreign:
        return
    seen = {dedup_key(e) for e in state.events if e["properties"].get("$insert_id")}
    for event in events:
        key = dedup_key(event)
        if event["properties"].get("$insert_id") and key in seen:
            continue
        seen.add(key)
        state.events.append(event)


# GeoIP enrichment (ref-import-events): an event without `ip` is placed where the request came from, i.e. the
# machine that sent it (for this project: the server it runs on); `ip` = 0 skips it; any other `ip` is looked
# up. The double's "lookup" is a fixed table: a request always comes from SERVER_LOCATION.
SERVER_LOCATION = {"$city": "Ashburn", "$region": "Virginia", "mp_country_code": "US"}
LOCATIONS = (
    {"$city": "San Francisco", "$region": "California", "mp_country_code": "US"},
    {"$city": "Berlin", "$region": "Berlin", "mp_country_code": "DE"},
    {"$city": "Mumbai", "$region": "Maharashtra", "mp_country_code": "IN"},
)


def geolocate(properties: dict[str, Any]) -> None:
    """Replace `ip` with the place it stands for, as Mixpanel does."""
    ip = properties.pop("ip", None)
    if ip is None:
        properties.update(SERVER_LOCATION)
    elif str(ip) != "0":
        properties.update(LOCATIONS[sum(str(ip).encode()) % len(LOCATIONS)])


def stored_form(name: str, properties: dict[str, Any], time_s: int) -> dict[str, Any]:
    props = {k: v for k, v in properties.items() if k != "token"}
    geolocate(props)
    props["time"] = time_s
    if "distinct_id" not in props:
        if name == "$identify" and "$identified_id" in props:
            props["distinct_id"] = props["$identified_id"]
        elif name == "$merge" and isinstance(props.get("$distinct_ids"), list) and props["$distinct_ids"]:
            props["distinct_id"] = props["$distinct_ids"][0]
    return {"event": name, "properties": props}


def _shape(record: Any) -> tuple[str, dict[str, Any]]:
    if not isinstance(record, dict):
        raise Invalid("event", "each record must be a JSON object")
    extra = set(record) - {"event", "properties"}
    if extra:
        raise Invalid(sorted(extra)[0], f"'{sorted(extra)[0]}' is not allowed: a record has only event and properties")
    name = record.get("event")
    if not isinstance(name, str) or not name:
        raise Invalid("event", "'event' is required and must be a non-empty string")
    properties = record.get("properties")
    if not isinstance(properties, dict):
        raise Invalid("properties", "'properties' is required and must be an object")
    return name, properties


LIMIT = 255  # ref-import-events: fewer than this many properties, keys of a nested object, elements of a list
MAX_DEPTH = 3


def check_limits(properties: dict[str, Any]) -> None:
    """The documented size rules of an event (the token and `ip` are consumed, not stored, so not counted)."""
    if len([k for k in properties if k not in ("token", "ip")]) >= LIMIT:
        raise Invalid("properties", f"each event must have fewer than {LIMIT} properties")

    def walk(key: str, value: Any, depth: int) -> None:
        if not isinstance(value, (dict, list)):
            return
        if depth > MAX_DEPTH:
            raise Invalid(f"properties.{key}", f"max nesting depth is {MAX_DEPTH}")
        if len(value) >= LIMIT:
            raise Invalid(f"properties.{key}", f"nested objects and lists must have fewer than {LIMIT} keys or elements")
        for child in value.values() if isinstance(value, dict) else value:
            walk(key, child, depth + 1)

    for key, value in properties.items():
        walk(key, value, 1)


def _is_placeholder(value: Any) -> bool:
    return str(value).strip().lower() in PLACEHOLDER_IDS


# -- /track -------------------------------------------------------------------------------

def check_tracked(state: DoubleState, record: Any, now: float) -> dict[str, Any]:
    name, properties = _shape(record)
    if properties.get("token") != state.project.token:
        raise Invalid("properties.token", "token, missing or invalid")
    check_limits(properties)
    time_s = int(now)
    if properties.get("time") is not None:
        given = seconds(properties["time"])
        if given is None:
            raise Invalid("properties.time", "time must be a number of seconds or milliseconds since epoch")
        if given < now - TRACK_WINDOW:
            raise Invalid("properties.time", "event is more than 5 days old; send it with /import")
        time_s = given
    insert_id = properties.get("$insert_id")
    if insert_id is not None and (not isinstance(insert_id, str) or not INSERT_ID.fullmatch(insert_id)):
        raise Invalid("properties.$insert_id", "$insert_id must be at most 36 bytes of [A-Za-z0-9-]")
    if name == "$identify":
        check_anon_id(state, properties)
    return stored_form(name, properties, time_s)


def check_anon_id(state: DoubleState, properties: dict[str, Any]) -> None:
    """ref-create-identity: $anon_id must be a UUID v4, not already merged to another $identified_id."""
    anon_id = properties.get("$anon_id")
    if not isinstance(anon_id, str) or not UUID4.fullmatch(anon_id):
        raise Invalid("properties.$anon_id", "$anon_id must be a UUID v4")
    for event in state.events:
        p = event["properties"]
        if event["event"] == "$identify" and p.get("$anon_id") == anon_id and p.get("$identified_id") != properties.get("$identified_id"):
            raise Invalid("properties.$anon_id", "$anon_id is already merged to another $identified_id")


def track_payload(request: RecordedRequest) -> Any:
    form = request.form
    if form:
        return json.loads(form["data"]) if "data" in form else None
    return request.json()


# -- /import ------------------------------------------------------------------------------

def check_imported(record: Any, now: float, token: str | None = None) -> dict[str, Any]:
    """Strict validation of one record; raises Invalid naming the field, as failed_records does."""
    name, properties = _shape(record)
    if name == "$merge":
        if properties.get("token") != token:  # identity.openapi.yaml: required in a $merge's properties
            raise Invalid("properties.token", "'properties.token' is required: the project token")
        ids = properties.get("$distinct_ids")
        if not (isinstance(ids, list) and len(ids) == 2 and all(isinstance(i, str) and i for i in ids)):
            raise Invalid("properties.$distinct_ids", "'properties.$distinct_ids' must be a list of exactly 2 distinct_ids")
        if any(_is_placeholder(i) for i in ids):
            raise Invalid("properties.$distinct_ids", "'properties.$distinct_ids' contains a disallowed placeholder id")
        return stored_form(name, properties, seconds(properties.get("time")) or int(now))
    if "time" not in properties:
        raise Invalid("properties.time", "'properties.time' is required")
    time_s = seconds(properties["time"])
    if time_s is None:
        raise Invalid("properties.time", "'properties.time' is invalid: must be specified as seconds since epoch")
    if time_s < MIN_TIME:
        raise Invalid("properties.time", "'properties.time' is invalid: must be after 1971-01-01")
    if time_s > now + 3600:
        raise Invalid("properties.time", "'properties.time' is invalid: must not be more than 1 hour in the future")
    if "distinct_id" not in properties:
        raise Invalid("properties.distinct_id", "'properties.distinct_id' is required")
    if _is_placeholder(properties["distinct_id"]):
        raise Invalid("properties.distinct_id", f"'properties.distinct_id' is invalid: '{properties['distinct_id']}' is not allowed")
    insert_id = properties.get("$insert_id")
    if insert_id is None:
        raise Invalid("properties.$insert_id", "'properties.$insert_id' is required")
    if not isinstance(insert_id, str) or not INSERT_ID.fullmatch(insert_id) or _is_placeholder(insert_id):
        raise Invalid("properties.$insert_id", "'properties.$insert_id' is invalid: must be at most 36 bytes of [A-Za-z0-9-]")
    check_limits(properties)
    return stored_form(name, properties, time_s)


def import_payload(request: RecordedRequest) -> Any:
    """As /track's, or NDJSON."""
    if not request.form and "application/x-ndjson" in request.headers.get("content-type", ""):
        return [json.loads(line) for line in request.body.decode().splitlines() if line.strip()]
    return track_payload(request)


def import_error(status: int, message: str) -> JSONResponse:
    names = {400: "Bad Request", 413: "Request Entity Too Large"}
    return JSONResponse({"code": status, "error": message, "status": names.get(status, "Error")}, status)


def routes(state: DoubleState) -> list[Route]:
    async def track(request: Request) -> Response:
        recorded: RecordedRequest = request.state.recorded
        try:
            records = track_payload(recorded)
        except (ValueError, UnicodeDecodeError):
            return answer(recorded, False, "data, missing or empty")
        if isinstance(records, dict):
            records = [records]
        if not isinstance(records, list) or not records or len(records) > MAX_RECORDS:
            return answer(recorded, False, f"data must hold 1 to {MAX_RECORDS} events")
        now = time.time()
        events, problems = [], []
        for index, record in enumerate(records):
            try:
                events.append(check_tracked(state, record, now))
            except Invalid as exc:
                problems.append(f"event {index}: {exc.message}")
        store(state, events)
        # 1: "one or more objects provided are valid" (ingestion.openapi.yaml); the invalid ones are dropped.
        return answer(recorded, bool(events), "; ".join(problems[:5]) or None)

    async def import_(request: Request) -> Response:
        recorded: RecordedRequest = request.state.recorded
        refused = import_auth(state, recorded)
        if refused is not None:
            return refused
        if len(recorded.body) > MAX_IMPORT_BYTES:
            return import_error(413, f"request exceeds max limit of {MAX_IMPORT_BYTES} bytes")
        try:
            records = import_payload(recorded)
        except (ValueError, UnicodeDecodeError):
            return import_error(400, "unable to parse the request body as JSON or NDJSON")
        if not isinstance(records, list) or not records:
            return import_error(400, "the body must be a non-empty array of events")
        if len(records) > MAX_RECORDS:
            return import_error(400, f"too many records: at most {MAX_RECORDS} per request")
        strict = recorded.query.get("strict", "1") == "1"
        now = time.time()
        valid, failed = [], []
        for index, record in enumerate(records):
            try:
                valid.append(check_imported(record, now, state.project.token))
            except Invalid as exc:
                properties = record.get("properties") if isinstance(record, dict) else None
                insert_id = properties.get("$insert_id", "") if isinstance(properties, dict) else ""
                failed.append({"index": index, "insert_id": insert_id, "field": exc.field, "message": exc.message})
        store(state, valid)
        if failed and strict:
            return JSONResponse(
                {"code": 400, "num_records_imported": len(valid), "status": "Bad Request", "failed_records": failed}, 400
            )
        return JSONResponse({"code": 200, "num_records_imported": len(valid), "status": "OK"})

    return [Route("/track", track, methods=["POST"]), Route("/import", import_, methods=["POST"])]
