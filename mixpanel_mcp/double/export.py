"""Raw export (NDJSON), the /engage profile query, cohorts and the activity stream."""

from __future__ import annotations

from starlette.routing import Route

from mixpanel_mcp.double.state import DoubleState


def routes(state: DoubleState) -> list[Route]:
    return []
