"""funnels: list saved funnels and run one, end to end over stdio against the double's computed funnels."""

import httpx2
import pytest

from tests.conftest import PROJECT_ID, SA_SECRET, SA_USER, error_text, server_env, stdio_client, stored_event, structured

pytestmark = pytest.mark.asyncio

CHECKOUT = {"funnel_id": 42, "name": "Checkout", "steps": ["Viewed page", "Added to cart", "Purchased"]}


def add_checkout_events(double) -> None:
    double.funnels.append(dict(CHECKOUT))
    double.events.extend(
        [
            # u1 converts fully on Jan 5, in 5 and 25 minutes.
            stored_event("Viewed page", "u1", "2026-01-05T10:00", country="US"),
            stored_event("Added to cart", "u1", "2026-01-05T10:05"),
            stored_event("Purchased", "u1", "2026-01-05T10:30"),
            # u2 adds to cart 22 hours later and never buys.
            stored_event("Viewed page", "u2", "2026-01-05T11:00", country="US"),
            stored_event("Added to cart", "u2", "2026-01-06T09:00"),
            # u3 buys without adding to cart: out of order, so step 1 only.
            stored_event("Viewed page", "u3", "2026-01-05T12:00", country="FR"),
            stored_event("Purchased", "u3", "2026-01-05T12:10"),
            # u4 converts fully on Jan 6, in 10 and 10 minutes.
            stored_event("Viewed page", "u4", "2026-01-06T08:00", country="DE"),
            stored_event("Added to cart", "u4", "2026-01-06T08:10"),
            stored_event("Purchased", "u4", "2026-01-06T08:20"),
            # u5 never enters; u6 adds to cart 19 days later, outside the 14-day window.
            stored_event("Added to cart", "u5", "2026-01-06T07:00"),
            stored_event("Viewed page", "u6", "2026-01-06T09:00", country="US"),
            stored_event("Added to cart", "u6", "2026-01-25T09:00"),
        ]
    )


def assert_query_request(request, expected: dict) -> None:
    assert request.method == "GET"
    assert request.path == "/api/query/funnels"
    assert request.query == {"project_id": str(PROJECT_ID), **expected}
    assert request.headers["authorization"].startswith("Basic ")
    assert request.basic_auth == (SA_USER, SA_SECRET)


