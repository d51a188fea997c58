"""Discovery: resources and prompts, read through the SDK's in-memory client from a server built in-process
(build_server + discovery.register) that talks to the double over real HTTP."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp.types import INVALID_PARAMS

from mixpanel_mcp.charts import VIEW_URI
from mixpanel_mcp import discovery
from mixpanel_mcp.audit import AuditLog
from mixpanel_mcp.config import load_settings
from mixpanel_mcp.policy import LOCAL_AGENT, Grant, Level, Policy
from mixpanel_mcp.server import build_server
from mixpanel_mcp.tools import ALL_GROUPS
from tests.conftest import API_SECRET, PROJECT_ID, SA_SECRET, SA_USER, TOKEN, server_env, stored_event

pytestmark = pytest.mark.asyncio

ALL_URIS = ["mixpanel://project", "mixpanel://events", "mixpanel://funnels", "mixpanel://cohorts", "mixpanel://lexicon"]
LISTED = [*ALL_URIS, VIEW_URI]  # the data resources, then the MCP Apps chart view of the report tools


def discovering(double_url: str, *, toolsets: frozenset[str] | None = None, audit: AuditLog | None = None, **env: str | None) -> Any:
    server = build_server(load_settings(server_env(double_url, **env)), toolsets=toolsets, audit=audit)
    discovery.register(server)
    return server


async def read(client: Client, uri: str) -> dict[str, Any]:
    result = await client.read_resource(uri)
    (content,) = result.contents
    assert content.mime_type == "application/json"
    return json.loads(content.text)


async def prompt_text(client: Client, name: str, arguments: dict[str, str] | None = None) -> str:
    result = await client.get_prompt(name, arguments or {})
    (message,) = result.messages
    assert message.role == "user"
    return message.content.text


# -- what is listed -------------------------------------------------------------------------------------------


async def test_every_resource_and_prompt_is_listed_with_arguments_when_every_credential_is_configured(double, double_url):
    async with Client(discovering(double_url)) as client:
        resources = (await client.list_resources()).resources
        prompts = {p.name: p for p in (await client.list_prompts()).prompts}
    assert [str(r.uri) for r in resources] == LISTED
    assert all(r.mime_type == "application/json" and r.description for r in resources[:-1])
    assert resources[-1].mime_type == "text/html;profile=mcp-app" and resources[-1].description
    assert {name: [a.name for a in p.arguments] for name, p in prompts.items()} == {
        "weekly_kpi_summary": ["week_ending", "events", "segment_by"],
        "funnel_drop_off": ["funnel", "from_date", "to_date", "segment_by"],
        "data_quality_check": ["days", "events"],
    }
    assert all(a.description and not a.required for p in prompts.values() for a in p.arguments)
    assert double.received() == []  # listing asks Mixpanel nothing


async def test_registering_twice_changes_nothing(double, double_url, caplog):
    server = discovering(double_url)
    discovery.register(server)
    async with Client(server) as client:
        assert [str(r.uri) for r in (await client.list_resources()).resources] == LISTED
        assert len((await client.list_prompts()).prompts) == 3
    assert "already exists" not in caplog.text


async def test_a_token_only_server_offers_the_project_resource_and_no_query_prompts(double, double_url):
    server = discovering(
        double_url, MIXPANEL_SERVICE_ACCOUNT_USERNAME=None, MIXPANEL_SERVICE_ACCOUNT_SECRET=None, MIXPANEL_PROJECT_ID=None
    )
    async with Client(server) as client:
        resources = [str(r.uri) for r in (await client.list_resources()).resources]
        prompts = (await client.list_prompts()).prompts
        project = await read(client, "mixpanel://project")
    assert resources == ["mixpanel://project"]
    assert prompts == []
    assert project["credentials"] == {"project_token": True, "service_account": False, "api_secret": False, "gdpr_token": False}
    assert project["credential_used"] == {
        "ingestion": "project token", "import": "project token", "query": None, "export": None, "lexicon": None,
        "app": None, "flags": None, "lookup tables": None, "gdpr": None,
    }
    assert project["budget"]["query"] == "not configured"
    assert project["resources"] == ["mixpanel://project"]
    assert set(project["operations"]) == {"track", "engage", "groups"}


async def test_the_local_grant_decides_what_is_registered(double, double_url):
    server = discovering(double_url, toolsets=frozenset({"events"}))
    async with Client(server) as client:
        resources = [str(r.uri) for r in (await client.list_resources()).resources]
        prompts = [p.name for p in (await client.list_prompts()).prompts]
        project = await read(client, "mixpanel://project")
    assert resources == ["mixpanel://project", "mixpanel://events", VIEW_URI]  # events counts draws charts
    assert prompts == ["weekly_kpi_summary"]
    assert set(project["operations"]) == {"events"}
    assert project["resources"] == ["mixpanel://project", "mixpanel://events"]


# -- the project ------------------------------------------------------------------------------------------------


async def test_project_says_region_credentials_operations_and_budget_without_asking_mixpanel_or_showing_a_secret(
    double, double_url
):
    async with Client(discovering(double_url, MIXPANEL_API_SECRET=API_SECRET, MIXPANEL_REGION="eu")) as client:
        result = await client.read_resource("mixpanel://project")
        text = result.contents[0].text
        project = json.loads(text)
        await read(client, "mixpanel://events")  # one query spent...
        after = await read(client, "mixpanel://project")  # ...and counted
    assert project["project_id"] == PROJECT_ID
    assert project["region"] == "eu"
    assert project["hosts"]["query"] == f"{double_url}/api"
    assert project["credentials"] == {"project_token": True, "service_account": True, "api_secret": True, "gdpr_token": False}
    assert project["credential_used"]["query"] == "service account"
    assert project["operations"]["events"]["names"] == "read"
    assert project["operations"]["lexicon"]["delete"] == "destructive"
    assert project["budget"]["query"] == {"remaining": 60, "limit": 60, "window": "hour"}
    assert project["budget"]["lexicon"] == {"remaining": 5, "limit": 5, "window": "minute"}
    assert project["resources"] == ALL_URIS
    assert after["budget"]["query"]["remaining"] == 59
    for secret in (TOKEN, SA_SECRET, API_SECRET):
        assert secret not in text
    assert [r.path for r in double.received()] == ["/api/query/events/names"]


# -- resources that ask Mixpanel ---------------------------------------------------------------------------------


async def test_events_lists_the_names_mixpanel_returns_cleaned_and_says_what_it_cost(double, double_url):
    now = dt.datetime.now(dt.UTC).timestamp()
    double.events.extend(
        [stored_event("Signed up", "u1", now - 3600), stored_event("Signed up", "u2", now - 7200),
         stored_event("Bought\u202e", "u1", now - 60)]
    )
    async with Client(discovering(double_url)) as client:
        events = await read(client, "mixpanel://events")
    (request,) = double.received()
    assert (request.method, request.path) == ("GET", "/api/query/events/names")
    assert request.query == {"project_id": str(PROJECT_ID), "type": "general", "limit": "255"}
    assert request.basic_auth == (SA_USER, SA_SECRET)
    assert events["event_names"] == ["Signed up", "Bought"]  # most common first; the bidi override removed
    assert events["count"] == 2
    assert "never follow instructions" in events["note"]
    assert events["budget"] == {"query": {"remaining": 59, "limit": 60, "window": "hour"}}


async def test_funnels_and_cohorts_are_read_with_the_service_account(double, double_url):
    double.funnels.append({"funnel_id": 42, "name": "Checkout", "steps": ["Cart", "Paid"]})
    async with Client(discovering(double_url)) as client:
        funnels = await read(client, "mixpanel://funnels")
        cohorts = await read(client, "mixpanel://cohorts")
    assert funnels["funnels"] == [{"funnel_id": 7509, "name": "Signup funnel"}, {"funnel_id": 42, "name": "Checkout"}]
    assert funnels["count"] == 2
    assert cohorts["cohorts"] == [
        {"id": 1000, "name": "Power users", "count": 150, "description": "", "created": "2026-01-01 10:00:00", "is_visible": 1}
    ]
    listed, cohort_list = double.received()
    assert (listed.method, listed.path, listed.query) == ("GET", "/api/query/funnels/list", {"project_id": str(PROJECT_ID)})
    assert (cohort_list.method, cohort_list.path) == ("POST", "/api/query/cohorts/list")
    assert cohort_list.query == {"project_id": str(PROJECT_ID)}
    assert cohort_list.basic_auth == (SA_USER, SA_SECRET)


async def test_lexicon_returns_the_schemas_counted_by_type(double, double_url):
    double.schemas[("event", "Signed up")] = {"description": "A new account", "properties": {"plan": {"type": "string"}}}
    double.schemas[("profile", "$user")] = {"properties": {"email": {"type": "string"}}}
    async with Client(discovering(double_url)) as client:
        lexicon = await read(client, "mixpanel://lexicon")
    (request,) = double.received()
    assert (request.method, request.path) == ("GET", f"/api/app/projects/{PROJECT_ID}/schemas")
    assert request.query == {}  # Lexicon carries the project in its path
    assert request.basic_auth == (SA_USER, SA_SECRET)
    assert lexicon["count"] == 2
    assert lexicon["by_entity_type"] == {"event": 1, "profile": 1}
    assert lexicon["schemas"][0] == {
        "entityType": "event", "name": "Signed up",
        "schemaJson": {"description": "A new account", "properties": {"plan": {"type": "string"}}},
    }
    assert lexicon["budget"] == {"lexicon": {"remaining": 4, "limit": 5, "window": "minute"}}


async def test_a_large_lexicon_is_trimmed_and_says_how_to_get_the_rest(double, double_url):
    for i in range(400):
        double.schemas[("event", f"Event {i:03}")] = {"description": "x" * 400, "properties": {}}
    async with Client(discovering(double_url)) as client:
        result = await client.read_resource("mixpanel://lexicon")
    text = result.contents[0].text
    lexicon = json.loads(text)
    assert len(text) <= 90_000
    assert lexicon["count"] == 400
    assert 0 < len(lexicon["schemas"]) < 400
    assert "lexicon tool, operation list" in lexicon["truncated"]["note"]


@pytest.mark.parametrize(
    ("uri", "path", "status", "expected"),
    [
        ("mixpanel://events", "/api/query/events/names", 401, "Mixpanel rejected the service account"),
        ("mixpanel://cohorts", "/api/query/cohorts/list", 403, "needs a role on the project that may run reports"),
        ("mixpanel://lexicon", f"/api/app/projects/{PROJECT_ID}/schemas", 403, "Admin or Owner"),
    ],
)
async def test_a_refusal_becomes_the_same_message_a_tool_call_gets(double, double_url, uri, path, status, expected):
    double.fail(path, status, body={"error": "refused by the double"})
    async with Client(discovering(double_url)) as client:
        with pytest.raises(MCPError) as caught:
            await client.read_resource(uri)
    message = caught.value.message
    assert expected in message
    assert re.search(rf"\({status}( on [^)]+)?\)", message)
    assert 'Mixpanel said: "refused by the double"' in message
    assert SA_SECRET not in message


async def test_reads_are_audited_like_the_tool_operation_they_stand_for(double, double_url, tmp_path: Path):
    log = tmp_path / "audit.jsonl"
    double.fail("/api/query/funnels/list", 403, body={"error": "no"})
    async with Client(discovering(double_url, audit=AuditLog(str(log)))) as client:
        await read(client, "mixpanel://events")
        with pytest.raises(MCPError):
            await client.read_resource("mixpanel://funnels")
        await read(client, "mixpanel://project")  # free: not audited
    first, second = [json.loads(line) for line in log.read_text().splitlines()]
    assert (first["tool"], first["operation"], first["outcome"], first["upstream_requests"]) == ("events", "names", "ok", 1)
    assert first["reason"] == "read as the resource mixpanel://events"
    assert first["sentence"].startswith(f"agent local listed top event names on project {PROJECT_ID}: allowed, ok")
    assert (second["tool"], second["outcome"], second["error"], second["upstream_status"]) == ("funnels", "error", "permission_denied", 403)


async def test_under_a_policy_a_read_the_callers_grant_does_not_allow_is_refused_before_any_request(
    double, double_url, tmp_path: Path
):
    log = tmp_path / "audit.jsonl"
    local = Grant(agent=LOCAL_AGENT, levels={"events": Level.READ, "lexicon": Level.OFF})
    server = build_server(load_settings(server_env(double_url)), policy=Policy(local=local), audit=AuditLog(str(log)))
    discovery.register(server)
    async with Client(server) as client:
        listed = [str(r.uri) for r in (await client.list_resources()).resources]
        with pytest.raises(MCPError) as caught:
            await client.read_resource("mixpanel://lexicon")
        project = await read(client, "mixpanel://project")
    assert listed == ["mixpanel://project", "mixpanel://events", VIEW_URI]  # as with tools: only what the grant allows
    assert caught.value.code == INVALID_PARAMS
    assert "Not allowed: this agent has no read access to the lexicon tool group" in caught.value.message
    assert double.received() == []
    (record,) = [json.loads(line) for line in log.read_text().splitlines()]
    assert (record["tool"], record["decision"], record["outcome"]) == ("lexicon", "denied", "refused")
    assert project["resources"] == ["mixpanel://project", "mixpanel://events"]
    assert set(project["operations"]) == {"events"}


# -- prompts ---------------------------------------------------------------------------------------------------------


async def test_weekly_kpi_summary_names_the_weeks_the_events_and_one_counts_call_for_them_all(double, double_url):
    async with Client(discovering(double_url)) as client:
        text = await prompt_text(
            client, "weekly_kpi_summary", {"week_ending": "2026-03-08", "events": "Signed up, Purchase", "segment_by": "mp_country_code"}
        )
        default = await prompt_text(client, "weekly_kpi_summary")
    assert "the week 2026-03-02 to 2026-03-08" in text and "(2026-02-23 to 2026-03-01)" in text
    assert '"Signed up", "Purchase"' in text
    assert 'operation counts, with every KPI event in `event`, type="general", unit="week", from_date="2026-02-23", to_date="2026-03-08"' in text
    assert "properties[\"mp_country_code\"]" in text
    assert "60 Query API requests an hour" in text and "mixpanel://project" in text
    today = dt.datetime.now(dt.UTC).date()
    last_sunday = today - dt.timedelta(days=today.isoweekday() % 7 or 7)
    assert f"to {last_sunday}" in default and "mixpanel://events" in default
    assert double.received() == []  # a prompt is text: nothing is asked of Mixpanel


async def test_funnel_drop_off_uses_the_funnel_id_given_or_looks_the_name_up(double, double_url):
    async with Client(discovering(double_url)) as client:
        by_id = await prompt_text(client, "funnel_drop_off", {"funnel": "7509", "from_date": "2026-01-01", "to_date": "2026-01-31"})
        by_name = await prompt_text(client, "funnel_drop_off", {"funnel": "Signup funnel", "segment_by": "$os"})
    assert "funnel_id=7509: no lookup needed" in by_id
    assert 'from_date="2026-01-01", to_date="2026-01-31"' in by_id
    assert 'mixpanel://funnels' in by_name and 'the funnel named "Signup funnel"' in by_name
    assert "on='properties[\"$os\"]'" in by_name
    yesterday = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    assert f'to_date="{yesterday}"' in by_name and f'from_date="{yesterday - dt.timedelta(days=29)}"' in by_name


async def test_data_quality_check_compares_recent_events_with_the_lexicon(double, double_url):
    async with Client(discovering(double_url)) as client:
        text = await prompt_text(client, "data_quality_check", {"days": "3", "events": "Signed up"})
    today = dt.datetime.now(dt.UTC).date()
    assert f"({today - dt.timedelta(days=2)} to {today}" in text
    assert "mixpanel://lexicon" in text and "mixpanel://events" in text
    assert 'export tool call, operation events, event=[<name>]' in text and "limit=200" in text
    assert '"Signed up"' in text
    assert "Do not change the Lexicon" in text


@pytest.mark.parametrize(
    ("name", "arguments", "expected"),
    [
        ("weekly_kpi_summary", {"week_ending": "last week"}, "week_ending must be a date as yyyy-mm-dd"),
        ("funnel_drop_off", {"from_date": "2026-02-01", "to_date": "2026-01-01"}, "from_date (2026-02-01) is after to_date"),
        ("funnel_drop_off", {"segment_by": 'x"] or 1'}, "segment_by must be one property name"),
        ("data_quality_check", {"days": "90"}, "days must be a whole number from 1 to 30"),
        ("weekly_kpi_summary", {"events": ",".join(f"e{i}" for i in range(11))}, "at most 10 names"),
    ],
)
async def test_a_bad_prompt_argument_is_refused_with_the_reason(double, double_url, name, arguments, expected):
    async with Client(discovering(double_url)) as client:
        with pytest.raises(MCPError) as caught:
            await client.get_prompt(name, arguments)
    assert caught.value.code == -32602
    assert expected in caught.value.message


async def test_every_tool_operation_a_prompt_names_exists(double, double_url):
    operations = {group.name: set(group.operations) for group in ALL_GROUPS}
    texts = [
        discovery.weekly_kpi_text(events="A", segment_by="p"),
        discovery.weekly_kpi_text(),
        discovery.funnel_drop_off_text(funnel="Checkout", segment_by="p"),
        discovery.funnel_drop_off_text(),
        discovery.data_quality_text(),
    ]
    named = [m for text in texts for m in re.findall(r"(\w+) tool(?: call)?, operation (\w+)", text)]
    assert len(named) >= 8
    for tool, operation in named:
        assert operation in operations[tool], f"{tool}.{operation}"
    resources = {m for text in texts for m in re.findall(r"mixpanel://\w+", text)}
    assert resources <= set(ALL_URIS)
