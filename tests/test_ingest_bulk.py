"""Bulk ingestion: many events through `track`, against the double over real HTTP, with faults injected.

Exactly once is checked where Mixpanel would check it: at the double, which stores an event once per
(event, distinct_id, time, $insert_id), while recording every request that reached it (duplicates included).
"""

from __future__ import annotations

import csv
import json
import logging
import re
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import anyio
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client as sdk_stdio_client

from mixpanel_mcp.client import MixpanelClient
from mixpanel_mcp.client import batching
from mixpanel_mcp.client import events as ingest
from mixpanel_mcp.client.batching import Pacer, render, runs, subtract
from mixpanel_mcp.config import load_settings
from tests.conftest import TOKEN, refused, server_env, stdio_client, structured

pytestmark = pytest.mark.asyncio

DAY = 86_400
NOW = int(time.time())
OLD = NOW - 30 * DAY  # import territory


def event(i: int, at: int | None = None, **extra) -> dict:
    return {"event": "Purchase" if i % 3 else "Signed up", "properties": {"distinct_id": f"u{i}", "time": at or OLD + i, **extra}}


def keys(events: list[dict]) -> list[tuple]:
    """Mixpanel's dedup key; time in seconds (sent in milliseconds, stored in seconds)."""
    return [
        (e["event"], e["properties"]["distinct_id"], e["properties"]["time"] // 1000 if e["properties"]["time"] > 1e11 else e["properties"]["time"],
         e["properties"]["$insert_id"])
        for e in events
    ]


def wire_events(double, path: str = "/import") -> list[list[dict]]:
    return [r.json() for r in double.received(path)]


def index_of(record: dict) -> int:
    return int(record["properties"]["distinct_id"][1:])


# -- exactly once, through faults -------------------------------------------------------------------


async def test_twelve_thousand_events_through_faults_arrive_exactly_once(double, env):
    n = 12_000
    events = [event(i) for i in range(n)]
    # Applied to the six first requests in the order they arrive, whichever batch they carry. They are held
    # until all six have arrived, so no retry (or half of the split) can arrive in between and take a fault.
    release = threading.Event()
    double.fail("/import", 500, hold=release)
    double.fail("/import", drop=True, hold=release)  # stored by the double, then the connection is cut
    double.fail("/import", 429, headers={"Retry-After": "0"}, hold=release)
    double.fail("/import", 503, hold=release)
    # Last, so that no fault is left for the two halves it causes.
    double.fail(
        "/import", 413, body={"code": 413, "error": "request exceeds max limit", "status": "Request Entity Too Large"},
        hold=release,
    )
    double.fail("/import", 0, hold=release)  # the sixth goes through
    progress: list[tuple[float, float | None, str | None]] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append((done, total, message))

    results = []
    try:
        async with stdio_client(env) as client:
            async with anyio.create_task_group() as group:

                async def send() -> None:
                    arguments = {"operation": "import", "events": events}
                    results.append(await client.call_tool("track", arguments, progress_callback=on_progress))

                group.start_soon(send)
                await wait_until(lambda: len(double.received("/import")) >= 6)
                release.set()
    finally:
        release.set()
    (result,) = results

    data = structured(result)
    assert (data["events_sent"], data["stored"], data["failed"]) == (n, n, 0)
    assert "not_stored" not in data and "unconfirmed" not in data and "stopped_by" not in data
    # 6 batches, one split by the 413 into two; 5 faulted requests, 4 of them retried by the client.
    assert (data["batches"], data["requests"], data["retries"]) == (7, 12, 4)
    assert data["time_range"] == {"from": ingest.iso(OLD * 1000), "to": ingest.iso((OLD + n - 1) * 1000)}
    assert data["events_per_second"] > 0 and data["seconds"] > 0
    assert result.content[0].text.startswith(f"Imported {n:,} of {n:,} event(s) for {n:,} user(s)")

    # At the double: every event once.
    stored = keys(double.events)
    assert len(stored) == len(set(stored)) == n
    assert sorted(index_of(e) for e in double.events) == list(range(n))

    # On the wire: the faulted batches went twice (or split), every copy with the same $insert_ids.
    requests = wire_events(double)
    assert len(requests) == 12
    sent = Counter(k for batch in requests for k in keys(batch))
    assert set(sent) == set(stored)
    assert sum(sent.values()) == n + 5 * 2000
    assert Counter(sent.values()) == {1: n - 5 * 2000, 2: 5 * 2000}
    dropped = double.received("/import")[1]
    assert [r.body for r in double.received("/import")].count(dropped.body) == 2  # resent byte for byte
    too_large = requests[4]
    halves = [batch for batch in requests if len(batch) == 1000]
    assert len(too_large) == 2000 and len(halves) == 2
    assert keys(halves[0]) + keys(halves[1]) == keys(too_large) or keys(halves[1]) + keys(halves[0]) == keys(too_large)
    assert sorted(len(b) for b in requests) == [1000, 1000] + [2000] * 10
    for request in double.received("/import"):
        assert request.headers["content-encoding"] == "gzip" and request.query["strict"] == "1"

    # Progress: events done out of the total, ending at the total.
    assert progress and all(total == n for _, total, _ in progress)
    assert [done for done, _, _ in progress] == sorted(done for done, _, _ in progress)
    assert progress[-1][0] == n and progress[-1][2] == f"{n:,} of {n:,} events sent"


