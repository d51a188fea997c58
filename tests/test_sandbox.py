"""The offline sandbox: `mixpanel-mcp --sandbox` over stdio with no credentials, answering like Mixpanel from a
seeded local project kept in SQLite.

Expected answers are counted here, in plain Python, from the events and rows in the sandbox's SQLite file (read
with sqlite3 directly), never copied from a tool's answer.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
import subprocess
import sys
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters

from mixpanel_mcp.config import default_sandbox_dir
from mixpanel_mcp.double.seed import FUNNEL_PURCHASE, generate
from mixpanel_mcp.double.state import DoubleState, group_key_id
from mixpanel_mcp.double.store import SqliteStore
from mixpanel_mcp.tools import ALL_GROUPS
from tests.conftest import NO_CONFIRM, error_text, keep_contract_mode, structured
from tests.harness import http_client, http_server

ROOT = Path(__file__).resolve().parent.parent
DAY = dt.timedelta(days=1)


def no_credentials() -> dict[str, str]:
    return keep_contract_mode({k: v for k, v in os.environ.items() if not k.startswith("MIXPANEL_")})


@asynccontextmanager
async def sandbox_client(folder: Path, env: dict[str, str] | None = None) -> AsyncIterator[Client]:
    args = ["-m", "mixpanel_mcp", "--sandbox", "--sandbox-dir", str(folder), "--policy", str(NO_CONFIRM)]
    params = StdioServerParameters(command=sys.executable, args=args, env=env or no_credentials(), cwd=str(ROOT))
    async with Client(params) as client:
        yield client


# -- reading the store, as a person with sqlite3 would ------------------------------------------------


def stored_events(folder: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(folder / "sandbox.sqlite3") as db:
        return [json.loads(body) for (body,) in db.execute("SELECT body FROM events ORDER BY seq")]


def stored_rows(folder: Path, table: str) -> dict[str, Any]:
    with sqlite3.connect(folder / "sandbox.sqlite3") as db:
        return {key: json.loads(body) for key, body in db.execute(f"SELECT key, body FROM {table}")}  # noqa: S608


def day_of(event: dict[str, Any]) -> dt.date:
    return dt.datetime.fromtimestamp(event["properties"]["time"], dt.UTC).date()


def span(events: list[dict[str, Any]]) -> tuple[dt.date, dt.date]:
    days = [day_of(e) for e in events]
    return min(days), max(days)


def funnel_steps(
    events: list[dict[str, Any]], steps: list[str], start: dt.date, end: dt.date, window: int, per_day: bool = True
) -> list[int]:
    """Mixpanel's funnel, counted per day: a user enters on each day (in range) of their first step-1 event of that
    day, then converts through the steps in order within `window` seconds of entering. Without `per_day`, one
    bucket spans the range: a user enters once, at their first step-1 event in it."""
    by_user: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in sorted(events, key=lambda e: e["properties"]["time"]):
        if event["event"] in steps:
            by_user[event["properties"]["distinct_id"]].append(event)
    counts = [0] * len(steps)
    for user_events in by_user.values():
        entered: set[dt.date] = set()
        for k, event in enumerate(user_events):
            day = day_of(event)
            bucket = day if per_day else start
            if event["event"] != steps[0] or not start <= day <= end or bucket in entered:
                continue
            entered.add(bucket)
            t0, reached = event["properties"]["time"], 1
            for later in user_events[k + 1 :]:
                if reached == len(steps) or later["properties"]["time"] > t0 + window:
                    break
                if later["event"] == steps[reached]:
                    reached += 1
            for step in range(reached):
                counts[step] += 1
    return counts


# -- the server, seeded ------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_seeded_project_answers_like_mixpanel(tmp_path):
    folder = tmp_path / "sandbox"
    async with sandbox_client(folder) as client:
        tools = await client.list_tools()
        assert [t.name for t in tools.tools] == [group.name for group in ALL_GROUPS if group.name != "jql"]
        assert client.instructions is not None and client.instructions.startswith("SANDBOX: a local demo project")
        assert "JQL is not available" in client.instructions and "funnels 1001 (Visit to purchase)" in client.instructions

        events = stored_events(folder)
        first, last = span(events)
        today = dt.datetime.now(dt.UTC).date()
        assert first == today - 41 * DAY and last >= today - DAY  # six weeks, ending today (as far as the clock got)
        week_ago = today - 6 * DAY

        # segmentation by day, no segment
        signups = await client.call_tool(
            "segmentation",
            {"operation": "segment", "event": "Signed up", "from_date": str(week_ago), "to_date": str(today)},
        )
        expected = Counter(str(day_of(e)) for e in events if e["event"] == "Signed up" and day_of(e) >= week_ago)
        data = structured(signups)
        assert data["segments"][0]["values"] == {str(week_ago + i * DAY): expected[str(week_ago + i * DAY)] for i in range(7)}
        assert data["grand_total"] == sum(expected.values()) > 0

        # by country, where over a property, whole range
        by_country = await client.call_tool(
            "segmentation",
            {
                "operation": "segment", "event": "Viewed page", "from_date": str(first), "to_date": str(today),
                "on": 'properties["country"]', "where": 'properties["browser"] == "Chrome"', "unit": "month",
            },
        )
        chrome = [e for e in events if e["event"] == "Viewed page" and e["properties"]["browser"] == "Chrome"]
        totals = Counter(e["properties"]["country"] for e in chrome)
        data = structured(by_country)
        assert {s["segment"]: s["total"] for s in data["segments"]} == dict(totals)
        assert data["segments"][0]["segment"] == totals.most_common(1)[0][0]
        assert data["dates"] == sorted({str(day_of(e).replace(day=1)) for e in events})

        # the saved funnel: each user once over the range, and summed over its days
        funnels = stored_rows(folder, "funnels")
        saved = funnels[str(FUNNEL_PURCHASE)]
        whole = {"operation": "query", "funnel_id": FUNNEL_PURCHASE, "from_date": str(first), "to_date": str(today)}
        funnel = await client.call_tool("funnels", whole)
        daily = await client.call_tool("funnels", {**whole, "unit": "day"})
        window = saved["length"] * 86_400
        users = funnel_steps(events, saved["steps"], first, today, window, per_day=False)
        data = structured(funnel)
        assert [s["event"] for s in data["steps"]] == ["Viewed page", "Signed up", "Purchased"]
        assert [s["count"] for s in data["steps"]] == users
        assert users[0] == len({e["properties"]["distinct_id"] for e in events if e["event"] == "Viewed page"})
        steps = funnel_steps(events, saved["steps"], first, today, window)
        assert [s["count"] for s in structured(daily)["steps"]] == steps
        assert steps[0] > steps[1] > steps[2] > 0 and steps[0] > users[0]

        # birth retention: cohort sizes are the users whose first Signed up fell on each day
        retention = await client.call_tool(
            "retention",
            {"operation": "query", "born_event": "Signed up", "from_date": str(week_ago), "to_date": str(today), "interval_count": 3},
        )
        born: dict[str, dt.date] = {}
        for event in sorted(events, key=lambda e: e["properties"]["time"]):
            if event["event"] == "Signed up":
                born.setdefault(event["properties"]["distinct_id"], day_of(event))
        sizes = Counter(str(day) for day in born.values() if day >= week_ago)
        data = structured(retention)
        assert {c["cohort"]: c["size"] for c in data["cohorts"]} == dict(sizes)

        # event discovery, export of one day, profiles, Lexicon, saved report
        names = await client.call_tool("events", {"operation": "names"})
        assert set(structured(names)["names"]) == {e["event"] for e in events}

        some_day = first + 20 * DAY
        exported = await client.call_tool(
            "export", {"operation": "events", "from_date": str(some_day), "to_date": str(some_day), "limit": 5000}
        )
        on_that_day = [e for e in events if day_of(e) == some_day]
        data = structured(exported)
        assert data["returned"] == len(on_that_day) and data["more_may_exist"] is False
        assert data["by_event"] == dict(Counter(e["event"] for e in on_that_day))
        assert all(e["properties"].get("$insert_id") for e in on_that_day)

        profiles = stored_rows(folder, "profiles")
        people = await client.call_tool("export", {"operation": "profiles", "where": 'properties["plan"] == "team"', "limit": 1000})
        data = structured(people)
        team = {key for key, p in profiles.items() if p["plan"] == "team"}
        assert data["total"] == len(team) > 0
        assert {p["$distinct_id"] for p in data["profiles"]} == team
        assert all(set(p["$properties"]) >= {"$email", "$name", "plan", "country", "created"} for p in data["profiles"])
        companies = await client.call_tool("export", {"operation": "profiles", "data_group_id": group_key_id("company_id"), "limit": 1000})
        assert structured(companies)["total"] == len(stored_rows(folder, "group_profiles")) > 0

        schemas = await client.call_tool("lexicon", {"operation": "list"})
        listed = {(s["entityType"], s["name"]) for s in structured(schemas)["schemas"]}
        assert listed == {tuple(json.loads(key)) for key in stored_rows(folder, "schemas")}
        assert ("profile", "$user") in listed and ("event", "Purchased") in listed

        # The saved reports are listed where an agent can find them.
        uris = [str(r.uri) for r in (await client.list_resources()).resources]
        assert "mixpanel://reports" in uris
        listing = json.loads((await client.read_resource("mixpanel://reports")).contents[0].text)
        assert [r["bookmark_id"] for r in listing["reports"]] == [3001] and listing["reports"][0]["name"]
        report = await client.call_tool("insights", {"bookmark_id": 3001})
        four_weeks = [e for e in events if day_of(e) > today - 28 * DAY]
        data = structured(report)
        assert {s["series"]: s["total"] for s in data["series"]} == {
            name: sum(1 for e in four_weeks if e["event"] == name) for name in ("Signed up", "Purchased")
        }

        # JQL is not listed, and a call says why without blaming the arguments or Mixpanel.
        assert "jql" not in {t.name for t in (await client.list_tools()).tools}
        script = "function main() { return Events(params).groupBy(['name'], mixpanel.reducer.count()); }"
        jql = await client.call_tool("jql", {"script": script, "params": {"from_date": str(first), "to_date": str(today)}})
        assert "JQL is not offered in the sandbox" in error_text(jql)
        assert "400" not in error_text(jql) and "rejected" not in error_text(jql)


@pytest.mark.asyncio
async def test_writes_are_read_back_and_survive_a_restart(tmp_path):
    folder = tmp_path / "sandbox"
    yesterday = dt.datetime.now(dt.UTC).date() - DAY
    noon = int(dt.datetime.combine(yesterday, dt.time(12), dt.UTC).timestamp())
    checks = [
        {"event": "Exported board", "properties": {"distinct_id": f"user-{n:04d}", "time": noon + n, "format": fmt}}
        for n, fmt in ((1, "pdf"), (2, "pdf"), (3, "csv"))
    ]
    segment = {
        "operation": "segment", "event": "Exported board", "from_date": str(yesterday), "to_date": str(yesterday),
        "on": 'properties["format"]',
    }
    async with sandbox_client(folder) as client:
        seeded = len(stored_events(folder))
        user = sorted(stored_rows(folder, "profiles"))[0]
        imported = await client.call_tool("track", {"operation": "import", "events": checks})
        assert structured(imported)["stored"] == 3, imported.content[0].text
        updated = await client.call_tool("engage", {"operation": "set", "distinct_id": user, "properties": {"plan": "enterprise"}})
        assert not updated.is_error, updated.content[0].text
        grouped = await client.call_tool(
            "groups",
            {"operation": "set", "group_key": "company_id", "group_id": "c-999", "properties": {"$name": "Sandbox Test Co"}},
        )
        assert not grouped.is_error, grouped.content[0].text

        counted = structured(await client.call_tool("segmentation", segment))
        assert {s["segment"]: s["total"] for s in counted["segments"]} == {"pdf": 2, "csv": 1}
        profile = structured(await client.call_tool("export", {"operation": "profiles", "distinct_id": user}))
        assert profile["profiles"][0]["$properties"]["plan"] == "enterprise"

    # What was written is in the file, and a new server on the same folder starts from it (no second seeding).
    assert len(stored_events(folder)) == seeded + 3
    assert stored_rows(folder, "profiles")[user]["plan"] == "enterprise"
    async with sandbox_client(folder) as client:
        counted = structured(await client.call_tool("segmentation", segment))
        assert counted["grand_total"] == 3
        profile = structured(await client.call_tool("export", {"operation": "profiles", "distinct_id": user}))
        assert profile["profiles"][0]["$properties"]["plan"] == "enterprise"
        company = structured(
            await client.call_tool("export", {"operation": "profiles", "data_group_id": group_key_id("company_id"), "distinct_id": "c-999"})
        )
        assert company["profiles"] == [{"$distinct_id": "c-999", "$properties": {"$name": "Sandbox Test Co"}}]
        again = await client.call_tool("track", {"operation": "import", "events": checks})  # same $insert_id: deduplicated
        assert not again.is_error
    assert len(stored_events(folder)) == seeded + 3


@pytest.mark.asyncio
async def test_over_http_and_writing_every_event_to_a_file(tmp_path):
    folder = tmp_path / "sandbox"
    with http_server(no_credentials(), "--sandbox", "--sandbox-dir", str(folder), log_dir=tmp_path) as served:
        async with http_client(served.url) as client:
            events = stored_events(folder)
            first, last = span(events)
            names = structured(await client.call_tool("events", {"operation": "names"}))
            assert set(names["names"]) == {e["event"] for e in events}
            to_file = await client.call_tool(
                "export", {"operation": "events", "from_date": str(first), "to_date": str(last), "output_file": "/tmp/x.ndjson"}
            )
            assert "only available when the server runs on your machine" in error_text(to_file)  # HTTP: no local files
    assert "sandbox: serving a local demo project" in served.stderr()

    out = tmp_path / "all.ndjson"
    async with sandbox_client(folder) as client:
        written = structured(
            await client.call_tool(
                "export", {"operation": "events", "from_date": str(first), "to_date": str(last), "output_file": str(out)}
            )
        )
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert written["written"] == len(lines) == len(events)
    assert Counter(line["event"] for line in lines) == Counter(e["event"] for e in events)


# -- the command line --------------------------------------------------------------------------------


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "mixpanel_mcp", *args], env=env, input=b"", capture_output=True, timeout=30, cwd=ROOT
    )


def test_sandbox_needs_no_credentials_and_says_it_ignores_real_ones(tmp_path):
    env = {**no_credentials(), "MIXPANEL_PROJECT_TOKEN": "real-token-value", "MIXPANEL_SERVICE_ACCOUNT_SECRET": "real-sa-secret"}
    done = run_cli("--sandbox", "--sandbox-dir", str(tmp_path / "s"), "--region", "eu", env=env)
    assert done.returncode == 0 and done.stdout == b""  # stdin closed: the server stopped
    err = done.stderr.decode()
    assert "sandbox: serving a local demo project from" in err and "seeded just now with demo data" in err
    assert "ignoring MIXPANEL_PROJECT_TOKEN, MIXPANEL_SERVICE_ACCOUNT_SECRET, --region" in err
    assert "real-token-value" not in err and "real-sa-secret" not in err
    assert (tmp_path / "s" / "sandbox.sqlite3").is_file()

    again = run_cli("--sandbox", "--sandbox-dir", str(tmp_path / "s"), env=no_credentials())
    assert again.returncode == 0 and "as left by earlier runs" in again.stderr.decode()
    assert "ignoring" not in again.stderr.decode()


def test_sandbox_flag_errors(tmp_path):
    alone = run_cli("--sandbox-dir", str(tmp_path), env=no_credentials())
    assert alone.returncode == 2 and "add --sandbox" in alone.stderr.decode()
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    bad = run_cli("--sandbox", "--sandbox-dir", str(blocked), env=no_credentials())
    assert bad.returncode == 2 and f"cannot open the sandbox in {blocked}" in bad.stderr.decode()
    assert "Traceback" not in bad.stderr.decode()
    missing = run_cli(env=no_credentials())
    assert missing.returncode == 2 and "mixpanel-mcp --sandbox" in missing.stderr.decode()
    policy = tmp_path / "policy.toml"
    policy.write_text('[projects.marketing]\nMIXPANEL_PROJECT_TOKEN = "MARKETING_TOKEN"\n')
    projects = run_cli(
        "--sandbox", "--sandbox-dir", str(tmp_path / "s"), "--policy", str(policy), env={**no_credentials(), "MARKETING_TOKEN": "t"}
    )
    assert projects.returncode == 2 and "--sandbox serves only the local demo project" in projects.stderr.decode()
    assert not (tmp_path / "s").exists()


@pytest.mark.skipif(sys.platform in ("win32", "darwin"), reason="XDG_DATA_HOME is the Linux default")
def test_without_a_folder_it_uses_the_per_user_data_folder(tmp_path):
    done = run_cli("--sandbox", env={**no_credentials(), "XDG_DATA_HOME": str(tmp_path / "xdg")})
    assert done.returncode == 0, done.stderr.decode()
    assert (tmp_path / "xdg" / "mixpanel-mcp" / "sandbox" / "sandbox.sqlite3").is_file()
    assert str(tmp_path / "xdg" / "mixpanel-mcp" / "sandbox") in done.stderr.decode()


def test_default_folder_per_platform():
    home = Path("/home/ann")
    assert default_sandbox_dir("linux", {}, home) == home / ".local/share/mixpanel-mcp/sandbox"
    assert default_sandbox_dir("linux", {"XDG_DATA_HOME": "/data"}, home) == Path("/data/mixpanel-mcp/sandbox")
    assert default_sandbox_dir("linux", {"XDG_DATA_HOME": "relative"}, home) == home / ".local/share/mixpanel-mcp/sandbox"
    assert default_sandbox_dir("darwin", {}, home) == home / "Library/Application Support/mixpanel-mcp/sandbox"
    assert default_sandbox_dir("win32", {"LOCALAPPDATA": "C:/Users/ann/AppData/Local"}, home) == Path(
        "C:/Users/ann/AppData/Local/mixpanel-mcp/sandbox"
    )


# -- the dataset and the store, in process -----------------------------------------------------------


def test_seed_is_deterministic_complete_and_ends_on_the_day_given():
    end = dt.date(2026, 3, 1)
    data = generate(end, 7)
    assert data == generate(end, 7)
    assert data.events != generate(end, 8).events
    assert span(data.events) == (end - 41 * DAY, end)
    assert all({"distinct_id", "time", "$insert_id"} <= set(e["properties"]) for e in data.events)
    assert len({e["properties"]["$insert_id"] for e in data.events}) == len(data.events)
    assert {"Viewed page", "Signed up", "Purchased", "Session started"} <= {e["event"] for e in data.events}
    purchases = [e["properties"] for e in data.events if e["event"] == "Purchased"]
    assert purchases and all(p["amount"] > 0 and p["currency"] in ("USD", "EUR", "GBP") for p in purchases)
    pages = [e["properties"] for e in data.events if e["event"] == "Viewed page"]
    assert all({"page", "country", "browser"} <= set(p) for p in pages)
    signed_up = {e["properties"]["distinct_id"] for e in data.events if e["event"] == "Signed up"}
    assert set(data.profiles) == signed_up and 200 <= len(signed_up) <= 600
    assert all(key == "company_id" for key, _ in data.group_profiles)
    paying = next(c for c in data.cohorts if c["name"] == "Paying customers")
    assert set(paying["members"]) == {e["properties"]["distinct_id"] for e in data.events if e["event"] == "Purchased"}
    assert paying["count"] == len(paying["members"])

    noon = dt.datetime(2026, 3, 1, 12, tzinfo=dt.UTC)
    partial = generate(end, 7, now=noon)
    assert max(e["properties"]["time"] for e in partial.events) <= noon.timestamp()
    assert [e for e in data.events if e["properties"]["time"] <= noon.timestamp()] == partial.events


def test_store_writes_only_changes_and_loads_them_back(tmp_path):
    store = SqliteStore.in_folder(tmp_path / "s")
    state = DoubleState()
    state.events = [{"event": "A", "properties": {"time": 1, "distinct_id": "u"}}]
    state.profiles = {"u": {"plan": "free"}, "v": {"plan": "pro"}}
    state.schemas = {("event", "A"): {"description": "a"}}
    state.group_profiles = {("company_id", "c-1"): {"$name": "C"}}
    state.bookmarks = {5: {"definition": {"events": ["A"]}}}
    assert store.save(state) == 1 + 2 + 1 + 1 + 1 + 1 + 1  # event, profiles, schema, group, the default funnel and cohort, bookmark
    assert store.save(state) == 0  # nothing changed
    state.events.append({"event": "B", "properties": {"time": 2, "distinct_id": "v"}})
    state.profiles["u"]["plan"] = "team"
    del state.profiles["v"]
    assert store.save(state) == 3
    store.close()

    loaded = DoubleState()
    store = SqliteStore.in_folder(tmp_path / "s")
    assert not store.is_empty()
    store.load(loaded)
    assert [e["event"] for e in loaded.events] == ["A", "B"]
    assert loaded.profiles == {"u": {"plan": "team"}}
    assert loaded.schemas == {("event", "A"): {"description": "a"}}
    assert loaded.group_profiles == {("company_id", "c-1"): {"$name": "C"}}
    assert loaded.bookmarks == {5: {"definition": {"events": ["A"]}}}
    assert loaded.funnels == DoubleState().funnels and loaded.cohorts == DoubleState().cohorts
    assert store.save(loaded) == 0
    assert SqliteStore.in_folder(tmp_path / "empty").is_empty()


def test_the_demo_stays_current_without_touching_what_the_user_wrote(tmp_path):
    from mixpanel_mcp.sandbox import open_sandbox

    seeded_at = dt.datetime(2026, 11, 3, 10, 30, tzinfo=dt.UTC)
    sandbox = open_sandbox(tmp_path / "a", now=seeded_at)
    mine = {"event": "My own", "properties": {"time": int(seeded_at.timestamp()) + 60, "distinct_id": "me", "$insert_id": "x1"}}
    with sandbox.state.lock:
        sandbox.state.events.append(mine)
        sandbox.store.save(sandbox.state)
    sandbox.close()

    later = seeded_at + dt.timedelta(days=40, hours=3)
    in_one_go = open_sandbox(tmp_path / "a", now=later)
    events = list(in_one_go.state.events)
    in_one_go.close()
    # Every day up to the new "now" has demo events, and none lies after it.
    days = {day_of(e) for e in events}
    assert all(seeded_at.date() + dt.timedelta(days=d) in days for d in range(41))
    assert max(e["properties"]["time"] for e in events) <= later.timestamp()
    assert [e for e in events if e["event"] == "My own"] == [mine]
    keys = [(e["properties"]["distinct_id"], e["properties"]["$insert_id"]) for e in events]
    assert len(keys) == len(set(keys))  # nothing twice

    # Deterministic: the same history whether the sandbox was opened in between or not.
    step = open_sandbox(tmp_path / "b", now=seeded_at)
    step.close()
    for moment in (seeded_at + dt.timedelta(days=1), seeded_at + dt.timedelta(days=17, hours=5), later):
        step = open_sandbox(tmp_path / "b", now=moment)
        stepped = list(step.state.events)
        step.close()
    by_key = lambda es: sorted((e["properties"]["time"], e["properties"]["$insert_id"], e["event"]) for e in es)
    assert by_key(stepped) == by_key([e for e in events if e["event"] != "My own"])
    again = open_sandbox(tmp_path / "b", now=later)
    assert len(again.state.events) == len(stepped)  # opened again at the same moment: nothing added
    again.close()
