"""engage: user profile updates, end to end over stdio against the double."""

import pytest

from tests.conftest import TOKEN, error_text, stdio_client, structured

pytestmark = pytest.mark.asyncio


async def test_set_sends_one_update_with_token_and_no_http_auth(double, env):
    async with stdio_client(env) as client:
        result = await client.call_tool("engage", {"operation": "set", "distinct_id": "u42", "properties": {"plan": "pro"}})
    data = structured(result)
    assert data["updates_sent"] == 1
    (request,) = double.received("/engage")
    assert request.method == "POST"
    assert request.query == {"verbose": "1", "ip": "0"}
    assert "authorization" not in request.headers
    assert request.json() == [{"$token": TOKEN, "$distinct_id": "u42", "$set": {"plan": "pro"}, "$ignore_time": True, "$ip": "0"}]
    assert double.profiles["u42"] == {"plan": "pro"}


async def test_unknown_argument_is_rejected_before_any_request(double, env):
    async with stdio_client(env) as client:
        result = await client.call_tool("engage", {"operation": "set", "distinct_id": "u1", "properties": {"a": 1}, "bogus": 1})
    text = error_text(result)
    assert "bogus" in text and "unknown argument" in text
    assert double.received() == []


# -- many updates, and updates that must not be applied twice --------------------------------------


async def test_batch_of_any_size_goes_2000_per_request_and_keeps_each_profiles_order(double, env):
    # Update i sets n=i on user u{i % 4000}: users u0..u499 get two updates, 4000 apart, in different requests.
    updates = [{"operation": "set", "distinct_id": f"u{i % 4000}", "properties": {"n": i}} for i in range(4500)]
    progress = []

    async def on_progress(done, total, message):
        progress.append((done, total))

    double.fail("/engage", 0, delay=0.3)  # the first request to arrive (the first 2,000) is slow
    group_updates = [{"operation": "set_once", "group_key": "company", "group_id": f"c{i}", "properties": {"seats": i}} for i in range(2001)]
    async with stdio_client(env) as client:
        result = await client.call_tool("engage", {"operation": "batch", "updates": updates}, progress_callback=on_progress)
        groups = await client.call_tool("groups", {"operation": "batch", "updates": group_updates})

    data = structured(result)
    assert (data["updates_sent"], data["applied"], data["requests"], data["retries"]) == (4500, 4500, 3, 0)
    assert "in_doubt" not in data and "not_applied" not in data
    assert result.content[0].text.startswith("Applied 4,500 of 4,500 profile update(s) in 3 request(s).")
    requests = double.received("/engage")
    assert sorted(len(r.json()) for r in requests) == [500, 2000, 2000]
    # The last 500 repeat profiles of the first 2,000, so their request waited for that one's answer.
    first = next(i for i, r in enumerate(requests) if r.json()[0]["$distinct_id"] == "u0")
    last = next(i for i, r in enumerate(requests) if len(r.json()) == 500)
    assert requests[last].json()[0]["$set"] == {"n": 4000} and last > first
    assert all(double.profiles[f"u{i}"] == {"n": 4000 + i} for i in range(500))
    assert all(double.profiles[f"u{i}"] == {"n": i} for i in range(500, 4000))
    assert all(u["$token"] == TOKEN and u["$ip"] == "0" for r in requests for u in r.json())
    assert progress[-1] == (4500, 4500)

    assert structured(groups)["applied"] == 2001
    assert sorted(len(r.json()) for r in double.received("/groups")) == [1, 2000]
    assert all(r.query == {"verbose": "1", "ip": "0"} for r in double.received("/groups"))  # no geolocation of the server
    assert double.group_profiles[("company", "c2000")] == {"seats": 2000}