async def test_track_sends_thousands_in_batches_with_the_token_in_each(double, env):
    events = [event(i, at=NOW - 3600 - i) for i in range(4500)]
    async with stdio_client(env) as client:
        result = await client.call_tool("track", {"operation": "track", "events": events})
    data = structured(result)
    assert (data["accepted"], data["batches"], data["requests"]) == (4500, 3, 3)
    assert "stored" not in data and "not that each was stored" in result.content[0].text
    batches = wire_events(double, "/track")
    assert sorted(len(b) for b in batches) == [500, 2000, 2000]
    assert all(e["properties"]["token"] == TOKEN for b in batches for e in b)
    assert len(set(keys(double.events))) == len(double.events) == 4500


# -- strict-mode partial failure --------------------------------------------------------------------


async def test_partial_failure_reports_exactly_the_failed_records_by_their_original_index(double, env):
    # The first 10 records break a rule and are skipped, so batch positions and input indexes differ.
    events = [{"event": "E", "properties": {"distinct_id": "null", "time": OLD}}] * 10 + [event(i) for i in range(10, 5010)]
    failed_positions = [0, 7, 999]  # whichever batch gets the 400 (the last one holds 1,000)
    double.fail(
        "/import",
        400,
        body={
            "code": 400,
            "num_records_imported": 1997,
            "status": "Bad Request",
            "failed_records": [
                {"index": p, "insert_id": f"id-{p}", "field": "properties.plan", "message": f"bad value at {p}"}
                for p in failed_positions
            ],
        },
    )
    async with stdio_client(env) as client:
        result = await client.call_tool("track", {"operation": "import", "events": events, "on_invalid": "skip"})

    refused = double.received("/import")[0].json()  # the request that got the 400, whichever batch it was
    expected = [
        {"index": index_of(refused[p]), "$insert_id": f"id-{p}", "field": "properties.plan", "message": f"bad value at {p}"}
        for p in failed_positions
    ]
    data = structured(result)
    assert data["failed_records"] == expected
    assert all(r["index"] >= 10 for r in expected)
    assert (data["failed"], data["stored"], data["events_sent"], data["invalid"]) == (3, 4997, 5000, 10)
    assert [r["index"] for r in data["invalid_records"]] == list(range(10))
    assert "not_stored" not in data and "unconfirmed" not in data
    text = result.content[0].text
    assert text.startswith("Skipped 10 invalid event(s) (invalid_records). Partly imported: 4,997 of 5,000 event(s) stored; 3 failed")
    # The refused batch is not resent: its good records were stored.
    assert len(double.received("/import")) == 3


