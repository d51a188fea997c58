"""Saved funnels: list them, and run one over a date range."""

from mixpanel_mcp.tools._base import ToolGroup

group = ToolGroup(
    name="funnels",
    title="Funnels",
    description="Saved funnels: list them, and run one over a date range.",
)
