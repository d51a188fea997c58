"""export: raw events (streamed NDJSON), profiles (paged), cohorts and the activity feed, over stdio."""

import csv
import datetime as dt
import json
import re
import time

import httpx2
import pytest
from mcp import Client

from mixpanel_mcp.double import export as double_export
from mixpanel_mcp.double.state import group_key_id
from mixpanel_mcp.tools.export import TIME_BASIS
from tests.conftest import API_SECRET, PROJECT_ID, SA_SECRET, SA_USER, error_text, server_env, stdio_client, stored_event, structured

pytestmark = pytest.mark.asyncio

EXPORT = "/api/2.0/export"
ENGAGE = "/api/query/engage"


def at(day: int, hour: int = 12, minute: int = 0) -> int:
    return int(dt.datetime(2026, 1, day, hour, minute, tzinfo=dt.UTC).timestamp())


def line(e: dict) -> dict:
    """An event as the double's export sends it."""
    return {"event": e["event"], "properties": {**e["properties"], "mp_processing_time_ms": e["properties"]["time"] * 1000 + 1500}}


def one_day(day: str, **more: object) -> dict:
    """Arguments of an events export of one day."""
    return {"operation": "events", "from_date": day, "to_date": day, **more}


def query_of(request) -> dict:
    return {k: v for k, v in request.query.items()}


# -- events -----------------------------------------------------------------------------------


async def test_events_request_filters_and_summary(double, env):
    double.events = [
        stored_event("Signed up", "u1", at(1, 9), country="US"),
        stored_event("Viewed page", "u1", at(1, 10), country="US"),
        stored_event("Signed up", "u2", at(2, 8), country="US"),
        stored_event("Signed up", "u3", at(2, 9), country="FR"),  # where excludes it
        stored_event("Purchased", "u1", at(2, 10), country="US"),  # event filter excludes it
        stored_event("Signed up", "u4", at(4, 0), country="US"),  # after to_date
        stored_event("Signed up", "u5", at(1, 0) - 1, country="US"),  # 2025-12-31 23:59:59 UTC
    ]
    async with stdio_client(env) as client:
        result = await client.call_tool(
            "export",
            {
                "operation": "events",
                "from_date": "2026-01-01",
                "to_date": "2026-01-03",
                "event": ["Signed up", "Viewed page"],
                "where": 'properties["country"] == "US"',
                "limit": 10,
            },
        )
        in_ms = await client.call_tool("export", one_day("2026-01-02", event="Purchased", time_in_ms=True))
    data = structured(result)
    first, second = double.received(EXPORT)
    assert first.method == "GET"
    assert query_of(first) == {
        "project_id": str(PROJECT_ID),
        "from_date": "2026-01-01",
        "to_date": "2026-01-03",
        "limit": "11",  # one more than asked, to learn whether more exist
        "event": '["Signed up","Viewed page"]',
        "where": 'properties["country"] == "US"',
    }
    assert first.basic_auth == (SA_USER, SA_SECRET)
    assert first.headers["accept-encoding"] == "gzip"  # export offers gzip only (export.openapi.yaml)
    assert first.body == b""
    expected = [line(e) for e in double.events[:3]]
    assert data["events"] == expected
    assert data["returned"] == 3
    assert data["more_may_exist"] is False
    assert data["by_event"] == {"Signed up": 2, "Viewed page": 1}
    assert data["distinct_users"] == 2
    assert data["first_time"] == "2026-01-01 09:00:00"
    assert data["last_time"] == "2026-01-02 08:00:00"
    assert data["time_zone"] == TIME_BASIS  # never labelled UTC: older projects store local times
    assert data["skipped_lines"] == 0
    text = result.content[0].text
    assert text.startswith(
        "3 events from 2026-01-01 to 2026-01-03: 2 event name(s), top Signed up (2), Viewed page (1); "
        "2 distinct user(s); times 2026-01-01 09:00:00 to 2026-01-02 08:00:00 (UTC if the project was created in 2023 "
        "or later; the project's time zone if it is older).\n"
    )
    assert "more may exist" not in text

    # A single event name becomes a one-item list; time_in_ms asks for and reads milliseconds.
    assert query_of(second) == {
        "project_id": str(PROJECT_ID),
        "from_date": "2026-01-02",
        "to_date": "2026-01-02",
        "limit": "51",
        "event": '["Purchased"]',
        "time_in_ms": "true",
    }
    ms = structured(in_ms)
    assert [e["properties"]["time"] for e in ms["events"]] == [at(2, 10) * 1000]
    assert ms["first_time"] == ms["last_time"] == "2026-01-02 10:00:00"


