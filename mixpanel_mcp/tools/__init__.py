"""Every tool group, in the order tools are listed. This is the only list."""

from mixpanel_mcp.tools import (
    annotations,
    engage,
    events,
    experiments,
    export,
    flags,
    funnels,
    gdpr,
    groups,
    insights,
    jql,
    lexicon,
    lookup_tables,
    retention,
    segmentation,
    track,
)
from mixpanel_mcp.tools._base import ToolGroup

ALL_GROUPS: list[ToolGroup] = [
    track.group,
    engage.group,
    groups.group,
    events.group,
    segmentation.group,
    funnels.group,
    retention.group,
    insights.group,
    jql.group,
    export.group,
    lexicon.group,
    annotations.group,
    flags.group,
    experiments.group,
    lookup_tables.group,
    gdpr.group,
]
