"""The Lexicon Schemas API: /api/app/projects/{project_id}/schemas[/{entityType}[/{name}]].

Service account only; the project id is in the path, not the query. Reading or deleting one entity names it
in the query (`?entity_name=`, the spec's form), so no name, however odd (`/`, `..`), can change which level a
request acts on. Uploading one entity has only the path form: its name must be one path segment (checked by
`segment`). Uploading a schema replaces the one stored, so every call here is safe to resend.
"""

from __future__ import annotations

from typing import Any

from mixpanel_mcp.client.app import segment
from mixpanel_mcp.client.errors import Api, CredentialMissingError
from mixpanel_mcp.client.http import MixpanelClient, raise_for_body_status


def schemas_path(client: MixpanelClient, entity_type: str | None = None) -> str:
    """The path of the project's schemas, or of one entity type's."""
    project_id = client.settings.project_id
    if project_id is None:
        raise CredentialMissingError(Api.LEXICON, "MIXPANEL_PROJECT_ID")
    path = f"/projects/{project_id}/schemas"
    return path if entity_type is None else f"{path}/{segment(entity_type)}"


def _one(name: str | None) -> dict[str, str] | None:
    return None if name is None else {"entity_name": name}


async def _call(client: MixpanelClient, method: str, path: str, **kwargs: Any) -> Any:
    response = await client.request(Api.LEXICON, method, path, idempotent=True, **kwargs)
    return raise_for_body_status(response, Api.LEXICON, path, client.settings.secrets())


async def list_schemas(client: MixpanelClient, entity_type: str | None = None, name: str | None = None) -> Any:
    """GET: {"results": [entries], "status": "ok"}; with `name`, that one entity's schema, or None if it has none."""
    answer = await _call(client, "GET", schemas_path(client, entity_type), params=_one(name))
    return one_schema(answer, name) if name is not None else answer


def one_schema(answer: Any, name: str) -> dict[str, Any] | None:
    """The schema of `name` in an answer to `?entity_name=`: the spec's list form {"results": [entries]}, or one
    schema wrapped as {"status": "ok", "results": {...}} (the live API's one-entity answer, per the public client
    mixpanel_data) or bare (the spec's one-entity answer)."""
    results = answer.get("results") if isinstance(answer, dict) else None
    if isinstance(results, list):
        found = [e for e in results if isinstance(e, dict) and e.get("name") == name]
        schema = found[0].get("schemaJson") if found else None
        return schema if isinstance(schema, dict) else ({} if found else None)
    if isinstance(answer, dict) and answer.get("status") == "ok" and isinstance(results, dict):
        return results
    return answer if isinstance(answer, dict) else None


async def upload_schemas(client: MixpanelClient, entries: list[dict[str, Any]], *, truncate: bool = False) -> Any:
    """POST the bulk form: {"results": {"added": N, "deleted": M}, "status": "ok"}.

    With `truncate`, Mixpanel deletes the project's whole data dictionary before adding `entries`.
    """
    return await _call(client, "POST", schemas_path(client), json={"entries": entries, "truncate": truncate})


async def upload_schema(client: MixpanelClient, entity_type: str, name: str, schema: dict[str, Any]) -> Any:
    """POST one entity's schema, replacing any stored one: {"status": "ok"}."""
    return await _call(client, "POST", f"{schemas_path(client, entity_type)}/{segment(name)}", json=schema)


async def delete_schemas(client: MixpanelClient, entity_type: str | None = None, name: str | None = None) -> Any:
    """DELETE at the level asked for: {"results": {"delete_count": N}, "status": "ok"}."""
    return await _call(client, "DELETE", schemas_path(client, entity_type), params=_one(name))
