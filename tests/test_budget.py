"""The query budget and the result cache: Mixpanel's limits counted here, repeats answered from memory.

End to end over stdio against the double (where requests can be counted and held open), plus the limiter,
the cache and the distinct-user counter on their own with a fake clock.
"""

from __future__ import annotations

import datetime as dt
import re
import time

import anyio
import pytest

from mixpanel_mcp.client import Api, CallStats, MixpanelClient, call_stats, query
from mixpanel_mcp.client.budget import FamilyBudget, Window, budget_for
from mixpanel_mcp.client.cache import ResultCache, ttl_for
from mixpanel_mcp.client.errors import BudgetExhaustedError
from mixpanel_mcp.client.export import DistinctCounter
from mixpanel_mcp.config import load_settings
from tests.conftest import error_text, server_env, stdio_client, stored_event, structured

pytestmark = pytest.mark.asyncio

SEGMENTATION = "/api/query/segmentation"
PAST = {"from_date": "2026-01-01", "to_date": "2026-01-02"}


def segment(event: str, **more: object) -> dict:
    return {"operation": "segment", "event": event, **PAST, **more}


def budget_message(text: str, limit: str, family: str, per: str = "project") -> re.Match[str] | None:
    return re.fullmatch(
        rf"Not sent: the {family} budget is spent for now \({limit} for this {per}, counted by this server so "
        r"that Mixpanel never has to refuse\)\. It can run again in (\d+) (s|min) \(at \d\d:\d\d:\d\d UTC\)\. "
        r"Until then, repeat a question already asked \(answered from cache\), or combine questions into fewer queries\.",
        text,
    )


# -- over stdio -------------------------------------------------------------------------------


async def test_twenty_concurrent_reports_never_more_than_five_in_flight(double, double_url):
    """In process, so the server's own cap on one agent's calls in flight does not hide the limiter's."""
    double.events = [stored_event(f"E{i}", "u1", "2026-01-01T10:00:00") for i in range(20)]
    double.fail("/api/query/", 0, delay=0.25, times=20)  # each request held open a quarter second
    answers: dict[int, object] = {}
    stats = CallStats()
    token = call_stats.set(stats)
    try:
        async with MixpanelClient(load_settings(server_env(double_url))) as client:

            async def one(i: int) -> None:
                if i % 4 == 3:
                    answers[i] = await query.funnel(client, funnel_id=7509, **PAST, length=i)  # 5 different funnels
                else:
                    answers[i] = await query.segmentation(client, event=f"E{i}", **PAST)

            started = time.monotonic()
            async with anyio.create_task_group() as tg:
                for i in range(20):
                    tg.start_soon(one, i)
            elapsed = time.monotonic() - started
    finally:
        call_stats.reset(token)
    sent = double.received()
    assert len(sent) == 20 and double.max_in_flight == 5
    assert {r.path for r in sent} == {SEGMENTATION, "/api/query/funnels"}
    assert all(answers[i]["data"]["values"] == {f"E{i}": {"2026-01-01": 1, "2026-01-02": 0}} for i in answers if i % 4 != 3)
    assert elapsed >= 1.0  # 20 requests of 0.25 s, 5 at a time: at least 4 rounds
    assert stats.requests == 20
    assert stats.budget == {"query": {"remaining": 40, "limit": 60, "window": "hour"}}


async def test_spent_hourly_budget_fails_at_once_with_the_wait(double, double_url):
    env = server_env(double_url, MIXPANEL_QUERY_LIMIT_PER_HOUR="3")
    double.events = [stored_event("A", "u1", "2026-01-01T10:00:00")]
    async with stdio_client(env) as client:
        first = await client.call_tool("segmentation", segment("A"))
        double.fail(SEGMENTATION, 503)  # a retry is a request too: it spends the budget
        second = await client.call_tool("segmentation", segment("B"))
        started = time.monotonic()
        refused = await client.call_tool("segmentation", segment("C"))
        elapsed = time.monotonic() - started
        repeat = await client.call_tool("segmentation", segment("A"))  # asked before: from cache, no budget
        lexicon_still_fine = await client.call_tool("lexicon", {"operation": "list"})
    assert structured(first)["budget"] == {"query": {"remaining": 2, "limit": 3, "window": "hour"}}
    assert structured(second)["budget"] == {"query": {"remaining": 0, "limit": 3, "window": "hour"}}
    assert [r.query["event"] for r in double.received(SEGMENTATION)] == ["A", "B", "B"]  # C was never sent
    match = budget_message(error_text(refused), "3 an hour", "Query API")
    assert match is not None, error_text(refused)
    assert match.groups() == ("60", "min")
    assert elapsed < 30  # at once: the alternative is waiting out the hour (generous for a busy machine)
    cached = structured(repeat)
    assert cached["cached"] is True
    assert cached["grand_total"] == structured(first)["grand_total"] == 1
    assert cached["budget"] == {"query": {"remaining": 0, "limit": 3, "window": "hour"}}
    assert structured(lexicon_still_fine)["count"] == 0  # another family, another budget


