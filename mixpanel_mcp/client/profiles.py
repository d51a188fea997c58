"""User and group profile updates: POST /engage and /groups with the project token in each object.

Mixpanel does not deduplicate profile updates. $set, $set_once, $unset and $delete land the same however
often they arrive, so they are retried; $add, $append, $union and $remove change the profile again on
every delivery, so a request holding one is never resent after an ambiguous failure (the body may have
arrived): its idempotent updates are sent again on their own, and the others are reported in doubt.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Sequence
from typing import Any

from mixpanel_mcp.client import batching
from mixpanel_mcp.client.batching import Item, Outcome, Progress, Sent
from mixpanel_mcp.client.errors import Api, MixpanelError, PayloadTooLargeError, ServerError
from mixpanel_mcp.client.http import MixpanelClient, raise_for_body_status

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


def operator_of(update: dict[str, Any]) -> str:
    return next(key for key in update if key in OPERATORS)


def _token(client: MixpanelClient) -> str:
    client.credentials(Api.INGESTION)  # raises if there is no token
    token = client.settings.project_token
    assert token is not None
    return token.get_secret_value()


def _wire(kind: str, token: str, update: dict[str, Any]) -> dict[str, Any]:
    body = {"$token": token, **update}
    if kind == "engage":
        body.setdefault("$ip", "0")  # server-side calls must not geolocate the server
    return body


async def _post(client: MixpanelClient, kind: str, content: bytes, idempotent: bool) -> Any:
    response = await client.request(
        # ip=0: no geolocation from the address of the server this runs on (/engage and /groups alike).
        Api.INGESTION, "POST", f"/{kind}", params={"verbose": 1, "ip": 0}, content=content,
        headers={"Content-Type": "application/json"}, idempotent=idempotent,
    )
    return raise_for_body_status(response, Api.INGESTION, f"/{kind}", client.settings.secrets())


async def send_updates(client: MixpanelClient, kind: str, updates: list[dict[str, Any]]) -> Any:
    """One request of up to 2,000 updates to /engage (kind="engage") or /groups (kind="groups"); raises on failure."""
    token = _token(client)
    body = json.dumps([_wire(kind, token, u) for u in updates], separators=(",", ":"), ensure_ascii=False).encode()
    idempotent = all(operator_of(update) in IDEMPOTENT_OPERATORS for update in updates)
    return await _post(client, kind, body, idempotent)


def _key(update: dict[str, Any]) -> Hashable:
    if "$group_key" in update:
        return ("group", str(update["$group_key"]), str(update["$group_id"]))
    return ("user", str(update.get("$distinct_id")))


def _array(batch: Sequence[Item]) -> bytes:
    return b"[" + b",".join(item.body for item in batch) + b"]"


async def apply_updates(
    client: MixpanelClient, kind: str, updates: Sequence[dict[str, Any]], *, progress: Progress | None = None, pace: bool = True
) -> Outcome:
    """Any number of updates, 2,000 per request, several requests at once; one profile's updates in order.

    In the outcome, IN_DOUBT names the non-idempotent updates of a request that failed ambiguously.
    """
    token = _token(client)
    records = [
        Item(
            index,
            json.dumps(_wire(kind, token, update), separators=(",", ":"), ensure_ascii=False).encode(),
            key=_key(update),
            idempotent=operator_of(update) in IDEMPOTENT_OPERATORS,
        )
        for index, update in enumerate(updates)
    ]

    async def post(batch: list[Item]) -> Sent:
        idempotent = all(item.idempotent for item in batch)
        try:
            return Sent(answer=await _post(client, kind, _array(batch), idempotent))
        except MixpanelError as exc:
            if idempotent or not getattr(exc, "maybe_applied", False):
                raise  # already retried, or surely not applied: the run stops and says which to send again
        # The request may have been applied: resend only what applying twice cannot change.
        doubtful = {position: {} for position, item in enumerate(batch) if not item.idempotent}
        safe = [item for item in batch if item.idempotent]
        try:
            answer = await _post(client, kind, _array(safe), True) if safe else None
        except PayloadTooLargeError:  # never split a batch holding updates that may have been applied
            raise ServerError(api=Api.INGESTION, status=413, detail="the resend was refused as too large",
                              credential=None, endpoint=f"/{kind}", maybe_applied=True) from None
        return Sent(in_doubt=doubtful, answer=answer)

    return await batching.send_all(
        records, post, universe=[(0, len(records) - 1)] if records else [], progress=progress,
        pacer=batching.pacer_for(client) if pace else None, ordered=True, what=f"profile updates to /{kind}",
    )