async def test_events_stop_reading_at_limit(double, env):
    double.events = [stored_event("Tick", f"u{i % 4}", at(5) + i) for i in range(30)]
    # Mixpanel honours `limit`; an answer that ignored it must still not be read past limit + 1.
    flood = "".join(json.dumps(line(stored_event("Flood", "x", at(5) + i))) + "\n" for i in range(2000))
    async with stdio_client(env) as client:
        result = await client.call_tool("export", one_day("2026-01-05", limit=5))
        default = await client.call_tool("export", one_day("2026-01-05"))
        exact = await client.call_tool("export", one_day("2026-01-05", limit=30))
        double.fail(EXPORT, 200, body=flood)
        flooded = await client.call_tool("export", one_day("2026-01-05", limit=3))
    data = structured(result)
    assert [r.query["limit"] for r in double.received(EXPORT)] == ["6", "51", "31", "4"]
    assert data["events"] == [line(e) for e in double.events[:5]]
    assert data["returned"] == 5
    assert data["more_may_exist"] is True
    assert data["distinct_users"] == 4
    assert (
        "Read 5; more may exist — save them all with output_file (.ndjson or .csv), or narrow dates/event/where "
        "or raise limit." in result.content[0].text
    )

    # Fewer events than the default 50 exist: all 30, and nothing more to fetch.
    all_of_them = structured(default)
    assert all_of_them["returned"] == 30 and all_of_them["more_may_exist"] is False
    # Exactly `limit` events exist: Mixpanel sent limit + 1 = 31 at most, got 30, so none are left.
    assert structured(exact)["more_may_exist"] is False

    capped = structured(flooded)
    assert [e["event"] for e in capped["events"]] == ["Flood"] * 3
    assert [e["properties"]["time"] for e in capped["events"]] == [at(5), at(5) + 1, at(5) + 2]
    assert capped["more_may_exist"] is True


async def test_events_close_the_stream_once_limit_is_reached(double, env, monkeypatch):
    """A stream that keeps going past limit + 1 (here: it stalls) is not waited for: reading stops at the limit."""
    double.events = [stored_event("Tick", "u1", at(5) + i) for i in range(30)]
    monkeypatch.setattr(double_export, "EXPORT_STALL_AFTER", 10)  # 10 events, then the connection idles
    monkeypatch.setattr(double_export, "STALL_SECONDS", 120.0)
    async with stdio_client(env) as client:
        started = time.monotonic()
        result = await client.call_tool("export", one_day("2026-01-05", limit=3))
        elapsed = time.monotonic() - started
    data = structured(result)
    assert elapsed < 60  # well before the stall would end: only hanging up ends it sooner (generous for a busy machine)
    assert [e["properties"]["time"] for e in data["events"]] == [at(5), at(5) + 1, at(5) + 2]
    assert data["more_may_exist"] is True
    assert "interrupted" not in data


async def test_truncated_stream_and_unreadable_lines_are_skipped(double, env, monkeypatch):
    double.events = [stored_event("Tick", "u1", at(6) + i) for i in range(5)]
    monkeypatch.setattr(double_export, "EXPORT_CUT_AFTER", 3)  # the 4th line arrives half-written, then the end
    body = (
        json.dumps(line(double.events[0])) + "\n"
        + "\n"
        + "[terminated early]\n"
        + '{"not an event": true}\n'
        + "   \n"
        + json.dumps(line(double.events[1])) + "\n"
        + '{"event": "Tick", "properties": {"ti'
    )
    async with stdio_client(env) as client:
        cut = await client.call_tool("export", one_day("2026-01-06"))
        double.fail(EXPORT, 200, body=body)
        noisy = await client.call_tool("export", one_day("2026-01-06"))
    data = structured(cut)
    assert data["events"] == [line(e) for e in double.events[:3]]
    assert data["skipped_lines"] == 1
    assert data["more_may_exist"] is False
    assert "Skipped 1 unreadable line(s)." in cut.content[0].text

    messy = structured(noisy)
    assert messy["events"] == [line(double.events[0]), line(double.events[1])]
    assert messy["skipped_lines"] == 3
    assert "Skipped 3 unreadable line(s)." in noisy.content[0].text


async def test_export_errors_become_clear_messages(double, env):
    double.events = [stored_event("Tick", "u1", at(7))]
    async with stdio_client(env) as client:
        bad_where = await client.call_tool("export", one_day("2026-01-07", where="properties[country] ~ 1"))
        double.fail(EXPORT, 400, body="Invalid date range: to_date is in the future")
        plain = await client.call_tool("export", one_day("2026-01-07"))
        double.fail(EXPORT, 503, times=2)
        retried = await client.call_tool("export", one_day("2026-01-07"))
        double.fail(EXPORT, 429, body="rate limited", headers={"Retry-After": "3600"})
        limited = await client.call_tool("export", one_day("2026-01-07"))
        double.fail(EXPORT, 403, body={"error": "not allowed to export"})
        denied = await client.call_tool("export", one_day("2026-01-07"))
    assert error_text(bad_where) == (
        "Mixpanel rejected the request (400 on /export). Mixpanel said: \"invalid 'where' expression: "
        "properties[country] ~ 1\". Fix the arguments; do not retry as is."
    )
    assert 'Mixpanel said: "Invalid date range: to_date is in the future"' in error_text(plain)
    assert structured(retried)["returned"] == 1
    text = error_text(limited)
    assert "Export API limit" in text and "retry in 60 min" in text and "rate limited" in text
    text = error_text(denied)
    assert "403" in text and "not allowed to export" in text and "may export data" in text
    # bad where, plain 400, 503 + 503 + success, 429 (not slept through), 403
    assert len(double.received(EXPORT)) == 7


