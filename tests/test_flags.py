"""flags: management in the workspace, evaluation on the ingestion host, over stdio; the double's deterministic
assignment (10,000 users split within a few percent of the configured weights)."""

import copy
import json
from collections import Counter

import pytest

from mixpanel_mcp.double.flags import assign
from tests.conftest import API_SECRET, PROJECT_ID, SA_SECRET, SA_USER, error_text, server_env, stdio_client, structured

WORKSPACE_ID = 5678
BASE = f"/api/app/projects/{PROJECT_ID}/workspaces/{WORKSPACE_ID}/feature-flags"
RULESET = {
    "variants": [
        {"key": "control", "value": False, "is_control": True, "split": 0.5},
        {"key": "treatment", "value": True, "is_control": False, "split": 0.5},
    ],
    "rollout": [{"rollout_percentage": 1.0, "variant_splits": {"control": 0.5, "treatment": 0.5}}],
}


@pytest.fixture
def flags_env(double_url):
    return server_env(double_url, MIXPANEL_WORKSPACE_ID=str(WORKSPACE_ID))


def flag(key: str, ruleset: dict, **extra) -> dict:
    return {
        "id": f"id-{key}",
        "key": key,
        "name": key,
        "status": "enabled",
        "context": "distinct_id",
        "hash_salt": "0" * 32,
        "ruleset": copy.deepcopy(ruleset),  # the double changes what it holds (e.g. a decision ships a variant)
        **extra,
    }


def assert_managed(request, method: str, path: str) -> None:
    assert (request.method, request.path, request.query) == (method, path, {})
    assert request.basic_auth == (SA_USER, SA_SECRET)


@pytest.mark.asyncio
async def test_create_list_get_roll_out_and_delete(double, flags_env):
    async with stdio_client(flags_env) as client:
        created = await client.call_tool(
            "flags", {"operation": "create", "name": "New checkout", "key": "new-checkout", "ruleset": RULESET}
        )
        flag_id = structured(created)["flag"]["id"]
        listed = await client.call_tool("flags", {"operation": "list"})
        got = await client.call_tool("flags", {"operation": "get", "flag_id": flag_id})
        rolled = await client.call_tool(
            "flags", {"operation": "update", "flag_id": flag_id, "rollout_percentage": 0.2, "status": "enabled"}
        )
        ninety = {
            **RULESET,
            "rollout": [{"rollout_percentage": 1, "variant_splits": {"control": 0.1, "treatment": 0.9}}],
        }
        reshaped = await client.call_tool("flags", {"operation": "update", "flag_id": flag_id, "ruleset": ninety})
        deleted = await client.call_tool("flags", {"operation": "delete", "flag_id": flag_id})
        after = await client.call_tool("flags", {"operation": "list"})

    post, first_list, get, get_before_put, put, _, second_put, delete, second_list = double.received()
    assert_managed(post, "POST", BASE)
    assert post.json() == {
        "name": "New checkout",
        "key": "new-checkout",
        "tags": [],
        "status": "disabled",
        "context": "distinct_id",
        "serving_method": "remote_or_local",
        "ruleset": {
            "variants": [{**v, "is_sticky": False} for v in RULESET["variants"]],
            "rollout": RULESET["rollout"],
        },
    }
    assert_managed(first_list, "GET", BASE)
    for request in (get, get_before_put):
        assert_managed(request, "GET", f"{BASE}/{flag_id}")
    assert_managed(put, "PUT", f"{BASE}/{flag_id}")
    sent = put.json()
    assert sent["status"] == "enabled" and sent["ruleset"]["rollout"][0]["rollout_percentage"] == 0.2
    assert "id" not in sent and "created" not in sent and sent["hash_salt"] == structured(created)["flag"]["hash_salt"]
    assert_managed(delete, "DELETE", f"{BASE}/{flag_id}")

    assert created.content[0].text.startswith(
        "Created flag new-checkout (disabled; rollout everyone: 100% (control 50%, treatment 50%); "
        "variants control 50% (control), treatment 50%)."
    )
    summary = structured(listed)["flags"][0]
    assert summary == {
        "id": flag_id,
        "key": "new-checkout",
        "name": "New checkout",
        "status": "disabled",
        "context": "distinct_id",
        "variants": "control 50% (control), treatment 50%",
        "rollout": "everyone: 100% (control 50%, treatment 50%)",
    }
    assert structured(got)["flag"]["content_type"] == "feature-flags"
    assert structured(rolled)["summary"]["rollout"] == "everyone: 20% (control 50%, treatment 50%)"
    assert structured(rolled)["summary"]["status"] == "enabled"
    assert second_put.json()["ruleset"]["rollout"] == ninety["rollout"] and second_put.json()["status"] == "enabled"
    assert structured(reshaped)["summary"]["rollout"] == "everyone: 100% (control 10%, treatment 90%)"
    assert structured(deleted) == {"flag_id": flag_id, "deleted": True}
    assert structured(after)["count"] == 0
    assert double.flags[flag_id]["status"] == "archived"


