"""experiments: every operation over stdio, the exact requests, and Mixpanel's lifecycle as the double keeps it
(draft -> active -> concluded -> decided; what launch, conclude and decide refuse in the wrong state)."""

import pytest

from tests.conftest import SA_SECRET, SA_USER, error_text, server_env, stdio_client, structured
from tests.test_flags import RULESET, WORKSPACE_ID, flag

pytestmark = pytest.mark.asyncio

BASE = f"/api/app/workspaces/{WORKSPACE_ID}/experiments"


@pytest.fixture
def workspace_env(double_url):
    return server_env(double_url, MIXPANEL_WORKSPACE_ID=str(WORKSPACE_ID))


def assert_app(request, method: str, path: str, body=None) -> None:
    assert (request.method, request.path, request.query) == (method, path, {})
    assert request.basic_auth == (SA_USER, SA_SECRET)
    if body is not None:
        assert request.json() == body


async def test_the_whole_lifecycle_of_a_flag_experiment(double, workspace_env):
    double.flags = {"id-new-checkout": flag("new-checkout", RULESET, status="disabled")}
    variants = [{"key": "control"}, {"key": "treatment"}]
    async with stdio_client(workspace_env) as client:
        created = await client.call_tool(
            "experiments",
            {
                "operation": "create",
                "name": "Checkout redesign",
                "description": "Does the new checkout sell more?",
                "settings": {"feature_flag_id": "id-new-checkout"},
                "variants": variants,
                "metrics": [{"event": "Purchased"}],
            },
        )
        experiment_id = structured(created)["experiment"]["id"]
        one = {"operation": "", "experiment_id": experiment_id}
        early = await client.call_tool("experiments", {**one, "operation": "decide", "success": True})
        launched = await client.call_tool("experiments", {**one, "operation": "launch"})
        again = await client.call_tool("experiments", {**one, "operation": "launch"})
        updated = await client.call_tool("experiments", {**one, "operation": "update", "description": "Checkout v2"})
        concluded = await client.call_tool("experiments", {**one, "operation": "conclude"})
        decided = await client.call_tool(
            "experiments", {**one, "operation": "decide", "success": True, "variant": "treatment", "message": "B won"}
        )
        got = await client.call_tool("experiments", {**one, "operation": "get"})
        listed = await client.call_tool("experiments", {"operation": "list"})

    requests = double.received()
    path = f"{BASE}/{experiment_id}"
    assert_app(
        requests[0],
        "POST",
        BASE,
        {
            "name": "Checkout redesign",
            "description": "Does the new checkout sell more?",
            "settings": {"feature_flag_id": "id-new-checkout"},
            "variants": variants,
            "metrics": [{"event": "Purchased"}],
        },
    )
    assert_app(requests[1], "PATCH", f"{path}/decide", {"success": True})
    assert_app(requests[2], "PUT", f"{path}/launch", {})
    assert_app(requests[3], "PUT", f"{path}/launch", {})
    assert_app(requests[4], "PATCH", path, {"description": "Checkout v2"})
    assert_app(requests[5], "PUT", f"{path}/force_conclude", {})
    assert_app(requests[6], "PATCH", f"{path}/decide", {"success": True, "variant": "treatment", "message": "B won"})
    assert_app(requests[7], "GET", path)
    assert_app(requests[8], "GET", BASE)

    assert structured(created)["summary"] == {
        "id": experiment_id,
        "name": "Checkout redesign",
        "status": "draft",
        "state": "draft",
        "variants": ["control", "treatment"],
        "feature_flag": "new-checkout",
    }
    assert "Cannot decide an experiment that is draft: it must be concluded" in error_text(early)
    assert structured(launched)["summary"]["state"] == "running" and structured(launched)["summary"]["start_date"]
    assert launched.content[0].text.startswith(f"Launched experiment 'Checkout redesign' ({experiment_id}): running, ")
    assert "Cannot launch an experiment that is active: it must be a draft" in error_text(again)
    assert structured(updated)["experiment"]["description"] == "Checkout v2"
    assert (
        structured(concluded)["summary"]["state"] == "concluded, not decided"
        and structured(concluded)["summary"]["end_date"]
    )
    summary = structured(decided)["summary"]
    assert summary["state"] == "decided: success" and summary["decision"] == {
        "success": True,
        "variant": "treatment",
        "message": "B won",
    }
    assert structured(got)["experiment"]["status"] == "success"
    assert [e["name"] for e in structured(listed)["experiments"]] == ["Checkout redesign"]
    # The flag ran the experiment, then shipped the winning variant to everyone in its rollout.
    checkout = double.flags["id-new-checkout"]
    assert (
        checkout["experiment_id"] == experiment_id
        and checkout["status"] == "enabled"
        and checkout["is_experiment_active"] is False
    )
    assert checkout["ruleset"]["rollout"][0]["variant_splits"] == {"control": 0.0, "treatment": 1.0}


