"""Planted canary credentials (and an agent key) never show up in logs, the audit log, errors, results or
tracebacks, raw or encoded, whatever Mixpanel does: 401s that echo them, 500s, timeouts, junk, crashes."""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, quote_plus

import httpx2
import pytest
from mcp import Client

from mixpanel_mcp.config import load_settings
from mixpanel_mcp.double import DoubleState, Project, running
from mixpanel_mcp.server import SecretFilter, build_server
from mixpanel_mcp.text import secret_forms
from tests.conftest import stored_event
from tests.harness import agent, audit_records, base_env, http_client, http_server, policy_file, post, rpc, stdio

TOKEN = "CANARYtok3n9f2a7c1e"
SA_USER = "canary.5e1d.mp-service-account"
SA_SECRET = "CANARYs3cr3t4b8d0e6f"
API_SECRET = "CANARYap1s3cr3t7a9c"
AGENT_KEY = "mxp_CANARYag3ntk3y5d2e8b1f"
CANARIES = (TOKEN, SA_SECRET, API_SECRET, AGENT_KEY)
PROJECT = Project(project_id=4321, token=TOKEN, sa_username=SA_USER, sa_secret=SA_SECRET, api_secret=API_SECRET)


def leaked_forms() -> dict[str, str]:
    """Every way a canary could be written: raw, URL-encoded, base64 alone and inside Basic auth."""
    forms = {}
    for secret in CANARIES:
        forms[secret] = secret
        forms[f"urlencoded {secret}"] = quote(secret, safe="")
        forms[f"plus-encoded {secret}"] = quote_plus(secret)
        forms[f"base64 {secret}"] = base64.b64encode(secret.encode()).decode().rstrip("=")
        for user in (SA_USER, ""):
            forms[f"basic {user}:{secret}"] = base64.b64encode(f"{user}:{secret}".encode()).decode().rstrip("=")
        forms[f"basic {secret}:"] = base64.b64encode(f"{secret}:".encode()).decode().rstrip("=")
    return forms


def assert_clean(where: str, text: str) -> None:
    found = [name for name, form in leaked_forms().items() if form in text]
    assert not found, f"{where} contains {found}"


def canary_env(url: str, **extra: str) -> dict[str, str]:
    return {
        "MIXPANEL_PROJECT_TOKEN": TOKEN,
        "MIXPANEL_PROJECT_ID": str(PROJECT.project_id),
        "MIXPANEL_SERVICE_ACCOUNT_USERNAME": SA_USER,
        "MIXPANEL_SERVICE_ACCOUNT_SECRET": SA_SECRET,
        "MIXPANEL_API_SECRET": API_SECRET,
        "MIXPANEL_INGESTION_URL": url,
        "MIXPANEL_QUERY_URL": f"{url}/api",
        "MIXPANEL_EXPORT_URL": f"{url}/api/2.0",
        "MIXPANEL_RETRY_BASE_DELAY": "0.01",
        "MIXPANEL_MAX_RETRIES": "1",
        "MIXPANEL_TIMEOUT": "1",
        "MIXPANEL_CACHE_TTL": "0",
        "MIXPANEL_CACHE_TTL_TODAY": "0",
        **extra,
    }


@pytest.fixture(scope="module")
def canary_double() -> Iterator[tuple[DoubleState, str]]:
    state = DoubleState(PROJECT)
    with running(state) as url:
        yield state, url


def dump(result: Any) -> str:
    return json.dumps(result.model_dump(mode="json", by_alias=True), ensure_ascii=False)


