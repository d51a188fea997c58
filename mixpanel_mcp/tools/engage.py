"""User profiles: set, change and delete profile properties (POST /engage)."""

from mixpanel_mcp.tools._base import Args, ToolGroup
from mixpanel_mcp.tools._params import DistinctId
from mixpanel_mcp.tools._profiles import SHAPES, add_profile_operations

group = ToolGroup(
    name="engage",
    title="User profiles",
    description="Update Mixpanel user profiles by distinct_id.",
)


class UserProfile(Args):
    distinct_id: DistinctId


add_profile_operations(group, UserProfile, list(SHAPES), send="engage")