async def test_add_is_in_doubt_after_a_dropped_connection_and_not_resent_while_set_is(double, env):
    updates = [
        {"operation": "set", "distinct_id": "u1", "properties": {"plan": "pro"}},
        {"operation": "add", "distinct_id": "u1", "properties": {"credits": 5}},
        {"operation": "union", "distinct_id": "u2", "properties": {"tags": ["beta"]}},
        {"operation": "set_once", "distinct_id": "u2", "properties": {"first": "2026-01-01"}},
    ]
    double.fail("/engage", drop=True)  # the double applies the request, then cuts the connection
    async with stdio_client(env) as client:
        result = await client.call_tool("engage", {"operation": "batch", "updates": updates})
        double.fail("/engage", drop=True)
        single_add = await client.call_tool("engage", {"operation": "add", "distinct_id": "u3", "properties": {"credits": 1}})
        double.fail("/engage", drop=True)
        single_set = await client.call_tool("engage", {"operation": "set", "distinct_id": "u4", "properties": {"plan": "team"}})

    first, resent, add, set_dropped, set_again = double.received("/engage")
    assert [next(k for k in u if k in ("$set", "$add", "$union", "$set_once")) for u in first.json()] == ["$set", "$add", "$union", "$set_once"]
    assert resent.json() == [
        {"$token": TOKEN, "$distinct_id": "u1", "$set": {"plan": "pro"}, "$ignore_time": True, "$ip": "0"},
        {"$token": TOKEN, "$distinct_id": "u2", "$set_once": {"first": "2026-01-01"}, "$ignore_time": True, "$ip": "0"},
    ]
    # Applied once each: by the request whose answer was lost.
    assert double.profiles["u1"] == {"plan": "pro", "credits": 5}
    assert double.profiles["u2"] == {"tags": ["beta"], "first": "2026-01-01"}
    data = structured(result)
    assert (data["applied"], data["in_doubt"]) == (2, 2)
    assert data["in_doubt_updates"] == [
        {"index": 1, "operation": "add", "distinct_id": "u1"},
        {"index": 2, "operation": "union", "distinct_id": "u2"},
    ]
    text = result.content[0].text
    assert text.startswith("Applied 2 of 4 profile update(s) in 1 request(s). 2 are in doubt (in_doubt_updates)")
    assert "were not: check those profiles" in text

    # A single $add: one request, then in doubt; a single $set: resent after the drop.
    assert add.json() == [{"$token": TOKEN, "$distinct_id": "u3", "$add": {"credits": 1}, "$ignore_time": True, "$ip": "0"}]
    assert double.profiles["u3"] == {"credits": 1}
    assert structured(single_add)["in_doubt"] == 1 and "mixpanel" not in structured(single_add)
    assert single_add.content[0].text.startswith("add on user u3 is in doubt: the request failed after it may have reached Mixpanel")
    assert set_dropped.body == set_again.body
    assert structured(single_set) == {"operation": "set", "updates_sent": 1, "applied": 1, "mixpanel": {"status": 1, "error": None}}


async def test_updates_that_keep_failing_are_reported_with_what_to_do(double, env):
    double.fail("/engage", 503, times=10)
    async with stdio_client(env) as client:
        result = await client.call_tool("engage", {"operation": "batch", "updates": [{"operation": "set", "distinct_id": "u1", "properties": {"a": 1}}]})
    # A 5xx may come after the work was done: the update is unconfirmed (a $set is safe to send again),
    # not "failed".
    data = structured(result)
    assert data["applied"] == 0 and data["unconfirmed"] == {"count": 1, "ranges": ["0"]}
    assert "Mixpanel had a server error (503 on /engage) after 5 attempt(s)" in data["stopped_by"]
    assert len(double.received("/engage")) == 5  # the first try and four retries
    assert double.profiles == {}


async def test_an_agents_edit_leaves_last_seen_and_a_delete_by_alias_can_spare_the_original(double, env):
    """$ignore_time (default on) and $ignore_alias, and the double's Mixpanel behaviour without them."""
    double.events.append({"event": "$create_alias", "properties": {"distinct_id": "u1", "alias": "u1-dup", "time": 1}})
    double.profiles = {"u1": {"plan": "pro"}, "u1-dup": {"plan": "free"}}
    async with stdio_client(env) as client:
        quiet = await client.call_tool("engage", {"operation": "set", "distinct_id": "u1", "properties": {"a": 1}})
        seen = await client.call_tool("engage", {"operation": "set", "distinct_id": "u2", "properties": {"a": 1}, "ignore_time": False})
        spared = await client.call_tool("engage", {"operation": "delete", "distinct_id": "u1-dup", "ignore_alias": True})
        batch = await client.call_tool("engage", {"operation": "batch", "updates": [
            {"operation": "set", "distinct_id": "u3", "properties": {"a": 1}},
            {"operation": "delete", "distinct_id": "u4"},
        ]})
    for result in (quiet, seen, spared, batch):
        structured(result)
    wire = [u for r in double.received("/engage") for u in r.json()]
    assert [(u["$distinct_id"], u.get("$ignore_time"), u.get("$ignore_alias")) for u in wire] == [
        ("u1", True, None), ("u2", None, None), ("u1-dup", None, True), ("u3", True, None), ("u4", None, None),
    ]
    assert "$last_seen" not in double.profiles["u1"] and "$last_seen" in double.profiles["u2"]
    assert set(double.profiles) == {"u1", "u2", "u3"}  # u1-dup's own profile deleted, u1 spared

    # Without $ignore_alias, Mixpanel deletes the profile the alias points to.
    double.profiles["u1-dup"] = {"plan": "free"}
    async with stdio_client(env) as client:
        structured(await client.call_tool("engage", {"operation": "delete", "distinct_id": "u1-dup"}))
    assert "u1" not in double.profiles and "u1-dup" in double.profiles