@pytest.mark.asyncio
async def test_evaluate_and_definitions_on_the_ingestion_host(double, flags_env):
    double.flags = {
        "id-a": flag("new-checkout", RULESET, experiment_id="exp-1", is_experiment_active=True),
        "id-b": flag(
            "dark-mode",
            {
                **RULESET,
                "rollout": [
                    {
                        "rollout_percentage": 1.0,
                        "variant_splits": {"treatment": 1.0},
                        "runtime_evaluation_definition": {"platform": "web"},
                    }
                ],
            },
        ),
        "id-c": flag("off-flag", RULESET, status="disabled"),
    }
    async with stdio_client(flags_env) as client:
        evaluated = await client.call_tool(
            "flags", {"operation": "evaluate", "distinct_id": "user-42", "custom_properties": {"platform": "Web"}}
        )
        nothing = await client.call_tool(
            "flags", {"operation": "evaluate", "distinct_id": "user-42", "device_id": "d-1"}
        )
        definitions = await client.call_tool("flags", {"operation": "definitions"})
    first, second, third = double.received()
    assert (first.method, first.path) == ("GET", "/flags")
    assert first.query == {
        "project_id": str(PROJECT_ID),
        "context": json.dumps(
            {"distinct_id": "user-42", "custom_properties": {"platform": "Web"}}, separators=(",", ":")
        ),
    }
    assert first.basic_auth == (SA_USER, SA_SECRET)
    assert json.loads(second.query["context"]) == {"distinct_id": "user-42", "device_id": "d-1"}
    assert (third.path, third.query) == ("/flags/definitions", {"project_id": str(PROJECT_ID)})

    flags = structured(evaluated)["flags"]
    expected = assign(double.flags["id-a"], {"distinct_id": "user-42"})
    assert flags == {
        "new-checkout": {**expected, "experiment_id": "exp-1", "is_experiment_active": True},
        "dark-mode": {"variant_key": "treatment", "variant_value": True},
    }
    assert evaluated.content[0].text.startswith(
        f"User 'user-42' gets 2 flag(s): new-checkout = {expected['variant_key']}; dark-mode = treatment."
    )
    assert set(structured(nothing)["flags"]) == {"new-checkout"}  # dark-mode targets platform = web only
    data = structured(definitions)
    assert [f["key"] for f in data["flags"]] == ["new-checkout", "dark-mode"]
    assert (
        data["flags"][0]["experiment_id"] == "exp-1"
        and data["summaries"][1]["rollout"] == "platform = web: 100% (treatment 100%)"
    )


@pytest.mark.asyncio
async def test_without_a_workspace_only_evaluation_is_listed_and_bad_rulesets_are_refused(
    double, double_url, flags_env
):
    secret_only = server_env(
        double_url,
        MIXPANEL_SERVICE_ACCOUNT_USERNAME=None,
        MIXPANEL_SERVICE_ACCOUNT_SECRET=None,
        MIXPANEL_API_SECRET=API_SECRET,
    )
    async with stdio_client(secret_only) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        evaluated = await client.call_tool("flags", {"operation": "evaluate", "distinct_id": "user-1"})
    assert tools["flags"].input_schema["properties"]["operation"]["enum"] == ["evaluate", "definitions"]
    assert "experiments" not in tools
    assert structured(evaluated)["flags"] == {}
    assert double.received()[0].basic_auth == (API_SECRET, "")

    double.reset()
    percent = {**RULESET, "rollout": [{"rollout_percentage": 20, "variant_splits": {"control": 0.5, "treatment": 0.5}}]}
    lopsided = {**RULESET, "variants": [{**RULESET["variants"][0], "split": 0.9}, RULESET["variants"][1]]}
    async with stdio_client(flags_env) as client:
        too_big = await client.call_tool("flags", {"operation": "create", "name": "a", "key": "a", "ruleset": percent})
        sums = await client.call_tool("flags", {"operation": "create", "name": "a", "key": "a", "ruleset": lopsided})
        nothing = await client.call_tool("flags", {"operation": "update", "flag_id": "x"})
        twenty = await client.call_tool("flags", {"operation": "update", "flag_id": "x", "rollout_percentage": 20})
        unknown = await client.call_tool("flags", {"operation": "get", "flag_id": "no-such-flag"})
    assert "ruleset.rollout.0.rollout_percentage: Input should be less than or equal to 1" in error_text(too_big)
    assert "the variants' splits must add up to 1 (fractions, not percents)" in error_text(sums)
    assert "give at least one of name, key, ruleset, rollout_percentage, status" in error_text(nothing)
    assert "rollout_percentage: must be a fraction from 0 to 1, not 20.0. Example: 0.2 for 20 %" in error_text(twenty)
    assert "Feature flag no-such-flag not found" in error_text(unknown)
    assert [r.path for r in double.received()] == [f"{BASE}/no-such-flag"]


