"""Reading data out: the raw event export (NDJSON, streamed) and the Query API's profile, cohort and
activity-feed endpoints.

The export body can be gigabytes: it is read line by line and the connection is closed as soon as enough
events have arrived. Lists Mixpanel wants as one parameter (`event`, `distinct_ids`, `output_properties`)
are JSON-encoded here.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx2

from mixpanel_mcp.client.errors import Api, TransportError
from mixpanel_mcp.client.http import MixpanelClient, raise_for_body_status

EXPORT_MAX_LIMIT = 100_000  # Mixpanel refuses a larger `limit`
ENGAGE_PAGE_SIZE = 1000  # what /engage pages hold when the answer does not say

Progress = Callable[[int, int | None], Awaitable[None]]


def _json(values: list[Any] | dict[str, Any] | None) -> str | None:
    return None if values is None else json.dumps(values, ensure_ascii=False, separators=(",", ":"))


# -- raw event export ------------------------------------------------------------------------


@dataclass
class ExportRead:
    """What was read from one export stream."""

    events: list[dict[str, Any]] = field(default_factory=list)
    skipped_lines: int = 0  # non-blank lines that were not an event (cut short, not JSON, a notice)
    more: bool = False  # an event past `limit` arrived, or the read stopped at Mixpanel's maximum
    interrupted: str | None = None  # the connection broke off mid-stream: what happened


def _event(line: str) -> dict[str, Any] | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if not isinstance(record, dict) or not isinstance(record.get("event"), str):
        return None
    if not isinstance(record.get("properties"), dict):
        record["properties"] = {}
    return record


async def export_events(
    client: MixpanelClient,
    *,
    from_date: str,
    to_date: str,
    limit: int,
    event: list[str] | None = None,
    where: str | None = None,
    time_in_ms: bool = False,
    progress: Progress | None = None,
) -> ExportRead:
    """Up to `limit` events from GET /export, reading no further than needed.

    One event more than `limit` is asked for, so a full answer tells whether more exist.
    """
    asked = min(limit + 1, EXPORT_MAX_LIMIT)
    params = {
        "from_date": from_date,
        "to_date": to_date,
        "limit": asked,
        "event": _json(event),
        "where": where,
        "time_in_ms": "true" if time_in_ms else None,
    }
    read = ExportRead()
    async with client.stream(Api.EXPORT, "GET", "/export", params=params) as response:
        try:
            async for line in response.aiter_lines():
                if not line.strip():
                    continue
                record = _event(line)
                if record is None:
                    read.skipped_lines += 1
                    continue
                if len(read.events) == limit:
                    read.more = True
                    break
                read.events.append(record)
                if progress is not None and len(read.events) % 10_000 == 0:
                    await progress(len(read.events), limit)
                if len(read.events) == limit and asked == limit:
                    read.more = True  # Mixpanel's own maximum: it would not have sent more
                    break
        except (httpx2.TimeoutException, httpx2.NetworkError, httpx2.RemoteProtocolError, httpx2.DecodingError) as exc:
            timed_out = isinstance(exc, httpx2.TimeoutException)
            reason = "no data arrived in time" if timed_out else "the connection closed mid-stream"
            if not read.events:
                raise TransportError(api=Api.EXPORT, endpoint="/export", reason=reason, timed_out=timed_out, attempts=1) from None
            read.interrupted = reason
    return read


# -- profiles, cohorts, activity feed (Query API) ---------------------------------------------


@dataclass
class ProfilePages:
    """Profiles collected across /engage pages."""

    results: list[dict[str, Any]]
    total: int | None
    pages: int
    session_id: str | None
    more: bool  # profiles past those returned exist
    resume_page: int | None  # with session_id: the page to ask for next (None when nothing is left)


async def query_profiles(
    client: MixpanelClient,
    *,
    limit: int,
    distinct_id: str | None = None,
    distinct_ids: list[str] | None = None,
    where: str | None = None,
    data_group_id: str | None = None,
    output_properties: list[str] | None = None,
    filter_by_cohort: int | None = None,
    session_id: str | None = None,
    page: int | None = None,
    progress: Progress | None = None,
) -> ProfilePages:
    """POST /engage page after page (same query, Mixpanel's session_id, page + 1) until a short page or `limit`."""
    query = {
        "distinct_id": distinct_id,
        "distinct_ids": _json(distinct_ids),
        "where": where,
        "data_group_id": data_group_id,
        "output_properties": _json(output_properties),
        "filter_by_cohort": _json({"id": filter_by_cohort}) if filter_by_cohort is not None else None,
    }
    form = {k: v for k, v in query.items() if v is not None}
    results: list[dict[str, Any]] = []
    total: int | None = None
    pages = 0
    current = page
    while True:
        body = dict(form)
        if session_id is not None:
            body["session_id"] = session_id
        if current is not None:
            body["page"] = str(current)
        response = await client.request(Api.QUERY, "POST", "/engage", data=body)
        answer = raise_for_body_status(response, Api.QUERY, "/engage", client.settings.secrets())
        if not isinstance(answer, dict):
            answer = {}
        batch = answer.get("results") if isinstance(answer.get("results"), list) else []
        pages += 1
        total = _int(answer.get("total"), total)
        session_id = answer.get("session_id") or session_id
        page_size = _int(answer.get("page_size"), None) or ENGAGE_PAGE_SIZE
        current = _int(answer.get("page"), current or 0)
        results.extend(batch)
        last_page_full = len(batch) >= page_size
        if progress is not None:
            await progress(len(results), total if isinstance(total, int) else None)
        if not last_page_full or len(results) >= limit or session_id is None:
            break
        current += 1
    cut = len(results) > limit
    more = cut or last_page_full
    # A page cut short at `limit` is asked for again to resume; otherwise the next one.
    resume = None if not more or session_id is None else current if cut else current + 1
    return ProfilePages(results[:limit], total, pages, session_id, more, resume)


def _int(value: Any, default: int | None) -> Any:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


async def list_cohorts(client: MixpanelClient) -> list[dict[str, Any]]:
    """POST /cohorts/list (an empty form): every saved cohort of the project."""
    response = await client.request(
        Api.QUERY,
        "POST",
        "/cohorts/list",
        content=b"",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    answer = raise_for_body_status(response, Api.QUERY, "/cohorts/list", client.settings.secrets())
    return answer if isinstance(answer, list) else []


async def activity_stream(
    client: MixpanelClient, *, distinct_ids: list[str], from_date: str, to_date: str
) -> list[dict[str, Any]]:
    """GET /stream/query: the events of these users, oldest first as Mixpanel sends them."""
    params = {"distinct_ids": _json(distinct_ids), "from_date": from_date, "to_date": to_date}
    response = await client.request(Api.QUERY, "GET", "/stream/query", params=params)
    answer = raise_for_body_status(response, Api.QUERY, "/stream/query", client.settings.secrets())
    results = answer.get("results") if isinstance(answer, dict) else None
    events = results.get("events") if isinstance(results, dict) else None
    return events if isinstance(events, list) else []