@pytest.mark.asyncio
async def test_no_canary_in_logs_audit_errors_or_results_under_failures(canary_double, tmp_path):
    double, url = canary_double
    double.reset()
    double.events.append(stored_event("Signed up", "u1", time.time()))
    names = "/api/query/events/names"
    policy = policy_file(tmp_path, agent("bot", AGENT_KEY, '{ "*" = "full" }', "confirm_destructive = false"))
    log = tmp_path / "audit.jsonl"
    seen: list[str] = []
    with http_server(
        base_env(**canary_env(url)), "--policy", str(policy), "--audit-log", str(log), log_dir=tmp_path
    ) as served:
        async with http_client(served.url, AGENT_KEY) as client:

            async def call(tool: str, arguments: dict[str, Any]) -> None:
                seen.append(dump(await client.call_tool(tool, arguments)))

            await call("events", {"operation": "names"})  # works
            await call("track", {"operation": "track", "events": [{"event": "E", "properties": {"distinct_id": "u"}}]})
            await call("lexicon", {"operation": "list"})
            # A 401 whose body echoes the credential back, as a careless upstream might.
            double.fail(names, 401, body={"error": f"Invalid credentials {SA_USER}:{SA_SECRET} token={TOKEN}"})
            await call("events", {"operation": "names", "limit": 1})
            double.fail("/engage", 401, body=f"bad token {TOKEN}")
            await call("engage", {"operation": "delete", "distinct_id": "u1"})
            double.fail(names, 500, times=2, body={"error": f"internal: {API_SECRET}"})
            await call("events", {"operation": "names", "limit": 2})
            double.fail(names, 0, delay=3, times=2)  # stalls past MIXPANEL_TIMEOUT=1
            await call("events", {"operation": "names", "limit": 3})
            double.fail(names, 200, body=f"<html>not json {TOKEN}")
            await call("events", {"operation": "names", "limit": 4})
            await call("jql", {"script": "function main() { return 1 }"})  # whatever the double says
        # Refused requests say nothing about keys either.
        seen.append(post(served.url, rpc("tools/list", {}), key=AGENT_KEY + "x").text)
        seen.append(post(served.url, rpc("tools/list", {})).text)
        stderr = served.stderr()

    assert len(seen) == 11
    assert any("401" in s for s in seen) and any("did not answer in time" in s for s in seen)
    for index, text in enumerate(seen):
        assert_clean(f"result {index}", text)
    assert_clean("server stderr", stderr)
    assert_clean("audit log", log.read_text())
    assert len(audit_records(log)) == 11  # every call and refusal, recorded without a secret
    # The agent key never reached Mixpanel, in any form.
    for request in double.received():
        raw = json.dumps(request.headers) + json.dumps(request.query) + request.body.decode(errors="replace")
        assert AGENT_KEY not in raw and quote(AGENT_KEY, safe="") not in raw


@pytest.mark.asyncio
async def test_a_crash_inside_a_tool_logs_a_scrubbed_traceback_and_tells_the_agent_nothing(caplog, capsys):
    encoded = base64.b64encode(f"{SA_USER}:{SA_SECRET}".encode()).decode()

    def explode(request: httpx2.Request) -> httpx2.Response:
        raise RuntimeError(f"boom {SA_SECRET} {encoded} {quote(TOKEN)} {request.headers.get('authorization')}")

    settings = load_settings(canary_env("https://api.mixpanel.com"))
    server = build_server(settings, transport=httpx2.MockTransport(explode))
    caplog.set_level(logging.INFO)
    async with Client(server) as client:
        result = await client.call_tool("events", {"operation": "names"})
    assert result.is_error is True
    assert result.content[0].text == "Error executing tool events"
    logged = caplog.text + capsys.readouterr().err
    assert "RuntimeError: boom ***" in logged  # the traceback is there, for the operator
    assert "Traceback (most recent call last)" in logged
    assert_clean("log", logged)
    assert_clean("result", dump(result))


def test_the_log_filter_scrubs_every_form_and_keeps_the_rest():
    secret_filter = SecretFilter([SA_SECRET, "abc"])  # too short to scrub safely: left alone
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "sent %s and %s", (SA_SECRET, quote_plus(SA_SECRET)), None)
    try:
        raise ValueError(base64.b64encode(f"{SA_USER}:{SA_SECRET}".encode()).decode())
    except ValueError:
        import sys

        record.exc_info = sys.exc_info()
    assert secret_filter.filter(record) is True
    message = record.getMessage()
    assert message.startswith("sent *** and ***\nTraceback")
    assert "ValueError: " in message and record.exc_info is None
    assert_clean("record", message)
    assert set(secret_forms("s3cr3t/+x")) >= {"s3cr3t/+x", "s3cr3t%2F%2Bx"}


