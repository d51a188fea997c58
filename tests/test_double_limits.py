"""The double (also the sandbox users run) answers absurd questions with a 400, as Mixpanel does, instead of
crashing or spending its event loop on them. Plain HTTP against the running double."""

from __future__ import annotations

import httpx2
import pytest

from mixpanel_mcp.client.http import basic_auth
from tests.conftest import PROJECT_ID, SA_SECRET, SA_USER

AUTH = {"Authorization": basic_auth(SA_USER, SA_SECRET)}
# Generous: the old double spent about a minute on the first request below; the bound only says "not that".
TIMEOUT = 30.0


def ask(env: dict[str, str], path: str, **params: str) -> httpx2.Response:
    url = env["MIXPANEL_QUERY_URL"] + "/query" + path
    return httpx2.get(url, params={"project_id": str(PROJECT_ID), **params}, headers=AUTH, timeout=TIMEOUT)


def test_a_funnel_or_segmentation_over_two_thousand_years_is_refused_quickly(double, env):
    funnel = ask(env, "/funnels", funnel_id="7509", from_date="0001-01-01", to_date="2026-01-01")
    assert funnel.status_code == 400 and "more than 10,000" in funnel.json()["error"]
    hourly = ask(env, "/segmentation", event="Purchase", from_date="0001-01-01", to_date="2026-01-01", unit="hour")
    assert hourly.status_code == 400 and "shorter range or a coarser unit" in hourly.json()["error"]
    at_the_edge = ask(env, "/segmentation", event="Purchase", from_date="2026-01-01", to_date="9999-12-31", unit="month")
    assert at_the_edge.status_code == 400
    assert ask(env, "/events/names", type="general").status_code == 200  # and the double is still there


@pytest.mark.parametrize(
    ("param", "expression"),
    [
        ("where", "(" * 3000 + "true" + ")" * 3000),
        ("where", "not " * 3000 + "true"),
        ("where", "-" * 3000 + "1 > 0"),
        ("where", "1" + " + 1" * 5000 + " > 0"),
        ("where", "[" * 3000),
        ("on", "floor(1e400)"),
        ("on", "1e400 % 1"),
    ],
)
def test_an_expression_too_deep_or_that_cannot_be_computed_is_a_400(double, env, param, expression):
    double.events.append({"event": "Purchase", "properties": {"distinct_id": "u1", "time": 1767268800, "price": [1, 2]}})
    path = "/segmentation" if param == "where" else "/segmentation/numeric"
    answer = ask(env, path, event="Purchase", from_date="2026-01-01", to_date="2026-01-02", **{param: expression})
    if param == "where":  # too deep or too long: refused, naming why
        assert answer.status_code == 400 and "expression" in answer.json()["error"], answer.text
    else:  # infinity and NaN are no value (JavaScript's NaN), so no bucket: an answer, not a crash
        assert answer.status_code == 200 and answer.json()["data"]["values"] == {}, answer.text


def test_arithmetic_between_a_list_or_string_and_a_number_has_no_value(double, env):
    double.events.append({"event": "Purchase", "properties": {"distinct_id": "u1", "time": 1767268800, "items": [1, 2], "name": "a"}})
    for expression in ('properties["items"] + 1', '1 + properties["name"]', '[1] * 2', '"a" - 1'):
        answer = ask(env, "/segmentation", event="Purchase", from_date="2026-01-01", to_date="2026-01-02", on=expression)
        assert answer.status_code in (200, 400), (expression, answer.text)


def test_requests_still_running_from_before_a_reset_do_not_skew_the_count_in_flight():
    """A test's held request that ends after the next test's reset must not make that test's count read low."""
    from mixpanel_mcp.double import DoubleState

    state = DoubleState()
    old = state.enter()
    state.reset()
    state.leave(old)  # the held request of the previous test ends now
    new = [state.enter() for _ in range(5)]
    assert (state.in_flight, state.max_in_flight) == (5, 5)
    for generation in new:
        state.leave(generation)
    assert state.in_flight == 0