async def test_an_error_that_stops_the_run_says_which_index_ranges_to_send_again(double, env):
    n = (batching.MAX_IN_FLIGHT + 2) * 2000  # two batches more than may be in flight
    events = [event(i) for i in range(n)]
    double.fail("/import", 403, body={"code": 403, "error": "not an admin", "status": "Forbidden"})
    async with stdio_client(env) as client:
        result = await client.call_tool("track", {"operation": "import", "events": events})
    data = structured(result)
    refused = sorted(index_of(e) for e in double.received("/import")[0].json())
    stored = sorted(index_of(e) for e in double.events)
    not_stored = [i for text in data["not_stored"]["ranges"] for i in range(int(text.split("-")[0]), int(text.split("-")[-1]) + 1)]
    assert data["stored"] == len(stored) >= 2000 and data["stored"] + data["not_stored"]["count"] == n
    assert sorted(stored + not_stored) == list(range(n))  # every event is in exactly one of the two
    assert set(refused) <= set(not_stored)
    assert len(double.received("/import")) == n // 2000 - (len(not_stored) - 2000) // 2000  # the rest never started
    assert "Admin or Owner role" in data["stopped_by"]
    assert result.content[0].text.startswith("Stopped early: Mixpanel refused /import (403)")
    assert "not stored (not_stored), as index ranges. Once the cause is fixed, send those again: events already stored are deduplicated by $insert_id." in result.content[0].text


async def test_batches_respect_both_request_limits():
    sizes: list[int] = []

    async def send(batch: list[batching.Item]) -> batching.Sent:
        assert 2 + sum(len(i.body) + 1 for i in batch) <= batching.MAX_BYTES_PER_REQUEST
        sizes.append(len(batch))
        return batching.Sent()

    big = [batching.Item(i, b"x" * 600_000) for i in range(20)]  # 17 fit in 10 MB
    outcome = await batching.send_all(big, send, universe=[(0, 19)], max_in_flight=1)
    small = [batching.Item(i, b"{}") for i in range(4500)]
    await batching.send_all(small, send, universe=[(0, 4499)], max_in_flight=1)
    assert sizes == [17, 3, 2000, 2000, 500]
    assert outcome.count(batching.Status.STORED) == 20 and outcome.batches == 2


# -- pre-flight: every rule, each with a bad record -------------------------------------------------

FUTURE = NOW + 2 * 3600
RULES = [
    # (record, field, words in the message)
    ({"event": "ok", "properties": {"distinct_id": "u1", "time": OLD}}, None, None),
    ({"event": "E", "properties": {"time": OLD}}, "properties.distinct_id", "distinct_id is required"),
    ({"event": "E", "properties": {"distinct_id": "u1"}}, "properties.time", "time is required for import"),
    ({"event": "E", "properties": {"distinct_id": "u1", "time": OLD, "$insert_id": "a" * 37}}, "properties.$insert_id", "1-36 characters"),
    ({"event": "E", "properties": {"distinct_id": "u1", "time": OLD, "$insert_id": "has_underscore"}}, "properties.$insert_id", "1-36 characters"),
    ({"event": "E", "properties": {"distinct_id": "u1", "time": OLD, "$insert_id": "undefined"}}, "properties.$insert_id", "not a placeholder"),
    ({"event": "E", "properties": {"distinct_id": "null", "time": OLD}}, "properties.distinct_id", "'null' is a placeholder"),
    ({"event": "E", "properties": {"distinct_id": "anon", "time": OLD}}, "properties.distinct_id", "'anon' is a placeholder"),
    ({"event": "E", "properties": {"distinct_id": "undefined", "time": OLD}}, "properties.distinct_id", "'undefined' is a placeholder"),
    ({"event": "E", "properties": {"distinct_id": "0", "time": OLD}}, "properties.distinct_id", "'0' is a placeholder"),
    ({"event": "E", "properties": {"distinct_id": "-1", "time": OLD}}, "properties.distinct_id", "'-1' is a placeholder"),
    ({"event": "E", "properties": {"distinct_id": "u1", "time": "1969-12-31"}}, "properties.time", "before 1971"),
    ({"event": "E", "properties": {"distinct_id": "u1", "time": FUTURE}}, "properties.time", "more than an hour in the future"),
    ({"event": "E", "properties": {"distinct_id": "u1", "time": "yesterday"}}, "properties.time", "time must be ISO-8601"),
    ({"event": "E", "properties": {"distinct_id": "u1", "time": OLD, "blob": "x" * 1_100_000}}, None, "at most 1 MB per event"),
    ({"event": "E", "properties": {"distinct_id": "u1", "time": OLD, **{f"p{i}": i for i in range(254)}}}, "properties", "fewer than 255"),
    ({"event": "E", "properties": {"distinct_id": "u1", "time": OLD, "deep": {"a": {"b": {"c": {"d": 1}}}}}}, "properties.deep", "nested deeper than 3"),
    ({"event": "E", "properties": {"distinct_id": "u1", "time": OLD, "token": "t"}}, "properties.token", "remove token"),
    ({"event": "$merge", "properties": {"distinct_id": "u1", "time": OLD}}, "event", "send $merge with its own operation"),
    ({"event": "E", "properties": {"distinct_id": "u1", "time": OLD}, "extra": 1}, "extra", "unknown key 'extra'"),
    ({"event": "", "properties": {"distinct_id": "u1", "time": OLD}}, "event", "event is required"),
    ({"event": "E"}, "properties", "properties is required"),
    ({"event": "ok too", "properties": {"distinct_id": "u2", "time": OLD, "deep": {"a": {"b": {"c": 1}}}, **{f"p{i}": i for i in range(250)}}}, None, None),
]


