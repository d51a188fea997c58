"""Query API reports: saved funnels, retention, frequency (addiction) and JQL.

Plain async functions over `MixpanelClient`; auth, project_id and workspace_id are added by the client.
"""

from __future__ import annotations

import json
from typing import Any

from mixpanel_mcp.client.errors import Api
from mixpanel_mcp.client.http import MixpanelClient, raise_for_body_status


async def _get(client: MixpanelClient, path: str, params: dict[str, Any]) -> Any:
    response = await client.request(Api.QUERY, "GET", path, params=params)
    return raise_for_body_status(response, Api.QUERY, path, client.settings.secrets())


async def funnel(
    client: MixpanelClient,
    *,
    funnel_id: int,
    from_date: str,
    to_date: str,
    length: int | None = None,
    length_unit: str | None = None,
    interval: int | None = None,
    unit: str | None = None,
    on: str | None = None,
    where: str | None = None,
    limit: int | None = None,
) -> Any:
    """GET /funnels: one saved funnel, bucketed by date ({"meta": {"dates"}, "data": {date: {...}}})."""
    params = {
        "funnel_id": funnel_id,
        "from_date": from_date,
        "to_date": to_date,
        "length": length,
        "length_unit": length_unit,
        "interval": interval,
        "unit": unit,
        "on": on,
        "where": where,
        "limit": limit,
    }
    return await _get(client, "/funnels", params)


async def list_funnels(client: MixpanelClient) -> Any:
    """GET /funnels/list: [{"funnel_id", "name"}, ...]."""
    return await _get(client, "/funnels/list", {})


async def retention(
    client: MixpanelClient,
    *,
    from_date: str,
    to_date: str,
    retention_type: str = "birth",
    born_event: str | None = None,
    event: str | None = None,
    born_where: str | None = None,
    where: str | None = None,
    interval: int | None = None,
    interval_count: int | None = None,
    unit: str | None = None,
    unbounded_retention: bool | None = None,
    on: str | None = None,
    limit: int | None = None,
) -> Any:
    """GET /retention: {cohort date: {"counts": [...], "first": n}} (no `data` wrapper)."""
    params = {
        "from_date": from_date,
        "to_date": to_date,
        "retention_type": retention_type,
        "born_event": born_event,
        "event": event,
        "born_where": born_where,
        "where": where,
        "interval": interval,
        "interval_count": interval_count,
        "unit": unit,
        "unbounded_retention": None if unbounded_retention is None else str(unbounded_retention).lower(),
        "on": on,
        "limit": limit,
    }
    return await _get(client, "/retention", params)


async def frequency(
    client: MixpanelClient,
    *,
    from_date: str,
    to_date: str,
    unit: str,
    addiction_unit: str,
    event: str | None = None,
    where: str | None = None,
    on: str | None = None,
    limit: int | None = None,
) -> Any:
    """GET /retention/addiction: {"data": {date: [users active in >= 1, >= 2, ... addiction units]}}."""
    params = {
        "from_date": from_date,
        "to_date": to_date,
        "unit": unit,
        "addiction_unit": addiction_unit,
        "event": event,
        "where": where,
        "on": on,
        "limit": limit,
    }
    return await _get(client, "/retention/addiction", params)


async def jql(client: MixpanelClient, script: str, params: dict[str, Any] | None = None) -> Any:
    """POST /jql, form-encoded: script=...&params=<JSON object>. Read-only, so safe to retry."""
    form = {"script": script}
    if params is not None:
        form["params"] = json.dumps(params, separators=(",", ":"), ensure_ascii=False)
    response = await client.request(Api.QUERY, "POST", "/jql", data=form, idempotent=True)
    return raise_for_body_status(response, Api.QUERY, "/jql", client.settings.secrets())
