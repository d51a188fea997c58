"""Count an event over time, optionally segmented by a property."""

from mixpanel_mcp.tools._base import ToolGroup

group = ToolGroup(
    name="segmentation",
    title="Segmentation",
    description="Count an event over time, optionally segmented by a property.",
)