async def test_each_rule_is_reported_per_record_and_nothing_is_sent_unless_asked(double, env):
    records = [record for record, _, _ in RULES]
    async with stdio_client(env) as client:
        rejected = await client.call_tool("track", {"operation": "import", "events": records})
        assert double.received() == []
        skipped = await client.call_tool("track", {"operation": "import", "events": records, "on_invalid": "skip"})
        old = await client.call_tool(
            "track",
            {"operation": "track", "events": [event(1, at=NOW - 3600), event(2, at=NOW - 6 * DAY)], "on_invalid": "skip"},
        )

    bad = [(i, field, words) for i, (_, field, words) in enumerate(RULES) if words is not None]
    data = refused(rejected)
    assert data["events_sent"] == 0 and data["invalid"] == len(bad) == 21
    assert [(r["index"], r["field"]) for r in data["invalid_records"]] == [(i, field) for i, field, _ in bad]
    for record, (_, _, words) in zip(data["invalid_records"], bad, strict=True):
        assert words in record["message"], record
    assert rejected.content[0].text.startswith(
        'Nothing was sent to Mixpanel: 21 of 23 event(s) break its rules (invalid_records: index, field, message). '
        'Fix them, or call again with on_invalid="skip" to send the 2 valid one(s).'
    )

    data = structured(skipped)
    assert (data["stored"], data["invalid"]) == (2, 21)
    assert sorted(e["event"] for e in double.events) == ["Purchase", "ok", "ok too"]  # Purchase: from /track below
    (request,) = [r for r in double.received("/import")]
    assert [e["event"] for e in request.json()] == ["ok", "ok too"]

    data = structured(old)
    assert data["accepted"] == 1 and data["invalid_records"] == [
        {"index": 1, "field": "properties.time", "message": data["invalid_records"][0]["message"]}
    ]
    assert "more than 5 days ago; /track refuses it: use operation import" in data["invalid_records"][0]["message"]


# -- files ------------------------------------------------------------------------------------------


def write_files(folder: Path) -> dict[str, Path]:
    """The same five events (the third one broken) as NDJSON, a JSON array and CSV."""
    good = [event(i) for i in range(5)]
    ndjson = folder / "events.ndjson"
    lines = [json.dumps(e) for e in good]
    lines[2] = '{"event": "Purchase", "properties": {"distinct_id": "u2",'  # cut off
    ndjson.write_text("\n".join(lines[:2]) + "\n\n" + "\n".join(lines[2:]) + "\n")  # a blank line too
    array = folder / "events.json"
    parts = [json.dumps(e) for e in good]
    parts[2] = '{"event": "Purchase", "properties": {"distinct_id": "u2" "time": 5}}'
    array.write_text("[\n" + ",\n".join(parts) + "\n]\n")
    table = folder / "events.csv"
    with table.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["event", "distinct_id", "time", "$insert_id", "plan", "amount", "zip"])
        for i, e in enumerate(good):
            row = [e["event"], e["properties"]["distinct_id"], str(e["properties"]["time"]), "", "pro", "12.5", "00123"]
            writer.writerow(row if i != 2 else row + ["surplus"])
    return {"ndjson": ndjson, "json": array, "csv": table}