async def test_events_invalid_arguments_send_nothing(double, env):
    async with stdio_client(env) as client:
        order = await client.call_tool("export", {"operation": "events", "from_date": "2026-02-01", "to_date": "2026-01-01"})
        too_many = await client.call_tool("export", one_day("2026-01-01", limit=100_001))
        output_file = await client.call_tool("export", one_day("2026-01-01", output_file="/tmp/x"))
        profiles = await client.call_tool("export", {"operation": "profiles", "limit": 5001})
    assert "from_date 2026-02-01 is after to_date 2026-01-01" in error_text(order)
    assert "limit" in error_text(too_many) and "100000" in error_text(too_many)
    assert error_text(output_file).endswith(
        "- output_file: must end in .ndjson, .jsonl or .csv (the format to write). Example: /tmp/events.ndjson"
    )
    assert "at most 5000 profiles inline; write more with output_file" in error_text(profiles)
    assert double.received() == []


async def test_legacy_secret_authenticates_export_without_project_id(double, double_url):
    double.events = [stored_event("Tick", "u1", at(8))]
    env = server_env(
        double_url, MIXPANEL_SERVICE_ACCOUNT_USERNAME=None, MIXPANEL_SERVICE_ACCOUNT_SECRET=None, MIXPANEL_API_SECRET=API_SECRET
    )
    async with stdio_client(env) as client:
        result = await client.call_tool("export", one_day("2026-01-08"))
    assert structured(result)["returned"] == 1
    (request,) = double.received(EXPORT)
    assert request.basic_auth == (API_SECRET, "")
    assert "project_id" not in request.query


# -- events to a file -------------------------------------------------------------------------


class Progress(list):
    """A progress callback that records (progress, total, message)."""

    async def __call__(self, progress: float, total: float | None, message: str | None) -> None:
        self.append((progress, total, message))


async def test_events_to_ndjson_file_write_every_line(double, env, tmp_path):
    double.events = [stored_event("Tick" if i % 3 else "Tock", f"u{i % 40}", at(9) + i, n=i) for i in range(2500)]
    double.events.append(stored_event("Tick", "late", at(10)))  # after to_date
    target = tmp_path / "events.ndjson"
    progress = Progress()
    async with stdio_client(env) as client:
        result = await client.call_tool(
            "export", one_day("2026-01-09", output_file=str(target)), progress_callback=progress
        )
        jsonl = await client.call_tool("export", one_day("2026-01-09", output_file=str(tmp_path / "two.jsonl"), limit=7))
    data = structured(result)
    first, second = double.received(EXPORT)
    # No limit is sent: the file gets every event of the range.
    assert query_of(first) == {"project_id": str(PROJECT_ID), "from_date": "2026-01-09", "to_date": "2026-01-09"}
    assert query_of(second)["limit"] == "7"
    lines = target.read_bytes().splitlines()
    assert [json.loads(x) for x in lines] == [line(e) for e in double.events[:2500]]
    assert data == {
        "from_date": "2026-01-09",
        "to_date": "2026-01-09",
        "output_file": str(target),
        "format": "ndjson",
        "written": 2500,
        "bytes": target.stat().st_size,
        "more_may_exist": False,
        "by_event": {"Tick": 1666, "Tock": 834},
        "event_names": 2,
        "distinct_users": 40,
        "first_time": "2026-01-09 12:00:00",
        "last_time": "2026-01-09 12:41:39",
        "time_zone": TIME_BASIS,
        "skipped_lines": 0,
        "budget": {"export": {"remaining": 59, "limit": 60, "window": "hour"}},
    }
    size = f"{target.stat().st_size / 1_000_000:,.1f} MB"
    assert result.content[0].text.startswith(
        f"Wrote 2,500 events from 2026-01-09 to 2026-01-09 to {target} (NDJSON, {size}): 2 event name(s), top "
        "Tick (1,666), Tock (834); 40 distinct user(s); times 2026-01-09 12:00:00 to 2026-01-09 12:41:39 (UTC if the project was created in 2023 "
        "or later; the project's time zone if it is older).\n"
    )
    assert "events" not in data  # only the summary and the path come back
    # Progress: events and bytes so far, the last report once everything was read.
    assert progress and progress[-1][0] == 2500
    assert progress[-1][2] == f"2,500 events, {size} so far"

    capped = structured(jsonl)
    assert (capped["written"], capped["more_may_exist"], capped["format"]) == (7, True, "ndjson")
    assert len((tmp_path / "two.jsonl").read_bytes().splitlines()) == 7
    assert "Read 7; more may exist — leave limit out to write them all." in jsonl.content[0].text


