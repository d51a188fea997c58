"""The GDPR API (v3): data retrieval and deletion jobs under /api/app/data-retrievals|data-deletions/v3.0.

It takes Mixpanel's GDPR OAuth token as a Bearer token and names the project by its token in the query.
Creating a job is not idempotent (a resend creates a second job), so it is never resent after an ambiguous
failure. A deletion can be cancelled until it starts; after that Mixpanel answers 405.
"""

from __future__ import annotations

from typing import Any

from mixpanel_mcp.client.app import call, segment
from mixpanel_mcp.client.errors import Api
from mixpanel_mcp.client.http import MixpanelClient

RETRIEVALS = "/data-retrievals/v3.0"
DELETIONS = "/data-deletions/v3.0"


async def create_retrieval(
    client: MixpanelClient, distinct_ids: list[str], compliance_type: str, disclosure_type: str | None
) -> Any:
    """201 {"status": "ok", "results": {"task_id"}}."""
    body: dict[str, Any] = {"distinct_ids": distinct_ids, "compliance_type": compliance_type}
    if disclosure_type is not None:
        body["disclosure_type"] = disclosure_type
    return await call(client, Api.GDPR, "POST", RETRIEVALS, idempotent=False, json=body)


async def retrieval_status(client: MixpanelClient, tracking_id: str) -> Any:
    """{"status": "ok", "results": {"status", "results": link or "", "distinct_ids"}}."""
    return await call(client, Api.GDPR, "GET", f"{RETRIEVALS}/{segment(tracking_id)}")


async def create_deletion(client: MixpanelClient, distinct_ids: list[str], compliance_type: str) -> Any:
    """201 {"status": "ok", "results": {"task_id"}}."""
    body = {"distinct_ids": distinct_ids, "compliance_type": compliance_type}
    return await call(client, Api.GDPR, "POST", DELETIONS, idempotent=False, json=body)


async def deletion_status(client: MixpanelClient, tracking_id: str) -> Any:
    """{"status": "ok", "results": {tracking_id, status, requesting_user, compliance_type, project_id, ...}}."""
    return await call(client, Api.GDPR, "GET", f"{DELETIONS}/{segment(tracking_id)}")


async def cancel_deletion(client: MixpanelClient, tracking_id: str) -> bool:
    """True when cancelled (204); False when it can no longer be (405: the deletion has started)."""
    response = await client.request(Api.GDPR, "DELETE", f"{DELETIONS}/{segment(tracking_id)}", accept=frozenset({405}))
    return response.status_code != 405
