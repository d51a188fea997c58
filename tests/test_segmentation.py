"""segmentation (segment, numeric, sum, average) and insights, end to end over stdio against the double."""

import httpx2
import pytest

from tests.conftest import SA_SECRET, SA_USER, error_text, stdio_client, stored_event, structured

pytestmark = pytest.mark.asyncio

SA = (SA_USER, SA_SECRET)
PERIOD = {"from_date": "2026-02-01", "to_date": "2026-02-03"}
PRICE = 'properties["price"]'
COUNTRY = 'properties["country"]'


def requests(double, path):
    """Every request at `path`, each checked to be a GET with service-account auth and project_id."""
    found = double.received(path)
    for request in found:
        assert request.method == "GET"
        assert request.basic_auth == SA
        assert request.query["project_id"] == "1234"
    return found


def purchases(double):
    """In range: 02-01 u1 US 10, 02-01 u2 DE 25, 02-02 u1 US 30, 02-02 u3 US 12, 02-03 u2 FR 100; plus noise."""
    double.events.extend(
        [
            stored_event("Purchase", "u1", "2026-01-31T23:59:59", country="US", price=1000),
            stored_event("Purchase", "u1", "2026-02-01T10:00:00", country="US", price=10),
            stored_event("Purchase", "u2", "2026-02-01T12:00:00", country="DE", price=25),
            stored_event("Purchase", "u1", "2026-02-02T09:00:00", country="US", price=30),
            stored_event("Purchase", "u3", "2026-02-02T10:00:00", country="US", price=12),
            stored_event("Purchase", "u2", "2026-02-03T08:00:00", country="FR", price=100),
            stored_event("Purchase", "u1", "2026-02-04T00:00:00", country="US", price=1000),
            stored_event("Signed up", "u1", "2026-02-01T09:00:00", country="US", price=1000),
        ]
    )


async def test_segment_plain_by_property_filtered_and_unique_by_interval(double, env):
    purchases(double)
    async with stdio_client(env) as client:
        plain = await client.call_tool("segmentation", {"operation": "segment", "event": "Purchase", **PERIOD})
        by_country = await client.call_tool("segmentation", {"operation": "segment", "event": "Purchase", "on": COUNTRY, **PERIOD})
        filtered = await client.call_tool(
            "segmentation",
            {
                "operation": "segment",
                "event": "Purchase",
                "on": COUNTRY,
                "where": f'{PRICE} >= 10 and {COUNTRY} != "FR"',
                "limit": 1,
                **PERIOD,
            },
        )
        unique = await client.call_tool(
            "segmentation", {"operation": "segment", "event": "Purchase", "type": "unique", "interval": 3, **PERIOD}
        )

    first, second, third, fourth = requests(double, "/api/query/segmentation")
    assert first.query == {"project_id": "1234", "event": "Purchase", **PERIOD, "unit": "day", "type": "general"}
    assert second.query == {**first.query, "on": COUNTRY}
    assert third.query == {**second.query, "where": 'properties["price"] >= 10 and properties["country"] != "FR"', "limit": "1"}
    assert fourth.query == {"project_id": "1234", "event": "Purchase", **PERIOD, "interval": "3", "type": "unique"}

    data = structured(plain)
    assert data["dates"] == ["2026-02-01", "2026-02-02", "2026-02-03"]
    assert data["segments"] == [
        {"segment": "Purchase", "total": 5, "values": {"2026-02-01": 2, "2026-02-02": 2, "2026-02-03": 1}}
    ]
    assert "mixpanel" not in data  # the same numbers as the segments: not repeated
    assert list(data["segments"][0]["values"]) == data["dates"]  # ours, by date
    assert plain.content[0].text.startswith(
        "Purchase, by day from 2026-02-01 to 2026-02-03: 5 events; peak 2026-02-01 (2)."
    )

    data = structured(by_country)
    assert [(s["segment"], s["total"]) for s in data["segments"]] == [("US", 3), ("DE", 1), ("FR", 1)]
    assert data["segments"][0]["values"] == {"2026-02-01": 1, "2026-02-02": 2, "2026-02-03": 0}
    assert data["grand_total"] == 5
    assert "5 events over 3 segment(s); top: US (3), DE (1), FR (1)." in by_country.content[0].text

    # price >= 10 and not FR: US 10, DE 25, US 30, US 12 -> US 3, DE 1; limit 1 keeps the top segment only.
    data = structured(filtered)
    assert data["segments"] == [{"segment": "US", "total": 3, "values": {"2026-02-01": 1, "2026-02-02": 2, "2026-02-03": 0}}]
    assert "where properties[\"price\"] >= 10" in filtered.content[0].text

    # One 3-day bucket: users u1, u2, u3.
    assert structured(unique)["segments"] == [{"segment": "Purchase", "total": 3, "values": {"2026-02-01": 3}}]
    assert "3 sum of per-period unique users" in unique.content[0].text