async def test_events_to_csv_file(double, env, tmp_path):
    double.events = [
        stored_event("Signed up", "u1", at(11, 9), **{"$insert_id": "a1", "plan": "pro", "tags": ["x", "y"]}),
        stored_event("Viewed page", "u2", at(11, 10), **{"$insert_id": "a2", "page": "=HYPERLINK(\"http://evil\")", "n": -3}),
        stored_event("Viewed page", "u1", at(11, 11), **{"plan": "free", "ok": True, "page": "-12.5"}),
    ]
    target = tmp_path / "events.csv"
    async with stdio_client(env) as client:
        result = await client.call_tool("export", one_day("2026-01-11", output_file=str(target)))
    data = structured(result)
    with target.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows == [
        ["event", "distinct_id", "time", "$insert_id", "plan", "tags", "mp_processing_time_ms", "page", "n", "ok"],
        ["Signed up", "u1", str(at(11, 9)), "a1", "pro", '["x","y"]', str(at(11, 9) * 1000 + 1500), "", "", ""],
        # Text a spreadsheet would run as a formula is quoted; a negative number stays a number.
        ["Viewed page", "u2", str(at(11, 10)), "a2", "", "", str(at(11, 10) * 1000 + 1500), "'=HYPERLINK(\"http://evil\")", "-3", ""],
        ["Viewed page", "u1", str(at(11, 11)), "", "free", "", str(at(11, 11) * 1000 + 1500), "-12.5", "", "true"],
    ]
    assert (data["format"], data["written"], data["bytes"]) == ("csv", 3, target.stat().st_size)
    assert data["by_event"] == {"Viewed page": 2, "Signed up": 1}
    assert f"to {target} (CSV, {target.stat().st_size:,} bytes)" in result.content[0].text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["events.csv"]  # the spool is gone


async def test_output_file_is_never_overwritten_and_must_be_writable(double, env, tmp_path):
    double.events = [stored_event("Tick", "u1", at(12))]
    existing = tmp_path / "taken.ndjson"
    existing.write_text("precious\n")
    async with stdio_client(env) as client:
        taken = await client.call_tool("export", one_day("2026-01-12", output_file=str(existing)))
        nowhere = await client.call_tool("export", one_day("2026-01-12", output_file=str(tmp_path / "no" / "dir.csv")))
        double.fail(EXPORT, 400, body="Invalid date range")
        refused = await client.call_tool("export", one_day("2026-01-12", output_file=str(tmp_path / "refused.csv")))
    assert error_text(taken) == (
        f"Could not write the output file {existing}: it already exists (nothing is overwritten unless you pass "
        "overwrite=true). "
        "Choose another path and try again."
    )
    assert existing.read_text() == "precious\n"
    assert error_text(nowhere).startswith(f"Could not write the output file {tmp_path / 'no' / 'dir.csv'}: No such file or directory.")
    assert 'Mixpanel said: "Invalid date range"' in error_text(refused)
    assert len(double.received(EXPORT)) == 1  # only the refused one: the unusable paths sent nothing
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken.ndjson"]  # nothing half-made left behind


async def test_dropped_connection_keeps_what_arrived(double, env, tmp_path, monkeypatch):
    double.events = [stored_event("Tick", "u1", at(13) + i) for i in range(6)]
    monkeypatch.setattr(double_export, "EXPORT_DROP_AFTER", 4)  # 4 whole lines, then the connection breaks
    target = tmp_path / "cut.ndjson"
    async with stdio_client(env) as client:
        to_file = await client.call_tool("export", one_day("2026-01-13", output_file=str(target)))
        inline = await client.call_tool("export", one_day("2026-01-13"))
        monkeypatch.setattr(double_export, "EXPORT_DROP_AFTER", 0)
        nothing = await client.call_tool("export", one_day("2026-01-13"))
    data = structured(to_file)
    assert [json.loads(x) for x in target.read_bytes().splitlines()] == [line(e) for e in double.events[:4]]
    assert (data["written"], data["interrupted"]) == (4, "the connection closed mid-stream")
    assert "The stream broke off (the connection closed mid-stream): the file is incomplete." in to_file.content[0].text
    listed = structured(inline)
    assert listed["events"] == [line(e) for e in double.events[:4]]
    assert "The stream broke off (the connection closed mid-stream): the list is incomplete." in inline.content[0].text
    # Broken before the first event: nothing to show, so an error (not retried: the answer had begun).
    assert error_text(nothing).startswith(
        "Mixpanel (export API, /export) could not be reached (the connection closed mid-stream) after 1 attempt(s)."
    )


