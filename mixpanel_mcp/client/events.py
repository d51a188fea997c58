"""Events and identity events: POST /track (recent events, token in each event) and /import (historical).

Wire form chosen here, once for both endpoints: `properties.time` is an integer of epoch milliseconds
(Mixpanel reads seconds or milliseconds on both). Every event carries a `$insert_id`; one the caller did not
give is derived from the event's content, so resending the same event (a retry, or the same call made
again) never stores it twice: Mixpanel deduplicates on (event, distinct_id, time, $insert_id).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mixpanel_mcp.client.errors import Api, BadRequestError
from mixpanel_mcp.client.http import MixpanelClient, error_detail, raise_for_body_status
from mixpanel_mcp.text import strip_controls

# Ingestion flags: a JSON status answer, and no geolocation from the server's own address.
TRACK_PARAMS = {"verbose": 1, "ip": 0}


def now_ms() -> int:
    return int(time.time() * 1000)


def derive_insert_id(event: str, properties: Mapping[str, Any], occurrence: int = 0) -> str:
    """32 hex characters from the event's name and properties (without $insert_id and token).

    `occurrence` counts identical events earlier in the same batch, so two deliberately identical events
    sent together stay two events, while the same batch sent again gets the same ids.
    """
    content = {k: v for k, v in properties.items() if k not in ("$insert_id", "token")}
    canonical = json.dumps([event, content, occurrence], sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def prepare(events: Sequence[tuple[str, Mapping[str, Any]]], now: int | None = None) -> list[dict[str, Any]]:
    """Wire events: `time` filled in (epoch ms, `now` when absent) and a `$insert_id` on each."""
    now = now_ms() if now is None else now
    seen: Counter[str] = Counter()
    prepared = []
    for name, given in events:
        properties = dict(given)
        if properties.get("time") is None:
            properties["time"] = now
        if not properties.get("$insert_id"):
            properties.pop("$insert_id", None)
            key = derive_insert_id(name, properties)
            properties["$insert_id"] = derive_insert_id(name, properties, seen[key])
            seen[key] += 1
        prepared.append({"event": name, "properties": properties})
    return prepared


def _token(client: MixpanelClient) -> str:
    client.credentials(Api.INGESTION)  # raises if there is no token
    token = client.settings.project_token
    assert token is not None
    return token.get_secret_value()


async def track(client: MixpanelClient, events: list[dict[str, Any]]) -> Any:
    """POST /track: a JSON array of prepared events, the token added to each. Every event has a
    $insert_id, so a resend after an ambiguous failure is deduplicated and safe to retry."""
    token = _token(client)
    body = [{"event": e["event"], "properties": {**e["properties"], "token": token}} for e in events]
    response = await client.request(Api.INGESTION, "POST", "/track", params=TRACK_PARAMS, json=body, idempotent=True)
    return raise_for_body_status(response, Api.INGESTION, "/track", client.settings.secrets())


async def _track_one(client: MixpanelClient, event: str, properties: dict[str, Any]) -> Any:
    """An identity event as Mixpanel documents it: a form POST /track with data=<one JSON object>."""
    data = json.dumps({"event": event, "properties": {**properties, "token": _token(client)}}, separators=(",", ":"))
    # Linking the same ids again changes nothing, so a resend is harmless.
    response = await client.request(Api.INGESTION, "POST", "/track", params=TRACK_PARAMS, data={"data": data}, idempotent=True)
    return raise_for_body_status(response, Api.INGESTION, "/track", client.settings.secrets())


async def identify(client: MixpanelClient, identified_id: str, anon_id: str) -> Any:
    return await _track_one(client, "$identify", {"$identified_id": identified_id, "$anon_id": anon_id})


async def create_alias(client: MixpanelClient, distinct_id: str, alias: str) -> Any:
    return await _track_one(client, "$create_alias", {"distinct_id": distinct_id, "alias": alias})


@dataclass
class FailedRecord:
    index: int | None
    insert_id: str | None
    field: str | None
    message: str | None

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "$insert_id": self.insert_id, "field": self.field, "message": self.message}


@dataclass
class ImportOutcome:
    """What /import?strict=1 stored: a 400 with failed_records still stored every other record."""

    sent: int
    imported: int
    failed: list[FailedRecord] = field(default_factory=list)


async def import_events(client: MixpanelClient, events: list[dict[str, Any]]) -> ImportOutcome:
    """POST /import?strict=1, gzip-compressed JSON array of prepared events.

    Raises BadRequestError when nothing was imported; returns the outcome (with the failed records) when
    some were. Safe to retry: every event has a $insert_id.
    """
    body = gzip.compress(json.dumps(events, separators=(",", ":"), ensure_ascii=False).encode(), mtime=0)
    response = await client.request(
        Api.IMPORT,
        "POST",
        "/import",
        params={"strict": 1},
        content=body,
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
        idempotent=True,
        accept=frozenset({400}),
    )
    if response.status_code != 400:
        answer = raise_for_body_status(response, Api.IMPORT, "/import", client.settings.secrets())
        imported = answer.get("num_records_imported") if isinstance(answer, Mapping) else None
        return ImportOutcome(sent=len(events), imported=imported if isinstance(imported, int) else len(events))
    try:
        answer = response.json()
    except ValueError:
        answer = None
    secrets = client.settings.secrets()
    outcome = _partial(answer, len(events), secrets)
    if outcome is None or outcome.imported <= 0:
        credential = client.credentials(Api.IMPORT)[0]
        detail = _failure_detail(outcome) if outcome is not None else error_detail(response, secrets)
        raise BadRequestError(api=Api.IMPORT, status=400, detail=detail, credential=credential, endpoint="/import")
    return outcome


def _partial(body: Any, sent: int, secrets: list[str]) -> ImportOutcome | None:
    """The strict-mode 400 body, or None when it is some other 400 (a malformed request)."""
    if not isinstance(body, Mapping) or not isinstance(body.get("failed_records"), list) or not body["failed_records"]:
        return None
    failed = []
    for record in body["failed_records"]:
        if not isinstance(record, Mapping):
            continue
        # The spec names the key insert_id; Mixpanel's documented example uses $insert_id.
        insert_id = record.get("$insert_id", record.get("insert_id"))
        failed.append(
            FailedRecord(
                index=record.get("index") if isinstance(record.get("index"), int) else None,
                insert_id=_text(insert_id, secrets),
                field=_text(record.get("field"), secrets),
                message=_text(record.get("message"), secrets),
            )
        )
    imported = body.get("num_records_imported")
    return ImportOutcome(sent=sent, imported=imported if isinstance(imported, int) else 0, failed=failed)


def _text(value: Any, secrets: list[str]) -> str | None:
    """Mixpanel's words about one record: untrusted, so cleaned, scrubbed of secrets and kept short."""
    if value is None:
        return None
    text = str(value)
    for secret in secrets:
        text = text.replace(secret, "***")
    return strip_controls(text)[:300]


def _failure_detail(outcome: ImportOutcome, shown: int = 5) -> str:
    parts = [f"#{r.index} {r.field or '?'}: {r.message or 'invalid'}" for r in outcome.failed[:shown]]
    more = f"; and {len(outcome.failed) - shown} more" if len(outcome.failed) > shown else ""
    return f"none of the {outcome.sent} records was imported; " + "; ".join(parts) + more


async def merge(client: MixpanelClient, distinct_ids: tuple[str, str]) -> ImportOutcome:
    """A $merge event through /import (Mixpanel takes it nowhere else). The spec lists the token in its
    properties, so it is added when configured; the /import credential is what authenticates it."""
    properties: dict[str, Any] = {"$distinct_ids": list(distinct_ids)}
    if client.settings.project_token is not None:
        properties["token"] = client.settings.project_token.get_secret_value()
    return await import_events(client, [{"event": "$merge", "properties": properties}])
