"""Why a report came back empty: a name the project does not know, or a range that has not happened yet.

An agent takes "0" at face value, so an empty answer is checked against the project's own names (the event
names of the last 31 days and one event's top properties, kept for NAMES_TTL seconds per project, and only
while the query budget has room) before it is reported as "nobody did it".
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
import time
from typing import Any

from mixpanel_mcp.client import query
from mixpanel_mcp.client.errors import MixpanelError
from mixpanel_mcp.tools._base import Result, Run

NAMES_TTL = 900.0
NAMES_LIMIT = 1000
MAX_KEPT = 256  # projects x kinds of names kept
_known: dict[tuple[Any, ...], tuple[float, list[str]]] = {}
PROPERTY = re.compile(r'^\s*properties\[\s*"([^"]+)"\s*\]\s*$')


async def explain_if_empty(run: Run, result: Result, *, events: list[str], **where: Any) -> Result:
    """`result` with the likely cause of its emptiness first, when it holds nothing (see why_empty)."""
    if not result.data.get("empty"):
        return result
    reason = await why_empty(run, events=events, **where)
    if reason:
        result.summary = f"{reason} {result.summary}"
        result.data["likely_cause"] = reason
    return result


async def why_empty(
    run: Run, *, events: list[str], on: str | None = None, from_date: str | None = None, to_date: str | None = None
) -> str | None:
    """A sentence naming the likely cause of an empty answer, or None when nothing looks wrong."""
    today = dt.datetime.now(dt.UTC).date()
    if from_date and dt.date.fromisoformat(from_date) > today:
        return f"The range {from_date}..{to_date} lies in the future (today is {today.isoformat()} UTC): no data exists yet."
    names = await _names(run, "events", lambda: query.event_names(run.client, type="general", limit=NAMES_LIMIT))
    if names:
        unknown = [e for e in events if e not in names]
        if unknown:
            return " ".join(_no_such("event", name, names) for name in unknown)
    prop = PROPERTY.match(on or "")
    if prop and events:
        event = events[0]
        props = await _names(run, f"properties:{event}", lambda: query.event_top_properties(run.client, event=event, limit=NAMES_LIMIT))
        if props and prop.group(1) not in props:
            return _no_such(f"property of '{event}'", prop.group(1), props)
    return None


def _no_such(kind: str, name: str, known: list[str]) -> str:
    by_lower = {k.lower(): k for k in known}
    close = difflib.get_close_matches(name.lower(), list(by_lower), n=3, cutoff=0.6)
    guess = f" Did you mean {' or '.join(repr(by_lower[c]) for c in close)}?" if close else ""
    return f"The project has no {kind} named '{name}' (checked against its names of the last 31 days).{guess}"


async def _names(run: Run, what: str, fetch: Any) -> list[str]:
    """The project's names of one kind, from memory when fresh; [] when they cannot be had without harm."""
    settings = run.client.settings
    key = (settings.query_url, settings.project_id, settings.workspace_id, what)
    now = time.monotonic()
    found = _known.get(key)
    if found is not None and now - found[0] < NAMES_TTL:
        return found[1]
    try:
        answer = await fetch()
    except MixpanelError:  # a spent budget or a refusal: say nothing rather than spend what is not there
        return []
    if isinstance(answer, dict):
        names = [str(k) for k in answer]
    elif isinstance(answer, list):
        names = [str(n) for n in answer]
    else:
        names = []
    if len(_known) >= MAX_KEPT:
        _known.pop(next(iter(_known)))
    _known[key] = (now, names)
    return names
