"""What the app API families share: the project and workspace parts of their paths, and one way to call them.

Annotations, feature flag management and experiments live under /api/app with the service account; the
project or workspace is in the path, never a query parameter. Path ids are quoted as one segment each.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from mixpanel_mcp.client.errors import Api, CredentialMissingError
from mixpanel_mcp.client.http import MixpanelClient, raise_for_body_status


def segment(value: str | int) -> str:
    """One path segment: '/' and every other reserved character quoted, so an id can never change the path.

    '.' and '..' stay dot segments after quoting and the HTTP client collapses them (`/schemas/event/..` is
    `/schemas`), so they are refused here as well as in the argument models, which say so to the agent first.
    """
    text = str(value)
    if text in ("", ".", ".."):
        raise ValueError(f"{text!r} cannot be one segment of a URL path")
    return quote(text, safe="")


def project_path(client: MixpanelClient, api: Api = Api.APP) -> str:
    project_id = client.settings.project_id
    if project_id is None:
        raise CredentialMissingError(api, "MIXPANEL_PROJECT_ID")
    return f"/projects/{project_id}"


def workspace_id(client: MixpanelClient) -> int:
    workspace = client.settings.workspace_id
    if workspace is None:
        raise CredentialMissingError(Api.APP, "MIXPANEL_WORKSPACE_ID (the workspace of feature flags and experiments)")
    return workspace


async def call(
    client: MixpanelClient, api: Api, method: str, path: str, *, idempotent: bool = True, **kwargs: Any
) -> Any:
    """Send one request; Mixpanel's JSON answer (or its text; "" for an empty 204)."""
    response = await client.request(api, method, path, idempotent=idempotent, **kwargs)
    return raise_for_body_status(response, api, path, client.settings.secrets())


def results(answer: Any, kind: type) -> Any:
    """Mixpanel's `results`, or an empty one of the kind expected."""
    found = answer.get("results") if isinstance(answer, dict) else None
    return found if isinstance(found, kind) else kind()
