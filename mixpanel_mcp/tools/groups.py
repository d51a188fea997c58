"""Group profiles: set, change and delete properties of a company, account or other group (POST /groups)."""

from pydantic import Field

from mixpanel_mcp.tools._base import Args, ToolGroup
from mixpanel_mcp.tools._profiles import add_profile_operations

group = ToolGroup(
    name="groups",
    title="Group profiles",
    description="Update Mixpanel group profiles (e.g. companies).",
)


class GroupProfile(Args):
    group_key: str = Field(min_length=1, max_length=255, description='Group key, e.g. "company_id".')
    group_id: str = Field(min_length=1, max_length=255, description="The group's id.")


add_profile_operations(group, GroupProfile, ["set", "set_once", "union", "remove", "unset", "delete"], send="groups")
