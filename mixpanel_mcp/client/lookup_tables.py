"""Lookup Tables on the ingestion host: GET /lookup-tables, PUT /lookup-tables/{id} (a CSV replacing the table).

Listing takes a service account; replacing takes a service account or the legacy secret (project_id in the
query with a service account). A replacement is all or nothing: Mixpanel answers 400 with the rows it refused.
"""

from __future__ import annotations

from typing import Any

from mixpanel_mcp.client.app import call, segment
from mixpanel_mcp.client.errors import Api
from mixpanel_mcp.client.http import MixpanelClient, raise_for_body_status


async def list_tables(client: MixpanelClient) -> Any:
    """{"code": 200, "status": "OK", "results": [{"id", "name"}]}."""
    return await call(client, Api.LOOKUP, "GET", "/lookup-tables")


async def replace_table(client: MixpanelClient, table_id: str, csv_text: bytes) -> tuple[int, Any]:
    """(status, body): 200 {"code", "status"}, or 400 {"error", "failed_records": [{index, message}]} (returned, not
    raised, so the refused rows reach the agent). Sending the same table twice leaves the same table."""
    path = "/lookup-tables/" + segment(table_id)
    response = await client.request(
        Api.LOOKUP, "PUT", path, content=csv_text, headers={"Content-Type": "text/csv"}, accept=frozenset({400})
    )
    if response.status_code == 400:
        try:
            return 400, response.json()
        except ValueError:
            return 400, {"error": response.text[:300]}
    return response.status_code, raise_for_body_status(response, Api.LOOKUP, path, client.settings.secrets())
