"""What a slow Mixpanel may cost one tool call: a timed-out query is tried again once at most, the agent is
told what it cost, and every call has an overall deadline (MIXPANEL_CALL_DEADLINE). Over stdio, against the
double holding its answers (the requests wait on an event the test sets at the end, not on a clock)."""

from __future__ import annotations

import threading

import anyio
import pytest

from tests.conftest import error_text, stdio_client

pytestmark = pytest.mark.asyncio


@pytest.fixture
def held(double):
    """Requests that match a fault with this event wait until the test ends."""
    event = threading.Event()
    yield event
    event.set()


async def test_a_query_that_times_out_is_retried_once_and_the_cost_is_reported(double, env, held):
    double.fail("/api/query/events/names", 200, body=[], times=10, hold=held)
    settings = {"MIXPANEL_TIMEOUT": "0.5", "MIXPANEL_RETRY_BASE_DELAY": "0", "MIXPANEL_MAX_RETRIES": "4"}
    async with stdio_client({**env, **settings}) as client:
        result = await client.call_tool("events", {"operation": "names"})
    text = error_text(result)
    assert len(double.received("/api/query/events/names")) == 2  # not 5: one retry, whatever MAX_RETRIES says
    assert "did not answer in time" in text and "after 2 attempt(s)" in text
    assert "Query API budget (60 an hour): 58 left" in text and "narrow" in text


async def test_a_call_stops_at_its_deadline_and_says_so(double, env, held):
    double.fail("/api/query/events/names", 200, body=[], times=10, hold=held)
    settings = {"MIXPANEL_TIMEOUT": "60", "MIXPANEL_CALL_DEADLINE": "1"}
    with anyio.fail_after(30):  # the old server waited MIXPANEL_TIMEOUT five times over
        async with stdio_client({**env, **settings}) as client:
            result = await client.call_tool("events", {"operation": "names"})
    text = error_text(result)
    assert "reached its deadline of 1 s (MIXPANEL_CALL_DEADLINE) while waiting on /events/names" in text
    assert len(double.received("/api/query/events/names")) == 1


async def test_a_bad_call_deadline_is_refused_at_start_naming_the_variable(env):
    from mixpanel_mcp.config import ConfigError, load_settings

    with pytest.raises(ConfigError, match="MIXPANEL_CALL_DEADLINE"):
        load_settings({**env, "MIXPANEL_CALL_DEADLINE": "0"})