async def test_numeric_sum_and_average(double, env):
    purchases(double)
    async with stdio_client(env) as client:
        numeric = await client.call_tool("segmentation", {"operation": "numeric", "event": "Purchase", "on": PRICE, **PERIOD})
        total = await client.call_tool("segmentation", {"operation": "sum", "event": "Purchase", "on": PRICE, **PERIOD})
        us_total = await client.call_tool(
            "segmentation",
            {"operation": "sum", "event": "Purchase", "on": PRICE, "where": f'{COUNTRY} == "US"', "unit": "day", **PERIOD},
        )
        mean = await client.call_tool("segmentation", {"operation": "average", "event": "Purchase", "on": PRICE, **PERIOD})

    (request,) = requests(double, "/api/query/segmentation/numeric")
    assert request.query == {"project_id": "1234", "event": "Purchase", **PERIOD, "on": PRICE, "unit": "day", "type": "general"}
    # Prices 10, 25, 30, 12, 100: ten-wide buckets; 10 and 12 share one.
    data = structured(numeric)
    assert [(s["segment"], s["total"]) for s in data["segments"]] == [
        ("10 - 20", 2),
        ("100 - 110", 1),
        ("20 - 30", 1),
        ("30 - 40", 1),
    ]
    assert data["segments"][0]["values"] == {"2026-02-01": 1, "2026-02-02": 1, "2026-02-03": 0}
    assert "over 4 bucket(s); top: 10 - 20 (2)" in numeric.content[0].text

    first, second = requests(double, "/api/query/segmentation/sum")
    assert first.query == {"project_id": "1234", "event": "Purchase", **PERIOD, "on": PRICE, "unit": "day"}
    assert second.query == {**first.query, "where": 'properties["country"] == "US"'}
    data = structured(total)
    assert data["results"] == {"2026-02-01": 35, "2026-02-02": 42, "2026-02-03": 100}
    assert list(data["results"]) == ["2026-02-01", "2026-02-02", "2026-02-03"]
    assert data["total"] == 177
    assert "computed_at" in data
    assert total.content[0].text.startswith(
        'Sum of properties["price"] over Purchase, by day from 2026-02-01 to 2026-02-03: 177; highest 2026-02-03 (100).'
    )
    assert structured(us_total)["total"] == 52  # 10 + 30 + 12

    (request,) = requests(double, "/api/query/segmentation/average")
    assert request.query == {"project_id": "1234", "event": "Purchase", **PERIOD, "on": PRICE, "unit": "day"}
    assert structured(mean)["results"] == {"2026-02-01": 17.5, "2026-02-02": 21, "2026-02-03": 100}
    assert "from 17.50 (2026-02-01) to 100 (2026-02-03) over 3 period(s)" in mean.content[0].text


async def test_many_segments_are_capped_with_a_count_and_a_hint(double, env):
    double.events.extend(
        stored_event("Visit", f"u{i}", "2026-02-01T10:00:00", city=f"city-{i:02d}") for i in range(60) for _ in range(1 + (i < 3))
    )
    async with stdio_client(env) as client:
        result = await client.call_tool(
            "segmentation",
            {"operation": "segment", "event": "Visit", "on": 'properties["city"]', "limit": 100, "from_date": "2026-02-01", "to_date": "2026-02-01"},
        )
    data = structured(result)
    assert data["segment_count"] == 60 and len(data["segments"]) == 50
    assert data["segments_omitted"] == 10
    assert "limit or where" in data["hint"]
    assert [s["segment"] for s in data["segments"][:3]] == ["city-00", "city-01", "city-02"]
    assert data["grand_total"] == 63
    assert "mixpanel" not in data  # too big to repeat
    assert "10 more not shown" in result.content[0].text


