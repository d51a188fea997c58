"""track: /track, /import and identity events, end to end over stdio against the double."""

import datetime as dt
import json
import re
import time

import httpx2
import pytest

from mixpanel_mcp.double.events import LOCATIONS, SERVER_LOCATION
from mixpanel_mcp.tools.track import TRACK_ANSWER
from tests.conftest import PROJECT_ID, SA_SECRET, SA_USER, TOKEN, error_text, server_env, stdio_client, structured

pytestmark = pytest.mark.asyncio

HEX32 = re.compile(r"[0-9a-f]{32}")


def iso_ms(text: str) -> int:
    return int(dt.datetime.fromisoformat(text).timestamp() * 1000)


def iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def insert_ids(request) -> list[str]:
    return [e["properties"]["$insert_id"] for e in request.json()]


def without_timing(data: dict) -> dict:
    assert isinstance(data["seconds"], float) and isinstance(data["events_per_second"], int)
    return {k: v for k, v in data.items() if k not in ("seconds", "events_per_second")}


async def test_track_sends_json_array_with_token_and_a_stable_derived_insert_id(double, env):
    t1 = int(time.time()) - 3600  # epoch seconds
    t2_ms = (int(time.time()) - 7200) * 1000 + 123  # epoch milliseconds
    args = {
        "operation": "track",
        "events": [
            {"event": "Signed up", "properties": {"distinct_id": "u1", "time": t1, "plan": "pro"}},
            {"event": "Viewed page", "properties": {"distinct_id": "u2", "time": t2_ms, "$insert_id": "given-id-1"}},
        ],
    }
    async with stdio_client(env) as client:
        first = await client.call_tool("track", args)
        second = await client.call_tool("track", args)
        before = time.time() * 1000
        untimed = await client.call_tool(
            "track",
            {"operation": "track", "events": [{"event": "Clicked", "properties": {"distinct_id": "u3"}}] * 2},
        )
        after = time.time() * 1000

    one, two, three = double.received("/track")
    for request in (one, two, three):
        assert request.method == "POST"
        assert request.query == {"verbose": "1", "ip": "0"}
        assert "authorization" not in request.headers
        assert request.headers["content-type"] == "application/json"
        assert request.headers["content-encoding"] == "gzip"  # the recorder un-gzipped it to read it
    (derived, given) = insert_ids(one)
    assert HEX32.fullmatch(derived) and given == "given-id-1"
    assert one.json() == [
        {"event": "Signed up", "properties": {"distinct_id": "u1", "time": t1 * 1000, "plan": "pro", "$insert_id": derived, "ip": 0, "token": TOKEN}},
        {"event": "Viewed page", "properties": {"distinct_id": "u2", "time": t2_ms, "$insert_id": "given-id-1", "ip": 0, "token": TOKEN}},
    ]
    # The same call made again is byte-for-byte the same request, so Mixpanel stores it once.
    assert two.body == one.body

    data = structured(first)
    assert without_timing(data) == {
        "operation": "track",
        "events_sent": 2,
        "accepted": 2,
        "note": TRACK_ANSWER,
        "failed": 0,
        "time_range": {"from": iso(t2_ms), "to": iso(t1 * 1000)},
        "batches": 1,
        "requests": 1,
        "retries": 0,
    }
    assert first.content[0].text.startswith("Mixpanel accepted 2 event(s) for 2 user(s) via /track")
    assert without_timing(structured(second)) == without_timing(data)

    # No time: now, in milliseconds; two identical events in one call stay two events.
    clicked = three.json()
    assert all(before - 1 <= e["properties"]["time"] <= after + 1 for e in clicked)
    assert clicked[0]["properties"]["time"] == clicked[1]["properties"]["time"]
    first_id, second_id = insert_ids(three)
    assert first_id != second_id and HEX32.fullmatch(second_id)
    assert structured(untimed)["events_sent"] == 2

    stored = [(e["event"], e["properties"]["distinct_id"], e["properties"]["time"]) for e in double.events]
    assert stored == [
        ("Signed up", "u1", t1),
        ("Viewed page", "u2", t2_ms // 1000),
        ("Clicked", "u3", int(clicked[0]["properties"]["time"] // 1000)),
        ("Clicked", "u3", int(clicked[0]["properties"]["time"] // 1000)),
    ]
    assert all("token" not in e["properties"] for e in double.events)


async def test_import_sends_gzipped_strict_batch_with_service_account(double, env):
    when = "2025-03-01T09:30:00+02:00"
    async with stdio_client(env) as client:
        result = await client.call_tool(
            "track",
            {
                "operation": "import",
                "events": [
                    {"event": "Purchase", "properties": {"distinct_id": "u1", "time": when, "amount": 12.5}},
                    {"event": "Purchase", "properties": {"distinct_id": "u2", "time": "2025-03-02", "$insert_id": "abc-123"}},
                ],
            },
        )
    (request,) = double.received("/import")
    assert request.method == "POST"
    assert request.query == {"strict": "1", "project_id": str(PROJECT_ID)}
    assert request.basic_auth == (SA_USER, SA_SECRET)
    assert request.headers["content-encoding"] == "gzip"  # the recorder un-gzipped it to read it
    assert request.headers["content-type"] == "application/json"
    (derived, _) = insert_ids(request)
    assert HEX32.fullmatch(derived)
    assert request.json() == [
        {"event": "Purchase", "properties": {"distinct_id": "u1", "time": iso_ms(when), "amount": 12.5, "$insert_id": derived, "ip": 0}},
        {"event": "Purchase", "properties": {"distinct_id": "u2", "time": iso_ms("2025-03-02T00:00:00+00:00"), "$insert_id": "abc-123", "ip": 0}},
    ]
    assert without_timing(structured(result)) == {
        "operation": "import",
        "events_sent": 2,
        "stored": 2,
        "failed": 0,
        "time_range": {"from": "2025-03-01T07:30:00Z", "to": "2025-03-02T00:00:00Z"},
        "batches": 1,
        "requests": 1,
        "retries": 0,
    }
    assert result.content[0].text.startswith("Imported 2 of 2 event(s)")
    assert [(e["properties"]["distinct_id"], e["properties"]["time"]) for e in double.events] == [
        ("u1", iso_ms(when) // 1000),
        ("u2", iso_ms("2025-03-02T00:00:00+00:00") // 1000),
    ]


def import_args(n: int) -> dict:
    return {
        "operation": "import",
        "events": [{"event": "E", "properties": {"distinct_id": f"u{i}", "time": 1_700_000_000 + i}} for i in range(n)],
    }


async def test_import_partial_failure_lists_exactly_the_failed_records(double, env):
    # Mixpanel's strict 400: the others were stored. The spec says insert_id, the docs' example $insert_id.
    double.fail(
        "/import",
        400,
        body={
            "code": 400,
            "num_records_imported": 2,
            "status": "Bad Request",
            "failed_records": [
                {"index": 1, "insert_id": "aaa-1", "field": "properties.time", "message": "'properties.time' is invalid"},
                {"index": 3, "$insert_id": "bbb-3", "field": "properties.plan", "message": "value too long"},
            ],
        },
    )
    many = [{"index": i, "insert_id": f"id-{i}", "field": "properties.x", "message": "bad"} for i in range(60)]
    double.fail("/import", 400, body={"code": 400, "num_records_imported": 10, "status": "Bad Request", "failed_records": many})
    double.fail(
        "/import",
        400,
        body={
            "code": 400,
            "num_records_imported": 0,
            "status": "Bad Request",
            "failed_records": [{"index": 0, "insert_id": "x", "field": "properties.time", "message": "must be specified as seconds since epoch"}],
        },
    )
    async with stdio_client(env) as client:
        partial = await client.call_tool("track", import_args(4))
        capped = await client.call_tool("track", import_args(70))
        nothing = await client.call_tool("track", import_args(1))

    assert len(double.received("/import")) == 3  # a 400 is never resent
    data = structured(partial)
    assert data["stored"] == 2 and data["events_sent"] == 4 and data["failed"] == 2
    assert data["failed_records"] == [
        {"index": 1, "$insert_id": "aaa-1", "field": "properties.time", "message": "'properties.time' is invalid"},
        {"index": 3, "$insert_id": "bbb-3", "field": "properties.plan", "message": "value too long"},
    ]
    assert "failed_records_not_shown" not in data
    assert partial.content[0].text.startswith("Partly imported: 2 of 4 event(s) stored; 2 failed validation")
    assert "not_stored" not in data and "unconfirmed" not in data  # the good ones were stored: nothing to resend

    data = structured(capped)
    assert data["failed"] == 60 and data["failed_records_not_shown"] == 10 and data["stored"] == 10
    assert [r["index"] for r in data["failed_records"]] == list(range(50))

    text = error_text(nothing)
    assert "400 on /import" in text
    assert "none of the 1 records was imported; #0 properties.time: must be specified as seconds since epoch" in text


ANON = "6f1c2a4e-9b7d-4e3f-8a2b-1c0d9e8f7a6b"  # $anon_id must be a UUID v4
ID_MERGE = "Only projects on Original ID Merge act on it; under Simplified ID Merge it changes nothing."


async def test_identify_and_alias_are_form_posts_of_one_event_object(double, env):
    async with stdio_client(env) as client:
        identified = await client.call_tool("track", {"operation": "identify", "identified_id": "user-42", "anon_id": ANON})
        aliased = await client.call_tool("track", {"operation": "alias", "distinct_id": "user-42", "alias": "u42@example.com"})
    identify, alias = double.received("/track")
    for request in (identify, alias):
        assert request.method == "POST"
        assert request.query == {"verbose": "1", "ip": "0"}
        assert request.headers["content-type"] == "application/x-www-form-urlencoded"
        assert "authorization" not in request.headers
        assert list(request.form) == ["data"]
    assert json.loads(identify.form["data"]) == {
        "event": "$identify",
        "properties": {"$identified_id": "user-42", "$anon_id": ANON, "token": TOKEN},
    }
    assert json.loads(alias.form["data"]) == {
        "event": "$create_alias",
        "properties": {"distinct_id": "user-42", "alias": "u42@example.com", "token": TOKEN},
    }
    assert structured(identified) == {
        "operation": "identify", "identified_id": "user-42", "anon_id": ANON, "mixpanel": {"status": 1, "error": None}, "note": ID_MERGE
    }
    assert identified.content[0].text.startswith(f"Sent $identify: anonymous id '{ANON}' linked to user 'user-42'.")
    assert structured(aliased) == {
        "operation": "alias", "distinct_id": "user-42", "alias": "u42@example.com", "mixpanel": {"status": 1, "error": None}, "note": ID_MERGE
    }
    assert aliased.content[0].text.startswith("Sent $create_alias: 'u42@example.com' now points to 'user-42'.")
    assert [(e["event"], e["properties"]["distinct_id"]) for e in double.events] == [
        ("$identify", "user-42"),
        ("$create_alias", "user-42"),
    ]


async def test_merge_goes_to_import_and_marks_the_tool_destructive(double, env):
    async with stdio_client(env) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        result = await client.call_tool("track", {"operation": "merge", "distinct_ids": ["device-1", "user-42"]})
    hints = tools["track"].annotations
    assert hints.destructive_hint is True and hints.read_only_hint is False and hints.idempotent_hint is False
    (request,) = double.received("/import")
    assert request.method == "POST"
    assert request.query == {"strict": "1", "project_id": str(PROJECT_ID)}
    assert request.basic_auth == (SA_USER, SA_SECRET)
    assert request.headers["content-encoding"] == "gzip"
    assert request.json() == [{"event": "$merge", "properties": {"$distinct_ids": ["device-1", "user-42"], "token": TOKEN}}]
    assert structured(result) == {"operation": "merge", "distinct_ids": ["device-1", "user-42"], "num_records_imported": 1, "note": ID_MERGE}
    assert "cannot be undone" in result.content[0].text
    assert [(e["event"], e["properties"]["distinct_id"]) for e in double.events] == [("$merge", "device-1")]


async def test_invalid_arguments_are_refused_before_any_request(double, env):
    """Arguments the tool cannot use at all. (Events breaking Mixpanel's rules: tests/test_ingest_bulk.py.)"""
    event = {"event": "E", "properties": {"distinct_id": "u"}}
    cases = {
        "- foo: unknown argument": {"operation": "track", "events": [event], "foo": 1},
        "give either events or file": {"operation": "import"},
        "give either events or file. Example: events=": {"operation": "import", "events": [event], "file": "/tmp/e.ndjson"},
        "file: '/tmp/events.txt' is not a .ndjson, .jsonl, .json or .csv file. Example: /home/me/events.ndjson": {
            "operation": "import", "file": "/tmp/events.txt"
        },
        "on_invalid: Input should be 'reject' or 'skip'": {"operation": "import", "events": [event], "on_invalid": "fix"},
        "events: List should have at least 1 item": {"operation": "track", "events": []},
        "events.0: Input should be a valid dictionary": {"operation": "track", "events": ["Signed up"]},
        "distinct_ids: List should have at least 2 items": {"operation": "merge", "distinct_ids": ["a"]},
        "distinct_ids: must be two different ids": {"operation": "merge", "distinct_ids": ["a", "a"]},
        "anon_id: 'undefined' is a placeholder": {"operation": "identify", "identified_id": "user-1", "anon_id": "undefined"},
        "alias: Field required": {"operation": "alias", "distinct_id": "user-1"},
        "anon_id: Mixpanel takes only a UUID v4 as $anon_id": {"operation": "identify", "identified_id": "user-1", "anon_id": "dev-7"},
    }
    async with stdio_client(env) as client:
        texts = {expected: error_text(await client.call_tool("track", args)) for expected, args in cases.items()}
    for expected, text in texts.items():
        assert "nothing was sent to Mixpanel" in text
        assert expected in text, text
    assert double.received() == []


async def test_import_credential_errors_name_the_credential(double, double_url):
    async with stdio_client(server_env(double_url, MIXPANEL_SERVICE_ACCOUNT_SECRET="wrong")) as client:
        rejected = await client.call_tool("track", import_args(1))
        double.fail("/import", 403, body={"code": 403, "error": "not an admin", "status": "Forbidden"})
        forbidden = await client.call_tool("track", import_args(1))
        double.fail("/import", 429, times=5, headers={"Retry-After": "3600"}, body={"code": 429, "error": "Project exceeded rate limits.", "status": "Too Many Requests"})
        limited = await client.call_tool("track", import_args(1))
    text = error_text(rejected)
    assert "Mixpanel rejected the service account (MIXPANEL_SERVICE_ACCOUNT_USERNAME" in text
    assert '(401 on /import). Mixpanel said: "Invalid credentials"' in text
    assert "Admin or Owner role" in error_text(forbidden)
    text = error_text(limited)
    assert "rate limit hit: the ingestion limit" in text and "retry in 60 min" in text
    assert len(double.received("/import")) == 3  # none of them retried
    assert double.events == []


async def test_import_with_only_a_token_uses_it_as_basic_user(double, double_url):
    env = server_env(double_url, MIXPANEL_SERVICE_ACCOUNT_USERNAME=None, MIXPANEL_SERVICE_ACCOUNT_SECRET=None, MIXPANEL_PROJECT_ID=None)
    async with stdio_client(env) as client:
        result = await client.call_tool("track", import_args(1))
    (request,) = double.received("/import")
    assert request.basic_auth == (TOKEN, "")
    assert request.query == {"strict": "1"}
    assert structured(result)["stored"] == 1


async def test_track_status_zero_is_reported_as_failure(double, double_url):
    async with stdio_client(server_env(double_url, MIXPANEL_PROJECT_TOKEN="not-the-token")) as client:
        result = await client.call_tool("track", {"operation": "track", "events": [{"event": "E", "properties": {"distinct_id": "u"}}]})
    text = error_text(result)
    assert "Mixpanel accepted the request but stored nothing (/track)" in text
    assert 'Mixpanel said: "event 0: token, missing or invalid"' in text
    assert len(double.received("/track")) == 1
    assert double.events == []


async def test_import_server_error_is_retried_and_the_events_stored_once(double, env):
    double.fail("/import", 503)
    args = import_args(2)
    async with stdio_client(env) as client:
        first = await client.call_tool("track", args)
        again = await client.call_tool("track", args)  # the agent resends the same call
    requests = double.received("/import")
    assert len(requests) == 3
    assert requests[0].body == requests[1].body == requests[2].body
    assert structured(first)["stored"] == 2 and structured(first)["retries"] == 1
    assert structured(again)["stored"] == 2 and structured(again)["retries"] == 0
    keys = {(e["event"], e["properties"]["distinct_id"], e["properties"]["time"], e["properties"]["$insert_id"]) for e in double.events}
    assert len(double.events) == len(keys) == 2


# -- the double itself, over plain HTTP ------------------------------------------------------------


async def post(url: str, **kwargs) -> httpx2.Response:
    async with httpx2.AsyncClient() as http:
        return await http.post(url, **kwargs)


async def test_double_import_validates_each_record_and_stores_the_valid_ones(double, double_url):
    now = int(time.time())
    batch = [
        {"event": "ok", "properties": {"time": now, "distinct_id": "u1", "$insert_id": "id-1"}},
        {"event": "no time", "properties": {"distinct_id": "u1", "$insert_id": "id-2"}},
        {"event": "placeholder", "properties": {"time": now, "distinct_id": "undefined", "$insert_id": "id-3"}},
        {"event": "bad id", "properties": {"time": now * 1000, "distinct_id": "u1", "$insert_id": "id_4"}},
        {"event": "future", "properties": {"time": now + 7200, "distinct_id": "u1", "$insert_id": "id-5"}},
    ]
    auth = (SA_USER, SA_SECRET)
    url = f"{double_url}/import?strict=1&project_id={PROJECT_ID}"
    response = await post(url, json=batch, auth=auth)
    assert response.status_code == 400
    body = response.json()
    assert body["num_records_imported"] == 1 and body["status"] == "Bad Request"
    assert [(r["index"], r["insert_id"], r["field"]) for r in body["failed_records"]] == [
        (1, "id-2", "properties.time"),
        (2, "id-3", "properties.distinct_id"),
        (3, "id_4", "properties.$insert_id"),
        (4, "id-5", "properties.time"),
    ]
    second = {"event": "ok2", "properties": {"time": now * 1000, "distinct_id": "u2", "$insert_id": "id-6"}}
    ndjson = "\n".join(json.dumps(e) for e in [batch[0], second])
    response = await post(url, content=ndjson, auth=auth, headers={"Content-Type": "application/x-ndjson"})
    assert response.json() == {"code": 200, "num_records_imported": 2, "status": "OK"}
    # "ok" was sent twice with the same (event, distinct_id, time, $insert_id): stored once.
    assert [(e["event"], e["properties"]["time"]) for e in double.events] == [("ok", now), ("ok2", now)]
    assert (await post(url, json=batch[:1], auth=(SA_USER, "wrong"))).status_code == 401


async def test_double_track_answers_verbose_or_plain_and_refuses_old_events(double, double_url):
    now = int(time.time())
    event = {"event": "E", "properties": {"token": TOKEN, "distinct_id": "u1", "time": now}}
    old = {"event": "E", "properties": {"token": TOKEN, "distinct_id": "u1", "time": now - 6 * 86400}}
    assert (await post(f"{double_url}/track", data={"data": json.dumps(event)})).text == "1"
    response = await post(f"{double_url}/track?verbose=1", json=[old])
    assert response.status_code == 200
    assert response.json() == {"status": 0, "error": "event 0: event is more than 5 days old; send it with /import"}
    # "1" means one or more events were valid (ingestion.openapi.yaml): the valid one is stored, the old one not.
    assert (await post(f"{double_url}/track", data={"data": json.dumps([{**event, "event": "F"}, old])})).text == "1"
    assert [(e["event"], e["properties"]) for e in double.events] == [
        ("E", {"distinct_id": "u1", "time": now, **SERVER_LOCATION}),  # no ip: placed where the request came from
        ("F", {"distinct_id": "u1", "time": now, **SERVER_LOCATION}),
    ]


async def test_an_event_without_time_is_a_new_event_each_time_and_the_answer_says_so(double, env):
    untimed = {"operation": "track", "events": [{"event": "Clicked", "properties": {"distinct_id": "u1"}}]}
    timed = {"operation": "track", "events": [{"event": "Clicked", "properties": {"distinct_id": "u1", "time": int(time.time()) - 60}}]}
    async with stdio_client(env) as client:
        tools = (await client.list_tools()).tools
        first = await client.call_tool("track", untimed)
        second = await client.call_tool("track", untimed)
        safe = await client.call_tool("track", timed)
    description = json.dumps([t.input_schema for t in tools if t.name == "track"])
    assert "resends never duplicate" not in description and "give time to make a resend safe" in description
    # Timed "now" each call: two events, and each answer says how to make a resend safe.
    assert len(double.events) == 3
    for result in (first, second):
        assert structured(result)["timed_now"] == 1
        assert "give time to make a resend safe" in result.content[0].text
    assert "timed_now" not in structured(safe) and "timed now" not in safe.content[0].text


async def test_merge_needs_the_project_token_and_the_double_refuses_a_merge_without_it(double, double_url):
    import httpx2

    async with stdio_client(server_env(double_url, MIXPANEL_PROJECT_TOKEN=None)) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        result = await client.call_tool("track", {"operation": "merge", "distinct_ids": ["device-1", "user-42"]})
    assert "merge" not in tools["track"].input_schema["properties"]["operation"]["enum"]
    assert "MIXPANEL_PROJECT_TOKEN" in error_text(result)
    assert double.received("/import") == []

    merge = {"event": "$merge", "properties": {"$distinct_ids": ["device-1", "user-42"]}}
    response = httpx2.post(f"{double_url}/import", params={"strict": "1", "project_id": PROJECT_ID}, json=[merge], auth=(SA_USER, SA_SECRET))
    assert response.status_code == 400
    assert response.json()["failed_records"][0]["field"] == "properties.token"
    assert double.events == []


async def test_the_double_holds_identify_to_the_documented_anon_id_rules(double, double_url):
    """ref-create-identity: $anon_id is a UUID v4 not already merged to another $identified_id."""
    import httpx2

    def identify(anon_id: str, user: str) -> dict:
        event = {"event": "$identify", "properties": {"$identified_id": user, "$anon_id": anon_id, "token": TOKEN}}
        return httpx2.post(f"{double_url}/track", params={"verbose": 1}, data={"data": json.dumps(event)}).json()

    assert identify("dev-7", "user-1")["status"] == 0
    assert identify(ANON, "user-1") == {"status": 1, "error": None}
    assert identify(ANON, "user-2")["status"] == 0
    assert [e["properties"]["distinct_id"] for e in double.events] == ["user-1"]


async def test_no_event_sent_lands_in_the_servers_city_unless_the_caller_gave_an_ip(double, env):
    """ref-import-events, GeoIP: without `ip` Mixpanel places an event where the request came from (this server)."""
    now = int(time.time()) - 60
    events = [
        {"event": "Opened", "properties": {"distinct_id": "u1", "time": now}},
        {"event": "Opened", "properties": {"distinct_id": "u2", "time": now, "ip": "136.24.0.114"}},
    ]
    async with stdio_client(env) as client:
        for operation in ("track", "import"):  # the same events again would be deduplicated: a minute earlier
            moved = [{**e, "properties": {**e["properties"], "time": now - 60 * (operation == "import")}} for e in events]
            structured(await client.call_tool("track", {"operation": operation, "events": moved}))
    sent = [e["properties"] for path in ("/track", "/import") for r in double.received(path) for e in r.json()]
    assert [p["ip"] for p in sent] == [0, "136.24.0.114"] * 2  # the caller's ip passes through
    located = [{k: e["properties"].get(k) for k in SERVER_LOCATION} for e in double.events]
    assert len(located) == 4 and SERVER_LOCATION not in located
    assert located[1] in LOCATIONS and located[0] == dict.fromkeys(SERVER_LOCATION)
