"""The sandbox's annotations, feature flags, experiment, lookup table and GDPR jobs: seeded, consistent with the
events (exposures carry the variant the flag gives), changed by the tools and kept across restarts."""

from __future__ import annotations

import sqlite3
from collections import Counter

import pytest

from mixpanel_mcp.double.seed import EXPERIMENTATION
from mixpanel_mcp.sandbox import open_sandbox
from tests.conftest import structured
from tests.test_sandbox import sandbox_client, stored_events, stored_rows


@pytest.mark.asyncio
async def test_seeded_experimentation_agrees_with_the_events_and_changes_are_kept(tmp_path):
    folder = tmp_path / "sandbox"
    async with sandbox_client(folder) as client:
        names = [t.name for t in (await client.list_tools()).tools]
        flags = structured(await client.call_tool("flags", {"operation": "list"}))
        experiments = structured(await client.call_tool("experiments", {"operation": "list"}))
        annotations = structured(await client.call_tool("annotations", {"operation": "list"}))
        tables = structured(await client.call_tool("lookup_tables", {"operation": "list"}))
        exposures = [e for e in stored_events(folder) if e["event"] == "$experiment_started"]
        users = {e["properties"]["distinct_id"]: e["properties"]["Variant name"] for e in exposures[:5]}
        evaluated = {
            user: structured(await client.call_tool("flags", {"operation": "evaluate", "distinct_id": user}))["flags"]
            for user in users
        }
        table_id = tables["tables"][0]["id"]
        await client.call_tool(
            "lookup_tables",
            {"operation": "replace", "table_id": table_id, "rows": [{"plan": "free", "monthly_price_usd": 0}]},
        )
        await client.call_tool(
            "annotations", {"operation": "create", "date": "2026-01-05", "description": "Launch week"}
        )

    assert {"annotations", "flags", "experiments", "lookup_tables", "gdpr"} <= set(names)
    by_key = {f["key"]: f for f in flags["flags"]}
    assert by_key["dark-mode"]["rollout"] == "everyone: 20% (off 0%, on 100%)"
    assert by_key["new-checkout"]["is_experiment_active"] is True
    (experiment,) = experiments["experiments"]
    assert (experiment["name"], experiment["state"], experiment["feature_flag"]) == (
        "Checkout redesign",
        "running",
        "new-checkout",
    )
    assert [a["description"] for a in annotations["annotations"]][1:] == [
        "Release 2.4: board templates",
        "Outage: checkout down 40 min (payment provider)",
    ]
    assert [t["name"] for t in tables["tables"]] == ["Plans"]
    # Exposure events carry exactly the variant the flag's evaluation gives each user.
    assert len(exposures) > 50 and set(Counter(users.values())) <= {"control", "treatment"}
    for user, variant in users.items():
        assert evaluated[user]["new-checkout"]["variant_key"] == variant
        assert evaluated[user]["new-checkout"]["experiment_id"] == experiment["id"]
    assert all(e["properties"]["Experiment name"] == "Checkout redesign" for e in exposures)

    assert stored_rows(folder, "lookup_tables")[table_id]["rows"] == [["free", "0"]]
    async with sandbox_client(folder) as client:  # a restart: what the agent changed is still there
        again = structured(await client.call_tool("annotations", {"operation": "list"}))
    assert again["count"] == 4 and "Launch week" in {a["description"] for a in again["annotations"]}


def test_a_sandbox_from_before_gets_annotations_flags_experiment_and_plans_once(tmp_path):
    sandbox = open_sandbox(tmp_path)
    events = list(sandbox.state.events)
    sandbox.close()
    with sqlite3.connect(tmp_path / "sandbox.sqlite3") as db:  # as an earlier version left it
        for table in EXPERIMENTATION:
            db.execute(f"DELETE FROM {table}")  # noqa: S608
        db.execute("DELETE FROM meta WHERE key = 'experimentation_seeded_at'")
    older = open_sandbox(tmp_path)
    assert not older.seeded and older.state.events == events
    assert len(older.state.flags) == 2 and len(older.state.experiments) == 1 and len(older.state.annotations) == 3
    older.state.annotations.clear()  # an agent deleted them all: they must not come back
    older.state.persist()
    older.close()
    later = open_sandbox(tmp_path)
    assert later.state.annotations == {} and len(later.state.lookup_tables) == 1
    later.close()
