"""The Lexicon Schemas API: /api/app/projects/{project_id}/schemas[/{entityType}[/{name}]].

Service account only; the project id is in the path, not the query. Uploading a schema replaces the one
stored, so every call here is safe to resend.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from mixpanel_mcp.client.errors import Api, CredentialMissingError
from mixpanel_mcp.client.http import MixpanelClient, raise_for_body_status


def schemas_path(client: MixpanelClient, entity_type: str | None = None, name: str | None = None) -> str:
    """The path at the level asked for: the project, one entity type, or one entity."""
    project_id = client.settings.project_id
    if project_id is None:
        raise CredentialMissingError(Api.LEXICON, "MIXPANEL_PROJECT_ID")
    path = f"/projects/{project_id}/schemas"
    if entity_type is not None:
        path += "/" + quote(entity_type, safe="")
        if name is not None:
            path += "/" + quote(name, safe="")
    return path


async def _call(client: MixpanelClient, method: str, path: str, **kwargs: Any) -> Any:
    response = await client.request(Api.LEXICON, method, path, idempotent=True, **kwargs)
    return raise_for_body_status(response, Api.LEXICON, path, client.settings.secrets())


async def list_schemas(client: MixpanelClient, entity_type: str | None = None, name: str | None = None) -> Any:
    """GET: {"results": [entries], "status": "ok"}, or, when `name` is given, that entity's schema object."""
    answer = await _call(client, "GET", schemas_path(client, entity_type, name))
    return one_schema(answer) if name is not None else answer


def one_schema(answer: Any) -> Any:
    """One entity's schema, answered bare (lexicon-schemas.openapi.yaml) or wrapped as {"status": "ok",
    "results": {...}} (what the live API answers, per the public client mixpanel_data): either way, the schema."""
    if isinstance(answer, dict) and answer.get("status") == "ok" and isinstance(answer.get("results"), dict):
        return answer["results"]
    return answer


async def upload_schemas(client: MixpanelClient, entries: list[dict[str, Any]], *, truncate: bool = False) -> Any:
    """POST the bulk form: {"results": {"added": N, "deleted": M}, "status": "ok"}.

    With `truncate`, Mixpanel deletes the project's whole data dictionary before adding `entries`.
    """
    return await _call(client, "POST", schemas_path(client), json={"entries": entries, "truncate": truncate})


async def upload_schema(client: MixpanelClient, entity_type: str, name: str, schema: dict[str, Any]) -> Any:
    """POST one entity's schema, replacing any stored one: {"status": "ok"}."""
    return await _call(client, "POST", schemas_path(client, entity_type, name), json=schema)


async def delete_schemas(client: MixpanelClient, entity_type: str | None = None, name: str | None = None) -> Any:
    """DELETE at the level asked for: {"results": {"delete_count": N}, "status": "ok"}."""
    return await _call(client, "DELETE", schemas_path(client, entity_type, name))