# -- the double's assignment --------------------------------------------------------------------------------------

USERS = [f"user-{n}" for n in range(10_000)]


def test_assignment_is_deterministic_and_splits_10000_users_within_two_points_of_the_weights():
    three = flag(
        "pricing",
        {
            "variants": [
                {"key": "a", "value": "A", "is_control": True, "split": 0.5},
                {"key": "b", "value": "B", "is_control": False, "split": 0.3},
                {"key": "c", "value": "C", "is_control": False, "split": 0.2},
            ],
            "rollout": [{"rollout_percentage": 1.0, "variant_splits": {"a": 0.5, "b": 0.3, "c": 0.2}}],
        },
    )
    counts = Counter(assign(three, {"distinct_id": user})["variant_key"] for user in USERS)
    for key, weight in (("a", 0.5), ("b", 0.3), ("c", 0.2)):
        assert abs(counts[key] / len(USERS) - weight) < 0.02, counts
    assert [assign(three, {"distinct_id": u}) for u in USERS[:50]] == [
        assign(three, {"distinct_id": u}) for u in USERS[:50]
    ]


def test_rollout_percentage_includes_a_stable_share_and_raising_it_keeps_everyone_in():
    def at(percentage: float) -> dict:
        return flag(
            "gate",
            {
                **RULESET,
                "rollout": [{"rollout_percentage": percentage, "variant_splits": {"control": 0.5, "treatment": 0.5}}],
            },
        )

    twenty = {u for u in USERS if assign(at(0.2), {"distinct_id": u}) is not None}
    fifty = {u for u in USERS if assign(at(0.5), {"distinct_id": u}) is not None}
    assert abs(len(twenty) / len(USERS) - 0.2) < 0.02 and abs(len(fifty) / len(USERS) - 0.5) < 0.02
    assert twenty <= fifty  # raising the rollout never takes a variant away from anyone
    variants = Counter(assign(at(0.2), {"distinct_id": u})["variant_key"] for u in twenty)
    assert abs(variants["treatment"] / len(twenty) - 0.5) < 0.04, variants


def test_qa_testers_device_assignment_and_runtime_rules():
    tested = flag("qa", {**RULESET, "rollout": [], "test": {"users": {"qa-1": "treatment"}}})
    assert assign(tested, {"distinct_id": "qa-1"}) == {
        "variant_key": "treatment",
        "variant_value": True,
        "is_qa_tester": True,
    }
    assert assign(tested, {"distinct_id": "someone"}) is None
    by_device = flag("device", RULESET, context="device_id")
    assert assign(by_device, {"distinct_id": "u"}) is None  # no device_id: this flag cannot be assigned
    assert assign(by_device, {"distinct_id": "u1", "device_id": "d"}) == assign(
        by_device, {"distinct_id": "u2", "device_id": "d"}
    )
    rule = {"and": [{"==": [{"var": "country"}, "us"]}, {"in": [{"var": "plan"}, ["pro", "team"]]}]}
    ruled = flag(
        "rule",
        {
            **RULESET,
            "rollout": [
                {"rollout_percentage": 1.0, "variant_splits": {"treatment": 1.0}, "runtime_evaluation_rule": rule}
            ],
        },
    )
    assert (
        assign(ruled, {"distinct_id": "u", "custom_properties": {"country": "US", "plan": "pro"}})["variant_key"]
        == "treatment"
    )
    assert assign(ruled, {"distinct_id": "u", "custom_properties": {"country": "US", "plan": "free"}}) is None
    cohort = flag(
        "cohort", {**RULESET, "rollout": [{"rollout_percentage": 1.0, "variant_splits": {}, "cohort_hash": "abc"}]}
    )
    assert assign(cohort, {"distinct_id": "u"}) is None


def test_a_rollout_percentage_applies_to_every_group_or_makes_one_for_everyone():
    from mixpanel_mcp.tools.flags import rolled_out

    two = {**RULESET, "rollout": [{**RULESET["rollout"][0], "name": "EU"}, {**RULESET["rollout"][0], "name": "US"}]}
    assert [g["rollout_percentage"] for g in rolled_out(two, 0.3)["rollout"]] == [0.3, 0.3]
    assert rolled_out({**RULESET, "rollout": []}, 0.2)["rollout"] == [
        {"rollout_percentage": 0.2, "variant_splits": {"control": 0.5, "treatment": 0.5}}
    ]
