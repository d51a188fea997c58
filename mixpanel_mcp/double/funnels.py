"""Query API: funnels, retention, frequency (addiction) and JQL."""

from __future__ import annotations

from starlette.routing import Route

from mixpanel_mcp.double.state import DoubleState


def routes(state: DoubleState) -> list[Route]:
    return []