async def test_export_and_lexicon_budgets(double, double_url):
    env = server_env(double_url, MIXPANEL_EXPORT_LIMIT_PER_HOUR="5", MIXPANEL_LEXICON_LIMIT_PER_MINUTE="2")
    day = {"operation": "events", "from_date": "2026-01-01", "to_date": "2026-01-01"}
    async with stdio_client(env) as client:
        started = time.monotonic()
        for _ in range(4):  # 3 a second: the 4th waits for the first to leave the window
            assert structured(await client.call_tool("export", day))["returned"] == 0
        elapsed = time.monotonic() - started
        await client.call_tool("export", day)
        sixth = await client.call_tool("export", day)
        await client.call_tool("lexicon", {"operation": "list"})
        await client.call_tool("lexicon", {"operation": "list", "entity_type": "event"})
        third_lexicon = await client.call_tool("lexicon", {"operation": "list", "entity_type": "profile"})
    assert elapsed >= 0.9
    assert len(double.received("/api/2.0/export")) == 5
    match = budget_message(error_text(sixth), "5 an hour", "Export API")
    assert match is not None, error_text(sixth)
    match = budget_message(error_text(third_lexicon), "2 a minute", "Lexicon API", "organization")
    assert match is not None, error_text(third_lexicon)
    assert match.group(2) == "s" and 50 <= int(match.group(1)) <= 60
    assert len(double.received("/api/app/projects/1234/schemas")) + len(double.received("/api/app/projects/1234/schemas/event")) == 2


async def test_repeats_are_answered_from_cache(double, double_url):
    env = server_env(double_url, MIXPANEL_CACHE_TTL_TODAY="0.5")
    today = dt.datetime.now(dt.UTC).date().isoformat()
    double.events = [stored_event("A", "u1", "2026-01-01T10:00:00")]
    async with stdio_client(env) as client:
        fresh = await client.call_tool("segmentation", segment("A"))
        again = await client.call_tool("segmentation", segment("A"))
        other = await client.call_tool("segmentation", segment("A", unit="hour"))  # different params: a query
        live = await client.call_tool("segmentation", segment("A", to_date=today))
        await anyio.sleep(0.7)  # past the short TTL of ranges that include today, far from the long one
        live_again = await client.call_tool("segmentation", segment("A", to_date=today))
        old_again = await client.call_tool("segmentation", segment("A"))
        double.fail(SEGMENTATION, 400, body={"error": "bad"})
        failed = await client.call_tool("segmentation", segment("Z"))
        retried = await client.call_tool("segmentation", segment("Z"))  # failures are not kept
    sent = [(r.query["event"], r.query.get("unit"), r.query["to_date"]) for r in double.received(SEGMENTATION)]
    assert sent == [("A", "day", "2026-01-02"), ("A", "hour", "2026-01-02"), ("A", "day", today), ("A", "day", today), ("Z", "day", "2026-01-02"), ("Z", "day", "2026-01-02")]
    assert "cached" not in structured(fresh)
    data = structured(again)
    assert data["cached"] is True
    assert {k: v for k, v in data.items() if k not in ("cached", "budget")} == {
        k: v for k, v in structured(fresh).items() if k != "budget"
    }
    assert data["budget"]["query"]["remaining"] == 59  # a cached answer spends nothing
    assert "cached" not in structured(other) and "cached" not in structured(live) and "cached" not in structured(live_again)
    assert structured(old_again)["cached"] is True
    assert 'Mixpanel said: "bad"' in error_text(failed)
    assert "cached" not in structured(retried)


async def test_concurrent_identical_calls_share_one_request(double, env):
    double.events = [stored_event("A", "u1", "2026-01-01T10:00:00"), stored_event("A", "u2", "2026-01-02T10:00:00")]
    double.fail(SEGMENTATION, 0, delay=0.3)
    results = []
    async with stdio_client(env) as client:

        async def one() -> None:
            results.append(await client.call_tool("segmentation", segment("A")))

        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(one)
    assert len(double.received(SEGMENTATION)) == 1
    answers = [structured(r) for r in results]
    assert all(a["grand_total"] == 2 for a in answers)
    assert sorted(bool(a.get("cached")) for a in answers) == [False, True, True, True, True]