async def test_files_in_three_formats_report_the_broken_line_and_lose_nothing_else(double, env, tmp_path):
    files = write_files(tmp_path)
    async with stdio_client(env) as client:
        rejected = {kind: await client.call_tool("track", {"operation": "import", "file": str(path)}) for kind, path in files.items()}
        assert double.received() == []
        sent = {}
        for kind, path in files.items():
            double.reset()
            result = await client.call_tool("track", {"operation": "import", "file": str(path), "on_invalid": "skip"})
            sent[kind] = (result, list(double.events))
        missing = await client.call_tool("track", {"operation": "import", "file": str(tmp_path / "nope.ndjson")})

    lines = {"ndjson": 4, "json": 4, "csv": 4}  # ndjson: after a blank line; json: "[" is line 1; csv: header is line 1
    for kind, result in rejected.items():
        data = refused(result)
        assert data["events_sent"] == 0
        (problem,) = data["invalid_records"]
        assert (problem["index"], problem["line"]) == (2, lines[kind]), kind
        assert f"line {lines[kind]}" in problem["message"]
    assert "not valid JSON" in refused(rejected["ndjson"])["invalid_records"][0]["message"]
    assert "has 8 cells; the header has 7" in refused(rejected["csv"])["invalid_records"][0]["message"]

    for kind, (result, stored) in sent.items():
        data = structured(result)
        assert (data["stored"], data["invalid"], data["file"]) == (4, 1, str(files[kind])), kind
        assert sorted(index_of(e) for e in stored) == [0, 1, 3, 4], kind
    csv_events = {e["properties"]["distinct_id"]: e["properties"] for e in sent["csv"][1]}
    assert csv_events["u1"]["plan"] == "pro" and csv_events["u1"]["amount"] == 12.5 and csv_events["u1"]["zip"] == "00123"
    assert csv_events["u1"]["time"] == OLD + 1 and "$insert_id" in csv_events["u1"]
    # The same event read from any of the three formats gets the same $insert_id.
    ndjson_ids = {e["properties"]["distinct_id"]: e["properties"]["$insert_id"] for e in sent["ndjson"][1]}
    json_ids = {e["properties"]["distinct_id"]: e["properties"]["$insert_id"] for e in sent["json"][1]}
    assert ndjson_ids == json_ids

    assert refused(missing)["events_sent"] == 0
    assert missing.content[0].text.startswith(f"Nothing was sent to Mixpanel: cannot read {tmp_path / 'nope.ndjson'}: cannot open it")


async def test_large_file_is_read_twice_not_held_and_sent_in_batches(double, env, tmp_path):
    path = tmp_path / "big.ndjson"
    path.write_text("".join(json.dumps(event(i)) + "\n" for i in range(4200)))
    async with stdio_client(env) as client:
        result = await client.call_tool("track", {"operation": "import", "file": str(path)})
    data = structured(result)
    assert (data["stored"], data["batches"]) == (4200, 3)
    assert sorted(len(b) for b in wire_events(double)) == [200, 2000, 2000]
    assert len(set(keys(double.events))) == 4200


async def test_a_server_reached_over_http_refuses_files(double, http_server, tmp_path):
    path = tmp_path / "events.ndjson"
    path.write_text(json.dumps(event(1)) + "\n")
    async with Client(http_server) as client:
        result = await client.call_tool("track", {"operation": "import", "file": str(path)})
    assert refused(result)["events_sent"] == 0
    assert "reached over HTTP, so it does not read files on the machine it runs on" in result.content[0].text
    assert double.received() == []


# -- cancellation -----------------------------------------------------------------------------------

