"""Read-only Query API calls: event discovery and counts, segmentation, saved Insights reports, saved
funnels, retention, frequency (addiction) and JQL.

Every call but JQL is a GET under /api/query; the client adds the credential (service account + project_id,
or the legacy secret). Lists Mixpanel wants in one parameter (`event` on /events, `values`) are JSON-encoded
here.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from mixpanel_mcp.client.errors import Api
from mixpanel_mcp.client.http import MixpanelClient, raise_for_body_status


async def _get(client: MixpanelClient, path: str, params: dict[str, Any]) -> Any:
    response = await client.request(Api.QUERY, "GET", path, params=params)
    return raise_for_body_status(response, Api.QUERY, path, client.settings.secrets())


def _json_list(values: list[str] | None) -> str | None:
    return None if values is None else json.dumps(values, ensure_ascii=False)


# -- event discovery and counts (/events...) --------------------------------------------------


async def event_names(client: MixpanelClient, *, type: str, limit: int) -> Any:
    """The most common event names of the last 31 days: a JSON list of names."""
    return await _get(client, "/events/names", {"type": type, "limit": limit})


async def top_events(client: MixpanelClient, *, type: str, limit: int) -> Any:
    """Today's top events with their change from yesterday: {"events": [...], "type": ...}."""
    return await _get(client, "/events/top", {"type": type, "limit": limit})


async def event_counts(
    client: MixpanelClient,
    *,
    event: list[str],
    type: str,
    unit: str,
    from_date: str | None = None,
    to_date: str | None = None,
    interval: int | None = None,
) -> Any:
    """Counts of several events over time: {"data": {"series", "values"}, "legend_size"}."""
    params = {
        "event": _json_list(event),
        "type": type,
        "unit": unit,
        "from_date": from_date,
        "to_date": to_date,
        "interval": interval,
    }
    return await _get(client, "/events", params)


async def event_top_properties(client: MixpanelClient, *, event: str, limit: int) -> Any:
    """The most used property names of one event: {name: {"count": n}}."""
    return await _get(client, "/events/properties/top", {"event": event, "limit": limit})


async def event_property_values(client: MixpanelClient, *, event: str, name: str, limit: int) -> Any:
    """The most common values of one event property: a JSON list."""
    return await _get(client, "/events/properties/values", {"event": event, "name": name, "limit": limit})


async def event_property_counts(
    client: MixpanelClient,
    *,
    event: str,
    name: str,
    type: str,
    unit: str,
    values: list[str] | None = None,
    from_date: str | None = None,
    to_date: str | None = None,
    interval: int | None = None,
    limit: int | None = None,
) -> Any:
    """Counts of one event split by the values of one property: the /events data/series/values shape."""
    params = {
        "event": event,
        "name": name,
        "values": _json_list(values),
        "type": type,
        "unit": unit,
        "from_date": from_date,
        "to_date": to_date,
        "interval": interval,
        "limit": limit,
    }
    return await _get(client, "/events/properties", params)


# -- segmentation ---------------------------------------------------------------------------


async def segmentation(
    client: MixpanelClient,
    *,
    event: str,
    from_date: str,
    to_date: str,
    on: str | None = None,
    unit: str | None = None,
    interval: int | None = None,
    where: str | None = None,
    limit: int | None = None,
    type: str | None = None,
) -> Any:
    """One event over time, optionally segmented by `on`: {"data": {"series", "values"}, "legend_size"}."""
    params = {
        "event": event,
        "from_date": from_date,
        "to_date": to_date,
        "on": on,
        "unit": unit,
        "interval": interval,
        "where": where,
        "limit": limit,
        "type": type,
    }
    return await _get(client, "/segmentation", params)


async def segmentation_on(
    client: MixpanelClient,
    kind: Literal["numeric", "sum", "average"],
    *,
    event: str,
    from_date: str,
    to_date: str,
    on: str,
    unit: str | None = None,
    where: str | None = None,
    type: str | None = None,
) -> Any:
    """/segmentation/<kind>: one event measured by the number `on`.

    numeric: the segmentation shape, keys like "2,000 - 2,100" (takes `type`); sum: {"status", "computed_at",
    "results": {date: n}}; average: {"results": {date: x}, "status"}.
    """
    params = {"event": event, "from_date": from_date, "to_date": to_date, "on": on, "unit": unit, "where": where, "type": type}
    return await _get(client, f"/segmentation/{kind}", params)


# -- saved reports --------------------------------------------------------------------------


async def insights(client: MixpanelClient, *, bookmark_id: int) -> Any:
    """A saved Insights report's current answer: {"computed_at", "date_range", "headers", "series"}."""
    return await _get(client, "/insights", {"bookmark_id": bookmark_id})


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