async def test_an_endless_line_is_skipped_not_held(double, double_url, monkeypatch):
    """In process (the limit is lowered here): a 'line' longer than MAX_LINE is dropped as it streams in."""
    from mixpanel_mcp.client import MixpanelClient
    from mixpanel_mcp.client import export as client_export
    from mixpanel_mcp.config import load_settings

    monkeypatch.setattr(client_export, "MAX_LINE", 1000)
    first, second = stored_event("Tick", "u1", at(15)), stored_event("Tock", "u2", at(15) + 1)
    body = json.dumps(line(first)) + "\n" + "x" * 300_000 + "\n" + json.dumps(line(second)) + "\n"
    double.fail(EXPORT, 200, body=body)
    async with MixpanelClient(load_settings(server_env(double_url))) as client:
        read = await client_export.export_events(client, from_date="2026-01-15", to_date="2026-01-15", limit=10)
    assert read.events == [line(first), line(second)]
    assert (read.summary.skipped_lines, read.summary.bytes) == (1, len(body))


async def test_output_file_is_refused_over_http(double, http_server, tmp_path):
    async with Client(http_server) as client:
        result = await client.call_tool("export", one_day("2026-01-14", output_file=str(tmp_path / "x.ndjson")))
        profiles = await client.call_tool("export", {"operation": "profiles", "output_file": str(tmp_path / "p.csv")})
    assert error_text(result) == (
        "output_file is only available when the server runs on your machine (stdio): this server cannot write "
        "files for you. Leave output_file out and read the answer in pages (limit, narrower dates or where)."
    )
    assert error_text(profiles) == error_text(result)
    assert double.received() == []
    assert list(tmp_path.iterdir()) == []


# -- profiles ---------------------------------------------------------------------------------


async def test_profiles_page_through_with_session_id(double, double_url, monkeypatch):
    """Every page on the wire: the result cache is off here (test_budget.py checks that it answers repeats)."""
    env = server_env(double_url, MIXPANEL_CACHE_TTL="0", MIXPANEL_CACHE_TTL_TODAY="0")
    monkeypatch.setattr(double_export, "ENGAGE_PAGE_SIZE", 2)
    double.profiles = {f"u{i}": {"plan": "pro" if i != 3 else "free", "n": i} for i in range(1, 9)}  # 7 on pro
    where = 'properties["plan"] == "pro"'
    async with stdio_client(env) as client:
        everything = await client.call_tool("export", {"operation": "profiles", "where": where})
        first_requests = double.received(ENGAGE)
        capped = await client.call_tool("export", {"operation": "profiles", "where": where, "limit": 3})
        data = structured(capped)
        resumed = await client.call_tool("export", {"operation": "profiles", "where": where, **data["continue_with"], "limit": 4})
    forms = [r.form for r in first_requests]
    session = forms[1]["session_id"]
    assert forms == [
        {"where": where},
        {"where": where, "session_id": session, "page": "1"},
        {"where": where, "session_id": session, "page": "2"},
        {"where": where, "session_id": session, "page": "3"},
    ]
    assert all(r.method == "POST" and r.query == {"project_id": str(PROJECT_ID)} for r in first_requests)
    assert all(r.headers["content-type"] == "application/x-www-form-urlencoded" for r in first_requests)
    assert all(r.basic_auth == (SA_USER, SA_SECRET) for r in first_requests)
    full = structured(everything)
    expected_ids = ["u1", "u2", "u4", "u5", "u6", "u7", "u8"]
    assert [p["$distinct_id"] for p in full["profiles"]] == expected_ids
    assert full["profiles"][0] == {"$distinct_id": "u1", "$properties": {"plan": "pro", "n": 1}}
    assert (full["returned"], full["total"], full["pages"], full["more_may_exist"]) == (7, 7, 4, False)
    assert everything.content[0].text.startswith("7 of 7 profile(s) in 4 page(s).")

    # limit 3: two pages read (4 profiles), cut to 3; page 1 was cut, so it is asked for again past its first.
    assert [p["$distinct_id"] for p in data["profiles"]] == expected_ids[:3]
    assert (data["returned"], data["pages"], data["more_may_exist"], data["next_page"]) == (3, 2, True, 1)
    assert data["continue_with"] == {"session_id": data["session_id"], "page": 1, "skip": 1}
    assert (
        f"Read 3; more may exist — continue with session_id={data['session_id']} page=1 skip=1 (the same where and "
        "selectors), raise limit or narrow where." in capped.content[0].text
    )
    later = double.received(ENGAGE)[len(first_requests):]
    assert [r.form.get("page") for r in later] == [None, "1", "1", "2", "3"]
    assert later[2].form["session_id"] == later[3].form["session_id"] == data["session_id"]
    again = structured(resumed)
    assert [p["$distinct_id"] for p in again["profiles"]] == expected_ids[3:7]  # u5 onwards: nothing twice
    assert (again["pages"], again["more_may_exist"]) == (3, False)


