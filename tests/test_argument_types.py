"""A boolean is never a number: pydantic's lax mode once read `bookmark_id: true` and `limit: true` as 1, so an
agent that mixed up two arguments got a report it never asked for instead of an error."""

from __future__ import annotations

import pytest

from tests.conftest import error_text, stdio_client

pytestmark = pytest.mark.asyncio


@pytest.mark.parametrize(
    ("tool", "arguments", "field"),
    [
        ("insights", {"bookmark_id": True}, "bookmark_id"),
        ("events", {"operation": "top", "limit": True}, "limit"),
        ("funnels", {"operation": "query", "funnel_id": True, "from_date": "2026-01-01", "to_date": "2026-01-31"}, "funnel_id"),
        ("export", {"operation": "profiles", "limit": False}, "limit"),
        ("annotations", {"operation": "get", "annotation_id": True}, "annotation_id"),
    ],
)
async def test_a_boolean_is_refused_where_a_number_is_expected(double, env, tool, arguments, field):
    async with stdio_client(env) as client:
        result = await client.call_tool(tool, arguments)
    text = error_text(result)
    assert f"- {field}: must be a number, not {str(arguments[field]).lower()}. Example: 12" in text
    assert double.received() == []


async def test_a_list_of_ids_with_a_boolean_is_refused_and_numbers_as_text_still_pass(double, env):
    async with stdio_client(env) as client:
        tags = await client.call_tool(
            "annotations", {"operation": "create", "date": "2026-01-05", "description": "launch", "tags": [3, True]}
        )
        as_text = await client.call_tool("events", {"operation": "top", "limit": "3"})
    assert "tags: must be a list of numbers, without true or false" in error_text(tags)
    assert not as_text.is_error  # a number sent as text is still read, as before
