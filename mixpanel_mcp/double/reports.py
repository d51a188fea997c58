"""Query API: event discovery, segmentation and saved Insights reports, computed from stored events."""

from __future__ import annotations

from starlette.routing import Route

from mixpanel_mcp.double.state import DoubleState


def routes(state: DoubleState) -> list[Route]:
    return []
