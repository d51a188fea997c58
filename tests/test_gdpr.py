"""gdpr: retrieval and deletion jobs over stdio, with the GDPR OAuth token; a deletion is confirmed by the
person with the exact ids, audited with their count only, cancellable until it starts, and then done."""

import json

import pytest

from tests.conftest import NO_CONFIRM, TOKEN, error_text, refused, server_env, stored_event, structured
from tests.harness import audit_records, stdio
from tests.test_confirm import Person

pytestmark = pytest.mark.asyncio

GDPR_TOKEN = "test-gdpr-token"
RETRIEVALS = "/api/app/data-retrievals/v3.0"
DELETIONS = "/api/app/data-deletions/v3.0"


@pytest.fixture
def gdpr_env(double_url):
    return server_env(double_url, MIXPANEL_GDPR_TOKEN=GDPR_TOKEN)


def assert_gdpr_request(request, method: str, path: str) -> None:
    assert (request.method, request.path) == (method, path)
    assert request.query == {"token": TOKEN}
    assert request.headers["authorization"] == f"Bearer {GDPR_TOKEN}"


async def test_retrieve_and_follow_it_to_success(double, gdpr_env):
    async with stdio(gdpr_env, "--policy", str(NO_CONFIRM)) as client:
        started = await client.call_tool(
            "gdpr",
            {
                "operation": "retrieve",
                "distinct_ids": ["u-1", "u-2", "u-1"],
                "compliance_type": "CCPA",
                "disclosure_type": "Data",
            },
        )
        tracking_id = structured(started)["tracking_id"]
        checks = [
            await client.call_tool("gdpr", {"operation": "retrieval_status", "tracking_id": tracking_id})
            for _ in range(3)
        ]
    requests = double.received()
    assert_gdpr_request(requests[0], "POST", RETRIEVALS)
    assert requests[0].json() == {"distinct_ids": ["u-1", "u-2"], "compliance_type": "CCPA", "disclosure_type": "Data"}
    for request in requests[1:]:
        assert_gdpr_request(request, "GET", f"{RETRIEVALS}/{tracking_id}")
    assert structured(started) == {"tracking_id": tracking_id, "users": 2, "compliance_type": "CCPA"}
    assert started.content[0].text.startswith(
        f"Mixpanel started a CCPA data retrieval for 2 user(s): tracking_id {tracking_id}."
    )
    assert [structured(c)["status"] for c in checks] == ["STAGING", "STARTED", "SUCCESS"]
    assert structured(checks[-1])["export_url"].endswith(f"/{tracking_id}.zip")


async def test_deletion_is_confirmed_with_the_ids_audited_by_count_and_deletes_their_data(double, gdpr_env, tmp_path):
    double.events = [stored_event("Signed up", "u-1", 1_700_000_000), stored_event("Signed up", "u-3", 1_700_000_000)]
    double.profiles = {"u-1": {"plan": "pro"}, "u-3": {"plan": "free"}}
    audit = tmp_path / "audit.jsonl"
    person = Person(("accept", {"confirm": True}))
    async with stdio(gdpr_env, "--audit-log", str(audit), elicitation_callback=person) as client:
        deleted = await client.call_tool("gdpr", {"operation": "delete_data", "distinct_ids": ["u-1", "u-2"]})
        tracking_id = structured(deleted)["tracking_id"]
        statuses = [
            await client.call_tool("gdpr", {"operation": "deletion_status", "tracking_id": tracking_id})
            for _ in range(3)
        ]
        too_late = await client.call_tool("gdpr", {"operation": "cancel_deletion", "tracking_id": tracking_id})

    (question,) = person.questions
    assert question.message == (
        "Agent local wants to delete ALL data (events and profiles) of 2 user(s) in Mixpanel project 1234 under GDPR, "
        'irreversibly once Mixpanel starts: "u-1", "u-2". Go ahead?'
    )
    create = double.received(DELETIONS)[0]
    assert_gdpr_request(create, "POST", DELETIONS)
    assert create.json() == {"distinct_ids": ["u-1", "u-2"], "compliance_type": "GDPR"}
    assert [structured(s)["status"] for s in statuses] == ["STAGING", "STARTED", "SUCCESS"]
    assert structured(statuses[0])["can_cancel"] is True and structured(statuses[1])["can_cancel"] is False
    assert refused(too_late) == {"tracking_id": tracking_id, "cancelled": False}
    assert "cannot be cancelled" in too_late.content[0].text
    assert [e["properties"]["distinct_id"] for e in double.events] == ["u-3"] and set(double.profiles) == {"u-3"}

    record = [r for r in audit_records(audit) if r["operation"] == "delete_data"][-1]  # after the question's record
    assert record["touched"] == {"records": 2} and record["access"] == "destructive"
    assert record["sentence"].startswith(
        "agent local requested a GDPR data deletion for 2 user(s) on project 1234: allowed, ok"
    )
    assert "u-1" not in json.dumps(audit_records(audit))


