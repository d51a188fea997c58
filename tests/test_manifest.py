"""The Claude Desktop bundle manifest: its tool list is the server's, and its settings map to real variables."""

import json
import re
from pathlib import Path

from mixpanel_mcp.config import ENV_VARS
from mixpanel_mcp.tools import ALL_GROUPS

MANIFEST = json.loads((Path(__file__).parent.parent / "manifest.json").read_text())


def test_manifest_lists_every_tool_the_server_registers():
    assert MANIFEST["tools"] == [{"name": g.name, "description": g.description} for g in ALL_GROUPS]


def test_user_config_maps_to_server_variables_and_secrets_are_sensitive():
    env = MANIFEST["server"]["mcp_config"]["env"]
    assert set(env) <= set(ENV_VARS)
    referenced = {re.fullmatch(r"\$\{user_config\.(\w+)\}", value).group(1) for value in env.values()}
    assert referenced == set(MANIFEST["user_config"])
    sensitive = {k for k, v in MANIFEST["user_config"].items() if v.get("sensitive")}
    assert sensitive == {"project_token", "service_account_secret"}


def test_manifest_version_matches_package():
    from mixpanel_mcp import __version__

    assert MANIFEST["version"] == __version__
