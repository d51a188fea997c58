"""Send events to Mixpanel: recent ones with /track, historical ones with /import, and identity events."""

from mixpanel_mcp.tools._base import ToolGroup

group = ToolGroup(
    name="track",
    title="Events",
    description="Send events to Mixpanel: recent ones with /track, historical ones with /import, and identity events.",
)
