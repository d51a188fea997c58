"""lexicon: the Schemas API at its three levels (project, entity type, one entity), over stdio."""

import pytest

from mixpanel_mcp.text import echo
from tests.harness import stdio
from tests.conftest import API_SECRET, PROJECT_ID, SA_SECRET, SA_USER, error_text, server_env, stdio_client, structured

pytestmark = pytest.mark.asyncio

BASE = f"/api/app/projects/{PROJECT_ID}/schemas"
CART = {"description": "Added an item", "properties": {"sku": {"type": "string", "description": "Item SKU"}}}
SIGNUP = {"description": "Signed up", "properties": {"plan": {"type": "string"}, "seats": {"type": "integer"}}}
USER = {"description": "A user", "properties": {"$email": {"type": "string"}}}


@pytest.fixture
def roomy_env(double_url):
    """These tests make more Lexicon calls than Mixpanel's 5 a minute; the budget is tested in test_budget.py."""
    return server_env(double_url, MIXPANEL_LEXICON_LIMIT_PER_MINUTE="100")


def answer(result) -> dict:
    """The structured result without the budget report (asserted in test_budget.py)."""
    return {k: v for k, v in structured(result).items() if k != "budget"}


def seed(double) -> None:
    double.schemas = {("event", "Added To Cart"): dict(CART), ("event", "Signed up"): dict(SIGNUP), ("profile", "$user"): dict(USER)}


def assert_lexicon_request(request, method: str, path: str, query: dict | None = None) -> None:
    assert (request.method, request.path) == (method, path)
    assert request.query == (query or {})  # the project id is in the path, never a query parameter
    assert request.basic_auth == (SA_USER, SA_SECRET)


async def test_list_at_three_levels(double, env):
    seed(double)
    async with stdio_client(env) as client:
        project = await client.call_tool("lexicon", {"operation": "list"})
        events = await client.call_tool("lexicon", {"operation": "list", "entity_type": "event"})
        one = await client.call_tool("lexicon", {"operation": "list", "entity_type": "event", "name": "Added To Cart"})
    first, second, third = double.received()
    assert_lexicon_request(first, "GET", BASE)
    assert_lexicon_request(second, "GET", BASE + "/event")
    assert_lexicon_request(third, "GET", BASE + "/event", {"entity_name": "Added To Cart"})
    assert third.headers.get("content-length", "0") == "0"

    data = structured(project)
    assert data["count"] == 3
    assert data["schemas"] == [
        {"entityType": "event", "name": "Added To Cart", "schemaJson": CART},
        {"entityType": "event", "name": "Signed up", "schemaJson": SIGNUP},
        {"entityType": "profile", "name": "$user", "schemaJson": USER},
    ]
    assert project.content[0].text.startswith("3 schema(s) for the whole project: Added To Cart, Signed up, $user.")
    typed = structured(events)
    assert [s["name"] for s in typed["schemas"]] == ["Added To Cart", "Signed up"]
    assert events.content[0].text.startswith("2 schema(s) for event entities:")
    assert structured(one) == {
        "entity_type": "event",
        "name": "Added To Cart",
        "schema": CART,
        "budget": {"lexicon": {"remaining": 2, "limit": 5, "window": "minute"}},
    }
    assert one.content[0].text.startswith("Schema of event 'Added To Cart': 1 property described.")


async def test_one_schema_is_read_bare_or_wrapped(double, env):
    """The spec shows one entity's schema bare; the live API wraps it in {"status": "ok", "results": ...}.
    The double answers wrapped (test above); a bare answer reads the same."""
    double.fail(BASE + "/event", 200, body=CART)  # one entity, however its name is sent
    async with stdio_client(env) as client:
        one = await client.call_tool("lexicon", {"operation": "list", "entity_type": "event", "name": "Added To Cart"})
    assert structured(one)["schema"] == CART
    assert one.content[0].text.startswith("Schema of event 'Added To Cart': 1 property described.")


