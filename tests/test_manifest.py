"""The Claude Desktop bundle manifest: its tool list is the server's, and its settings map to real variables."""

import json
import os
import re

import pytest
from pathlib import Path

from mixpanel_mcp.cli import SANDBOX_VAR
from mixpanel_mcp.config import ENV_VARS
from mixpanel_mcp.tools import ALL_GROUPS

MANIFEST = json.loads((Path(__file__).parent.parent / "manifest.json").read_text())


def test_manifest_lists_every_tool_the_server_registers():
    assert MANIFEST["tools"] == [{"name": g.name, "description": g.description} for g in ALL_GROUPS]


def test_user_config_maps_to_server_variables_and_secrets_are_sensitive():
    env = MANIFEST["server"]["mcp_config"]["env"]
    assert set(env) <= {*ENV_VARS, SANDBOX_VAR}
    referenced = {re.fullmatch(r"\$\{user_config\.(\w+)\}", value).group(1) for value in env.values()}
    assert referenced == set(MANIFEST["user_config"])
    sensitive = {k for k, v in MANIFEST["user_config"].items() if v.get("sensitive")}
    assert sensitive == {"project_token", "service_account_secret", "gdpr_token"}


def test_manifest_version_matches_package():
    from mixpanel_mcp import __version__

    assert MANIFEST["version"] == __version__


@pytest.mark.asyncio
async def test_a_host_launching_the_bundle_in_demo_mode_gets_every_tool(tmp_path):
    """What Claude Desktop does: substitute the user's settings into mcp_config.env, start the server."""
    import sys

    from mcp import Client
    from mcp.client.stdio import StdioServerParameters

    answers = {"sandbox": "true", "project_token": "", "service_account_username": "", "service_account_secret": "",
               "workspace_id": "", "gdpr_token": "",
               "project_id": "", "region": "us"}
    env = {
        name: re.sub(r"\$\{user_config\.(\w+)\}", lambda m: answers[m.group(1)], value)
        for name, value in MANIFEST["server"]["mcp_config"]["env"].items()
    }
    env["XDG_DATA_HOME"] = str(tmp_path)  # the sandbox's per-user folder
    params = StdioServerParameters(command=sys.executable, args=["-m", "mixpanel_mcp"], env=env)
    async with Client(params) as client:
        tools = await client.list_tools()
    # Every tool but JQL, which the demo project cannot run (it runs no JavaScript).
    assert [t.name for t in tools.tools] == [g.name for g in ALL_GROUPS if g.name != "jql"]
    assert (tmp_path / "mixpanel-mcp" / "sandbox" / "sandbox.sqlite3").is_file()


def test_the_bundle_leaves_out_every_local_artefact():
    """What .gitignore keeps out of the repository (caches, venvs, builds, packed bundles) stays out of the bundle."""
    root = Path(__file__).resolve().parent.parent
    ignored = set((root / ".mcpbignore").read_text().split())
    local = [line for line in (root / ".gitignore").read_text().split() if line != "tests/artefacts/"]
    assert set(local) <= ignored | {"tests/artefacts/"}
    assert ".pytest_cache/" in ignored


def test_the_demo_bundle_does_not_warn_about_the_region_it_always_sends(tmp_path):
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("MIXPANEL_")}
    env.update(MIXPANEL_SANDBOX="true", MIXPANEL_REGION="us", XDG_DATA_HOME=str(tmp_path))
    done = subprocess.run([sys.executable, "-m", "mixpanel_mcp"], env=env, input=b"", capture_output=True, timeout=120)
    assert b"serving a local demo project" in done.stderr
    assert b"ignoring" not in done.stderr
    env["MIXPANEL_REGION"] = "eu"  # a choice the sandbox cannot honour is still said
    done = subprocess.run([sys.executable, "-m", "mixpanel_mcp"], env=env, input=b"", capture_output=True, timeout=120)
    assert b"ignoring MIXPANEL_REGION" in done.stderr


def test_the_readme_and_the_manifest_claim_only_the_apis_that_are_built():
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    operations = sum(len(g.operations) for g in ALL_GROUPS)
    assert f"as {len(ALL_GROUPS)} tools (one per endpoint group, {operations} operations)" in readme
    claims = readme + MANIFEST["description"] + MANIFEST["long_description"]
    for overclaim in ("whole Mixpanel API", "Every operation of Mixpanel", "every operation of Mixpanel"):
        assert overclaim not in claims
    # Mixpanel's API families this project does not cover are named as such.
    for missing in ("service accounts", "data pipelines", "warehouse connectors"):
        assert missing in readme and missing in MANIFEST["long_description"]
