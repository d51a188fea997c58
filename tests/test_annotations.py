"""annotations: every operation over stdio, the exact request the double received, and the agent's answer."""

import pytest

from tests.conftest import PROJECT_ID, SA_SECRET, SA_USER, error_text, server_env, stdio_client, structured

pytestmark = pytest.mark.asyncio

BASE = f"/api/app/projects/{PROJECT_ID}/annotations"


def seed(double) -> None:
    double.annotation_tags = {1: {"id": 1, "name": "release", "project_id": PROJECT_ID}}
    double.annotations = {
        1: {"id": 1, "date": "2026-03-02 00:00:00", "description": "Release 2.0", "user": {"id": 1}, "tags": [1]},
        2: {"id": 2, "date": "2026-03-09 14:30:00", "description": "Checkout outage", "user": {"id": 1}, "tags": []},
    }


def assert_app_request(request, method: str, path: str, query: dict | None = None) -> None:
    assert (request.method, request.path) == (method, path)
    assert request.query == (query or {})  # the project id is in the path
    assert request.basic_auth == (SA_USER, SA_SECRET)


async def test_list_get_and_tags(double, env):
    seed(double)
    async with stdio_client(env) as client:
        ranged = await client.call_tool(
            "annotations", {"operation": "list", "from_date": "2026-03-01", "to_date": "2026-03-05"}
        )
        every = await client.call_tool("annotations", {"operation": "list"})
        one = await client.call_tool("annotations", {"operation": "get", "annotation_id": 2})
        tags = await client.call_tool("annotations", {"operation": "tags"})
    first, second, third, fourth = double.received()
    assert_app_request(first, "GET", BASE, {"fromDate": "2026-03-01", "toDate": "2026-03-05"})
    assert_app_request(second, "GET", BASE)
    assert_app_request(third, "GET", BASE + "/2")
    assert_app_request(fourth, "GET", BASE + "/tags")

    data = structured(ranged)
    assert data["count"] == 1
    assert data["annotations"][0]["description"] == "Release 2.0"
    assert data["annotations"][0]["tags"] == [{"id": 1, "name": "release"}]
    assert ranged.content[0].text.startswith(
        "1 annotation(s) from 2026-03-01 to 2026-03-05: 2026-03-02 Release 2.0 (#1)."
    )
    assert structured(every)["count"] == 2
    assert structured(one)["annotation"]["date"] == "2026-03-09 14:30:00"
    assert one.content[0].text.startswith("Found annotation 2026-03-09 Checkout outage (#2).")
    assert structured(tags)["tags"] == [{"id": 1, "name": "release", "project_id": PROJECT_ID, "has_annotations": True}]


async def test_create_update_delete_and_create_tag(double, env):
    seed(double)
    async with stdio_client(env) as client:
        tag = await client.call_tool("annotations", {"operation": "create_tag", "name": "incident"})
        created = await client.call_tool(
            "annotations", {"operation": "create", "date": "2026-03-10", "description": "Release 2.1", "tags": [1, 2]}
        )
        updated = await client.call_tool(
            "annotations", {"operation": "update", "annotation_id": 3, "description": "Release 2.1.1"}
        )
        deleted = await client.call_tool("annotations", {"operation": "delete", "annotation_id": 1})
    requests = double.received()
    assert [(r.method, r.path) for r in requests] == [
        ("POST", BASE + "/tags"),
        ("POST", BASE),
        ("PATCH", BASE + "/3"),
        ("DELETE", BASE + "/1"),
    ]
    for request in requests:
        assert_app_request(request, request.method, request.path)
    assert requests[0].json() == {"name": "incident"}
    assert requests[1].json() == {"date": "2026-03-10 00:00:00", "description": "Release 2.1", "tags": [1, 2]}
    assert requests[2].json() == {"description": "Release 2.1.1"}

    assert structured(tag)["tag"] == {"id": 2, "name": "incident", "project_id": PROJECT_ID, "has_annotations": False}
    annotation = structured(created)["annotation"]
    assert annotation["id"] == 3 and annotation["tags"] == [{"id": 1, "name": "release"}, {"id": 2, "name": "incident"}]
    assert created.content[0].text.startswith("Created annotation 2026-03-10 Release 2.1 (#3).")
    assert structured(updated)["annotation"]["description"] == "Release 2.1.1"
    assert structured(deleted)["deleted"] == 1
    assert set(double.annotations) == {2, 3}


async def test_bad_input_is_refused_before_sending(double, env):
    async with stdio_client(env) as client:
        bad_date = await client.call_tool(
            "annotations", {"operation": "create", "date": "03/10/2026", "description": "x"}
        )
        nothing = await client.call_tool("annotations", {"operation": "update", "annotation_id": 3})
        order = await client.call_tool(
            "annotations", {"operation": "list", "from_date": "2026-03-05", "to_date": "2026-03-01"}
        )
    assert (
        "date: must be yyyy-mm-dd or yyyy-mm-dd HH:mm:ss, not '03/10/2026'. Example: 2026-03-02 14:00:00"
        in error_text(bad_date)
    )
    assert "give description and/or tags" in error_text(nothing)
    assert "from_date 2026-03-05 is after to_date 2026-03-01" in error_text(order)
    assert double.received() == []


async def test_unknown_annotation_and_tag_are_mixpanels_errors(double, env):
    seed(double)
    async with stdio_client(env) as client:
        missing = await client.call_tool("annotations", {"operation": "get", "annotation_id": 99})
        bad_tag = await client.call_tool(
            "annotations", {"operation": "create", "date": "2026-03-10", "description": "x", "tags": [7]}
        )
    assert "Mixpanel found nothing at" in error_text(missing) and "Annotation 99 not found" in error_text(missing)
    assert "unknown tag id(s): [7]" in error_text(bad_tag)


async def test_needs_a_service_account(double_url):
    env = server_env(
        double_url,
        MIXPANEL_SERVICE_ACCOUNT_USERNAME=None,
        MIXPANEL_SERVICE_ACCOUNT_SECRET=None,
        MIXPANEL_API_SECRET="test-api-secret",
    )
    async with stdio_client(env) as client:
        names = [t.name for t in (await client.list_tools()).tools]
    assert "annotations" not in names
