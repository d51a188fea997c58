"""Lexicon Schemas API: /api/app/projects/{id}/schemas at its three levels."""

from __future__ import annotations

from starlette.routing import Route

from mixpanel_mcp.double.state import DoubleState


def routes(state: DoubleState) -> list[Route]:
    return []