async def test_cancel_while_pending(double, gdpr_env):
    async with stdio(gdpr_env, "--policy", str(NO_CONFIRM)) as client:
        deleted = await client.call_tool(
            "gdpr", {"operation": "delete_data", "distinct_ids": ["u-9"], "compliance_type": "CCPA"}
        )
        tracking_id = structured(deleted)["tracking_id"]
        cancelled = await client.call_tool("gdpr", {"operation": "cancel_deletion", "tracking_id": tracking_id})
        status = await client.call_tool("gdpr", {"operation": "deletion_status", "tracking_id": tracking_id})
    request = double.received()[1]
    assert_gdpr_request(request, "DELETE", f"{DELETIONS}/{tracking_id}")
    assert structured(cancelled) == {"tracking_id": tracking_id, "cancelled": True}
    assert structured(status)["status"] == "REVOKED"


async def test_bad_input_and_missing_credentials(double, double_url, gdpr_env):
    async with stdio(gdpr_env, "--policy", str(NO_CONFIRM)) as client:
        too_many = await client.call_tool(
            "gdpr", {"operation": "delete_data", "distinct_ids": [f"u-{i}" for i in range(2000)]}
        )
        disclosure = await client.call_tool(
            "gdpr", {"operation": "retrieve", "distinct_ids": ["u-1"], "disclosure_type": "Data"}
        )
        path = await client.call_tool("gdpr", {"operation": "deletion_status", "tracking_id": "../data-retrievals"})
    assert "at most 1999 items, not 2000" in error_text(too_many)
    assert "disclosure_type applies to CCPA only" in error_text(disclosure)
    assert "tracking_id: must be one id" in error_text(path)
    assert double.received() == []

    async with stdio(server_env(double_url), "--policy", str(NO_CONFIRM)) as client:  # no MIXPANEL_GDPR_TOKEN
        names = [t.name for t in (await client.list_tools()).tools]
    assert "gdpr" not in names
    wrong = server_env(double_url, MIXPANEL_GDPR_TOKEN="not-the-token")
    async with stdio(wrong, "--policy", str(NO_CONFIRM)) as client:
        rejected = await client.call_tool("gdpr", {"operation": "retrieval_status", "tracking_id": "abc"})
    text = error_text(rejected)
    assert "Mixpanel rejected the GDPR OAuth token (MIXPANEL_GDPR_TOKEN) (401" in text and "not-the-token" not in text


async def test_a_large_deletion_names_200_ids_and_counts_the_rest():
    from mixpanel_mcp.confirm import describe_effect
    from mixpanel_mcp.tools.gdpr import DeleteData

    ids = [f"u-{n}" for n in range(250)]
    effect = describe_effect("gdpr", "delete_data", DeleteData(distinct_ids=ids), "project 1")
    assert effect.startswith("delete ALL data (events and profiles) of 250 user(s) in Mixpanel project 1 under GDPR")
    assert '"u-199" and 50 more' in effect and '"u-200"' not in effect