async def test_insights_runs_a_saved_report(double, env):
    double.bookmarks[555] = {
        "computed_at": "2026-02-10T16:35:41.252314+00:00",
        "date_range": {"from_date": "2026-02-02T00:00:00-08:00", "to_date": "2026-02-15T23:59:59.999000-08:00"},
        "headers": ["$event"],
        "series": {
            "Logged in": {"2026-02-09T00:00:00-08:00": 4325, "2026-02-02T00:00:00-08:00": 9852},
            "Viewed page": {"2026-02-09T00:00:00-08:00": 11432, "2026-02-02T00:00:00-08:00": 10246},
        },
    }
    async with stdio_client(env) as client:
        result = await client.call_tool("insights", {"bookmark_id": 555})
        missing = await client.call_tool("insights", {"bookmark_id": 999})
        invalid = await client.call_tool("insights", {"bookmark_id": "report-555"})

    first, second = requests(double, "/api/query/insights")
    assert first.query == {"project_id": "1234", "bookmark_id": "555"}
    assert second.query == {"project_id": "1234", "bookmark_id": "999"}
    data = structured(result)
    assert data["headers"] == ["$event"] and data["series_count"] == 2
    assert data["series"] == [
        {"series": "Viewed page", "total": 21678, "values": {"2026-02-02T00:00:00-08:00": 10246, "2026-02-09T00:00:00-08:00": 11432}},
        {"series": "Logged in", "total": 14177, "values": {"2026-02-02T00:00:00-08:00": 9852, "2026-02-09T00:00:00-08:00": 4325}},
    ]
    assert list(data["series"][0]["values"]) == ["2026-02-02T00:00:00-08:00", "2026-02-09T00:00:00-08:00"]
    assert "mixpanel" not in data  # its series, dates and headers are all above
    assert result.content[0].text.startswith(
        "Insights report 555, 2026-02-02 to 2026-02-15: 2 series; top: Viewed page (total 21,678), Logged in (total 14,177)."
    )
    assert "bookmark_id 999 not found" in error_text(missing) and "400" in error_text(missing)
    assert "the number after report- in the report's URL in Mixpanel" in error_text(missing)
    assert "bookmark_id" in error_text(invalid) and "nothing was sent" in error_text(invalid)


async def test_invalid_arguments_are_refused_before_any_request(double, env):
    async with stdio_client(env) as client:
        no_on = await client.call_tool("segmentation", {"operation": "numeric", "event": "Purchase", **PERIOD})
        reversed_dates = await client.call_tool(
            "segmentation", {"operation": "segment", "event": "Purchase", "from_date": "2026-02-03", "to_date": "2026-02-01"}
        )
        bad_date = await client.call_tool(
            "segmentation", {"operation": "sum", "event": "Purchase", "on": PRICE, "from_date": "02/01/2026", "to_date": "2026-02-03"}
        )
        minute_sum = await client.call_tool("segmentation", {"operation": "sum", "event": "Purchase", "on": PRICE, "unit": "minute", **PERIOD})
        general_interval = await client.call_tool("segmentation", {"operation": "segment", "event": "Purchase", "interval": 7, **PERIOD})
        huge_limit = await client.call_tool("segmentation", {"operation": "segment", "event": "Purchase", "limit": 20_000, **PERIOD})
    assert "on: Field required" in error_text(no_on) and "operation 'numeric'" in error_text(no_on)
    assert "from_date 2026-02-03 is after to_date 2026-02-01" in error_text(reversed_dates)
    assert "from_date: must be a date as yyyy-mm-dd, not '02/01/2026'. Example: 2026-01-31" in error_text(bad_date)
    assert "unit must be hour or day here, not minute" in error_text(minute_sum)
    assert "interval works with type unique or average only" in error_text(general_interval)
    assert "limit:" in error_text(huge_limit)
    assert double.received() == []


async def test_mixpanel_refusals_become_actionable_messages(double, env):
    purchases(double)
    double.fail("/api/query/segmentation/sum", 403, body={"request": "/api/query/segmentation/sum", "error": "Permission denied"})
    double.fail("/api/query/segmentation", 429, headers={"Retry-After": "3600"})
    async with stdio_client(env) as client:
        denied = await client.call_tool("segmentation", {"operation": "sum", "event": "Purchase", "on": PRICE, **PERIOD})
        limited = await client.call_tool("segmentation", {"operation": "segment", "event": "Purchase", **PERIOD})
        unsupported = await client.call_tool(
            "segmentation", {"operation": "segment", "event": "Purchase", "where": 'properties["a"] ~= 1', **PERIOD}
        )
    text = error_text(denied)
    assert "403" in text and "Analyst" in text and "Permission denied" in text
    assert "retry in 60 min" in error_text(limited)
    assert "400 on /segmentation" in error_text(unsupported) and "expression" in error_text(unsupported)
    # 403 and 429-for-an-hour are not retried; the unsupported where was sent once and refused.
    assert len(double.received("/api/query/segmentation/sum")) == 1
    assert len(double.received("/api/query/segmentation")) == 2


