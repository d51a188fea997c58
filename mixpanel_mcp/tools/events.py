"""Event names, counts and properties of the project."""

from mixpanel_mcp.tools._base import ToolGroup

group = ToolGroup(
    name="events",
    title="Event discovery",
    description="Event names, counts and properties of the project.",
)
