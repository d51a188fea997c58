"""events: names, top, counts and properties, end to end over stdio against the double's computed answers."""

import datetime as dt
import time

import pytest

from tests.conftest import API_SECRET, SA_SECRET, SA_USER, error_text, server_env, stdio_client, stored_event, structured

pytestmark = pytest.mark.asyncio

SA = (SA_USER, SA_SECRET)


def only(double, path):
    """The one request the double received at `path`, checked to be a GET with service-account auth."""
    (request,) = double.received(path)
    assert request.method == "GET"
    assert request.basic_auth == SA
    assert request.headers["authorization"].startswith("Basic ")
    return request


def january(double):
    """Signed up: 01-05 x2 (US, DE), 01-06 US, 01-07 US; outside the range: 01-04, 01-08. Logged in: 01-06."""
    double.events.extend(
        [
            stored_event("Signed up", "u5", "2026-01-04T23:59:59", country="US"),
            stored_event("Signed up", "u1", "2026-01-05T10:00:00", country="US", plan="pro"),
            stored_event("Signed up", "u2", "2026-01-05T11:00:00", country="DE"),
            stored_event("Signed up", "u1", "2026-01-06T09:00:00", country="US"),
            stored_event("Logged in", "u1", "2026-01-06T12:00:00", country="US"),
            stored_event("Signed up", "u3", "2026-01-07T23:59:59", country="US"),
            stored_event("Signed up", "u4", "2026-01-08T00:00:00", country="US"),
        ]
    )


async def test_names_top_and_counts_by_interval_from_recent_events(double, env):
    now = time.time()
    today = dt.datetime.fromtimestamp(now, dt.UTC).date()
    double.events.extend(
        [stored_event("Viewed page", "u1", now) for _ in range(6)]
        + [stored_event("Signed up", user, now) for user in ("u1", "u2", "u2")]
        + [stored_event("Signed up", user, now - 86_400) for user in ("u3", "u4")]
        + [stored_event("Old", "u9", now - 40 * 86_400) for _ in range(10)]
    )
    async with stdio_client(env) as client:
        names = await client.call_tool("events", {"operation": "names"})
        unique = await client.call_tool("events", {"operation": "names", "type": "unique", "limit": 1})
        top = await client.call_tool("events", {"operation": "top"})
        recent = await client.call_tool("events", {"operation": "counts", "event": ["Signed up"], "interval": 2})

    first, second = double.received("/api/query/events/names")
    assert first.basic_auth == SA and first.query == {"project_id": "1234", "type": "general", "limit": "255"}
    assert second.query == {"project_id": "1234", "type": "unique", "limit": "1"}
    # Volume over the last 31 days: Viewed page 6, Signed up 5; "Old" is 40 days back.
    assert structured(names) == {"names": ["Viewed page", "Signed up"], "count": 2, "budget": {"query": {"remaining": 59, "limit": 60, "window": "hour"}}}
    assert "2 event name(s) in the last 31 days: Viewed page, Signed up." in names.content[0].text
    # Unique users: Signed up 4 (u1-u4), Viewed page 1.
    assert structured(unique)["names"] == ["Signed up"]

    request = only(double, "/api/query/events/top")
    assert request.query == {"project_id": "1234", "type": "general", "limit": "100"}
    assert structured(top) == {
        "type": "general",
        "events": [
            {"amount": 6, "event": "Viewed page", "percent_change": 1},
            {"amount": 3, "event": "Signed up", "percent_change": 0.5},
        ],
        "budget": {"query": {"remaining": 57, "limit": 60, "window": "hour"}},
    }
    # Viewed page had none yesterday: Mixpanel's 1 is not read as a plain doubling.
    assert top.content[0].text.startswith(
        "2 event(s) today (general, change vs yesterday): Viewed page 6 (+100%, or none yesterday), Signed up 3 (+50%)."
    )

    request = only(double, "/api/query/events")
    assert request.query == {"project_id": "1234", "event": '["Signed up"]', "type": "general", "unit": "day", "interval": "2"}
    data = structured(recent)
    yesterday = (today - dt.timedelta(days=1)).isoformat()
    assert data["dates"] == [yesterday, today.isoformat()]
    assert data["segments"] == [{"segment": "Signed up", "total": 5, "values": {yesterday: 2, today.isoformat(): 3}}]