async def test_double_refuses_missing_parameters_and_bad_credentials_like_the_query_api(double, double_url):
    """What the tools never send (their arguments are checked first), the double still answers as Mixpanel does."""
    async with httpx2.AsyncClient(base_url=f"{double_url}/api/query", auth=SA) as http:
        no_on = await http.get("/segmentation/numeric", params={"project_id": 1234, "event": "Purchase", **PERIOD})
        reversed_dates = await http.get(
            "/segmentation", params={"project_id": 1234, "event": "E", "from_date": "2026-02-03", "to_date": "2026-02-01"}
        )
        no_type = await http.get("/events/names", params={"project_id": 1234})
        no_project = await http.get("/events/names", params={"type": "general"})
        wrong_secret = await http.get("/events/names", params={"project_id": 1234, "type": "general"}, auth=(SA_USER, "nope"))
    assert no_on.status_code == 400
    assert no_on.json() == {
        "request": "/api/query/segmentation/numeric?project_id=1234&event=Purchase&from_date=2026-02-01&to_date=2026-02-03",
        "error": "on is a required parameter",
    }
    assert reversed_dates.status_code == 400 and "from_date" in reversed_dates.json()["error"]
    assert no_type.status_code == 400 and no_type.json()["error"] == "type is a required parameter"
    assert no_project.status_code == 400 and "project_id" in no_project.json()["error"]
    assert wrong_secret.status_code == 401


async def test_per_period_averages_are_never_added_up(double, env):
    purchases(double)
    async with stdio_client(env) as client:
        result = await client.call_tool("segmentation", {"operation": "segment", "event": "Purchase", "type": "average", **PERIOD})
    data = structured(result)
    (segment,) = data["segments"]
    values = list(segment["values"].values())
    assert "total" not in segment and "grand_total" not in data
    assert segment["mean_of_periods"] == pytest.approx(sum(values) / len(values), abs=1e-4)
    assert segment["range"] == [min(values), max(values)]
    assert "mean of periods" in result.content[0].text and "range" in result.content[0].text


async def test_insights_adds_up_counts_only(double, env):
    double.bookmarks[556] = {
        "computed_at": "2026-02-10T16:35:41.252314+00:00",
        "date_range": {"from_date": "2026-02-02T00:00:00-08:00", "to_date": "2026-02-15T23:59:59.999000-08:00"},
        "headers": ["$event"],
        "series": {
            "Signup funnel": {"count": 120, "step_conv_ratio": 0.4, "overall_conv_ratio": 0.25},
            "Average of amount": {"2026-02-02T00:00:00-08:00": 30.0, "2026-02-09T00:00:00-08:00": 50.0},
        },
    }
    async with stdio_client(env) as client:
        result = await client.call_tool("insights", {"bookmark_id": 556})
    series = structured(result)["series"]
    by_name = {(s["series"], "not_added_up" in s): s for s in series}
    assert by_name[("Signup funnel", True)]["not_added_up"] == {"step_conv_ratio": 0.4, "overall_conv_ratio": 0.25}
    assert by_name[("Signup funnel", False)]["total"] == 120  # the count alone, ratios not added in
    average = by_name[("Average of amount", False)]
    assert "total" not in average and (average["mean_of_periods"], average["range"]) == (40, [30, 50])
    text = result.content[0].text
    assert "Signup funnel (total 120)" in text and "120.65" not in text
    assert "Average of amount (mean of periods 40, range 30 to 50)" in text


async def test_an_empty_report_names_the_likely_misspelling_instead_of_a_page_of_zeros(double, env):
    import datetime as dt
    import time as clock

    yesterday = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    double.events.extend(
        stored_event("Signed up", f"u{i}", clock.time() - 86_400, country="US") for i in range(3)
    )
    week = {"from_date": str(yesterday - dt.timedelta(days=6)), "to_date": str(yesterday)}
    future = {"from_date": str(yesterday + dt.timedelta(days=30)), "to_date": str(yesterday + dt.timedelta(days=31))}
    async with stdio_client(env) as client:
        misspelled = await client.call_tool("segmentation", {"operation": "segment", "event": "Signup", **week})
        again = await client.call_tool("segmentation", {"operation": "segment", "event": "Signup", **week})
        wrong_property = await client.call_tool(
            "segmentation", {"operation": "segment", "event": "Signed up", "on": 'properties["contry"]', **week}
        )
        ahead = await client.call_tool("segmentation", {"operation": "segment", "event": "Signed up", **future})
        counted = await client.call_tool("events", {"operation": "counts", "event": ["Sign up"], **week})

    text = misspelled.content[0].text
    assert text.startswith("The project has no event named 'Signup' (checked against its names of the last 31 days).")
    assert "Did you mean 'Signed up'?" in text
    data = structured(misspelled)
    assert data["empty"] is True and "mixpanel" not in data
    assert len(text) < 1000  # no page of zeros
    assert structured(again)["likely_cause"] == data["likely_cause"]
    assert len(double.received("/api/query/events/names")) == 1  # the names are kept, not asked for again
    assert "no property of 'Signed up' named 'contry'" in wrong_property.content[0].text
    assert "Did you mean 'country'?" in wrong_property.content[0].text
    assert ahead.content[0].text.startswith(f"The range {future['from_date']}..{future['to_date']} lies in the future")
    assert "Did you mean 'Signed up'?" in counted.content[0].text