ADVICE = re.compile(r"continue with session_id=(\S+) page=(\d+) skip=(\d+)")


async def test_following_the_paging_advice_reads_every_profile_once_and_then_ends(double, env):
    double.profiles = {f"u{i:02}": {"n": i} for i in range(25)}
    seen: list[str] = []
    arguments: dict = {"operation": "profiles", "limit": 3}
    async with stdio_client(env) as client:
        for _ in range(20):  # 9 calls are needed; a loop that never ends fails here
            result = await client.call_tool("export", arguments)
            seen += [p["$distinct_id"] for p in structured(result)["profiles"]]
            advice = ADVICE.search(result.content[0].text)
            if advice is None:
                break
            session_id, page, skip = advice.groups()
            arguments = {"operation": "profiles", "limit": 3, "session_id": session_id, "page": int(page), "skip": int(skip)}
    assert seen == sorted(double.profiles)
    assert structured(result)["more_may_exist"] is False and "more may exist" not in result.content[0].text


async def test_profiles_to_files_page_through_everything(double, env, monkeypatch, tmp_path):
    monkeypatch.setattr(double_export, "ENGAGE_PAGE_SIZE", 2)
    double.profiles = {f"u{i}": {"plan": "pro", "n": i, "$email": f"u{i}@x.io"} for i in range(1, 8)}
    double.profiles["u4"] = {"plan": "=1+1", "$email": "u4@x.io", "n": 4, "tags": ["a"]}
    ndjson, table = tmp_path / "people.ndjson", tmp_path / "people.csv"
    async with stdio_client(env) as client:
        everything = await client.call_tool("export", {"operation": "profiles", "output_file": str(ndjson)})
        chosen = await client.call_tool(
            "export",
            {"operation": "profiles", "output_file": str(table), "output_properties": ["$email", "plan"], "limit": 5},
        )
    data = structured(everything)
    written = [json.loads(x) for x in ndjson.read_bytes().splitlines()]
    assert written == [{"$distinct_id": i, "$properties": double.profiles[i]} for i in sorted(double.profiles)]
    assert (data["written"], data["total"], data["pages"], data["more_may_exist"]) == (7, 7, 4, False)
    assert "profiles" not in data
    assert everything.content[0].text.startswith(f"Wrote 7 of 7 profile(s) in 4 page(s) to {ndjson} (NDJSON, ")

    forms = [r.form for r in double.received(ENGAGE)]
    session = forms[1]["session_id"]
    assert forms[:4] == [{}, {"session_id": session, "page": "1"}, {"session_id": session, "page": "2"}, {"session_id": session, "page": "3"}]
    wanted = '["$email","plan"]'
    later = forms[4:]
    assert later[0] == {"output_properties": wanted}
    assert [f.get("page") for f in later] == [None, "1", "2"]  # 5 of 7 profiles: the third page is cut
    with table.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows == [
        ["$distinct_id", "plan", "$email"],  # property columns in the order they first appear
        ["u1", "pro", "u1@x.io"],
        ["u2", "pro", "u2@x.io"],
        ["u3", "pro", "u3@x.io"],
        ["u4", "'=1+1", "u4@x.io"],
        ["u5", "pro", "u5@x.io"],
    ]
    capped = structured(chosen)
    assert (capped["written"], capped["format"], capped["more_may_exist"], capped["next_page"]) == (5, "csv", True, 2)


