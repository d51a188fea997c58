"""Feature flags: management under /api/app/projects/{id}/workspaces/{ws}/feature-flags[/{flag_id}] (service
account), and evaluation on the ingestion host: GET /flags (the variants one user gets) and /flags/definitions.

An update is a PUT of the whole flag (Mixpanel's FeatureFlagRequest), so `update_flag` sends what `get_flag`
returned with the changes applied, and only the fields the request accepts.
"""

from __future__ import annotations

import json
from typing import Any

from mixpanel_mcp.client.app import call, project_path, segment, workspace_id
from mixpanel_mcp.client.errors import Api
from mixpanel_mcp.client.http import MixpanelClient

# The fields of Mixpanel's FeatureFlagRequest: a PUT carries exactly these.
REQUEST_FIELDS = (
    "name",
    "key",
    "description",
    "tags",
    "experiment_id",
    "status",
    "context",
    "data_group_id",
    "serving_method",
    "ruleset",
    "workspace_id",
    "is_experiment_active",
    "hash_salt",
    "reset_hash_salt",
)


def _path(client: MixpanelClient, flag_id: str | None = None) -> str:
    path = f"{project_path(client)}/workspaces/{workspace_id(client)}/feature-flags"
    return path if flag_id is None else f"{path}/{segment(flag_id)}"


async def list_flags(client: MixpanelClient) -> Any:
    """The flags not archived (a deleted flag is archived)."""
    return await call(client, Api.APP, "GET", _path(client))


async def get_flag(client: MixpanelClient, flag_id: str) -> Any:
    return await call(client, Api.APP, "GET", _path(client, flag_id))


async def create_flag(client: MixpanelClient, flag: dict[str, Any]) -> Any:
    """POST a FeatureFlagRequest: {"status": "ok", "results": flag}. A resend would make a second flag."""
    return await call(client, Api.APP, "POST", _path(client), idempotent=False, json=flag)


async def update_flag(client: MixpanelClient, flag_id: str, flag: dict[str, Any]) -> Any:
    """PUT the whole flag (fields Mixpanel's request does not take, like id or created, are left out)."""
    body = {k: v for k, v in flag.items() if k in REQUEST_FIELDS}
    return await call(client, Api.APP, "PUT", _path(client, flag_id), json=body)


async def delete_flag(client: MixpanelClient, flag_id: str) -> Any:
    return await call(client, Api.APP, "DELETE", _path(client, flag_id))


async def evaluate(
    client: MixpanelClient, distinct_id: str, device_id: str | None, custom_properties: dict[str, Any] | None
) -> Any:
    """GET /flags?context=<JSON>: {"flags": {key: {variant_key, variant_value, ...}}}, the flags the user gets."""
    context: dict[str, Any] = {"distinct_id": distinct_id}
    if device_id is not None:
        context["device_id"] = device_id
    if custom_properties:
        context["custom_properties"] = custom_properties
    text = json.dumps(context, separators=(",", ":"), ensure_ascii=False)
    return await call(client, Api.FLAGS, "GET", "/flags", params={"context": text})


async def definitions(client: MixpanelClient) -> Any:
    """GET /flags/definitions: {"flags": [every enabled flag with its ruleset]}."""
    return await call(client, Api.FLAGS, "GET", "/flags/definitions")