async def test_conclude_needs_an_active_experiment_and_editing_a_decision_reopens_it(double, workspace_env):
    async with stdio_client(workspace_env) as client:
        created = await client.call_tool("experiments", {"operation": "create", "name": "Pricing page"})
        experiment_id = structured(created)["experiment"]["id"]
        one = {"experiment_id": experiment_id}
        draft_conclude = await client.call_tool("experiments", {**one, "operation": "conclude"})
        await client.call_tool("experiments", {**one, "operation": "launch"})
        await client.call_tool("experiments", {**one, "operation": "conclude"})
        failed = await client.call_tool("experiments", {**one, "operation": "decide", "success": False})
        reopened = await client.call_tool(
            "experiments", {**one, "operation": "update", "metrics": [{"event": "Signed up"}]}
        )
    assert "Cannot conclude an experiment that is draft: it must be active" in error_text(draft_conclude)
    assert structured(failed)["summary"]["state"] == "decided: fail"
    assert structured(reopened)["summary"]["state"] == "concluded, not decided"
    assert "decision" not in structured(reopened)["summary"]


async def test_archive_unarchive_and_delete(double, workspace_env):
    async with stdio_client(workspace_env) as client:
        created = await client.call_tool("experiments", {"operation": "create", "name": "Old test"})
        experiment_id = structured(created)["experiment"]["id"]
        one = {"experiment_id": experiment_id}
        archived = await client.call_tool("experiments", {**one, "operation": "archive"})
        hidden = await client.call_tool("experiments", {"operation": "list"})
        back = await client.call_tool("experiments", {**one, "operation": "unarchive"})
        deleted = await client.call_tool("experiments", {**one, "operation": "delete"})
        gone = await client.call_tool("experiments", {**one, "operation": "get"})
        escape = await client.call_tool("experiments", {"operation": "get", "experiment_id": ".."})
    path = f"{BASE}/{experiment_id}"
    requests = double.received()
    assert_app(requests[1], "POST", f"{path}/archive", {})
    assert_app(requests[3], "DELETE", f"{path}/archive")
    assert_app(requests[4], "DELETE", path)
    assert structured(archived) == {"experiment_id": experiment_id, "archived": True}
    assert structured(hidden)["count"] == 0
    assert structured(back)["summary"]["state"] == "draft"
    assert structured(deleted) == {"experiment_id": experiment_id, "deleted": True}
    assert f"Experiment {experiment_id} not found" in error_text(gone)
    assert "experiment_id: must be one id" in error_text(escape)
    assert len(double.received()) == 6


async def test_without_a_workspace_experiments_are_not_listed(double, env):
    async with stdio_client(env) as client:
        names = [t.name for t in (await client.list_tools()).tools]
    assert "experiments" not in names and "flags" in names


async def test_each_new_destructive_operation_asks_the_person_what_exactly_goes(double, double_url):
    from tests.harness import stdio
    from tests.test_confirm import Person

    env = server_env(double_url, MIXPANEL_WORKSPACE_ID=str(WORKSPACE_ID), MIXPANEL_GDPR_TOKEN="test-gdpr-token")
    person = Person(*[("decline", None)] * 7)
    async with stdio(env, elicitation_callback=person) as client:
        await client.call_tool("annotations", {"operation": "delete", "annotation_id": 3})
        await client.call_tool("flags", {"operation": "delete", "flag_id": "f-1"})
        await client.call_tool("experiments", {"operation": "conclude", "experiment_id": "e-1"})
        await client.call_tool(
            "experiments", {"operation": "decide", "experiment_id": "e-1", "success": True, "variant": "treatment"}
        )
        await client.call_tool("experiments", {"operation": "delete", "experiment_id": "e-1"})
        await client.call_tool(
            "lookup_tables",
            {"operation": "replace", "table_id": "3f1c2a9e-8d4b-4f8e-9a51-2b7c6d0e1f23", "rows": [{"id": "a"}]},
        )
        await client.call_tool("gdpr", {"operation": "delete_data", "distinct_ids": ["u-1"], "compliance_type": "CCPA"})
        # Not destructive: no question.
        await client.call_tool("experiments", {"operation": "archive", "experiment_id": "e-1"})
    where = "in Mixpanel project 1234"
    assert [q.message for q in person.questions] == [
        f"Agent local wants to delete annotation #3 {where}. Go ahead?",
        f'Agent local wants to delete the feature flag "f-1" {where}; apps asking for it get their fallback. Go ahead?',
        f'Agent local wants to conclude the experiment "e-1" {where} (it stops collecting results). Go ahead?',
        f'Agent local wants to record the decision on experiment "e-1" as ship variant "treatment" {where}. Go ahead?',
        f'Agent local wants to delete the experiment "e-1" {where}, irreversibly. Go ahead?',
        f'Agent local wants to replace the whole content of lookup table "3f1c2a9e-8d4b-4f8e-9a51-2b7c6d0e1f23" {where}. '
        "Go ahead?",
        f"Agent local wants to delete ALL data (events and profiles) of 1 user(s) {where} under CCPA, irreversibly "
        'once Mixpanel starts: "u-1". Go ahead?',
    ]
    assert [(r.method, r.path) for r in double.received()] == [("POST", f"{BASE}/e-1/archive")]


async def test_a_launch_is_not_resent_after_an_ambiguous_failure(double, workspace_env):
    experiment_id = "5d1e2f3a-4b5c-4d6e-8f70-8192a3b4c5d6"
    double.fail(f"{BASE}/{experiment_id}/launch", 502)
    async with stdio_client(workspace_env) as client:
        failed = await client.call_tool("experiments", {"operation": "launch", "experiment_id": experiment_id})
    assert "server error (502" in error_text(failed) and "after 1 attempt(s)" in error_text(failed)
    assert len(double.received()) == 1
