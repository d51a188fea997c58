"""The Annotations API: /api/app/projects/{project_id}/annotations[/{id}], and its tags.

Service account only. Creating an annotation or a tag is not idempotent (a resend makes a second one).
"""

from __future__ import annotations

from typing import Any

from mixpanel_mcp.client.app import call, project_path, segment
from mixpanel_mcp.client.errors import Api
from mixpanel_mcp.client.http import MixpanelClient


def _path(client: MixpanelClient, *rest: str | int) -> str:
    return project_path(client) + "/annotations" + "".join("/" + segment(part) for part in rest)


async def list_annotations(client: MixpanelClient, from_date: str | None, to_date: str | None) -> Any:
    """GET: {"status": "ok", "results": [annotation]}; the dates are inclusive, camelCase on the wire."""
    return await call(client, Api.APP, "GET", _path(client), params={"fromDate": from_date, "toDate": to_date})


async def get_annotation(client: MixpanelClient, annotation_id: int) -> Any:
    return await call(client, Api.APP, "GET", _path(client, annotation_id))


async def create_annotation(client: MixpanelClient, date: str, description: str, tags: list[int] | None) -> Any:
    """POST {date: "yyyy-mm-dd HH:mm:ss", description, tags: [tag id]}: 201 with the new annotation."""
    body: dict[str, Any] = {"date": date, "description": description}
    if tags is not None:
        body["tags"] = tags
    return await call(client, Api.APP, "POST", _path(client), idempotent=False, json=body)


async def update_annotation(client: MixpanelClient, annotation_id: int, changes: dict[str, Any]) -> Any:
    """PATCH {description?, tags?}: the annotation as changed."""
    return await call(client, Api.APP, "PATCH", _path(client, annotation_id), json=changes)


async def delete_annotation(client: MixpanelClient, annotation_id: int) -> Any:
    """DELETE: {"status": "ok", "results": {"id": N}}."""
    return await call(client, Api.APP, "DELETE", _path(client, annotation_id))


async def list_tags(client: MixpanelClient) -> Any:
    """GET: a bare list of tags [{id, name, project_id, has_annotations}]."""
    return await call(client, Api.APP, "GET", _path(client, "tags"))


async def create_tag(client: MixpanelClient, name: str) -> Any:
    """POST {name}: the new tag."""
    return await call(client, Api.APP, "POST", _path(client, "tags"), idempotent=False, json={"name": name})
