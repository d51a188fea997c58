"""What calls share (state.py): an agent's calls over its cap wait their turn instead of being refused; with
or without Redis (the Redis-backed state has its own tests in tests/test_redis_state.py)."""

from __future__ import annotations

import anyio
import pytest

from mixpanel_mcp.client.state import AgentSlots, CallsInFlightError, LocalState
from tests.conftest import server_env, stdio_client, stored_event, structured

pytestmark = pytest.mark.asyncio

PAST = {"from_date": "2026-01-01", "to_date": "2026-01-02"}


async def test_twenty_concurrent_calls_of_one_agent_over_stdio_all_succeed_five_at_a_time_upstream(double, double_url):
    """Over the agent's cap (8) the calls queue; the query budget lets 5 at a time reach Mixpanel."""
    double.events = [stored_event(f"E{i}", "u1", "2026-01-01T10:00:00") for i in range(20)]
    double.fail("/api/query/", 0, delay=0.25, times=20)  # each request held open a quarter second
    results: dict[int, object] = {}
    # A generous wait for a turn (30 s, not 5): a loaded machine must not turn a queued call into a refusal.
    env = server_env(double_url, MIXPANEL_CACHE_TTL="0", MIXPANEL_CACHE_TTL_TODAY="0", MIXPANEL_RATE_LIMIT_MAX_WAIT="30")
    async with stdio_client(env) as client:

        async def one(i: int) -> None:
            results[i] = await client.call_tool("segmentation", {"operation": "segment", "event": f"E{i}", **PAST})

        async with anyio.create_task_group() as tg:
            for i in range(20):
                tg.start_soon(one, i)
    assert all(not result.is_error for result in results.values()), [r for r in results.values() if r.is_error]
    assert {i: structured(results[i])["segments"][0]["total"] for i in range(20)} == {i: 1 for i in range(20)}
    assert len(double.received("/api/query/segmentation")) == 20
    assert double.max_in_flight == 5


# -- the queue on its own ---------------------------------------------------------------------------


async def test_calls_over_the_cap_run_in_the_order_they_came():
    slots, order = AgentSlots(), []
    release = anyio.Event()

    async def call(name: str) -> None:
        async with slots.hold("a", 1, max_wait=10):
            order.append(name)
            if name == "first":
                await release.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(call, "first")
        await anyio.wait_all_tasks_blocked()
        for name in ("second", "third", "fourth"):
            tg.start_soon(call, name)
            await anyio.wait_all_tasks_blocked()
        assert order == ["first"] and slots.busy("a") == 1
        release.set()
    assert order == ["first", "second", "third", "fourth"]
    assert slots.busy("a") == 0


async def test_a_call_that_waits_too_long_or_finds_the_queue_full_is_refused():
    slots = AgentSlots()
    refusals: list[CallsInFlightError] = []
    hold = anyio.Event()

    async def call(max_wait: float) -> None:
        try:
            async with slots.hold("a", 1, max_wait):
                await hold.wait()
        except CallsInFlightError as exc:
            refusals.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(call, 10)  # holds the only slot
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(call, 0.05)  # waits, gives up
        await anyio.wait_all_tasks_blocked()
        for _ in range(3):  # 4 per slot may wait: this one and three more
            tg.start_soon(call, 10)
            await anyio.wait_all_tasks_blocked()
        tg.start_soon(call, 10)  # the queue is full: refused at once
        await anyio.wait_all_tasks_blocked()
        assert [(r.busy, r.waiting, r.waited) for r in refusals] == [(1, 4, 0.0)]
        await anyio.sleep(0.1)
        assert [(r.limit, r.waiting, r.waited) for r in refusals] == [(1, 4, 0.0), (1, 3, 0.05)]
        hold.set()
    assert len(refusals) == 2 and slots.busy("a") == 0


async def test_a_waiting_call_cancelled_gives_its_turn_to_the_next():
    slots, ran = AgentSlots(), []
    release = anyio.Event()

    async def call(name: str) -> None:
        async with slots.hold("a", 1, max_wait=10):
            ran.append(name)
            if name == "first":
                await release.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(call, "first")
        await anyio.wait_all_tasks_blocked()
        with anyio.CancelScope() as scope:
            scope.cancel()
            await call("cancelled")
        tg.start_soon(call, "next")
        await anyio.wait_all_tasks_blocked()
        release.set()
    assert ran == ["first", "next"] and slots.busy("a") == 0


async def test_a_code_is_spent_once_in_process():
    state = LocalState()
    assert await state.spend_once("t", 4_000_000_000) is True
    assert await state.spend_once("t", 4_000_000_000) is False
    assert await state.health() is None
