"""retention: cohort retention and frequency (addiction), end to end over stdio against the double."""

import pytest

from tests.conftest import PROJECT_ID, SA_SECRET, SA_USER, error_text, stdio_client, stored_event, structured

pytestmark = pytest.mark.asyncio

EVENTS = [
    # a: born Jan 5 10:00; opens 2 h (interval 0), 25 h and 47 h (interval 1) later.
    stored_event("Signed up", "a", "2026-01-05T10:00"),
    stored_event("Opened app", "a", "2026-01-05T12:00"),
    stored_event("Opened app", "a", "2026-01-06T11:00"),
    stored_event("Opened app", "a", "2026-01-07T09:00"),
    # b: born Jan 5 20:00; opens 49 h later (interval 2).
    stored_event("Signed up", "b", "2026-01-05T20:00"),
    stored_event("Opened app", "b", "2026-01-07T21:00"),
    # c: born Jan 6, never comes back. d: born Jan 6 09:00; opens 1 h (0) and 25 h (1) later.
    stored_event("Signed up", "c", "2026-01-06T08:00"),
    stored_event("Signed up", "d", "2026-01-06T09:00"),
    stored_event("Opened app", "d", "2026-01-06T10:00"),
    stored_event("Opened app", "d", "2026-01-07T10:00"),
    # e was born on Jan 1 (before the range), so signing up again on Jan 5 puts e in no cohort.
    stored_event("Signed up", "e", "2026-01-01T10:00"),
    stored_event("Signed up", "e", "2026-01-05T10:00"),
    # f only opens the app, twice on the same day.
    stored_event("Opened app", "f", "2026-01-05T08:00"),
    stored_event("Opened app", "f", "2026-01-05T09:00"),
]


def assert_request(request, path: str, expected: dict) -> None:
    assert request.method == "GET"
    assert request.path == path
    assert request.query == {"project_id": str(PROJECT_ID), **expected}
    assert request.basic_auth == (SA_USER, SA_SECRET)
    assert request.body == b""


async def test_birth_unbounded_and_compounded_retention(double, env):
    double.events.extend(EVENTS)
    birth = {
        "operation": "query",
        "from_date": "2026-01-05",
        "to_date": "2026-01-06",
        "born_event": "Signed up",
        "event": "Opened app",
        "unit": "day",
        "interval_count": 2,
    }
    async with stdio_client(env) as client:
        plain = await client.call_tool("retention", birth)
        unbounded = await client.call_tool("retention", {**birth, "unbounded_retention": True})
        compounded = await client.call_tool(
            "retention",
            {"operation": "query", "retention_type": "compounded", "event": "Opened app", "from_date": "2026-01-06", "to_date": "2026-01-06"},
        )
    first, second, third = double.received("/api/query/retention")

    expected = {
        "from_date": "2026-01-05",
        "to_date": "2026-01-06",
        "retention_type": "birth",
        "born_event": "Signed up",
        "event": "Opened app",
        "interval_count": "2",
        "unit": "day",
    }
    assert_request(first, "/api/query/retention", expected)
    # Jan 5 cohort (a, b): interval 0 a, 1 a, 2 b. Jan 6 cohort (c, d): 0 d, 1 d.
    data = structured(plain)
    assert "raw" not in data  # Mixpanel's answer is all in the table: not repeated
    assert data["cohorts"] == [
        {"cohort": "2026-01-05", "size": 2, "retained": [1, 1, 1], "retained_pct": [50.0, 50.0, 50.0]},
        {"cohort": "2026-01-06", "size": 2, "retained": [1, 1, 0], "retained_pct": [50.0, 50.0, 0.0]},
    ]
    assert data["intervals"] == ["day 0", "day 1", "day 2"]
    assert data["overall"] == {"size": 4, "retained_pct": [50.0, 50.0, 25.0]}
    assert plain.content[0].text.startswith(
        "Birth retention, 'Signed up' then 'Opened app', by day: 2 cohort(s), 4 users, 2026-01-05..2026-01-06; "
        "retained day 1: 50.0%, day 2: 25.0%."
    )

    # Unbounded: a user counts in every interval up to the last one they came back in.
    assert_request(second, "/api/query/retention", {**expected, "unbounded_retention": "true"})
    data = structured(unbounded)
    assert [c["retained"] for c in data["cohorts"]] == [[2, 2, 1], [1, 1, 0]]
    assert data["overall"]["retained_pct"] == [75.0, 75.0, 25.0]

    # Compounded on Jan 6: a (11:00) opens again 22 h later (interval 0); d (10:00) 24 h later (interval 1).
    assert_request(
        third,
        "/api/query/retention",
        {"from_date": "2026-01-06", "to_date": "2026-01-06", "retention_type": "compounded", "event": "Opened app"},
    )
    data = structured(compounded)
    assert data["cohorts"] == [{"cohort": "2026-01-06", "size": 2, "retained": [1, 1], "retained_pct": [50.0, 50.0]}]
    assert compounded.content[0].text.startswith(
        "Compounded retention of 'Opened app', by day: 1 cohort(s), 2 users, 2026-01-06..2026-01-06; retained day 1: 50.0%."
    )


