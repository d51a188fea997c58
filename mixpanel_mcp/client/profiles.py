"""User and group profile updates: POST /engage and /groups with the project token in each object."""

from __future__ import annotations

from typing import Any

from mixpanel_mcp.client.errors import Api
from mixpanel_mcp.client.http import MixpanelClient, raise_for_body_status

# Operators Mixpanel applies the same way however often they arrive; the others ($add, $append, $union,
# $remove) change the profile again on every delivery, so a possibly-delivered request is not resent.
IDEMPOTENT_OPERATORS = frozenset({"$set", "$set_once", "$unset", "$delete"})
OPERATORS = IDEMPOTENT_OPERATORS | {"$add", "$append", "$union", "$remove"}


def profile_update(operator: str, value: Any, *, distinct_id: str | None = None, group: tuple[str, str] | None = None) -> dict[str, Any]:
    """One update object without the token (added at send time)."""
    update: dict[str, Any] = {}
    if group is not None:
        update["$group_key"], update["$group_id"] = group
    else:
        update["$distinct_id"] = distinct_id
    update[operator] = value
    return update


async def send_updates(client: MixpanelClient, kind: str, updates: list[dict[str, Any]]) -> Any:
    """Send up to 2,000 updates to /engage (kind="engage") or /groups (kind="groups")."""
    token = client.settings.project_token
    client.credentials(Api.INGESTION)  # raises if there is no token
    assert token is not None
    body = [{"$token": token.get_secret_value(), **update} for update in updates]
    if kind == "engage":
        for update in body:
            update.setdefault("$ip", "0")  # server-side calls must not geolocate the server
    idempotent = all(operator_of(update) in IDEMPOTENT_OPERATORS for update in updates)
    response = await client.request(
        Api.INGESTION,
        "POST",
        f"/{kind}",
        params={"verbose": 1},
        json=body,
        idempotent=idempotent,
    )
    return raise_for_body_status(response, Api.INGESTION, f"/{kind}", client.settings.secrets())


def operator_of(update: dict[str, Any]) -> str:
    return next(key for key in update if key in OPERATORS)