async def test_a_write_forgets_what_was_read(double, env):
    async with stdio_client(env) as client:
        before = await client.call_tool("lexicon", {"operation": "list"})
        await client.call_tool(
            "lexicon", {"operation": "upsert", "entity_type": "event", "name": "A", "schema": {"description": "An event"}}
        )
        after = await client.call_tool("lexicon", {"operation": "list"})
    assert [r.method for r in double.received()] == ["GET", "POST", "GET"]
    assert structured(before)["count"] == 0
    assert structured(after)["count"] == 1 and "cached" not in structured(after)


# -- in process -------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_hour_window_frees_one_request_at_a_time():
    clock = Clock()
    budget = FamilyBudget(Api.QUERY, [Window(2, 3600, "hour")], 5, max_wait=5.0, clock=clock)
    (await budget.acquire("/a")).release()
    clock.now += 600
    (await budget.acquire("/b")).release()
    assert budget.remaining() == {"remaining": 0, "limit": 2, "window": "hour"}
    with pytest.raises(BudgetExhaustedError) as info:
        await budget.acquire("/c")
    assert (info.value.retry_after, info.value.limit, info.value.endpoint) == (3000.0, "2 an hour", "/c")
    clock.now += 3000  # the first request leaves the window
    (await budget.acquire("/c")).release()
    assert budget.remaining()["remaining"] == 0
    clock.now += 600
    assert budget.remaining()["remaining"] == 1


async def test_a_short_wait_is_waited_for():
    budget = FamilyBudget(Api.EXPORT, [Window(2, 0.2, "second")], None, max_wait=1.0)
    started = time.monotonic()
    for _ in range(3):
        (await budget.acquire("/export")).release()
    # The third waits for the first to leave the 0.2 s window; the ceiling is max_wait, never an idle-machine guess.
    assert 0.15 <= time.monotonic() - started


async def test_clients_of_one_project_share_a_budget(double_url):
    settings = load_settings(server_env(double_url, MIXPANEL_QUERY_LIMIT_PER_HOUR="7"))
    other_project = load_settings(server_env(double_url, MIXPANEL_PROJECT_ID="999"))
    first, second = MixpanelClient(settings), MixpanelClient(settings)
    assert budget_for(Api.QUERY, first.settings) is budget_for(Api.QUERY, second.settings)
    assert budget_for(Api.QUERY, other_project) is not budget_for(Api.QUERY, settings)
    assert budget_for(Api.EXPORT, settings) is not budget_for(Api.QUERY, settings)
    assert budget_for(Api.INGESTION, settings) is None
    stats = CallStats()
    token = call_stats.set(stats)
    try:
        for client in (first, second):
            async with client:
                await client.request(Api.QUERY, "GET", "/funnels/list")
    finally:
        call_stats.reset(token)
    # The second client's identical read came from the shared cache: one request, one unit of budget.
    assert (stats.requests, stats.cached) == (1, True)
    assert stats.budget == {"query": {"remaining": 6, "limit": 7, "window": "hour"}}


async def test_cache_ttl_by_date_range():
    today = dt.date(2026, 3, 10)
    assert ttl_for(3600, 60, {"to_date": "2026-03-09"}, today=today) == 3600
    assert ttl_for(3600, 60, {"to_date": "2026-03-10"}, today=today) == 60
    assert ttl_for(3600, 60, None, {"to_date": "2026-03-01"}, today=today) == 3600  # a form's to_date
    assert ttl_for(3600, 60, {"bookmark_id": 5}, today=today) == 60  # no range: may include today
    assert ttl_for(3600, 60, {"to_date": "soon"}, today=today) == 60


async def test_cache_evicts_least_recently_used_within_its_bounds():
    cache = ResultCache(max_entries=2, max_bytes=1000)
    import httpx2

    def answer(body: bytes) -> httpx2.Response:
        return httpx2.Response(200, content=body, request=httpx2.Request("GET", "http://x"))

    for key in ("a", "b", "c"):
        body = key.encode() * 10

        async def call(body: bytes = body) -> httpx2.Response:
            return answer(body)

        await cache.fetch(key, "scope", 60, call)
    assert len(cache) == 2
    cache.invalidate("scope")
    assert len(cache) == 0


async def test_distinct_users_exact_then_estimated():
    small = DistinctCounter()
    for i in range(1000):
        small.add(f"user-{i % 250}")
    assert (len(small), small.exact) == (250, True)
    large = DistinctCounter()
    for i in range(300_000):
        large.add(f"user-{i}")
    assert not large.exact
    assert abs(len(large) - 300_000) / 300_000 < 0.03