async def test_frequency_counts_distinct_days_per_week(double, env):
    double.events.extend(EVENTS)
    async with stdio_client(env) as client:
        result = await client.call_tool(
            "retention",
            {
                "operation": "frequency",
                "from_date": "2026-01-05",
                "to_date": "2026-01-11",
                "unit": "week",
                "addiction_unit": "day",
                "event": "Opened app",
                "where": 'properties["distinct_id"] != "b"',
            },
        )
    (request,) = double.received("/api/query/retention/addiction")
    assert_request(
        request,
        "/api/query/retention/addiction",
        {
            "from_date": "2026-01-05",
            "to_date": "2026-01-11",
            "unit": "week",
            "addiction_unit": "day",
            "event": "Opened app",
            "where": 'properties["distinct_id"] != "b"',
        },
    )
    # Week of Jan 5 without b: a opened on 3 days, d on 2, f on 1 (twice the same day).
    data = structured(result)
    assert "raw" not in data
    assert data["periods"] == [
        {
            "date": "2026-01-05",
            "active_users": 3,
            "at_least": [3, 2, 1, 0, 0, 0, 0],
            "at_least_pct": [100.0, 66.7, 33.3, 0.0, 0.0, 0.0, 0.0],
        }
    ]
    assert result.content[0].text.startswith(
        "Frequency of 'Opened app' per week, counted in days: 1 period(s) with activity, 3 active user-periods; "
        "2+ days: 66.7%, 3+ days: 33.3%, 5+ days: 0.0%."
    )


INVALID = [
    ({"operation": "query"}, "(arguments)", "birth retention needs born_event"),
    ({"operation": "query", "born_event": "Signed up", "unit": "year"}, "unit", "'day', 'week' or 'month'"),
    ({"operation": "query", "retention_type": "compounded", "born_event": "Signed up"}, "(arguments)", "only to birth"),
    ({"operation": "query", "born_event": "Signed up", "interval": 91}, "interval", "less than or equal to 90"),
    ({"operation": "query", "born_event": "Signed up", "unit": "week", "interval": 7}, "(arguments)", "unit or interval, not both"),
    ({"operation": "query", "born_event": "Signed up", "to_date": "2025-12-31"}, "(arguments)", "after to_date"),
    ({"operation": "query", "born_event": "Signed up", "interval_count": 0}, "interval_count", "greater than or equal to 1"),
    ({"operation": "frequency", "unit": "week"}, "addiction_unit", "Field required"),
    ({"operation": "frequency", "unit": "week", "addiction_unit": "minute"}, "addiction_unit", "'hour' or 'day'"),
    ({"operation": "frequency", "addiction_unit": "day"}, "unit", "Field required"),
]


