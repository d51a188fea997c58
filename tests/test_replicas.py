"""Several replicas behind one Redis act as one server: `mixpanel-mcp --transport http` processes sharing a real
redis-server and the local double. One budget (never more than Mixpanel's limits reach the double), one cache,
codes spent once, slots of a killed replica back within the lease, and Redis stopped and started mid-burst."""

from __future__ import annotations

import re
import signal
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import anyio
import httpx2
import pytest

from tests.conftest import error_text, server_env, stored_event, structured
from tests.harness import Served, agent, base_env, http_client, http_server, policy_file
from tests.redis_server import RedisServer, redis_server

SECRET = "replicas-shared-secret-0123456789abcdefghij"
AGENTS = {f"bot{i}": f"mxp_bot{i}-key-000{i}" for i in range(10)}
CONFIRMING = "mxp_confirming-key-0001"
PAST = {"from_date": "2026-01-01", "to_date": "2026-01-02"}
WHEN = re.compile(r"It can run again in \d+ (s|min) \(at \d\d:\d\d:\d\d UTC\)")
SEGMENTATION = "/api/query/segmentation"


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with redis_server(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def fresh(redis: RedisServer) -> RedisServer:
    if redis.process is None:  # a test stopped it and failed before starting it again
        redis.start()
    client = redis.client()
    client.flushall()
    client.close()
    return redis


def replica_env(double_url: str, redis: RedisServer, **more: str) -> dict[str, str]:
    # A generous wait for a turn (30 s, not 5): a loaded machine must not turn a queued call into a refusal.
    values = {**server_env(double_url), "MIXPANEL_MCP_REDIS_URL": redis.url, "MIXPANEL_MCP_SECRET_KEY": SECRET,
              "MIXPANEL_CACHE_TTL": "600", "MIXPANEL_RATE_LIMIT_MAX_WAIT": "30", **more}
    return base_env(**values)


def start_replicas(stack: ExitStack, directory: Path, env: dict[str, str], count: int = 2) -> list[Served]:
    policy = policy_file(
        directory,
        "".join(agent(name, key, '{ segmentation = "read", engage = "full" }') for name, key in AGENTS.items())
        + agent("confirming", CONFIRMING, '{ engage = "full" }', "confirm_destructive = true"),
    )
    return [stack.enter_context(http_server(env, "--policy", str(policy), log_dir=directory)) for _ in range(count)]


@pytest.fixture(scope="module")
def replicas(double_url: str, redis: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Served]]:
    with ExitStack() as stack:
        yield start_replicas(stack, tmp_path_factory.mktemp("replicas"), replica_env(double_url, redis))


def segment(event: str) -> dict:
    return {"operation": "segment", "event": event, **PAST}


@pytest.mark.asyncio
async def test_a_hundred_reports_from_ten_agents_on_two_replicas_spend_one_budget(double, fresh, replicas):
    double.events = [stored_event(f"E{i}", "u1", "2026-01-01T10:00:00") for i in range(100)]
    double.fail("/api/query/", 0, delay=0.05, times=100)  # each request held open a little: calls overlap
    results: list[object] = []

    async def agent_calls(number: int, key: str) -> None:
        async with http_client(replicas[0].url, key) as a, http_client(replicas[1].url, key) as b:
            for i in range(10):
                client = (a, b)[(number + i) % 2]
                results.append(await client.call_tool("segmentation", segment(f"E{number * 10 + i}")))

    async with anyio.create_task_group() as tg:
        for number, key in enumerate(AGENTS.values()):
            tg.start_soon(agent_calls, number, key)
    answered = [r for r in results if not r.is_error]
    refused = [error_text(r) for r in results if r.is_error]
    assert len(results) == 100
    assert len(answered) == 60 and len(double.received(SEGMENTATION)) == 60  # the project's 60 an hour, once
    assert double.max_in_flight <= 5
    assert len(refused) == 40
    for text in refused:
        assert text.startswith("Not sent: the Query API budget is spent for now (60 an hour for this project"), text
        assert WHEN.search(text), text


@pytest.mark.asyncio
async def test_an_answer_from_replica_a_is_a_cache_hit_on_replica_b(double, fresh, replicas):
    double.events = [stored_event("Shared", "u1", "2026-01-01T10:00:00")]
    key = AGENTS["bot0"]
    async with http_client(replicas[0].url, key) as a:
        first = structured(await a.call_tool("segmentation", segment("Shared")))
    async with http_client(replicas[1].url, key) as b:
        second = structured(await b.call_tool("segmentation", segment("Shared")))
    assert len(double.received(SEGMENTATION)) == 1
    assert "cached" not in first and second["cached"] is True
    assert second["segments"] == first["segments"]