async def test_profiles_selectors_are_sent_as_mixpanel_wants(double, env):
    double.profiles = {"u1": {"plan": "pro", "$email": "a@x.io"}, "u2": {"plan": "free", "$email": "b@x.io"}, "u3": {"plan": "pro"}}
    double.group_profiles = {
        ("company_id", "acme"): {"name": "Acme"},
        ("company_id", "initech"): {"name": "Initech"},
        ("team", "t1"): {},
    }
    # u9 is in the cohort but has no profile: Mixpanel lists it only with include_all_users (its default).
    double.cohorts.append({"id": 2000, "name": "Paying", "count": 3, "members": ["u1", "u3", "u9"]})
    async with stdio_client(env) as client:
        by_ids = await client.call_tool(
            "export", {"operation": "profiles", "distinct_ids": ["u1", "u2"], "output_properties": ["$email"]}
        )
        one = await client.call_tool("export", {"operation": "profiles", "distinct_id": "u3"})
        as_text = await client.call_tool("export", {"operation": "profiles", "distinct_ids": '["u2"]'})
        cohort = await client.call_tool("export", {"operation": "profiles", "filter_by_cohort": 2000})
        everyone = await client.call_tool("export", {"operation": "profiles", "filter_by_cohort": 2000, "include_all_users": True})
        no_cohort = await client.call_tool("export", {"operation": "profiles", "include_all_users": True})
        groups = await client.call_tool("export", {"operation": "profiles", "data_group_id": group_key_id("company_id")})
        by_name = await client.call_tool("export", {"operation": "profiles", "data_group_id": "company_id"})
        page_without_session = await client.call_tool("export", {"operation": "profiles", "page": 1})
        both = await client.call_tool("export", {"operation": "profiles", "distinct_id": "u1", "distinct_ids": ["u2"]})
    forms = [r.form for r in double.received(ENGAGE)]
    assert forms == [
        {"distinct_ids": '["u1","u2"]', "output_properties": '["$email"]'},
        {"distinct_id": "u3"},
        {"distinct_ids": '["u2"]'},
        {"filter_by_cohort": '{"id":2000}', "include_all_users": "false"},
        {"filter_by_cohort": '{"id":2000}', "include_all_users": "true"},
        {"data_group_id": group_key_id("company_id")},
    ]
    assert structured(by_ids)["profiles"] == [
        {"$distinct_id": "u1", "$properties": {"$email": "a@x.io"}},
        {"$distinct_id": "u2", "$properties": {"$email": "b@x.io"}},
    ]
    assert structured(one)["profiles"] == [{"$distinct_id": "u3", "$properties": {"plan": "pro"}}]
    assert [p["$distinct_id"] for p in structured(as_text)["profiles"]] == ["u2"]
    assert [p["$distinct_id"] for p in structured(cohort)["profiles"]] == ["u1", "u3"]
    assert structured(everyone)["profiles"][2] == {"$distinct_id": "u9", "$properties": {}}
    assert "include_all_users applies only with filter_by_cohort" in error_text(no_cohort)
    group_data = structured(groups)
    assert [p["$distinct_id"] for p in group_data["profiles"]] == ["acme", "initech"]
    assert groups.content[0].text.startswith("2 of 2 group profile(s) in 1 page(s).")
    # A group key is named by its numeric id, not its name (the name is refused before any request).
    assert "data_group_id: must be the group key's numeric id" in error_text(by_name)
    assert "-1405123841946871899" in error_text(by_name)
    assert "page > 0 needs the session_id" in error_text(page_without_session)
    assert "distinct_id or distinct_ids, not both" in error_text(both)


async def test_profiles_double_refuses_a_page_without_session(double, env):
    """The double's own rule, checked over HTTP: a later page without session_id is a 400 with the Query error shape."""
    import httpx2

    from mixpanel_mcp.client.http import basic_auth

    url = env["MIXPANEL_QUERY_URL"] + "/query/engage"
    auth = {"Authorization": basic_auth(SA_USER, SA_SECRET)}
    response = httpx2.post(url, params={"project_id": PROJECT_ID}, data={"page": "2"}, headers=auth)
    assert response.status_code == 400
    assert response.json()["error"] == "session_id is required when page > 0"


async def test_profiles_double_lists_cohort_members_without_a_profile_by_default(double, env):
    """Mixpanel's default for include_all_users is true: a client that leaves it out gets profile-less ids too."""
    import httpx2

    from mixpanel_mcp.client.http import basic_auth

    double.profiles = {"u1": {"plan": "pro"}}
    double.cohorts.append({"id": 2000, "name": "Paying", "count": 2, "members": ["u1", "u9"]})
    url = env["MIXPANEL_QUERY_URL"] + "/query/engage"
    auth = {"Authorization": basic_auth(SA_USER, SA_SECRET)}

    def ids(**form: str) -> list[str]:
        response = httpx2.post(url, params={"project_id": PROJECT_ID}, data={"filter_by_cohort": '{"id":2000}', **form}, headers=auth)
        return [p["$distinct_id"] for p in response.json()["results"]]

    assert ids() == ids(include_all_users="true") == ["u1", "u9"]
    assert ids(include_all_users="false") == ["u1"]


# -- cohorts and activity ---------------------------------------------------------------------


