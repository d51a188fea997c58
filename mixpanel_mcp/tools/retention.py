"""Cohort retention and usage frequency."""

from mixpanel_mcp.tools._base import ToolGroup

group = ToolGroup(
    name="retention",
    title="Retention",
    description="Cohort retention and usage frequency.",
)
