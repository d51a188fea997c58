"""Experiments: /api/app/workspaces/{workspace_id}/experiments[/{experiment_id}[/launch|force_conclude|decide|archive]].

Service account only. Lifecycle actions have their own paths and methods: launch (PUT), force_conclude (PUT),
decide (PATCH {success, variant, message}), archive (POST) and unarchive (DELETE on /archive).
"""

from __future__ import annotations

from typing import Any

from mixpanel_mcp.client.app import call, segment, workspace_id
from mixpanel_mcp.client.errors import Api
from mixpanel_mcp.client.http import MixpanelClient


def _path(client: MixpanelClient, experiment_id: str | None = None, action: str | None = None) -> str:
    path = f"/workspaces/{workspace_id(client)}/experiments"
    if experiment_id is not None:
        path += "/" + segment(experiment_id)
    return path if action is None else f"{path}/{action}"


async def list_experiments(client: MixpanelClient) -> Any:
    return await call(client, Api.APP, "GET", _path(client))


async def get_experiment(client: MixpanelClient, experiment_id: str) -> Any:
    return await call(client, Api.APP, "GET", _path(client, experiment_id))


async def create_experiment(client: MixpanelClient, fields: dict[str, Any]) -> Any:
    """POST {name, description?, hypothesis?, settings?, variants?, metrics?}: 201, a draft. Not resent."""
    return await call(client, Api.APP, "POST", _path(client), idempotent=False, json=fields)


async def update_experiment(client: MixpanelClient, experiment_id: str, fields: dict[str, Any]) -> Any:
    return await call(client, Api.APP, "PATCH", _path(client, experiment_id), json=fields)


async def delete_experiment(client: MixpanelClient, experiment_id: str) -> Any:
    return await call(client, Api.APP, "DELETE", _path(client, experiment_id))


async def launch(client: MixpanelClient, experiment_id: str) -> Any:
    """PUT .../launch: a draft becomes active. Not resent: a second launch of an active experiment is refused."""
    return await call(client, Api.APP, "PUT", _path(client, experiment_id, "launch"), idempotent=False, json={})


async def force_conclude(client: MixpanelClient, experiment_id: str) -> Any:
    return await call(client, Api.APP, "PUT", _path(client, experiment_id, "force_conclude"), idempotent=False, json={})


async def decide(client: MixpanelClient, experiment_id: str, decision: dict[str, Any]) -> Any:
    """PATCH .../decide {success, variant?, message?}."""
    return await call(client, Api.APP, "PATCH", _path(client, experiment_id, "decide"), json=decision)


async def archive(client: MixpanelClient, experiment_id: str) -> Any:
    return await call(client, Api.APP, "POST", _path(client, experiment_id, "archive"), json={})


async def unarchive(client: MixpanelClient, experiment_id: str) -> Any:
    return await call(client, Api.APP, "DELETE", _path(client, experiment_id, "archive"))