CANCELLED = re.compile(r"Sending events to /import was cancelled after [0-9.]+ s; by index: (.*)\. Not stored")


def logged_ranges(line: str) -> dict[str, list[int]]:
    found: dict[str, list[int]] = {}
    for part in line.split("; "):
        status, _, rest = part.partition(" ")
        indexes: list[int] = []
        for text in rest.split("[", 1)[1].rstrip("]").split(", "):
            start, _, end = text.partition("-")
            indexes.extend(range(int(start), int(end or start) + 1))
        found[status] = indexes
    return found


# The server under test with a long grace on cancel: what the test shows is that requests in flight are
# waited for, and 16 requests of 2,000 events each can take a loaded machine longer than the 5 s default.
GENEROUS_GRACE_SERVER = [
    "-c",
    "from mixpanel_mcp.client import batching; batching.CANCEL_GRACE_SECONDS = 120.0;"
    " from mixpanel_mcp.cli import main; main()",
]
GRACE_BEGUN = "Cancelled: waiting up to"


async def test_cancelled_import_finishes_what_is_in_flight_and_logs_what_was_stored(double, double_url, tmp_path):
    n = (batching.MAX_IN_FLIGHT + 1) * 2000  # one batch more than may be in flight
    path = tmp_path / "events.ndjson"
    path.write_text("".join(json.dumps(event(i)) + "\n" for i in range(n)))
    release = threading.Event()
    double.fail("/import", 0, times=100, hold=release)  # every request waits for the test, then is stored and answered
    log = tmp_path / "server.log"
    params = StdioServerParameters(command=sys.executable, args=GENEROUS_GRACE_SERVER, env=server_env(double_url))
    try:
        with log.open("w") as errlog:
            async with Client(sdk_stdio_client(params, errlog=errlog)) as client:
                async with anyio.create_task_group() as call:
                    call.start_soon(client.call_tool, "track", {"operation": "import", "file": str(path)})
                    await wait_until(lambda: len(double.received("/import")) >= batching.MAX_IN_FLIGHT)
                    call.cancel_scope.cancel()  # the client gives up: the SDK sends notifications/cancelled
                # Only once the server has taken the cancel in are the held requests answered.
                await wait_until(lambda: GRACE_BEGUN in log.read_text())
                release.set()
                await wait_until(lambda: CANCELLED.search(log.read_text()) is not None)
    finally:
        release.set()
    await wait_until(lambda: not double.in_flight)

    ranges = logged_ranges(CANCELLED.search(log.read_text()).group(1))
    assert set(ranges) == {"stored", "not_stored"}
    assert len(ranges["stored"]) == n - 2000 and len(ranges["not_stored"]) == 2000
    assert sorted(ranges["stored"] + ranges["not_stored"]) == list(range(n))
    stored = sorted(index_of(e) for e in double.events)
    assert stored == sorted(ranges["stored"])  # exactly what the log says, nothing of the rest
    assert len(double.received("/import")) == batching.MAX_IN_FLIGHT
    assert "u1" not in log.read_text() and TOKEN not in log.read_text()  # index ranges only, no values


async def test_cancel_abandons_a_request_after_the_grace_period_and_calls_it_unconfirmed(double, double_url, monkeypatch, caplog):
    # The grace only has to outlast answers already on their way; the slow request is held until the end.
    monkeypatch.setattr(batching, "CANCEL_GRACE_SECONDS", 1.0)
    settings = load_settings(server_env(double_url))
    release = threading.Event()
    double.fail("/import", 0)
    double.fail("/import", 0, hold=release)  # the second request to arrive is answered only when the test says
    records = [(i, None, event(i)) for i in range(6000)]
    caplog.set_level(logging.WARNING, logger="mixpanel_mcp.client.batching")
    try:
        async with MixpanelClient(settings) as client:
            found = ingest.survey(records, ingest.preparer_for(client, "import"), keep=True)
            async with anyio.create_task_group() as group:

                async def send() -> None:
                    await ingest.send_events(client, "import", found.items, universe=found.universe())

                group.start_soon(send)
                # The other two requests are answered; only the held one is left in flight.
                await wait_until(lambda: len(double.events) == 4000 and double.in_flight == 1)
                group.cancel_scope.cancel()
    finally:
        release.set()
    (record,) = [r for r in caplog.records if "was cancelled" in r.getMessage()]
    message = record.getMessage()
    slow = sorted(index_of(e) for e in double.received("/import")[1].json())
    assert f"unconfirmed 2,000 [{slow[0]}-{slow[-1]}]" in message
    assert "stored 4,000" in message
    await wait_until(lambda: not double.in_flight)
    # Unconfirmed was the right word: the abandoned request did arrive and was stored after all.
    assert sorted(index_of(e) for e in double.events) == list(range(6000))


