"""jql: a script and its params reach Mixpanel as a form body, and the rows reach the agent."""

import json

import pytest

from tests.conftest import PROJECT_ID, SA_SECRET, SA_USER, error_text, stdio_client, stored_event, structured

pytestmark = pytest.mark.asyncio

ECHO = "function main() {\n  return [params];\n}"
COUNT = 'function main() {\n  return Events(params)\n    .groupBy(["name"], mixpanel.reducer.count());\n}'


def assert_jql_request(request) -> dict:
    assert request.method == "POST"
    assert request.path == "/api/query/jql"
    assert request.query == {"project_id": str(PROJECT_ID)}
    assert request.basic_auth == (SA_USER, SA_SECRET)
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    return request.form


async def test_script_and_params_are_form_encoded_and_rows_returned(double, env):
    double.events.extend(
        [
            stored_event("Signed up", "a", "2026-01-05T10:00"),
            stored_event("Opened app", "a", "2026-01-05T11:00"),
            stored_event("Opened app", "b", "2026-01-06T23:59"),
            stored_event("Opened app", "b", "2026-01-07T00:00"),  # after to_date
        ]
    )
    params = {"from_date": "2026-01-05", "to_date": "2026-01-06", "label": "café & co = 1"}
    async with stdio_client(env) as client:
        echoed = await client.call_tool("jql", {"script": ECHO, "params": params})
        counted = await client.call_tool("jql", {"script": COUNT, "params": json.dumps(params)})
        bare = await client.call_tool("jql", {"script": ECHO})
    first, second, third = double.received("/api/query/jql")

    form = assert_jql_request(first)
    assert set(form) == {"script", "params"}
    assert form["script"] == ECHO
    assert json.loads(form["params"]) == params
    assert b"script=function+main%28%29" in first.body and b"caf%C3%A9+%26+co+%3D+1" in first.body
    data = structured(echoed)
    assert data == {"rows": 1, "results": [params], "budget": {"query": {"remaining": 59, "limit": 60, "window": "hour"}}}
    assert echoed.content[0].text.startswith(
        'JQL returned 1 row(s); first: {"from_date":"2026-01-05","to_date":"2026-01-06","label":"café & co = 1"}'
    )

    # params given as a JSON string are sent as the same JSON object.
    form = assert_jql_request(second)
    assert form["script"] == COUNT and json.loads(form["params"]) == params
    data = structured(counted)
    assert data == {
        "rows": 2,
        "results": [{"key": ["Opened app"], "value": 2}, {"key": ["Signed up"], "value": 1}],
        "budget": {"query": {"remaining": 58, "limit": 60, "window": "hour"}},
    }
    assert counted.content[0].text.startswith('JQL returned 2 row(s); first: {"key":["Opened app"],"value":2}')

    # No params: no params field at all.
    form = assert_jql_request(third)
    assert form == {"script": ECHO}
    assert structured(bare) == {"rows": 1, "results": [None], "budget": {"query": {"remaining": 57, "limit": 60, "window": "hour"}}}


async def test_refused_script_retry_and_invalid_arguments(double, env):
    async with stdio_client(env) as client:
        tool = next(t for t in (await client.list_tools()).tools if t.name == "jql")
        unknown = await client.call_tool("jql", {"script": "function main() { return People(); }"})
        double.fail("/api/query/jql", 502)
        retried = await client.call_tool("jql", {"script": ECHO, "params": {"n": 1}})
        empty = await client.call_tool("jql", {"script": ""})
        extra = await client.call_tool("jql", {"script": ECHO, "operation": "run"})
        not_object = await client.call_tool("jql", {"script": ECHO, "params": [1, 2]})

    assert "maintenance mode" in tool.description and "2-minute" in tool.description
    assert tool.annotations.read_only_hint is True and tool.annotations.destructive_hint is False
    assert "operation" not in tool.input_schema["properties"]

    text = error_text(unknown)
    assert text.startswith("Mixpanel rejected the request (400 on /jql). Mixpanel said: \"the Mixpanel double cannot run")

    # 400 once (never retried), then 502 + 200 for the retried read-only POST.
    requests = double.received("/api/query/jql")
    assert len(requests) == 3
    assert requests[1].form == requests[2].form == {"script": ECHO, "params": '{"n":1}'}
    assert structured(retried) == {"rows": 1, "results": [{"n": 1}], "budget": {"query": {"remaining": 57, "limit": 60, "window": "hour"}}}

    for result, field in ((empty, "script"), (extra, "operation"), (not_object, "params")):
        text = error_text(result)
        assert text.startswith("Invalid arguments for jql; nothing was sent to Mixpanel.") and f"- {field}:" in text, text
    assert len(double.received()) == 3
