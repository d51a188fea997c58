"""The Redis-backed state on its own, against a real redis-server: the budget's windows and leases, the shared
cache and its invalidation, codes spent once, agents' caps, keys prefixed and expiring, and Redis going away."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx2
import pytest

from mixpanel_mcp.client.cache import Stored
from mixpanel_mcp.client.errors import Api, BudgetExhaustedError, SharedStateUnavailableError
from mixpanel_mcp.client.state import CallsInFlightError, open_state
from mixpanel_mcp.config import ConfigError, RedisSettings, load_redis, load_settings
from pydantic import SecretStr
from tests.conftest import SA_SECRET, server_env
from tests.redis_server import RedisServer, redis_server

pytestmark = pytest.mark.asyncio


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with redis_server(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def fresh(redis: RedisServer) -> RedisServer:
    client = redis.client()
    client.flushall()
    client.close()
    return redis


def settings(**budget: str):
    return load_settings(server_env("http://127.0.0.1:9", **budget))


def state_of(redis: RedisServer, lease: float = 30.0):
    return open_state(RedisSettings(url=SecretStr(redis.url), lease=lease))


async def test_two_replicas_count_one_hourly_budget_and_say_when_it_frees(fresh):
    a, b = state_of(fresh), state_of(fresh)
    project = settings(MIXPANEL_QUERY_LIMIT_PER_HOUR="3", MIXPANEL_RATE_LIMIT_MAX_WAIT="1")
    taken = []
    for state in (a, b, a):
        ticket = await state.acquire(Api.QUERY, project, "/query/segmentation")
        taken.append(ticket.remaining["remaining"])
        await ticket.release()
    assert taken == [2, 1, 0]
    with pytest.raises(BudgetExhaustedError) as refused:
        await b.acquire(Api.QUERY, project, "/query/segmentation")
    assert refused.value.limit == "3 an hour" and 3590 < refused.value.retry_after <= 3600
    assert await a.remaining(Api.QUERY, project) == {"remaining": 0, "limit": 3, "window": "hour"}
    assert await a.acquire(Api.INGESTION, project, "/track") is None  # no limits to count
    await a.aclose()
    await b.aclose()


async def test_concurrency_slots_are_shared_and_a_dead_holders_slot_expires_with_its_lease(fresh):
    # Leases of 2 s, renewed every 2/3 s: long enough that a loaded machine's stalls do not decide the outcome.
    project = settings(MIXPANEL_QUERY_CONCURRENCY="1")
    dead, alive = state_of(fresh, lease=2), state_of(fresh, lease=2)
    await dead.acquire(Api.QUERY, project, "/q")  # never released, never renewed: its replica "died"
    dead._held.clear()
    with anyio.move_on_after(0.2) as early:
        await alive.acquire(Api.QUERY, project, "/q")
    assert early.cancelled_caught  # the slot is taken, on every replica
    with anyio.fail_after(15):  # generous: the lease runs out 2 s after it was taken
        ticket = await alive.acquire(Api.QUERY, project, "/q")
    # A live holder renews its lease: a call longer than the lease keeps its slot.
    await anyio.sleep(2.5)
    with anyio.move_on_after(0.3) as waited:
        await dead.acquire(Api.QUERY, project, "/q")
    assert waited.cancelled_caught
    await ticket.release()
    with anyio.fail_after(5):  # given back: free at once
        await (await dead.acquire(Api.QUERY, project, "/q")).release()
    await dead.aclose()
    await alive.aclose()


def response(body: bytes, status: int = 200) -> httpx2.Response:
    return httpx2.Response(status, content=body, headers={"content-type": "application/json"},
                           request=httpx2.Request("GET", "http://127.0.0.1/"))


async def test_one_upstream_call_for_identical_questions_on_two_replicas_then_a_shared_answer(fresh):
    a, b = state_of(fresh), state_of(fresh)
    calls = []
    release = anyio.Event()

    async def upstream() -> httpx2.Response:
        calls.append(1)
        await release.wait()
        return response(b'{"n": 1}')

    answers = []

    async def ask(state) -> None:
        answers.append(await state.fetch("req", "scope", 60, upstream))

    async with anyio.create_task_group() as tg:
        tg.start_soon(ask, a)
        await anyio.sleep(0.1)
        tg.start_soon(ask, b)
        await anyio.sleep(0.1)
        release.set()
    assert len(calls) == 1
    assert sorted(type(x).__name__ for x in answers) == ["Response", "Stored"]
    assert isinstance(await b.fetch("req", "scope", 60, upstream), Stored) and len(calls) == 1
    # A write forgets the scope's answers everywhere.
    await a.invalidate("scope")
    assert isinstance(await b.fetch("req", "scope", 60, upstream), httpx2.Response) and len(calls) == 2
    # An error inside a 200 is shared with who waited, never kept.
    assert isinstance(await a.fetch("bad", "scope", 60, lambda: _answer(b'{"error": "x"}')), httpx2.Response)
    assert isinstance(await b.fetch("bad", "scope", 60, lambda: _answer(b'{"error": "x"}')), httpx2.Response)
    await a.aclose()
    await b.aclose()


async def _answer(body: bytes) -> httpx2.Response:
    return response(body)


async def test_a_code_is_spent_once_across_replicas(fresh):
    a, b = state_of(fresh), state_of(fresh)
    until = time.time() + 300
    assert await a.spend_once("digest-1", until) is True
    assert await b.spend_once("digest-1", until) is False
    assert await b.spend_once("digest-2", until) is True
    await a.aclose()
    await b.aclose()


async def test_an_agents_cap_counts_across_replicas_and_a_call_over_it_waits_then_is_refused(fresh):
    a, b = state_of(fresh), state_of(fresh)
    order = []
    held = anyio.Event()

    async def holder() -> None:
        async with a.agent_slot("bot", 1, max_wait=5):
            held.set()
            await anyio.sleep(0.3)
            order.append("a done")

    async def waiter() -> None:
        await held.wait()
        async with b.agent_slot("bot", 1, max_wait=5):
            order.append("b")

    async with anyio.create_task_group() as tg:
        tg.start_soon(holder)
        tg.start_soon(waiter)
    assert order == ["a done", "b"]
    async with a.agent_slot("bot", 1, max_wait=5):
        with pytest.raises(CallsInFlightError) as refused:
            async with b.agent_slot("bot", 1, max_wait=0.2):
                pass
    assert (refused.value.busy, refused.value.limit, refused.value.waited) == (1, 1, 0.2)
    async with b.agent_slot("other", 1, max_wait=0):  # another agent is not held back
        pass
    await a.aclose()
    await b.aclose()


async def test_every_key_is_prefixed_and_expires_and_holds_nothing_secret(fresh):
    state = state_of(fresh)
    project = settings()
    await (await state.acquire(Api.QUERY, project, "/q")).release()
    await (await state.acquire(Api.EXPORT, project, "/export")).release()
    async with state.agent_slot("reporting-bot", 2, 1):
        await state.fetch("k", "scope", 60, lambda: _answer(b'{"ok": 1}'))
        await state.invalidate("scope")
        await state.spend_once("d", time.time() + 60)
        client = fresh.client()
        keys = client.keys("*")
        assert keys
        for key in keys:
            assert key.startswith(b"mixpanel-mcp:"), key
            assert client.pttl(key) > 0, key
            dumped = key + (client.dump(key) or b"")
            for secret in (SA_SECRET, "reporting-bot", fresh.url):
                assert secret.encode() not in dumped, key
        client.close()
    await state.aclose()


async def test_without_redis_the_budget_and_codes_fail_closed_the_cache_is_bypassed_and_it_recovers(tmp_path):
    with redis_server(tmp_path) as server:
        state = state_of(server)
        project = settings()
        await (await state.acquire(Api.QUERY, project, "/q")).release()
        server.stop()
        with pytest.raises(SharedStateUnavailableError) as budget:
            await state.acquire(Api.QUERY, project, "/q")
        assert budget.value.what == "rate limiter" and "cannot reach Redis" in budget.value.reason
        with pytest.raises(SharedStateUnavailableError):
            await state.spend_once("d", time.time() + 60)
        calls = []

        async def upstream() -> httpx2.Response:
            calls.append(1)
            return response(b"{}")

        assert isinstance(await state.fetch("k", "s", 60, upstream), httpx2.Response) and calls == [1]
        assert "cannot reach Redis" in (await state.health() or "")
        async with state.agent_slot("bot", 1, 1):  # caps count in this process meanwhile
            pass
        server.start()  # the same port: the client reconnects by itself
        assert await state.health() is None
        await (await state.acquire(Api.QUERY, project, "/q")).release()
        assert await state.spend_once("d", time.time() + 60) is True
        await state.aclose()


async def test_an_unreachable_redis_or_a_bad_url_stops_the_start_with_the_reason(tmp_path):
    from tests.harness import free_port

    with pytest.raises(ConfigError) as unreachable:
        open_state(RedisSettings(url=SecretStr(f"redis://:hunter2-password@127.0.0.1:{free_port()}/0")))
    message = str(unreachable.value)
    assert message.startswith("cannot reach Redis at redis://:***@127.0.0.1:")
    assert "MIXPANEL_MCP_REDIS_URL" in message and "hunter2" not in message
    for bad in ("http://127.0.0.1:6379", "redis://127.0.0.1:port", "localhost:6379"):
        with pytest.raises(ConfigError, match="MIXPANEL_MCP_REDIS_URL is not a Redis URL"):
            load_redis({"MIXPANEL_MCP_REDIS_URL": bad})
    assert load_redis({}) is None
    assert load_redis({"MIXPANEL_MCP_REDIS_URL": "redis://:pw-123@h:1/0"}).secrets() == ["pw-123", "redis://:pw-123@h:1/0"]
    socket = load_redis({}, "unix:///run/redis.sock?password=pw-456")
    assert socket.secrets() == ["pw-456", "unix:///run/redis.sock?password=pw-456"]
    assert socket.shown == "unix:///run/redis.sock?password=***"
    assert load_redis({}, "redis://user:pw-789@h:1/0?db=2").shown == "redis://user:***@h:1/0?db=2"
    assert load_redis({}, "redis://h:1/0").secrets() == []


async def test_check_reports_the_redis_connection_and_what_is_shared(double, double_url, fresh):
    redis = fresh
    from tests.harness import free_port
    from tests.test_check import blocks, heading, run

    env = server_env(double_url, MIXPANEL_MCP_REDIS_URL=redis.url)
    done = run(env)
    found = blocks(done.stdout)
    what = "state shared by every replica (MIXPANEL_MCP_REDIS_URL)"
    assert done.returncode == 0, done.stdout + done.stderr
    assert found[heading("ok", "REDIS", what)].startswith(f"{redis.url} answers (Redis ")
    assert "shared through it: the rate budgets, the result cache, spent confirmation codes" in found[heading("ok", "REDIS", what)]
    # What the check spent is counted in the replicas' budget: 1 query and 1 export this hour, 1 Lexicon request.
    client = redis.client()
    spent = sorted((key.decode().rpartition(":")[2], client.zcard(key)) for key in client.keys("mixpanel-mcp:budget:*"))
    client.close()
    assert [pair for pair in spent if pair[0] != "slots"] == [("hour", 1), ("hour", 1), ("minute", 1), ("second", 1)]
    gone = run(env, "--redis-url", f"redis://:sekrit-pw@127.0.0.1:{free_port()}/0")
    assert gone.returncode == 1
    text = blocks(gone.stdout)[heading("FAILED", "REDIS", what)]
    assert text.startswith("redis://:***@127.0.0.1:") and "cannot reach Redis" in text and "sekrit" not in gone.stdout
    assert "Fix: start Redis, or correct MIXPANEL_MCP_REDIS_URL" in text
