"""Run a saved Insights report by its bookmark_id."""

from mixpanel_mcp.tools._base import ToolGroup

group = ToolGroup(
    name="insights",
    title="Saved report",
    description="Run a saved Insights report by its bookmark_id.",
    single=True,
)
