"""lookup_tables: list, and replace from inline rows or a CSV file, over stdio; Mixpanel's validation rules."""

import pytest

from tests.conftest import (
    API_SECRET,
    PROJECT_ID,
    SA_SECRET,
    SA_USER,
    error_text,
    refused,
    server_env,
    stdio_client,
    structured,
)

pytestmark = pytest.mark.asyncio

PLANS = "3f1c2a9e-8d4b-4f8e-9a51-2b7c6d0e1f23"
SKUS = "9b0e7c4d-1a2b-4c3d-8e9f-0a1b2c3d4e5f"
UNKNOWN = "00000000-1111-4222-8333-444444444444"


def seed(double) -> None:
    double.lookup_tables = {
        PLANS: {"id": PLANS, "name": "Plans", "header": ["plan", "price"], "rows": [["free", "0"]]},
        SKUS: {"id": SKUS, "name": "SKUs", "header": ["sku"], "rows": []},
    }


async def test_list_and_replace_inline(double, env):
    seed(double)
    rows = [
        {"plan": "starter", "price": 12, "annual": False, "features": ["boards"]},
        {"plan": "pro", "price": 29.5, "annual": True, "features": ["boards", "reports"], "note": None},
    ]
    async with stdio_client(env) as client:
        listed = await client.call_tool("lookup_tables", {"operation": "list"})
        replaced = await client.call_tool("lookup_tables", {"operation": "replace", "table_id": PLANS, "rows": rows})
    first, second = double.received()
    assert (first.method, first.path, first.query) == ("GET", "/lookup-tables", {"project_id": str(PROJECT_ID)})
    assert first.basic_auth == (SA_USER, SA_SECRET)
    assert (second.method, second.path, second.query) == (
        "PUT",
        f"/lookup-tables/{PLANS}",
        {"project_id": str(PROJECT_ID)},
    )
    assert second.headers["content-type"] == "text/csv"
    assert second.body.decode() == (
        "plan,price,annual,features,note\n"
        'starter,12,false,"[""boards""]",\n'
        'pro,29.5,true,"[""boards"", ""reports""]",\n'
    )
    assert structured(listed)["tables"] == [{"id": PLANS, "name": "Plans"}, {"id": SKUS, "name": "SKUs"}]
    assert listed.content[0].text.startswith(f"2 lookup table(s): Plans ({PLANS}), SKUs ({SKUS}).")
    assert structured(replaced) == {"table_id": PLANS, "replaced": True, "rows": 2, "columns": 5}
    assert replaced.content[0].text.startswith(f"Replaced lookup table {PLANS}: 2 row(s), 5 column(s).")
    assert [row[0] for row in double.lookup_tables[PLANS]["rows"]] == ["starter", "pro"]


async def test_replace_from_a_file_with_the_legacy_secret(double, double_url, tmp_path):
    seed(double)
    table = tmp_path / "skus.csv"
    table.write_text("sku,name\nA1,Board\nB2,Marker\n")
    env = server_env(
        double_url,
        MIXPANEL_SERVICE_ACCOUNT_USERNAME=None,
        MIXPANEL_SERVICE_ACCOUNT_SECRET=None,
        MIXPANEL_API_SECRET=API_SECRET,
    )
    async with stdio_client(env) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        replaced = await client.call_tool(
            "lookup_tables", {"operation": "replace", "table_id": SKUS, "file": str(table)}
        )
    # Listing needs a service account; replacing also takes the legacy secret.
    assert tools["lookup_tables"].input_schema["properties"]["operation"]["enum"] == ["replace"]
    (request,) = double.received()
    assert request.basic_auth == (API_SECRET, "") and request.query == {}
    assert request.body == b"sku,name\nA1,Board\nB2,Marker\n"
    assert structured(replaced)["rows"] == 2
    assert double.lookup_tables[SKUS]["rows"] == [["A1", "Board"], ["B2", "Marker"]]


async def test_rows_breaking_mixpanels_rules_are_not_sent(double, env, tmp_path):
    seed(double)
    bad = tmp_path / "bad.csv"
    bad.write_text("sku,name\nA1,Board\nA1,Again\n,Blank\nC3\n")
    async with stdio_client(env) as client:
        result = await client.call_tool("lookup_tables", {"operation": "replace", "table_id": SKUS, "file": str(bad)})
        both = await client.call_tool(
            "lookup_tables", {"operation": "replace", "table_id": SKUS, "rows": [{"a": 1}], "file": str(bad)}
        )
        escape = await client.call_tool(
            "lookup_tables", {"operation": "replace", "table_id": "../x", "rows": [{"a": 1}]}
        )
    assert refused(result)["failed_records"] == [
        {"index": 2, "message": "invalid row: row indexes 1 and 2 have the same primary key"},
        {"index": 3, "message": "primary key is required and cannot be blank"},
        {"index": 4, "message": "invalid row: wrong number of fields"},
    ]
    assert "give rows or file, not both" in error_text(both)
    assert "table_id: must be the table's id, a UUID from lookup_tables list" in error_text(escape)
    assert double.received() == []


async def test_mixpanels_own_refusal_and_unknown_table(double, env):
    seed(double)
    double.fail(
        "/lookup-tables/",
        400,
        body={
            "code": 400,
            "error": "Some data points in the request failed validation.",
            "status": "Bad Request",
            "failed_records": [{"index": 1, "message": "bad date"}],
        },
    )
    async with stdio_client(env) as client:
        refusal = await client.call_tool(
            "lookup_tables", {"operation": "replace", "table_id": PLANS, "rows": [{"plan": "x"}]}
        )
        missing = await client.call_tool(
            "lookup_tables", {"operation": "replace", "table_id": UNKNOWN, "rows": [{"plan": "x"}]}
        )
    assert refused(refusal)["failed_records"] == [{"index": 1, "message": "bad date"}]
    assert "kept the old one" in refusal.content[0].text
    assert f"Lookup table with id '{UNKNOWN}' was not found." in error_text(missing)
    assert double.lookup_tables[PLANS]["rows"] == [["free", "0"]]


async def test_over_http_a_file_is_never_read(double, http_server, tmp_path):
    from tests.harness import http_client

    seed(double)
    table = tmp_path / "skus.csv"
    table.write_text("sku\nA1\n")
    async with http_client(http_server) as client:
        result = await client.call_tool("lookup_tables", {"operation": "replace", "table_id": SKUS, "file": str(table)})
        inline = await client.call_tool(
            "lookup_tables", {"operation": "replace", "table_id": SKUS, "rows": [{"sku": "B2"}]}
        )
    assert refused(result) == {"table_id": SKUS, "replaced": False}
    assert "does not read files on its machine; pass rows instead" in result.content[0].text
    assert structured(inline)["rows"] == 1
    assert [r.body for r in double.received()] == [b"sku\nB2\n"]
