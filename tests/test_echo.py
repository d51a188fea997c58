"""Errors echo their input bounded: clipped with its length said, on one line, without control or bidi
characters, quoted (a 1 MB date once gave a 1 MB error; a key with a newline forged a line of the error)."""

from __future__ import annotations

import time

import pytest

from tests.conftest import error_text, stdio_client, stored_event, structured
from tests.harness import http_client

pytestmark = pytest.mark.asyncio


async def test_echoed_input_is_clipped_cleaned_and_quoted(double, env):
    forged = "bogus\n- event: looks fine\u202e" + "k" * 20_000
    async with stdio_client(env) as client:
        long_date = await client.call_tool(
            "export", {"operation": "events", "from_date": "2" * 1_000_000, "to_date": "2026-01-01"}
        )
        unknown_key = await client.call_tool("export", {"operation": "events", "from_date": "2026-01-01", forged: 1})
        many = await client.call_tool("track", {"operation": "track", "events": [{"event": 1}] * 500, **{f"x{i}": 1 for i in range(40)}})
    text = error_text(long_date)
    assert len(text) < 1500 and "(1,000,036 characters)" in text  # the message quoting it, in full
    text = error_text(unknown_key)
    assert len(text) < 1500 and "(20,026 characters)" in text
    assert '- "bogus - event: looks fine' in text  # one quoted line, not a line of its own
    assert "\n- event: looks fine" not in text and "\u202e" not in text
    assert len(error_text(many).splitlines()) <= 22 and "more problem(s)" in error_text(many)
    assert double.received() == []


async def test_a_lone_surrogate_in_mixpanels_own_data_is_dropped_and_the_server_carries_on(double, env, http_server):
    """Mixpanel's JSON may hold "\\ud800" (an event name, an error text); such text cannot be encoded, and a reply
    holding it once stopped the stdio server (over HTTP: an empty event stream)."""
    double.events = [stored_event("Signed \ud800up", "u1", time.time())]
    for connect in (lambda: stdio_client(env), lambda: http_client(http_server)):
        double.fail("/api/query/events/names", 400, body={"error": "no event \ud800named so"})
        async with connect() as client:
            refused = await client.call_tool("events", {"operation": "names"})
            names = await client.call_tool("events", {"operation": "names"})
            after = await client.list_tools()  # the server is still there
        assert 'Mixpanel said: "no event named so"' in error_text(refused)
        assert structured(names)["names"] == ["Signed up"]
        assert "events" in [t.name for t in after.tools]
