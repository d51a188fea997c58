"""Local files over stdio: outputs never clobber or follow what is planted beside them, inputs are regular
files of bounded size, paths are checked in the argument model, and a bad line is named."""

from __future__ import annotations

import json
import os

import pytest

from tests.conftest import error_text, stdio_client, stored_event, structured
from tests.test_export import EXPORT, at, one_day

pytestmark = pytest.mark.asyncio

EVENT = {"event": "Signed up", "properties": {"distinct_id": "u1", "time": 1767225600, "$insert_id": "a1"}}


async def test_csv_spool_never_overwrites_nor_follows_what_is_planted_beside_the_output(double, env, tmp_path):
    """The spool was `.<name>.part`, opened with "wb": an existing file of that name was overwritten and a
    symlink planted there was followed (its target got the export)."""
    double.events = [stored_event("Tick", "u1", at(12))]
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    (tmp_path / ".report.csv.part").symlink_to(victim)
    (tmp_path / ".other.csv.part").write_text("mine\n")
    async with stdio_client(env) as client:
        report = await client.call_tool("export", one_day("2026-01-12", output_file=str(tmp_path / "report.csv")))
        other = await client.call_tool("export", one_day("2026-01-12", output_file=str(tmp_path / "other.csv")))
    assert structured(report)["written"] == 1 and structured(other)["written"] == 1
    assert victim.read_text() == "keep me\n"
    assert (tmp_path / ".other.csv.part").read_text() == "mine\n"
    assert (tmp_path / "report.csv").read_text().splitlines()[1].startswith("Tick,u1,")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.csv.part", ".report.csv.part", "other.csv", "report.csv", "victim.txt"]


async def test_overwrite_replaces_a_file_only_once_the_export_is_complete(double, env, tmp_path):
    double.events = [stored_event("Tick", "u1", at(12))]
    report, victim, linked = tmp_path / "report.csv", tmp_path / "victim.txt", tmp_path / "linked.ndjson"
    report.write_text("last week's\n")
    victim.write_text("keep me\n")
    linked.symlink_to(victim)
    async with stdio_client(env) as client:
        double.fail(EXPORT, 400, body="Invalid date range")
        failed = await client.call_tool("export", one_day("2026-01-12", output_file=str(report), overwrite=True))
        assert report.read_text() == "last week's\n"  # a failed export leaves the old file as it was
        replaced = await client.call_tool("export", one_day("2026-01-12", output_file=str(report), overwrite=True))
        through_link = await client.call_tool("export", one_day("2026-01-12", output_file=str(linked), overwrite=True))
        profiles = await client.call_tool(
            "export", {"operation": "profiles", "output_file": str(report), "overwrite": True}
        )
        alone = await client.call_tool("export", one_day("2026-01-12", overwrite=True))
    assert 'Mixpanel said: "Invalid date range"' in error_text(failed)
    assert structured(replaced)["written"] == 1 and structured(through_link)["written"] == 1
    assert victim.read_text() == "keep me\n"  # the link itself was replaced, its target never written
    assert not linked.is_symlink() and json.loads(linked.read_text())["event"] == "Tick"
    assert report.read_text().splitlines()[0] == "$distinct_id"  # the profile export replaced the event export
    assert structured(profiles)["output_file"] == str(report)
    assert "- (arguments): overwrite applies only with output_file. Example: output_file=/tmp/events.csv" in error_text(alone)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["linked.ndjson", "report.csv", "victim.txt"]


async def test_a_nul_or_control_character_in_a_path_is_a_clear_argument_error(double, env, tmp_path):
    async with stdio_client(env) as client:
        export = await client.call_tool("export", one_day("2026-01-12", output_file=f"{tmp_path}/a\x00.csv"))
        track = await client.call_tool("track", {"operation": "import", "file": f"{tmp_path}/b\x00.ndjson"})
        newline = await client.call_tool("track", {"operation": "import", "file": f"{tmp_path}/c\n.ndjson"})
    assert "- output_file: must be a file path without NUL or other control characters" in error_text(export)
    for result in (track, newline):
        assert "- file: must be a file path without NUL or other control characters" in error_text(result)
    assert double.received() == []


async def test_only_regular_files_are_read(double, env, tmp_path):
    """A symlink to /dev/zero grew the server to 1.5 GB; a FIFO hung the call."""
    (tmp_path / "zero.ndjson").symlink_to("/dev/zero")
    os.mkfifo(tmp_path / "fifo.ndjson")
    (tmp_path / "dir.ndjson").mkdir()
    async with stdio_client(env) as client:
        results = [
            await client.call_tool("track", {"operation": "import", "file": str(tmp_path / name)})
            for name in ("zero.ndjson", "fifo.ndjson", "dir.ndjson")
        ]
    for result in results:
        assert "it is not a regular file" in result.content[0].text
    assert double.received() == []


async def test_a_lone_surrogate_or_an_endless_line_is_reported_with_its_line(double, env, tmp_path):
    """A lone surrogate once gave "Error executing tool track" and no line number."""
    lines = [json.dumps(EVENT), '{"event": "bad \\ud800", "properties": {"distinct_id": "u2"}}', "x" * ((1 << 20) + 10)]
    path = tmp_path / "events.ndjson"
    path.write_text("\n".join(lines) + "\n")
    array = tmp_path / "events.json"
    array.write_text("[\n" + json.dumps(EVENT) + ',\n{"event": "\\udfff", "properties": {"distinct_id": "u"}}\n]')
    async with stdio_client(env) as client:
        ndjson = await client.call_tool("track", {"operation": "import", "file": str(path)})
        whole = await client.call_tool("track", {"operation": "import", "file": str(array)})
    text = ndjson.content[0].text
    assert "line 2 holds a lone UTF-16 surrogate" in text
    assert "line 3 is over 1,048,576 bytes" in text
    assert "line 3 holds a lone UTF-16 surrogate" in whole.content[0].text
    assert double.received() == []  # rejected as a whole: nothing sent