async def test_upsert_bulk_single_and_truncate(double, roomy_env):
    env = roomy_env
    seed(double)
    entries = [
        {"entityType": "event", "name": "Signed up", "schemaJson": {"description": "New", "properties": {"plan": {"type": "string"}}}},
        {"entityType": "event", "name": "Checkout", "schemaJson": {"description": "Paid"}},
    ]
    async with stdio_client(env) as client:
        bulk = await client.call_tool("lexicon", {"operation": "upsert", "entries": entries})
        after_bulk = dict(double.schemas)
        single = await client.call_tool(
            "lexicon", {"operation": "upsert", "entity_type": "profile", "name": "$user", "schema": {"description": "Customer"}}
        )
        truncated = await client.call_tool("lexicon", {"operation": "upsert", "entries": entries[1:], "truncate": True})
    first, second, third = double.received()
    assert_lexicon_request(first, "POST", BASE)
    assert first.headers["content-type"] == "application/json"
    assert first.json() == {"entries": entries, "truncate": False}
    assert answer(bulk) == {"sent": 2, "truncate": False, "added": 2, "deleted": 0}
    assert bulk.content[0].text.startswith("Mixpanel added or replaced 2 schema(s).")
    assert after_bulk[("event", "Signed up")] == entries[0]["schemaJson"]  # replaced, not merged
    assert after_bulk[("event", "Checkout")] == {"description": "Paid"}
    assert len(after_bulk) == 4

    assert_lexicon_request(second, "POST", BASE + "/profile/$user")
    assert second.json() == {"description": "Customer"}
    assert answer(single) == {"entity_type": "profile", "name": "$user", "saved": True}
    assert single.content[0].text.startswith("Saved the schema of profile '$user', replacing any earlier one.")

    assert_lexicon_request(third, "POST", BASE)
    assert third.json() == {"entries": entries[1:], "truncate": True}
    assert answer(truncated) == {"sent": 1, "truncate": True, "added": 1, "deleted": 4}
    assert truncated.content[0].text.startswith(
        "Mixpanel added or replaced 1 schema(s) after deleting the whole dictionary (4 schema(s))."
    )
    assert double.schemas == {("event", "Checkout"): {"description": "Paid"}}


async def test_delete_at_three_levels(double, roomy_env):
    env = roomy_env
    seed(double)
    async with stdio_client(env) as client:
        one = await client.call_tool("lexicon", {"operation": "delete", "entity_type": "event", "name": "Signed up"})
        left_after_one = set(double.schemas)
        typed = await client.call_tool("lexicon", {"operation": "delete", "entity_type": "profile"})
        left_after_type = set(double.schemas)
        everything = await client.call_tool("lexicon", {"operation": "delete", "all": True})
    first, second, third = double.received()
    assert_lexicon_request(first, "DELETE", BASE + "/event", {"entity_name": "Signed up"})
    assert_lexicon_request(second, "DELETE", BASE + "/profile")
    assert_lexicon_request(third, "DELETE", BASE)
    assert answer(one) == {"entity_type": "event", "name": "Signed up", "delete_count": 1}
    assert one.content[0].text.startswith("Deleted 1 schema(s) of event 'Signed up'.")
    assert left_after_one == {("event", "Added To Cart"), ("profile", "$user")}
    assert structured(typed)["delete_count"] == 1
    assert left_after_type == {("event", "Added To Cart")}
    assert answer(everything) == {"entity_type": None, "name": None, "delete_count": 1}
    assert everything.content[0].text.startswith("Deleted 1 schema(s) of the whole project.")
    assert double.schemas == {}


async def test_invalid_arguments_send_nothing(double, env):
    async with stdio_client(env) as client:
        unscoped = await client.call_tool("lexicon", {"operation": "delete"})
        name_only = await client.call_tool("lexicon", {"operation": "delete", "name": "Signed up"})
        all_and_type = await client.call_tool("lexicon", {"operation": "delete", "all": True, "entity_type": "event"})
        bad_type = await client.call_tool("lexicon", {"operation": "list", "entity_type": "custom_event"})
        list_name_only = await client.call_tool("lexicon", {"operation": "list", "name": "Signed up"})
        mixed = await client.call_tool(
            "lexicon",
            {"operation": "upsert", "entries": [{"entityType": "event", "name": "A", "schemaJson": {}}], "entity_type": "event"},
        )
        truncate_single = await client.call_tool(
            "lexicon", {"operation": "upsert", "entity_type": "event", "name": "A", "schema": {}, "truncate": True}
        )
        half_single = await client.call_tool("lexicon", {"operation": "upsert", "entity_type": "event", "name": "A"})
        untyped = await client.call_tool(
            "lexicon",
            {"operation": "upsert", "entity_type": "event", "name": "A", "schema": {"properties": {"plan": {"description": "x"}}}},
        )
        entry_extra = await client.call_tool(
            "lexicon", {"operation": "upsert", "entries": [{"entityType": "event", "name": "A", "schemaJson": {}, "extra": 1}]}
        )
    assert "give entity_type (and name), or all=true to delete every schema" in error_text(unscoped)
    assert "name needs entity_type" in error_text(name_only)
    assert "leave out entity_type and name" in error_text(all_and_type)
    assert "entity_type" in error_text(bad_type) and "'event' or 'profile'" in error_text(bad_type)
    assert "name needs entity_type" in error_text(list_name_only)
    assert "not both" in error_text(mixed)
    assert "truncate only applies with entries" in error_text(truncate_single)
    assert "give entries, or all of entity_type, name and schema" in error_text(half_single)
    assert "property 'plan' needs a type" in error_text(untyped)
    assert "entries.0.extra: unknown argument" in error_text(entry_extra)
    assert double.received() == []


