"""Run a JQL script."""

from mixpanel_mcp.tools._base import ToolGroup

group = ToolGroup(
    name="jql",
    title="JQL",
    description="Run a JQL script.",
    single=True,
)