ENCODED_ECHOES = {
    "basic auth of another user": "Authorization: Basic " + base64.b64encode(f"someone:{SA_SECRET}".encode()).decode(),
    "basic auth at an odd offset": base64.b64encode(f"ab:{TOKEN}:".encode()).decode(),
    "url-encoded": "secret=" + quote(API_SECRET + "/+", safe=""),
    "json-escaped": json.dumps({"body": f'{{"token": "{TOKEN}"}}'}),
    "split by a zero-width space": f"{SA_SECRET[:6]}\u200b{SA_SECRET[6:]}",
    "split by a word joiner": f"{TOKEN[:3]}\u2060{TOKEN[3:]}",
}


def assert_nothing_encoded(where: str, text: str) -> None:
    assert_clean(where, text)
    for name, echo in ENCODED_ECHOES.items():
        for secret in (TOKEN, SA_SECRET, API_SECRET):
            for offset in range(3):
                encoded = base64.b64encode(b"x" * offset + secret.encode()).decode()[4:-4]  # the middle, any alignment
                assert encoded not in text, f"{where}: base64 of a secret ({name})"
        assert echo not in text or not any(s in echo for s in (TOKEN, SA_SECRET, API_SECRET)), f"{where}: {name}"
    assert SA_SECRET[6:] not in text and TOKEN[3:] not in text, f"{where}: a split secret"


@pytest.mark.asyncio
async def test_encoded_and_split_secrets_leave_in_no_answer_error_resource_or_log(canary_double, tmp_path):
    """Mixpanel's error text once went out scrubbed of the raw secret only, and successful answers not at all."""
    double, url = canary_double
    double.reset()
    double.events.append(stored_event(f"leak {TOKEN}", "u1", time.time()))  # anyone with the token can write this
    double.events.append(stored_event(f"split {SA_SECRET[:6]}\u200b{SA_SECRET[6:]}", "u1", time.time()))
    names = "/api/query/events/names"
    seen: list[str] = []
    errlog = (tmp_path / "stderr.log").open("w+")
    async with stdio(base_env(**canary_env(url)), errlog=errlog) as client:
        seen.append(dump(await client.call_tool("events", {"operation": "names"})))
        for index, echo in enumerate(ENCODED_ECHOES.values()):
            double.fail(names, 401 if index % 2 else 400, body={"error": echo})
            seen.append(dump(await client.call_tool("events", {"operation": "names", "limit": index + 1})))
        for resource in (await client.list_resources()).resources:
            seen.append(dump(await client.read_resource(resource.uri)))
    errlog.seek(0)
    stderr = errlog.read()
    assert "leak ***" in seen[0] and "split ***" in seen[0]  # the rest of the answer is kept
    assert sum("Mixpanel said" in s for s in seen) == len(ENCODED_ECHOES)
    for index, text in enumerate(seen):
        assert_nothing_encoded(f"result {index}", text)
    assert_nothing_encoded("server stderr", stderr)


def test_the_scrubber_finds_every_form_at_every_alignment():
    from mixpanel_mcp.text import Scrubber

    scrubber = Scrubber([SA_SECRET])
    for before in ("", "a", "ab", "abc", f"{SA_USER}:"):
        for after in ("", ":", "xyz"):
            echoed = base64.b64encode(f"{before}{SA_SECRET}{after}".encode()).decode()
            assert "***" in scrubber.text(echoed) and echoed not in scrubber.text(echoed)
            urlsafe = base64.urlsafe_b64encode(f"{before}{SA_SECRET}{after}".encode()).decode()
            assert urlsafe not in scrubber.text(urlsafe)
    assert scrubber.text(f"x {SA_SECRET[:4]}\u200b\u202e{SA_SECRET[4:]} y") == "x *** y"
    assert scrubber.text(json.dumps(SA_SECRET + '"')) == '"***\\""'
    assert scrubber.text("ordinary words \ud800stay") == "ordinary words stay"
