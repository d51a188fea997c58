"""Every tool group, in the order tools are listed. This is the only list."""

from mixpanel_mcp.tools import engage, groups
from mixpanel_mcp.tools._base import ToolGroup

ALL_GROUPS: list[ToolGroup] = [
    engage.group,
    groups.group,
]