async def test_invalid_arguments_are_refused_before_any_request(double, env):
    async with stdio_client(env) as client:
        results = [
            await client.call_tool("retention", {"from_date": "2026-01-01", "to_date": "2026-01-31", **arguments})
            for arguments, _, _ in INVALID
        ]
    for result, (arguments, field, words) in zip(results, INVALID, strict=True):
        text = error_text(result)
        operation = arguments["operation"]
        assert text.startswith(f"Invalid arguments for retention (operation '{operation}'); nothing was sent"), text
        assert f"- {field}:" in text and words in text, (arguments, text)
    assert double.received() == []


async def test_5xx_is_retried_and_403_names_the_role(double, env):
    double.events.extend(EVENTS)
    double.fail("/api/query/retention/addiction", 503, times=2)
    call = {"from_date": "2026-01-05", "to_date": "2026-01-05", "unit": "day", "addiction_unit": "hour"}
    async with stdio_client(env) as client:
        retried = await client.call_tool("retention", {"operation": "frequency", **call})
        double.fail("/api/query/retention", 403, body={"request": "/api/query/retention", "error": "Forbidden"})
        denied = await client.call_tool("retention", {"operation": "query", "born_event": "Signed up", "from_date": "2026-01-05", "to_date": "2026-01-05"})
    # Three requests: 503, 503, then the answer. On Jan 5, any event: a in hours 10 and 12, f in 8 and 9, b and e in one hour each.
    assert len(double.received("/api/query/retention/addiction")) == 3
    counts = structured(retried)["periods"][0]["at_least"]
    assert len(counts) == 24 and counts[:3] == [4, 2, 0]
    text = error_text(denied)
    assert text.startswith('Mixpanel refused /retention (403) for the service account')
    assert '"Forbidden"' in text and "Analyst or higher" in text


A_OR_NOT = 'properties["distinct_id"] == "a"'


async def test_segmented_retention_and_frequency_are_read_per_segment(double, env):
    """With `on`, the double answers "$overall" plus one entry per value, each by date (Mixpanel does not
    document these shapes; this is the one its segmented Insights retention gives)."""
    double.events.extend(EVENTS)
    birth = {"operation": "query", "from_date": "2026-01-05", "to_date": "2026-01-06", "born_event": "Signed up",
             "event": "Opened app", "unit": "day", "interval_count": 2, "on": A_OR_NOT}
    frequency = {"operation": "frequency", "from_date": "2026-01-05", "to_date": "2026-01-11", "unit": "week",
                 "addiction_unit": "day", "event": "Opened app", "on": A_OR_NOT}
    async with stdio_client(env) as client:
        retention = await client.call_tool("retention", birth)
        often = await client.call_tool("retention", frequency)
    (request,) = double.received("/api/query/retention")
    assert request.query["on"] == A_OR_NOT

    # a alone (true): Jan 5, back on days 0 and 1. Others (false): b (Jan 5, day 2); c and d (Jan 6, d on 0 and 1).
    data = structured(retention)
    assert data["segments"] == {
        "true": [{"cohort": "2026-01-05", "size": 1, "retained": [1, 1, 0], "retained_pct": [100.0, 100.0, 0.0]}],
        "false": [
            {"cohort": "2026-01-05", "size": 1, "retained": [0, 0, 1], "retained_pct": [0.0, 0.0, 100.0]},
            {"cohort": "2026-01-06", "size": 2, "retained": [1, 1, 0], "retained_pct": [50.0, 50.0, 0.0]},
        ],
    }
    assert data["overall"] == {"size": 4, "retained_pct": [50.0, 50.0, 25.0]}  # "$overall", not a segment
    assert "cohorts" not in data

    # Week of Jan 5: a on 3 days (true); b 1, d 2, f 1 (false).
    data = structured(often)
    assert [s["at_least"] for s in data["segments"]["true"]] == [[1, 1, 1, 0, 0, 0, 0]]
    assert [s["at_least"] for s in data["segments"]["false"]] == [[3, 1, 0, 0, 0, 0, 0]]
    assert data["periods"][0]["at_least"] == [4, 2, 1, 0, 0, 0, 0]
    assert often.content[0].text.startswith("Frequency of 'Opened app' per week, counted in days: 1 period(s) with activity, 4 active")