async def test_list_then_query_sums_steps_over_dates(double, env):
    add_checkout_events(double)
    base = {"operation": "query", "funnel_id": 42, "from_date": "2026-01-05", "to_date": "2026-01-06"}
    async with stdio_client(env) as client:
        listed = await client.call_tool("funnels", {"operation": "list"})
        daily = await client.call_tool("funnels", {**base, "unit": "day"})
        hour = await client.call_tool("funnels", {**base, "length": 1, "length_unit": "hour"})
        segmented = await client.call_tool(
            "funnels", {**base, "on": 'properties["country"]', "where": 'properties["country"] != "FR"', "limit": 5}
        )

    # list
    (request,) = double.received("/api/query/funnels/list")
    assert request.method == "GET" and request.query == {"project_id": str(PROJECT_ID)}
    assert request.basic_auth == (SA_USER, SA_SECRET)
    data = structured(listed)
    assert data == {
        "funnels": [{"funnel_id": 7509, "name": "Signup funnel"}, {"funnel_id": 42, "name": "Checkout"}],
        "count": 2,
        "budget": {"query": {"remaining": 59, "limit": 60, "window": "hour"}},
    }
    assert listed.content[0].text.startswith("2 saved funnel(s): Signup funnel (7509), Checkout (42).")

    first, second, third = double.received("/api/query/funnels")

    # Jan 5: u1, u2, u3 enter; u1, u2 add to cart; u1 buys -> [3, 2, 1]. Jan 6: u4, u6 -> [2, 1, 1].
    assert_query_request(first, {"funnel_id": "42", "from_date": "2026-01-05", "to_date": "2026-01-06", "unit": "day"})
    data = structured(daily)
    assert [s["count"] for s in data["steps"]] == [5, 3, 2]
    assert [s["event"] for s in data["steps"]] == ["Viewed page", "Added to cart", "Purchased"]
    assert [s["step_conv_ratio"] for s in data["steps"]] == [1.0, 0.6, 0.6667]
    assert [s["overall_conv_ratio"] for s in data["steps"]] == [1.0, 0.6, 0.4]
    assert data["overall_conv_ratio"] == 0.4
    # Step 2: Jan 5 averages (300 + 79,200) / 2 = 39,750 s over 2 users, Jan 6 600 s over 1 -> 26,700 s.
    # Step 3: Jan 5 1,500 s, Jan 6 600 s -> 1,050 s.
    assert [s.get("avg_time_s") for s in data["steps"]] == [None, 26_700, 1_050]
    assert data["biggest_drop"] == {"step": 2, "event": "Added to cart", "step_conv_ratio": 0.6}
    assert data["by_date"] == [
        {"date": "2026-01-05", "counts": [3, 2, 1], "overall_conv_ratio": 0.3333},
        {"date": "2026-01-06", "counts": [2, 1, 1], "overall_conv_ratio": 0.5},
    ]
    assert daily.content[0].text.startswith(
        "Funnel 42 (Viewed page → Added to cart → Purchased): 5 → 2 (40.0%) over 2026-01-05..2026-01-06, entries "
        "summed over 2 buckets (a user who entered in several counts in each: see counted); "
        "biggest drop at step 2 (Added to cart, 60.0% of the step before)."
    )

    # A 1-hour window drops u2's add to cart (22 h later): [3, 1, 1] + [2, 1, 1].
    assert_query_request(
        second,
        {"funnel_id": "42", "from_date": "2026-01-05", "to_date": "2026-01-06", "length": "1", "length_unit": "hour", "interval": "2"},
    )
    data = structured(hour)
    assert [s["count"] for s in data["steps"]] == [5, 2, 2]
    assert data["biggest_drop"]["step"] == 2 and data["steps"][2]["step_conv_ratio"] == 1.0

    # Without u3 (FR), by country of step 1: US = u1, u2 (Jan 5) + u6 (Jan 6) -> [3, 2, 1]; DE = u4 -> [1, 1, 1].
    assert_query_request(
        third,
        {
            "funnel_id": "42",
            "from_date": "2026-01-05",
            "to_date": "2026-01-06",
            "on": 'properties["country"]',
            "where": 'properties["country"] != "FR"',
            "limit": "5",
            "interval": "2",
        },
    )
    data = structured(segmented)
    assert [s["count"] for s in data["steps"]] == [4, 3, 2]
    assert data["segments"] == [
        {"segment": "US", "counts": [3, 2, 1], "overall_conv_ratio": 0.3333},
        {"segment": "DE", "counts": [1, 1, 1], "overall_conv_ratio": 1.0},
    ]
    assert "4 → 2 users (50.0%)" in segmented.content[0].text
    assert "2 segment(s), largest 'US' (33.3%)" in segmented.content[0].text


async def test_workspace_id_is_sent_and_empty_range_is_said_plainly(double, double_url):
    async with stdio_client(server_env(double_url, MIXPANEL_WORKSPACE_ID="3456")) as client:
        result = await client.call_tool(
            "funnels", {"operation": "query", "funnel_id": 7509, "from_date": "2026-02-01", "to_date": "2026-02-02"}
        )
    (request,) = double.received("/api/query/funnels")
    assert request.query["workspace_id"] == "3456" and request.query["project_id"] == str(PROJECT_ID)
    data = structured(result)
    assert [s["count"] for s in data["steps"]] == [0, 0]
    assert [d["date"] for d in data["by_date"]] == ["2026-02-01"]  # one bucket spanning the range
    assert result.content[0].text.startswith(
        "Funnel 7509 (Viewed page → Signed up): nobody entered step 1 in 2026-02-01..2026-02-02."
    )


INVALID = [
    ({"funnel_id": "signup"}, "funnel_id", "valid integer"),
    ({"funnel_id": 42, "from_date": "2026-01-31", "to_date": "2026-01-01"}, "(arguments)", "after to_date"),
    ({"funnel_id": 42, "unit": "year"}, "unit", "'day', 'week' or 'month'"),
    ({"funnel_id": 42, "length": 91}, "(arguments)", "90-day"),
    ({"funnel_id": 42, "length": 2200, "length_unit": "hour"}, "(arguments)", "90-day"),
    ({"funnel_id": 42, "limit": 10_001}, "limit", "10000"),
    ({"funnel_id": 42, "from_date": "01/05/2026"}, "from_date", "yyyy-mm-dd"),
    ({"funnel_id": 42, "bogus": 1}, "bogus", "unknown argument"),
]