@pytest.mark.asyncio
async def test_a_code_spent_on_replica_a_is_refused_on_replica_b(double, fresh, replicas):
    delete = {"operation": "delete", "distinct_id": "u1"}
    async with http_client(replicas[0].url, CONFIRMING) as a:
        code = (await a.call_tool("engage", delete)).structured_content["confirm"]
        structured(await a.call_tool("engage", {**delete, "confirm": code}))
    async with http_client(replicas[1].url, CONFIRMING) as b:
        again = await b.call_tool("engage", {**delete, "confirm": code})
    assert again.is_error and "The confirmation code was not accepted: it was already used." in error_text(again)
    assert len(double.received("/engage")) == 1


@pytest.mark.asyncio
async def test_a_killed_replicas_slot_comes_back_within_the_lease(double, double_url, fresh, tmp_path):
    double.events = [stored_event("E", "u1", "2026-01-01T10:00:00")]
    import threading

    held = threading.Event()
    double.fail(SEGMENTATION, 0, hold=held)  # the first request never finishes on its own
    env = replica_env(double_url, fresh, MIXPANEL_QUERY_CONCURRENCY="1", MIXPANEL_MCP_REDIS_LEASE="1",
                      MIXPANEL_CACHE_TTL="0", MIXPANEL_CACHE_TTL_TODAY="0")
    try:
        with ExitStack() as stack:
            doomed, survivor = start_replicas(stack, tmp_path, env)
            key = AGENTS["bot1"]
            async with anyio.create_task_group() as tg:

                async def stuck() -> None:
                    async with http_client(doomed.url, key) as a:
                        await a.call_tool("segmentation", segment("E"))

                tg.start_soon(stuck)
                with anyio.fail_after(20):
                    while not double.received(SEGMENTATION):  # the call holds the project's only slot
                        await anyio.sleep(0.05)
                doomed.process.send_signal(signal.SIGKILL)
                doomed.process.wait()
                tg.cancel_scope.cancel()
            async with http_client(survivor.url, key) as b:
                with anyio.fail_after(15):  # generous: the lease is 1 s, renewed by nobody now
                    answer = structured(await b.call_tool("segmentation", segment("E")))
            assert answer["segments"][0]["total"] == 1
            assert len(double.received(SEGMENTATION)) == 2
    finally:
        held.set()


@pytest.mark.asyncio
async def test_redis_stopped_mid_burst_fails_closed_then_the_replicas_recover_by_themselves(double, fresh, replicas):
    double.events = [stored_event(f"E{i}", "u1", "2026-01-01T10:00:00") for i in range(40)]
    double.fail("/api/query/", 0, delay=0.1, times=20)  # the burst's requests overlap the outage
    key = AGENTS["bot2"]
    burst: list[object] = []
    async with http_client(replicas[0].url, key) as a, http_client(replicas[1].url, key) as b:

        async def one(i: int) -> None:
            burst.append(await (a, b)[i % 2].call_tool("segmentation", segment(f"E{i}")))

        async with anyio.create_task_group() as tg:
            for i in range(20):
                tg.start_soon(one, i)
            with anyio.fail_after(20):
                while not double.received(SEGMENTATION):
                    await anyio.sleep(0.01)
            fresh.stop()  # mid-burst
        during = [await (a, b)[i % 2].call_tool("segmentation", segment(f"E{20 + i}")) for i in range(4)]
        health = [httpx2.get(f"{r.base}/healthz", timeout=5).json() for r in replicas]
        update = await a.call_tool("engage", {"operation": "set", "distinct_id": "u9", "properties": {"plan": "pro"}})
        sent_during = len(double.received(SEGMENTATION))
        fresh.start()
        after = [await (a, b)[i % 2].call_tool("segmentation", segment(f"E{30 + i}")) for i in range(4)]
    answered = [r for r in burst if not r.is_error]
    assert answered  # the calls counted before Redis went away were answered
    for result in [r for r in burst if r.is_error] + during:
        assert error_text(result).startswith("Not sent: the shared rate limiter (Redis"), error_text(result)
        assert "Requests are never sent uncounted" in error_text(result)
    # Nothing reached Mixpanel uncounted: one request per answered call, none while Redis was away.
    assert sent_during == len(answered)
    assert [h["status"] for h in health] == ["degraded", "degraded"]
    assert all("cannot reach Redis" in h["redis"] for h in health)
    structured(update)  # what needs no budget (a profile update) still works
    assert all(not r.is_error for r in after), [error_text(r) for r in after if r.is_error]
    assert len(double.received(SEGMENTATION)) == sent_during + 4
    assert [httpx2.get(f"{r.base}/healthz", timeout=5).json()["status"] for r in replicas] == ["ok", "ok"]