@pytest.mark.parametrize(
    ("path", "arguments", "answer"),
    [
        ("/api/query/retention", {"operation": "query", "born_event": "Signed up"}, {"2026-01-05": {"users": 5}}),
        ("/api/query/retention", {"operation": "query", "born_event": "Signed up"}, {"web": {"2026-01-05": 12}}),
        ("/api/query/retention/addiction", {"operation": "frequency", "unit": "week", "addiction_unit": "day"},
         {"data": {"2026-01-05": "many"}}),
        ("/api/query/retention/addiction", {"operation": "frequency", "unit": "week", "addiction_unit": "day"},
         {"series": [3, 2, 1]}),
    ],
)
async def test_an_answer_that_cannot_be_read_is_said_so_not_read_as_nobody(double, env, path, arguments, answer):
    double.fail(path, 200, body=answer)
    async with stdio_client(env) as client:
        result = await client.call_tool("retention", {"from_date": "2026-01-05", "to_date": "2026-01-11", **arguments})
    text = error_text(result)
    assert f"Mixpanel's answer to {path.removeprefix('/api/query')} could not be read" in text
    assert "not reported as zero" in text and "nobody" not in text


async def test_periods_not_over_yet_are_marked_and_left_out_of_the_headline(double, env):
    import datetime as dt

    today = dt.datetime.now(dt.UTC).replace(hour=12, minute=0, second=0, microsecond=0)

    def at(days_ago: float) -> str:
        return (today - dt.timedelta(days=days_ago)).strftime("%Y-%m-%dT%H:%M")

    double.events.extend([
        # An old cohort: both came back in week 1.
        stored_event("Signed up", "a1", at(35)), stored_event("Opened app", "a1", at(27)),
        stored_event("Signed up", "a2", at(35)), stored_event("Opened app", "a2", at(26)),
        # A young cohort: its week 1 has not ended, so nobody has "not come back" yet.
        stored_event("Signed up", "b1", at(8)), stored_event("Signed up", "b2", at(8)),
    ])
    arguments = {
        "operation": "query", "from_date": at(42)[:10], "to_date": at(1)[:10], "born_event": "Signed up",
        "event": "Opened app", "unit": "week", "interval_count": 1,
    }
    async with stdio_client(env) as client:
        result = await client.call_tool("retention", arguments)
    data = structured(result)
    old, young = data["cohorts"]
    assert (old["retained"], young["retained"]) == ([0, 2], [0, 0])
    assert "incomplete_from" not in old and young["incomplete_from"] in (0, 1)
    assert data["overall"]["retained_pct"][1] == 100.0  # the old cohort only, not (2 of 4) 50 %
    assert data["overall"]["counts_complete_cohorts_only"] is True
    text = result.content[0].text
    assert "1 cohort(s) have intervals not over yet" in text and "retained week 1: 100.0%." in text


async def test_the_double_refuses_unit_and_interval_together_as_mixpanel_does(double, double_url):
    import httpx2

    query = {"project_id": PROJECT_ID, "from_date": "2026-01-05", "to_date": "2026-01-06", "born_event": "Signed up"}
    both = httpx2.get(f"{double_url}/api/query/retention", params={**query, "unit": "day", "interval": 1}, auth=(SA_USER, SA_SECRET))
    assert both.status_code == 400 and both.json()["error"] == "unit and interval both specified"
    for alone in ({"unit": "day"}, {"interval": 1}):
        assert httpx2.get(f"{double_url}/api/query/retention", params={**query, **alone}, auth=(SA_USER, SA_SECRET)).status_code == 200