async def wait_until(condition, seconds: float = 120) -> None:
    """Wait for something to happen; the limit only ends a test that is broken, so it is generous for a busy machine."""
    with anyio.fail_after(seconds):
        while not condition():
            await anyio.sleep(0.02)


# -- the pieces -------------------------------------------------------------------------------------


async def test_index_ranges():
    assert runs([5, 1, 2, 3, 9, 10]) == [(1, 3), (5, 5), (9, 10)]
    assert subtract([(0, 9), (20, 29)], [(0, 0), (3, 4), (9, 21), (25, 40)]) == [(1, 2), (5, 8), (22, 24)]
    assert subtract([(0, 9)], []) == [(0, 9)] and subtract([], [(0, 3)]) == []
    assert render([(0, 1999), (4000, 4000)]) == ["0-1999", "4000"]


async def test_pacer_holds_a_client_under_the_rate():
    pacer = Pacer(events_per_second=10_000, bytes_per_second=1e12, burst=0.1)
    started = time.monotonic()
    for _ in range(4):
        await pacer.wait(2000, 100)
    # 8,000 events at 10,000/s with 0.1 s of burst: the last batch starts after 0.5 s. The ceiling only catches
    # a pacer that waits several times too long; it is far from 0.5 s because a busy machine adds its own delay.
    assert 0.45 <= time.monotonic() - started < 5


async def test_insert_ids_are_stable_and_derived_from_content():
    preparer = ingest.Preparer("import", NOW * 1000)
    record = event(1, plan="pro")
    _, _, first = preparer.prepare(record)
    _, _, twin = preparer.prepare(record)  # an identical event in the same call stays a second event
    again = ingest.Preparer("import", NOW * 1000).prepare({"event": record["event"], "properties": dict(reversed(record["properties"].items()))})[2]
    one, two, three = (json.loads(b)["properties"]["$insert_id"] for b in (first, twin, again))
    assert one != two and one == three  # key order does not matter; occurrence does
    content = {k: v for k, v in json.loads(first)["properties"].items() if k not in ("$insert_id", "ip")}
    assert one == ingest.derive_insert_id(record["event"], content) and two == ingest.derive_insert_id(record["event"], content, 1)


# -- ambiguous outcomes are reported as such, with exact counts -------------------------------------


async def test_an_import_that_ends_unconfirmed_says_it_was_sent_and_is_safe_to_resend(double, env):
    n = 3000  # two batches, each stored by the double and then cut off, every retry too
    events = [event(i) for i in range(n)]
    double.fail("/import", drop=True, times=100)
    async with stdio_client({**env, "MIXPANEL_MAX_RETRIES": "1", "MIXPANEL_RETRY_BASE_DELAY": "0"}) as client:
        result = await client.call_tool("track", {"operation": "import", "events": events})
    assert not result.is_error, result.content[0].text
    data = structured(result)
    assert (data["events_sent"], data["stored"]) == (n, 0)
    assert data["unconfirmed"] == {"count": n, "ranges": [f"0-{n - 1}"]}
    assert "not_stored" not in data
    text = result.content[0].text
    assert "could not be reached" not in text
    assert f"{n:,} sent but unconfirmed" in text and "deduplicated by $insert_id" in text
    assert len(double.events) == n  # what was reported as unconfirmed is in fact stored