def test_a_replica_does_not_start_without_its_redis_and_says_why(double_url, tmp_path):
    import subprocess
    import sys

    from tests.harness import ROOT, free_port

    env = base_env(**server_env(double_url), MIXPANEL_MCP_REDIS_URL=f"redis://:pw-hunter2-x@127.0.0.1:{free_port()}/0",
                   MIXPANEL_MCP_SECRET_KEY=SECRET)
    done = subprocess.run(
        [sys.executable, "-m", "mixpanel_mcp", "--transport", "http", "--port", str(free_port())],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2
    assert "mixpanel-mcp: configuration error: cannot reach Redis at redis://:***@127.0.0.1:" in done.stderr
    assert "hunter2" not in done.stderr
    env.pop("MIXPANEL_MCP_SECRET_KEY")
    done = subprocess.run(
        [sys.executable, "-m", "mixpanel_mcp", "--transport", "http", "--port", str(free_port())],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2 and "also need one MIXPANEL_MCP_SECRET_KEY" in done.stderr


def test_uvicorn_workers_behind_redis_keep_the_whole_limits_and_do_not_start_without_it(double_url, redis, tmp_path, caplog):
    from mixpanel_mcp.asgi import StartupError, build_app
    from tests.harness import free_port
    from tests.test_asgi import hosted_env

    env = hosted_env(double_url, tmp_path, MIXPANEL_MCP_WORKERS="4", MIXPANEL_MCP_REDIS_URL=redis.url)
    app = build_app(env)
    budget = app.runtime.settings.budget
    assert (budget.query_per_hour, budget.query_concurrent, budget.export_per_second) == (60, 5, 3)  # no 1/N split
    assert app.runtime.state.name == "redis"
    assert "cannot be split" not in caplog.text
    env["MIXPANEL_MCP_REDIS_URL"] = f"redis://127.0.0.1:{free_port()}/0"
    with pytest.raises(StartupError, match=r"^cannot reach Redis at redis://127\.0\.0\.1:\d+/0 \(MIXPANEL_MCP_REDIS_URL\)"):
        build_app(env)


@pytest.mark.asyncio
async def test_twenty_concurrent_calls_of_one_agent_over_stdio_with_redis_all_succeed_five_at_a_time(double, double_url, fresh):
    from tests.conftest import stdio_client

    double.events = [stored_event(f"E{i}", "u1", "2026-01-01T10:00:00") for i in range(20)]
    double.fail("/api/query/", 0, delay=0.25, times=20)
    results: list[object] = []
    env = replica_env(double_url, fresh, MIXPANEL_CACHE_TTL="0", MIXPANEL_CACHE_TTL_TODAY="0")
    async with stdio_client(env) as client:

        async def one(i: int) -> None:
            results.append(await client.call_tool("segmentation", segment(f"E{i}")))

        async with anyio.create_task_group() as tg:
            for i in range(20):
                tg.start_soon(one, i)
    assert [r for r in results if r.is_error] == [] and len(results) == 20
    assert len(double.received(SEGMENTATION)) == 20 and double.max_in_flight == 5


def test_the_redis_password_is_among_the_secrets_scrubbed_from_everything_sent(double_url, tmp_path):
    from mixpanel_mcp.asgi import build_app
    from mixpanel_mcp.text import scrubber
    from tests.test_asgi import hosted_env

    password = "redis-pw-4f9c2e7a1b"
    with redis_server(tmp_path, password=password) as protected:
        app = build_app(hosted_env(double_url, tmp_path, MIXPANEL_MCP_REDIS_URL=protected.url))
        assert app.runtime.state.name == "redis"
    leaked = f"connecting to {protected.url} failed (password {password})"
    assert password not in scrubber.text(leaked)