async def test_invalid_arguments_are_refused_before_any_request(double, env):
    async with stdio_client(env) as client:
        results = [
            await client.call_tool("funnels", {"operation": "query", "from_date": "2026-01-01", "to_date": "2026-01-31", **arguments})
            for arguments, _, _ in INVALID
        ]
    for result, (arguments, field, words) in zip(results, INVALID, strict=True):
        text = error_text(result)
        assert text.startswith("Invalid arguments for funnels (operation 'query'); nothing was sent to Mixpanel."), arguments
        assert f"- {field}:" in text and words in text, (arguments, text)
    assert double.received() == []


async def test_unknown_funnel_403_and_5xx(double, env):
    double.fail(
        "/api/query/funnels/list",
        403,
        body={"request": "/api/query/funnels/list?project_id=1234", "error": "Permission denied"},
    )
    async with stdio_client(env) as client:
        unknown = await client.call_tool(
            "funnels", {"operation": "query", "funnel_id": 999, "from_date": "2026-01-01", "to_date": "2026-01-02"}
        )
        denied = await client.call_tool("funnels", {"operation": "list"})
        double.fail("/api/query/funnels/list", 502, times=2)
        retried = await client.call_tool("funnels", {"operation": "list"})

    text = error_text(unknown)
    assert text.startswith('Mixpanel rejected the request (400 on /funnels). Mixpanel said: "funnel 999 does not exist".')
    assert len(double.received("/api/query/funnels")) == 1  # a 400 is never retried

    text = error_text(denied)
    assert "403" in text and '"Permission denied"' in text
    assert "service account" in text and "Analyst or higher" in text

    assert structured(retried)["count"] == 1
    assert len(double.received("/api/query/funnels/list")) == 1 + 3  # the 403 once, then 502, 502, 200


async def test_overall_figures_count_each_user_once_and_a_split_range_says_it_sums_entries(double, env):
    double.funnels.append(dict(CHECKOUT))
    # u1 enters on both days and buys on the second; u2 enters once.
    double.events.extend([
        stored_event("Viewed page", "u1", "2026-01-05T10:00"),
        stored_event("Viewed page", "u1", "2026-01-06T10:00"),
        stored_event("Added to cart", "u1", "2026-01-06T10:05"),
        stored_event("Purchased", "u1", "2026-01-06T10:10"),
        stored_event("Viewed page", "u2", "2026-01-06T11:00"),
    ])
    base = {"operation": "query", "funnel_id": 42, "from_date": "2026-01-05", "to_date": "2026-01-06"}
    async with stdio_client(env) as client:
        overall = await client.call_tool("funnels", base)
        daily = await client.call_tool("funnels", {**base, "unit": "day"})
    once, split = double.received("/api/query/funnels")
    assert once.query["interval"] == "2" and "unit" not in once.query  # one bucket spanning the range
    data = structured(overall)
    assert [s["count"] for s in data["steps"]] == [2, 1, 1]  # two users, as Mixpanel's funnel report says
    assert data["counted"].startswith("users: each user who entered step 1 in the range counts once")
    assert "2 → 1 users (50.0%)" in overall.content[0].text
    # By day, Mixpanel counts u1 in each day's bucket (converting in both): 3 entries, and the answer says so.
    data = structured(daily)
    assert [s["count"] for s in data["steps"]] == [3, 2, 2]
    assert data["counted"].startswith("entries summed over 2 day buckets")
    assert "entries summed over 2 buckets" in daily.content[0].text


async def test_the_double_answers_step_times_as_the_spec_types_them(double, double_url):
    """avg_time is null for step 0 (query.openapi.yaml says so); avg_time_from_start is an integer on every step."""
    add_checkout_events(double)
    answer = httpx2.get(f"{double_url}/api/query/funnels", auth=(SA_USER, SA_SECRET), params={
        "project_id": PROJECT_ID, "funnel_id": 42, "from_date": "2026-01-05", "to_date": "2026-01-05"})
    steps = answer.json()["data"]["2026-01-05"]["steps"]
    assert [s["avg_time"] for s in steps] == [None, 300 // 2 + 79_200 // 2, 1_500]
    assert all(isinstance(s["avg_time_from_start"], int) for s in steps) and steps[0]["avg_time_from_start"] == 0
