"""The public surface: the whole tools/list (snapshot), its annotations, its size, and credential filtering.

A change to any tool's name, schema, description or annotations fails here until the snapshot is
regenerated on purpose:  UPDATE_SNAPSHOTS=1 python -m pytest tests/test_tool_surface.py
"""

import json
import os
from pathlib import Path

import pytest

from tests.conftest import API_SECRET, server_env, stdio_client

pytestmark = pytest.mark.asyncio

SNAPSHOT = Path(__file__).parent / "snapshots" / "tools_list.json"
ALL_TOOLS = [
    "track", "engage", "groups", "events", "segmentation", "funnels", "retention", "insights", "jql", "export", "lexicon",
    "annotations", "flags", "experiments", "lookup_tables", "gdpr",
]
WRITERS = {"lexicon", "annotations", "flags", "experiments", "lookup_tables", "gdpr"}
NEEDS_MORE = {"experiments", "gdpr"}  # a workspace id; the GDPR token


@pytest.fixture
def env(double_url):
    """Every credential and setting, so every tool is listed."""
    return server_env(double_url, MIXPANEL_WORKSPACE_ID="5678", MIXPANEL_GDPR_TOKEN="test-gdpr-token")
INGESTION = {"track", "engage", "groups"}


async def listed(env: dict) -> list[dict]:
    async with stdio_client(env, confirm=True) as client:
        result = await client.list_tools()
    return [tool.model_dump(mode="json", by_alias=True, exclude_none=True) for tool in result.tools]


def operations(tool: dict) -> list[str]:
    return tool["inputSchema"]["properties"].get("operation", {}).get("enum", [])


async def test_tools_list_matches_snapshot(env):
    tools = await listed(env)
    text = json.dumps(tools, indent=2, sort_keys=True) + "\n"
    if os.environ.get("UPDATE_SNAPSHOTS") == "1" or not SNAPSHOT.exists():
        SNAPSHOT.write_text(text)
        pytest.skip("snapshot written; review and commit it")
    assert text == SNAPSHOT.read_text(), "tools/list changed: review, then UPDATE_SNAPSHOTS=1 to accept"


async def test_every_tool_listed_with_full_annotations_and_strict_flat_schema(env):
    tools = await listed(env)
    assert [t["name"] for t in tools] == ALL_TOOLS
    for tool in tools:
        hints = tool["annotations"]
        assert set(hints) >= {"readOnlyHint", "destructiveHint", "idempotentHint", "openWorldHint"}, tool["name"]
        assert hints["readOnlyHint"] is (tool["name"] not in INGESTION | WRITERS), tool["name"]
        schema = tool["inputSchema"]
        assert schema["type"] == "object" and schema["additionalProperties"] is False
        assert not {"oneOf", "anyOf", "allOf"} & set(schema), "top-level unions break some model APIs"
    destructive = {t["name"] for t in tools if t["annotations"]["destructiveHint"]}
    assert destructive == INGESTION | WRITERS


async def test_surface_stays_within_token_budget(env):
    tools = await listed(env)
    # `_meta` is for the host (e.g. which MCP Apps view draws the result); hosts do not show it to the model.
    size = len(json.dumps({"tools": [{k: v for k, v in t.items() if k != "_meta"} for t in tools]}, separators=(",", ":")))
    # 5,000 plus ~80 for the `chart` argument of the five report tools.
    assert size // 4 <= 5100, f"tools/list is ~{size // 4} tokens; the budget is 5,100"


async def test_token_only_lists_ingestion_tools_with_every_ingestion_operation(double_url):
    env = server_env(double_url, MIXPANEL_SERVICE_ACCOUNT_USERNAME=None, MIXPANEL_SERVICE_ACCOUNT_SECRET=None)
    tools = {t["name"]: t for t in await listed(env)}
    assert set(tools) == INGESTION
    assert operations(tools["track"]) == ["track", "import", "identify", "alias", "merge"]


async def test_service_account_only_advertises_import_operations_of_track(double_url):
    env = server_env(double_url, MIXPANEL_PROJECT_TOKEN=None)
    tools = {t["name"]: t for t in await listed(env)}
    assert set(tools) == set(ALL_TOOLS) - {"engage", "groups"} - NEEDS_MORE
    assert operations(tools["track"]) == ["import"]  # $merge carries the project token


async def test_legacy_secret_lists_reports_but_not_lexicon(double_url):
    env = server_env(
        double_url,
        MIXPANEL_PROJECT_TOKEN=None,
        MIXPANEL_SERVICE_ACCOUNT_USERNAME=None,
        MIXPANEL_SERVICE_ACCOUNT_SECRET=None,
        MIXPANEL_API_SECRET=API_SECRET,
    )
    names = [t["name"] for t in await listed(env)]
    assert "lexicon" not in names and "engage" not in names
    assert {"segmentation", "export", "track"} <= set(names)


async def test_descriptions_say_which_apis_mixpanel_keeps_in_maintenance_mode(env):
    """Segmentation, funnels, JQL and the activity stream, per Mixpanel's reference; none is hidden or discouraged."""
    tools = {t["name"]: t["description"] for t in await listed(env)}
    for name in ("segmentation", "funnels", "jql"):
        assert "maintenance mode" in tools[name].splitlines()[0], name
    assert "activity: the events of given users (API in maintenance mode)" in tools["export"]
    for name in ("events", "retention", "insights"):
        assert "maintenance" not in tools[name], name
    assert "prefer" not in tools["jql"]