async def test_counts_properties_values_and_property_counts(double, env):
    january(double)
    period = {"from_date": "2026-01-05", "to_date": "2026-01-07"}
    async with stdio_client(env) as client:
        counts = await client.call_tool("events", {"operation": "counts", "event": ["Signed up", "Logged in"], **period})
        props = await client.call_tool("events", {"operation": "properties", "event": "Signed up"})
        values = await client.call_tool("events", {"operation": "property_values", "event": "Signed up", "name": "country"})
        by_country = await client.call_tool(
            "events", {"operation": "property_counts", "event": "Signed up", "name": "country", **period}
        )
        us_only = await client.call_tool(
            "events",
            {"operation": "property_counts", "event": "Signed up", "name": "country", "values": ["US"], "unit": "week", **period},
        )

    request = only(double, "/api/query/events")
    assert request.query == {
        "project_id": "1234",
        "event": '["Signed up", "Logged in"]',
        "type": "general",
        "unit": "day",
        "from_date": "2026-01-05",
        "to_date": "2026-01-07",
    }
    data = structured(counts)
    assert data["dates"] == ["2026-01-05", "2026-01-06", "2026-01-07"]
    assert data["grand_total"] == 5 and data["segment_count"] == 2
    assert data["segments"] == [
        {"segment": "Signed up", "total": 4, "values": {"2026-01-05": 2, "2026-01-06": 1, "2026-01-07": 1}},
        {"segment": "Logged in", "total": 1, "values": {"2026-01-06": 1}},
    ]
    # Mixpanel's series is unordered; dates and each segment's values are sorted, and its answer (the same
    # numbers) is not repeated.
    assert list(data["segments"][0]["values"]) == data["dates"]
    assert "mixpanel" not in data
    assert counts.content[0].text.startswith(
        "Event counts by day from 2026-01-05 to 2026-01-07: 5 events over 2 event(s); top: Signed up (4), Logged in (1)."
    )

    request = only(double, "/api/query/events/properties/top")
    assert request.query == {"project_id": "1234", "event": "Signed up", "limit": "10"}
    # Every stored Signed up (6) has country; one has plan.
    assert structured(props)["properties"] == [{"name": "country", "count": 6}, {"name": "plan", "count": 1}]
    assert "2 top properties of Signed up: country (6), plan (1)." in props.content[0].text

    request = only(double, "/api/query/events/properties/values")
    assert request.query == {"project_id": "1234", "event": "Signed up", "name": "country", "limit": "255"}
    assert structured(values) == {"event": "Signed up", "name": "country", "values": ["US", "DE"], "budget": {"query": {"remaining": 57, "limit": 60, "window": "hour"}}}

    first, second = double.received("/api/query/events/properties")
    assert first.basic_auth == SA
    assert first.query == {
        "project_id": "1234",
        "event": "Signed up",
        "name": "country",
        "type": "general",
        "unit": "day",
        "from_date": "2026-01-05",
        "to_date": "2026-01-07",
        "limit": "255",
    }
    data = structured(by_country)
    assert [(s["segment"], s["total"]) for s in data["segments"]] == [("US", 3), ("DE", 1)]
    assert data["segments"][0]["values"] == {"2026-01-05": 1, "2026-01-06": 1, "2026-01-07": 1}
    assert "Signed up by country, by day from 2026-01-05 to 2026-01-07: 4 events over 2 value(s); top: US (3), DE (1)." in (
        by_country.content[0].text
    )
    assert second.query["values"] == '["US"]' and second.query["unit"] == "week"
    # 2026-01-05 is a Monday: one weekly bucket.
    assert structured(us_only)["segments"] == [{"segment": "US", "total": 3, "values": {"2026-01-05": 3}}]


async def test_invalid_arguments_are_refused_before_any_request(double, env):
    async with stdio_client(env) as client:
        bad_date = await client.call_tool(
            "events", {"operation": "counts", "event": ["A"], "from_date": "2026-02-30", "to_date": "2026-03-01"}
        )
        reversed_dates = await client.call_tool(
            "events", {"operation": "counts", "event": ["A"], "from_date": "2026-03-02", "to_date": "2026-03-01"}
        )
        no_period = await client.call_tool("events", {"operation": "counts", "event": ["A"]})
        both = await client.call_tool(
            "events", {"operation": "counts", "event": ["A"], "interval": 3, "from_date": "2026-03-01", "to_date": "2026-03-02"}
        )
        hourly_uniques = await client.call_tool(
            "events", {"operation": "counts", "event": ["A"], "type": "unique", "unit": "hour", "interval": 3}
        )
        no_events = await client.call_tool("events", {"operation": "counts", "event": [], "interval": 3})
        bad_type = await client.call_tool("events", {"operation": "names", "type": "total"})
        no_name = await client.call_tool("events", {"operation": "property_values", "event": "A"})
    assert "from_date: must be a date as yyyy-mm-dd, not '2026-02-30'" in error_text(bad_date)
    assert "from_date 2026-03-02 is after to_date 2026-03-01" in error_text(reversed_dates)
    assert "needs from_date and to_date (or interval)" in error_text(no_period)
    assert "not both" in error_text(both)
    assert "no unique counts by hour" in error_text(hourly_uniques)
    assert "event" in error_text(no_events)
    assert "type:" in error_text(bad_type)
    assert "name: Field required" in error_text(no_name)
    assert "nothing was sent to Mixpanel" in error_text(bad_date)
    assert double.received() == []


