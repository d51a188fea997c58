"""Read-only Query API calls: event discovery, event counts, segmentation and saved Insights reports.

Every call is a GET under /api/query; the client adds the credential (service account + project_id, or the
legacy secret). Lists Mixpanel wants in one parameter (`event` on /events, `values`) are JSON-encoded here.
"""

from __future__ import annotations

import json
from typing import Any

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
    events: list[str],
    type: str,
    unit: str,
    from_date: str | None = None,
    to_date: str | None = None,
    interval: int | None = None,
) -> Any:
    """Counts of several events over time: {"data": {"series", "values"}, "legend_size"}."""
    params = {
        "event": _json_list(events),
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


async def segmentation_numeric(
    client: MixpanelClient,
    *,
    event: str,
    from_date: str,
    to_date: str,
    on: str,
    unit: str | None = None,
    where: str | None = None,
    type: str | None = None,
) -> Any:
    """One event segmented into numeric buckets of `on`: the segmentation shape, keys like "2,000 - 2,100"."""
    params = {"event": event, "from_date": from_date, "to_date": to_date, "on": on, "unit": unit, "where": where, "type": type}
    return await _get(client, "/segmentation/numeric", params)


async def segmentation_sum(
    client: MixpanelClient,
    *,
    event: str,
    from_date: str,
    to_date: str,
    on: str,
    unit: str | None = None,
    where: str | None = None,
) -> Any:
    """The sum of `on` over one event's occurrences per unit: {"status", "computed_at", "results": {date: n}}."""
    params = {"event": event, "from_date": from_date, "to_date": to_date, "on": on, "unit": unit, "where": where}
    return await _get(client, "/segmentation/sum", params)


async def segmentation_average(
    client: MixpanelClient,
    *,
    event: str,
    from_date: str,
    to_date: str,
    on: str,
    unit: str | None = None,
    where: str | None = None,
) -> Any:
    """The average of `on` over one event's occurrences per unit: {"results": {date: x}, "status"}."""
    params = {"event": event, "from_date": from_date, "to_date": to_date, "on": on, "unit": unit, "where": where}
    return await _get(client, "/segmentation/average", params)


# -- saved reports --------------------------------------------------------------------------


async def insights(client: MixpanelClient, *, bookmark_id: int) -> Any:
    """A saved Insights report's current answer: {"computed_at", "date_range", "headers", "series"}."""
    return await _get(client, "/insights", {"bookmark_id": bookmark_id})
