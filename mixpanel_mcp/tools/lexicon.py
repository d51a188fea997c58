"""The data dictionary: list, create/replace and delete event and profile schemas."""

from mixpanel_mcp.tools._base import ToolGroup

group = ToolGroup(
    name="lexicon",
    title="Lexicon",
    description="The data dictionary: list, create/replace and delete event and profile schemas.",
)
