"""The audit log: one JSON line per tool call, allowed or denied, with what it touched (never a property
value), the decision, the outcome, upstream work, and one plain-English sentence."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pytest

from mixpanel_mcp.audit import Record, date_span
from tests.conftest import error_text, stored_event, structured
from tests.harness import audit_records, base_env, http_client, http_server, policy_file, stdio

FIELDS = {"time", "agent", "tool", "operation", "project", "touched", "access", "decision", "outcome",
          "upstream_requests", "retries", "duration_s", "sentence"}


@pytest.mark.asyncio
async def test_one_record_per_call_with_what_it_touched_and_a_sentence(double, env, tmp_path):
    log = tmp_path / "audit.jsonl"
    double.events.extend(
        [
            stored_event("Viewed page", "u1", "2026-01-05T10:00:00"),
            stored_event("Signed up", "u1", "2026-01-06T10:00:00"),
        ]
    )
    double.fail("/api/query/funnels/list", 503, times=1)
    when = int(time.time()) - 86_400 * 30
    async with stdio(env, "--audit-log", str(log)) as client:
        report = await client.call_tool(
            "funnels", {"operation": "query", "funnel_id": 7509, "from_date": "2026-01-01", "to_date": "2026-01-31"}
        )
        listed = await client.call_tool("funnels", {"operation": "list"})  # a 503, retried
        imported = await client.call_tool(
            "track",
            {
                "operation": "import",
                "events": [
                    {"event": "Purchase", "properties": {"distinct_id": "u1", "time": when, "plan": "PLAN-VALUE-XYZ"}},
                    {"event": "Purchase", "properties": {"distinct_id": "u2", "time": when, "email": "a@example.com"}},
                    {"event": "Refund", "properties": {"distinct_id": "u2", "time": when}},
                ],
            },
        )
        invalid = await client.call_tool("segmentation", {"operation": "segment", "event": "X", "from_date": "soon"})
    structured(report), structured(listed), structured(imported), error_text(invalid)

    records = audit_records(log)
    assert [r["tool"] for r in records] == ["funnels", "funnels", "track", "segmentation"]
    funnel, lists, sent, bad = records
    assert FIELDS <= set(funnel)
    assert funnel["agent"] == "local" and funnel["operation"] == "query" and funnel["project"] == 1234
    assert funnel["touched"] == {"from_date": "2026-01-01", "to_date": "2026-01-31", "funnel_id": 7509}
    assert (funnel["access"], funnel["decision"], funnel["outcome"]) == ("read", "allowed", "ok")
    assert (funnel["upstream_requests"], funnel["retries"]) == (1, 0)
    assert re.fullmatch(
        r"agent local ran a funnel report on project 1234 for 2026-01-01\.\.31: allowed, ok in \d+\.\d+ s",
        funnel["sentence"],
    ), funnel["sentence"]
    assert (lists["upstream_requests"], lists["retries"], lists["outcome"]) == (2, 1, "ok")
    assert lists["sentence"].startswith("agent local listed saved funnels on project 1234: allowed, ok in ")
    assert sent["touched"] == {"events": ["Purchase", "Refund"], "records": 3}
    assert sent["access"] == "write"
    assert sent["sentence"].startswith("agent local imported 3 event(s) on project 1234: allowed, ok in ")
    assert (bad["outcome"], bad["error"], bad["upstream_requests"]) == ("error", "invalid_arguments", 0)
    text = log.read_text()
    for value in ("PLAN-VALUE-XYZ", "a@example.com", "u1", "u2"):  # property values and ids stay out
        assert value not in text
    assert len(text.splitlines()) == 4


@pytest.mark.asyncio
async def test_denied_calls_are_recorded_with_the_reason(double, env, tmp_path):
    log = tmp_path / "audit.jsonl"
    policy = policy_file(tmp_path, '[local]\naccess = { lexicon = "read", segmentation = "read" }\n')
    async with stdio(env, "--policy", str(policy), "--audit-log", str(log)) as client:
        await client.call_tool("lexicon", {"operation": "delete", "entity_type": "event", "name": "Signed up"})
        await client.call_tool("engage", {"operation": "delete", "distinct_id": "u1"})
        await client.call_tool("no_such_tool", {})
    assert double.received() == []
    lexicon, engage, unknown = audit_records(log)
    assert (lexicon["decision"], lexicon["outcome"], lexicon["access"]) == ("denied", "refused", "destructive")
    assert lexicon["reason"] == "lexicon is 'read' for this agent; delete is a destructive operation"
    assert lexicon["sentence"] == (
        "agent local asked to delete Lexicon schemas on project 1234: denied "
        "(lexicon is 'read' for this agent; delete is a destructive operation)"
    )
    assert (engage["tool"], engage["decision"], engage["reason"]) == ("engage", "denied", "engage is not available to this agent")
    assert (unknown["tool"], unknown["reason"]) == ("no_such_tool", "no such tool")


@pytest.mark.asyncio
async def test_confirmation_and_upstream_failures_are_recorded(double, env, tmp_path):
    log = tmp_path / "audit.jsonl"
    double.fail("/engage", 401, body={"error": "Invalid token"}, times=1)
    double.fail("/api/query/events/names", 500, times=10)
    async with stdio(env, "--audit-log", str(log)) as client:
        refused = await client.call_tool("engage", {"operation": "delete", "distinct_id": "u1"})
        code = refused.structured_content["confirm"]
        await client.call_tool("engage", {"operation": "delete", "distinct_id": "u1", "confirm": code})
        await client.call_tool("events", {"operation": "names"})
    asked, rejected, broken = audit_records(log)
    assert (asked["decision"], asked["reason"], asked["upstream_requests"]) == (
        "denied", "destructive: needs confirmation", 0
    )
    assert asked["sentence"].startswith("agent local asked to delete a user profile on project 1234: denied")
    assert code not in log.read_text()
    assert (rejected["decision"], rejected["reason"]) == ("allowed", "confirmed with a one-time code")
    assert (rejected["outcome"], rejected["error"], rejected["upstream_status"]) == ("error", "authentication", 401)
    assert re.fullmatch(
        r"agent local deleted a user profile on project 1234: allowed, failed \(authentication, Mixpanel answered 401\) in \d+\.\d+ s",
        rejected["sentence"],
    )
    assert (broken["error"], broken["upstream_status"], broken["upstream_requests"], broken["retries"]) == (
        "server", 500, 5, 4
    )


@pytest.mark.asyncio
async def test_no_audit_log_without_the_flag(double, env, tmp_path):
    async with stdio(env, errlog=(tmp_path / "err.log").open("w")) as client:
        await client.call_tool("funnels", {"operation": "list"})
    assert '"sentence"' not in (tmp_path / "err.log").read_text()


def test_date_spans_are_short_and_unambiguous():
    assert date_span("2026-01-01", "2026-01-31") == "2026-01-01..31"
    assert date_span("2026-01-01", "2026-02-15") == "2026-01-01..02-15"
    assert date_span("2025-12-01", "2026-01-05") == "2025-12-01..2026-01-05"
    assert date_span("2026-03-04", "2026-03-04") == "2026-03-04"


def test_a_record_is_one_json_line_and_refusals_before_any_tool_read_plainly():
    record = Record(agent="(unauthenticated)", tool=None, decision="denied", outcome="refused", reason="no bearer key")
    record.remote = "10.0.0.7"
    line = record.line()
    assert "\n" not in line
    data = json.loads(line)
    assert data["sentence"] == "a request from 10.0.0.7 was refused: no bearer key"
    assert "tool" not in data  # absent fields are left out, not null


# -- a log that cannot be written (/dev/full: opens, then every write fails as on a full disk) ----------------

FULL = "/dev/full"
needs_dev_full = pytest.mark.skipif(not os.path.exists(FULL), reason="needs /dev/full (Linux)")


@needs_dev_full
@pytest.mark.asyncio
async def test_hosted_calls_stop_when_the_audit_log_cannot_be_written(double, env, tmp_path):
    policy = policy_file(tmp_path, '[local]\naccess = { funnels = "read" }\n')
    with http_server(base_env(**env), "--policy", str(policy), "--audit-log", FULL, log_dir=tmp_path) as served:
        async with http_client(served.url) as client:
            first = await client.call_tool("funnels", {"operation": "list"})
            second = await client.call_tool("funnels", {"operation": "list"})
        log = served.log.read_text()
    assert first.is_error is False  # it ran before anyone knew the log was full
    assert second.is_error is True
    assert error_text(second).startswith("Not done: the server's audit log cannot be written")
    assert "Could not write the audit log /dev/full" in log and "calls are refused" in log


@needs_dev_full
@pytest.mark.asyncio
async def test_local_calls_go_on_when_the_audit_log_cannot_be_written_unless_told_otherwise(double, env, tmp_path):
    async with stdio(env, "--audit-log", FULL) as client:
        answers = [await client.call_tool("funnels", {"operation": "list"}) for _ in range(2)]
    assert [a.is_error for a in answers] == [False, False]
    async with stdio({**env, "MIXPANEL_MCP_AUDIT_FAIL_CLOSED": "1"}, "--audit-log", FULL) as client:
        answers = [await client.call_tool("funnels", {"operation": "list"}) for _ in range(2)]
    assert [a.is_error for a in answers] == [False, True]
    assert error_text(answers[1]).startswith("Not done: the server's audit log cannot be written")


def test_an_unclear_fail_closed_setting_stops_the_server(env, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "mixpanel_mcp", "--audit-log", str(tmp_path / "a.jsonl")],
        env=base_env(**env, MIXPANEL_MCP_AUDIT_FAIL_CLOSED="maybe"),
        capture_output=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert 'MIXPANEL_MCP_AUDIT_FAIL_CLOSED must be 1 or 0 (true or false), not "maybe"' in done.stderr.decode()