async def test_a_refusal_after_an_unanswered_attempt_counts_the_batch_unconfirmed_not_unsent(double, env):
    # The first attempt is stored and its answer lost; the retry is refused with a wait too long to sleep
    # through. The batch may well be stored (here it is): "not stored" would be a wrong count.
    n = 2000  # one batch, so both faults meet the same request
    events = [event(i) for i in range(n)]
    double.fail("/import", drop=True)
    double.fail("/import", 429, headers={"Retry-After": "3600"})
    async with stdio_client({**env, "MIXPANEL_RETRY_BASE_DELAY": "0"}) as client:
        result = await client.call_tool("track", {"operation": "import", "events": events})
    data = structured(result)
    stored_at_double = len(double.events)
    unconfirmed = data.get("unconfirmed", {}).get("count", 0)
    not_stored = data.get("not_stored", {}).get("count", 0)
    assert data["stored"] + unconfirmed + not_stored == n
    assert data["stored"] <= stored_at_double <= data["stored"] + unconfirmed  # exact: nothing stored is called unsent
    assert (stored_at_double, unconfirmed, not_stored) == (n, n, 0)
    assert "rate limit" in data["stopped_by"]


async def test_the_documented_limits_on_properties_lists_and_nested_objects_and_the_empty_distinct_id():
    """ref-import-events: fewer than 255 properties, list elements and nested keys; "" is an event of no user."""
    def problem(**properties):
        try:
            ingest.Preparer("import", NOW * 1000).prepare({"event": "E", "properties": {"time": OLD, **properties}})
        except ingest.RecordError as exc:
            return exc.field, exc.message
        return None

    assert problem(distinct_id="u1", **{f"p{i}": i for i in range(251)}) is None  # 254 with the $insert_id
    assert problem(distinct_id="u1", **{f"p{i}": i for i in range(252)}) == (
        "properties", "255 properties; Mixpanel takes fewer than 255 per event"
    )
    assert problem(distinct_id="u1", tags=list(range(254))) is None
    assert problem(distinct_id="u1", tags=list(range(255))) == ("properties.tags", "holds a list of 255 elements; Mixpanel takes fewer than 255")
    wide = {f"k{i}": i for i in range(255)}
    assert problem(distinct_id="u1", cart={"items": [wide]}) == ("properties.cart", "holds an object with 255 keys; Mixpanel takes fewer than 255")
    assert problem(distinct_id="") is None
    assert problem()[0] == "properties.distinct_id"


def expand(ranges: list[str]) -> set[int]:
    return {i for text in ranges for i in range(int(text.split("-")[0]), int(text.split("-")[-1]) + 1)}


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_counts_are_exact_under_a_mix_of_faults(double, env, seed):
    # Faults in a seeded order: what each index is reported as must be what the double holds. Stored means at
    # the double; not stored means absent; only unconfirmed may be either.
    import random

    rng = random.Random(seed)
    n = 10 * 2000
    events = [event(i) for i in range(n)]
    faults = [
        dict(drop=True), dict(status=500), dict(status=503), dict(status=429, headers={"Retry-After": "3600"}),
        dict(status=413, body={"error": "request exceeds max limit"}), dict(drop=True, times=2), dict(status=502, times=2),
    ]
    for fault in rng.sample(faults, k=5):
        double.fail("/import", **fault)
    async with stdio_client({**env, "MIXPANEL_MAX_RETRIES": "1", "MIXPANEL_RETRY_BASE_DELAY": "0"}) as client:
        result = await client.call_tool("track", {"operation": "import", "events": events})
    data = result.structured_content if not result.is_error else None
    at_double = Counter(index_of(e) for e in double.events)
    assert all(count == 1 for count in at_double.values())  # nothing duplicated
    if data is None:  # an error only when nothing at all may be stored
        assert not at_double, result.content[0].text
        return
    unconfirmed = expand(data.get("unconfirmed", {}).get("ranges", []))
    not_stored = expand(data.get("not_stored", {}).get("ranges", []))
    stored = set(range(n)) - unconfirmed - not_stored
    assert data["stored"] == len(stored) and data["stored"] + len(unconfirmed) + len(not_stored) == n
    assert stored <= set(at_double), "reported stored, missing at the double"
    assert not (not_stored & set(at_double)), "reported not stored, stored at the double"