async def test_cohorts_and_activity(double, env):
    double.cohorts.append({"id": 2001, "name": "Churn risk", "count": 12, "description": "", "created": "2026-01-02 10:00:00",
                           "is_visible": 0, "project_id": PROJECT_ID, "members": ["u9"]})
    double.events = [
        stored_event("Signed up", "u1", at(10, 9), plan="pro"),
        stored_event("Viewed page", "u2", at(10, 10)),
        stored_event("Viewed page", "u1", at(11, 9)),
        stored_event("Viewed page", "u3", at(11, 9)),  # another user
        stored_event("Viewed page", "u1", at(13, 9)),  # after to_date
    ]
    async with stdio_client(env) as client:
        cohorts = await client.call_tool("export", {"operation": "cohorts"})
        activity = await client.call_tool(
            "export", {"operation": "activity", "distinct_ids": ["u1", "u2"], "from_date": "2026-01-10", "to_date": "2026-01-12"}
        )
        missing = await client.call_tool("export", {"operation": "activity", "from_date": "2026-01-10", "to_date": "2026-01-12"})

    (cohort_request,) = double.received("/api/query/cohorts/list")
    assert cohort_request.method == "POST"
    assert cohort_request.query == {"project_id": str(PROJECT_ID)}
    assert cohort_request.basic_auth == (SA_USER, SA_SECRET)
    assert cohort_request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert cohort_request.body == b""
    data = structured(cohorts)
    assert data["count"] == 2
    assert data["cohorts"][1] == {"id": 2001, "name": "Churn risk", "count": 12, "description": "", "created": "2026-01-02 10:00:00",
                                  "is_visible": 0, "project_id": PROJECT_ID}
    assert cohorts.content[0].text.startswith("2 cohort(s): Power users (id 1000, 150 users); Churn risk (id 2001, 12 users).")

    (stream_request,) = double.received("/api/query/stream/query")
    assert stream_request.method == "GET"
    assert stream_request.basic_auth == (SA_USER, SA_SECRET)
    assert stream_request.query == {
        "project_id": str(PROJECT_ID),
        "distinct_ids": '["u1","u2"]',
        "from_date": "2026-01-10",
        "to_date": "2026-01-12",
    }
    feed = structured(activity)
    assert feed["events"] == [
        {"event": "Signed up", "properties": {"time": at(10, 9), "$distinct_id": "u1", "plan": "pro"}},
        {"event": "Viewed page", "properties": {"time": at(10, 10), "$distinct_id": "u2"}},
        {"event": "Viewed page", "properties": {"time": at(11, 9), "$distinct_id": "u1"}},
    ]
    assert feed["by_event"] == {"Viewed page": 2, "Signed up": 1}
    assert activity.content[0].text.startswith(
        "3 event(s) of 2 user(s) from 2026-01-10 to 2026-01-12; top Viewed page (2), Signed up (1)."
    )
    assert "distinct_ids: Field required" in error_text(missing)


async def test_query_errors_on_profiles_and_activity(double, env):
    async with stdio_client(env) as client:
        double.fail(ENGAGE, 401, body={"request": "/api/query/engage", "error": "Invalid username or password"})
        rejected = await client.call_tool("export", {"operation": "profiles"})
        double.fail("/api/query/stream/query", 400, body={"error": "Date range exceeds 365 days into the past"})
        too_old = await client.call_tool(
            "export", {"operation": "activity", "distinct_ids": ["u1"], "from_date": "2024-01-01", "to_date": "2024-01-02"}
        )
    text = error_text(rejected)
    assert "rejected the service account" in text and "Invalid username or password" in text
    assert 'Mixpanel said: "Date range exceeds 365 days into the past"' in error_text(too_old)


async def test_a_project_created_before_2023_exports_local_times(double, double_url, monkeypatch):
    """Such a project stores times in its time zone: export gives the local clock as epoch seconds and reads
    from_date/to_date as local days (export docs); the double does the same."""
    monkeypatch.setattr(double.project, "legacy_timezone", "America/Los_Angeles")
    double.events.append(stored_event("Signed up", "u1", "2026-01-02T05:00:00"))  # Jan 1, 21:00 in Los Angeles
    answer = httpx2.get(f"{double_url}/api/2.0/export", auth=(SA_USER, SA_SECRET), headers={"Accept-Encoding": "gzip"},
                        params={"project_id": PROJECT_ID, "from_date": "2026-01-01", "to_date": "2026-01-01"})
    (line,) = answer.text.splitlines()
    assert json.loads(line)["properties"]["time"] == int(dt.datetime(2026, 1, 1, 21, tzinfo=dt.UTC).timestamp())


async def test_a_trimmed_answer_says_first_what_it_holds(double, env):
    # 400 profiles of ~600 characters do not fit the ~90k-character bound: some are left out.
    double.profiles = {f"u{i:03}": {"bio": "x" * 600} for i in range(400)}
    async with stdio_client(env) as client:
        result = await client.call_tool("export", {"operation": "profiles", "limit": 5000})
    data = structured(result)
    shown = len(data["profiles"])
    assert 0 < shown < 400
    assert (data["returned"], data["read"], data["total"]) == (shown, 400, 400)
    text = result.content[0].text
    first_sentence = text.split(";")[0]
    assert first_sentence == f"Trimmed to fit the context window: this answer shows {shown:,} of the 400 profiles"
    assert list(data)[0] == "truncated"  # the note comes before the lists
    assert data["truncated"]["omitted"] == {"profiles": 400 - shown}