async def test_mixpanel_errors_name_the_fix(double, roomy_env):
    env = roomy_env
    seed(double)
    async with stdio_client(env) as client:
        double.fail(BASE, 401, body={"error": "Authentication required", "status": "error"})
        rejected = await client.call_tool("lexicon", {"operation": "list"})
        double.fail(BASE, 403, body={"error": "You do not have permission", "status": "error"}, method="DELETE")
        denied = await client.call_tool("lexicon", {"operation": "delete", "all": True})
        double.fail(BASE, 503)
        retried = await client.call_tool("lexicon", {"operation": "list", "entity_type": "profile"})
        missing = await client.call_tool("lexicon", {"operation": "list", "entity_type": "event", "name": "Never seen"})
        double.fail(BASE, 200, body={"error": "schema rejected", "status": "error"})
        in_body = await client.call_tool("lexicon", {"operation": "upsert", "entity_type": "event", "name": "A", "schema": {}})
    text = error_text(rejected)
    assert text.startswith("Mixpanel rejected the service account (MIXPANEL_SERVICE_ACCOUNT_USERNAME")
    assert 'Mixpanel said: "Authentication required"' in text
    text = error_text(denied)
    assert "403" in text and "Admin or Owner" in text and "You do not have permission" in text
    assert [s["name"] for s in structured(retried)["schemas"]] == ["$user"]
    assert answer(missing) == {"entity_type": "event", "name": "Never seen", "schema": None}
    assert missing.content[0].text.startswith("No schema for event 'Never seen'.")
    assert 'Mixpanel said: "schema rejected"' in error_text(in_body)
    assert len(double.schemas) == 3  # nothing was deleted or added
    assert len(double.received()) == 6


async def test_double_answers_like_mixpanel(double, env):
    """The double's own rules over plain HTTP: bad entity type, wrong project, no service account."""
    import httpx2

    from mixpanel_mcp.client.http import basic_auth

    app = env["MIXPANEL_QUERY_URL"] + "/app"
    auth = {"Authorization": basic_auth(SA_USER, SA_SECRET)}
    bad_type = httpx2.get(f"{app}/projects/{PROJECT_ID}/schemas/custom_event", headers=auth)
    assert (bad_type.status_code, bad_type.json()["status"]) == (400, "error")
    other_project = httpx2.get(f"{app}/projects/999/schemas", headers=auth)
    assert other_project.status_code == 403
    secret = httpx2.get(f"{app}/projects/{PROJECT_ID}/schemas", headers={"Authorization": basic_auth(API_SECRET, "")})
    assert secret.json() == {"error": "Authentication required", "status": "error"} and secret.status_code == 401


async def test_tool_is_listed_only_with_a_service_account(double, double_url, env):
    legacy = server_env(
        double_url, MIXPANEL_SERVICE_ACCOUNT_USERNAME=None, MIXPANEL_SERVICE_ACCOUNT_SECRET=None, MIXPANEL_API_SECRET=API_SECRET
    )
    async with stdio_client(legacy) as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
    assert "lexicon" not in names
    assert "export" in names
    async with stdio_client(env) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    lexicon, export = tools["lexicon"], tools["export"]
    assert lexicon.annotations.destructive_hint is True and lexicon.annotations.read_only_hint is False
    assert lexicon.input_schema["properties"]["operation"]["enum"] == ["list", "upsert", "delete"]
    assert export.annotations.read_only_hint is True
    assert export.input_schema["properties"]["operation"]["enum"] == ["events", "profiles", "cohorts", "activity"]
    assert double.received() == []


@pytest.mark.parametrize("name", ["..", ".", "a/../..", "Page/View"])
async def test_one_entity_is_named_in_the_query_so_no_name_changes_the_level(double, roomy_env, name):
    """A name of '..' once went into the path, which the HTTP client collapsed: the person confirmed deleting one
    schema and the whole dictionary went. The request must act on exactly what the question described."""
    from tests.test_confirm import Person

    seed(double)
    double.schemas[("event", name)] = {"description": "odd"}
    before = set(double.schemas)
    person = Person(("accept", {"confirm": True}))
    async with stdio(roomy_env, elicitation_callback=person) as client:
        listed = await client.call_tool("lexicon", {"operation": "list", "entity_type": "event", "name": name})
        deleted = await client.call_tool("lexicon", {"operation": "delete", "entity_type": "event", "name": name})
        upsert = await client.call_tool(
            "lexicon", {"operation": "upsert", "entity_type": "event", "name": name, "schema": {"description": "x"}}
        )
    [question] = person.questions
    assert question.message == (
        f"Agent local wants to delete the Lexicon schema of event {echo(name)} in Mixpanel project {PROJECT_ID}. Go ahead?"
    )
    get, delete = double.received()
    assert_lexicon_request(get, "GET", BASE + "/event", {"entity_name": name})
    assert_lexicon_request(delete, "DELETE", BASE + "/event", {"entity_name": name})
    assert structured(listed)["schema"] == {"description": "odd"}
    assert answer(deleted)["delete_count"] == 1
    assert set(double.schemas) == before - {("event", name)}  # only the schema the person agreed to delete
    # The one-schema upload has no query form: such a name is refused before sending, pointing to the bulk form.
    assert "nothing was sent" in error_text(upsert) and "send it in the bulk form" in error_text(upsert)