async def test_legacy_secret_is_sent_as_basic_user_without_project_id(double, double_url):
    january(double)
    env = server_env(
        double_url,
        MIXPANEL_SERVICE_ACCOUNT_USERNAME=None,
        MIXPANEL_SERVICE_ACCOUNT_SECRET=None,
        MIXPANEL_API_SECRET=API_SECRET,
    )
    async with stdio_client(env) as client:
        result = await client.call_tool("events", {"operation": "property_values", "event": "Signed up", "name": "country"})
    (request,) = double.received("/api/query/events/properties/values")
    assert request.basic_auth == (API_SECRET, "")
    assert "project_id" not in request.query
    assert structured(result)["values"] == ["US", "DE"]


async def test_server_errors_are_retried_and_rate_limits_reported(double, env):
    january(double)
    double.fail("/api/query/events/properties/top", 503)
    double.fail("/api/query/events/names", 429, headers={"Retry-After": "3600"})
    async with stdio_client(env) as client:
        retried = await client.call_tool("events", {"operation": "properties", "event": "Signed up"})
        limited = await client.call_tool("events", {"operation": "names"})
    assert len(double.received("/api/query/events/properties/top")) == 2
    assert structured(retried)["properties"][0] == {"name": "country", "count": 6}
    text = error_text(limited)
    assert "retry in 60 min" in text and "60 queries an hour" in text
    assert len(double.received("/api/query/events/names")) == 1  # an hour's wait is not slept through


async def test_counts_by_week_say_which_buckets_are_not_a_whole_week(double, env):
    january(double)
    # 2026-01-08 is a Thursday: its week's bucket (starting Monday 01-05) holds four days of that week.
    period = {"from_date": "2026-01-08", "to_date": "2026-01-20", "unit": "week"}
    async with stdio_client(env) as client:
        result = await client.call_tool("events", {"operation": "counts", "event": ["Signed up"], **period})
    data = structured(result)
    assert data["partial_periods"] == {
        "2026-01-05": "covers 2026-01-08..2026-01-11 only, not the whole week",
        "2026-01-19": "covers 2026-01-19..2026-01-20 only, not the whole week",
    }
    assert "2026-01-12" not in data["partial_periods"]
    assert "Not whole periods: 2026-01-05 covers 2026-01-08..2026-01-11 only" in result.content[0].text


async def test_one_event_name_is_a_list_of_one_and_every_refusal_has_an_example(double, env):
    january(double)
    period = {"from_date": "2026-01-05", "to_date": "2026-01-07"}
    async with stdio_client(env) as client:
        one = await client.call_tool("events", {"operation": "counts", "event": "Signed up", **period})
        wrong_type = await client.call_tool("events", {"operation": "counts", "event": ["Signed up"], "unit": "year", **period})
        wrong_limit = await client.call_tool("events", {"operation": "names", "limit": "many"})
    assert structured(one)["segments"][0]["segment"] == "Signed up"
    assert only(double, "/api/query/events").query["event"] == '["Signed up"]'
    assert "Example: 'minute'" in error_text(wrong_type)
    assert "Example: 7" in error_text(wrong_limit)


async def test_top_events_say_how_many_there_are_and_how_many_are_shown(double, env):
    now = time.time()
    double.events.extend(stored_event(f"E{i}", "u1", now) for i in range(6))
    async with stdio_client(env) as client:
        top = await client.call_tool("events", {"operation": "top"})
    text = top.content[0].text
    assert text.startswith("6 event(s) today (general, change vs yesterday); the top 5: ")
    assert len(structured(top)["events"]) == 6


async def test_the_change_vs_yesterday_compares_the_same_hours(double, env):
    """Mixpanel's "normalized" change: this morning against yesterday morning, not against all of yesterday."""
    now = time.time()
    if 86_400 - now % 86_400 < 300:
        pytest.skip("too close to midnight UTC for 'later today' to stay today")
    double.events.extend(
        [stored_event("Viewed page", "u1", now) for _ in range(2)]
        + [stored_event("Viewed page", "u2", now - 86_400 - 60)]  # yesterday, earlier in the day: counted
        + [stored_event("Viewed page", "u3", now - 86_400 + 120) for _ in range(5)]  # yesterday, later: not yet
    )
    async with stdio_client(env) as client:
        top = await client.call_tool("events", {"operation": "top"})
    assert structured(top)["events"] == [{"amount": 2, "event": "Viewed page", "percent_change": 1}]
