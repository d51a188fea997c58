"""Raw events, user profiles, cohorts and a user's activity feed."""

from mixpanel_mcp.tools._base import ToolGroup

group = ToolGroup(
    name="export",
    title="Export",
    description="Raw events, user profiles, cohorts and a user's activity feed.",
)
