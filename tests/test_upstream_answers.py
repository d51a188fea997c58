"""Answers that are not what they claim to be (a 200 that is not JSON, a redirect, a 200 carrying an error)
are errors for the agent, never an empty result. Over stdio, against the double's injected answers."""

from __future__ import annotations

import pytest

from tests.conftest import error_text, stdio_client

pytestmark = pytest.mark.asyncio

HTML = "<!doctype html><html><body>Please sign in</body></html>"


async def test_a_200_that_is_not_json_and_a_redirect_are_errors_not_empty_results(double, env):
    double.fail("/api/query/funnels/list", 200, body=HTML, headers={"content-type": "text/html"})
    double.fail("/api/query/events/names", 302, body="", headers={"location": "https://login.example/"})
    double.fail("/api/query/events/names", 200, body="")
    async with stdio_client(env) as client:
        not_json = await client.call_tool("funnels", {"operation": "list"})
        redirected = await client.call_tool("events", {"operation": "names"})
        empty = await client.call_tool("events", {"operation": "names"})

    text = error_text(not_json)
    assert "no saved funnels" not in text
    assert "not Mixpanel's API" in text and "HTML page" in text and "sign in" not in text
    text = error_text(redirected)
    assert "event name(s)" not in text and "a redirect (302)" in text and "login.example" not in text
    assert "it is empty" in error_text(empty)
    assert len(double.received("/api/query/events/names")) == 2  # a redirect is not retried, nor followed


@pytest.mark.parametrize(
    ("tool", "arguments", "path"),
    [
        ("insights", {"bookmark_id": 42}, "/api/query/insights"),
        ("funnels", {"operation": "list"}, "/api/query/funnels/list"),
        ("events", {"operation": "names"}, "/api/query/events/names"),
    ],
)
async def test_a_200_with_an_error_body_is_a_failure_on_query_endpoints(double, env, tool, arguments, path):
    double.fail(path, 200, body={"request": path, "error": "bookmark not found in project"})
    async with stdio_client(env) as client:
        result = await client.call_tool(tool, arguments)
    text = error_text(result)
    assert "bookmark not found in project" in text and "with an error instead of a result" in text


async def test_arguments_too_long_for_a_url_are_refused_before_sending_not_an_internal_error(double, env):
    long_value = "x" * 70_000  # past the 64 KB an HTTP client allows in a URL's query
    async with stdio_client(env) as client:
        result = await client.call_tool(
            "flags", {"operation": "evaluate", "distinct_id": "u1", "custom_properties": {"plan": long_value}}
        )
    text = error_text(result)
    assert "Not sent to Mixpanel" in text and "longer than HTTP allows" in text and "Error executing tool" not in text
    assert len(text) < 400 and not double.received()
