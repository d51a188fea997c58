"""POST /engage and /groups: profile updates, applied with Mixpanel's operator semantics.

A profile is geolocated from the request's address unless the query has ip=0 or the update a `$ip` (0: none).
A user profile update sets `$last_seen` to now unless it carries `$ignore_time: true`; a `$delete` by an alias
(a $create_alias event received) deletes the profile the alias points to, unless it carries `$ignore_alias: true`.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from mixpanel_mcp.double.responses import JSONResponse
from mixpanel_mcp.double.state import DoubleState, RecordedRequest

OPERATORS = ("$set", "$set_once", "$add", "$append", "$union", "$remove", "$unset", "$delete")


def parse_payload(request: RecordedRequest) -> Any:
    """A JSON body, or a form `data=` field holding JSON (what the official SDKs send)."""
    form = request.form
    if "data" in form:
        return json.loads(form["data"])
    return request.json()


def answer(request: RecordedRequest, ok: bool, error: str | None = None) -> Response:
    verbose = request.query.get("verbose") or request.form.get("verbose")
    if verbose == "1":
        return JSONResponse({"status": 1 if ok else 0, "error": None if ok else error})
    return PlainTextResponse("1" if ok else "0")


def apply(profile: dict[str, Any], operator: str, value: Any) -> None:
    if operator == "$set":
        profile.update(value)
    elif operator == "$set_once":
        for k, v in value.items():
            profile.setdefault(k, v)
    elif operator == "$add":
        for k, v in value.items():
            profile[k] = profile.get(k, 0) + v
    elif operator == "$append":
        for k, v in value.items():
            profile.setdefault(k, []).append(v)
    elif operator == "$union":
        for k, values in value.items():
            current = profile.setdefault(k, [])
            current.extend(v for v in values if v not in current)
    elif operator == "$remove":
        for k, v in value.items():
            if isinstance(profile.get(k), list) and v in profile[k]:
                profile[k].remove(v)
    elif operator == "$unset":
        for k in value:
            profile.pop(k, None)


def located(request: RecordedRequest, update: dict[str, Any]) -> dict[str, Any] | None:
    """Where Mixpanel places the profile: the request's address (this project's server) unless ip=0 or `$ip`
    says otherwise. The spec's `ip` reads "defaults to 1" (its schema says 0): absent, the double geolocates."""
    from mixpanel_mcp.double.events import LOCATIONS, SERVER_LOCATION

    ip = update.get("$ip")
    if ip is None:
        if (request.query.get("ip") or request.form.get("ip")) == "0":
            return None
        where = SERVER_LOCATION
    elif str(ip) == "0":
        return None
    else:
        where = LOCATIONS[sum(str(ip).encode()) % len(LOCATIONS)]
    return {"$city": where["$city"], "$region": where["$region"], "$country_code": where["mp_country_code"]}


def alias_target(state: DoubleState, distinct_id: str) -> str:
    """The id an alias ($create_alias) points to; a $delete by alias deletes that profile without $ignore_alias."""
    for event in state.events:
        if event["event"] == "$create_alias" and str(event["properties"].get("alias")) == distinct_id:
            return str(event["properties"].get("distinct_id"))
    return distinct_id


def routes(state: DoubleState) -> list[Route]:
    def handle(kind: str):
        async def endpoint(request: Request) -> Response:
            recorded: RecordedRequest = request.state.recorded
            try:
                updates = parse_payload(recorded)
            except ValueError:
                return answer(recorded, False, "data, missing or empty")
            if isinstance(updates, dict):
                updates = [updates]
            if not isinstance(updates, list) or not updates or len(updates) > 2000:
                return answer(recorded, False, "data must be a list of 1 to 2000 updates")
            for update in updates:
                if update.get("$token") != state.project.token:
                    return answer(recorded, False, "$token, invalid or missing")
                ops = [k for k in update if k in OPERATORS]
                if len(ops) != 1:
                    return answer(recorded, False, "each update needs exactly one operator")
            now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
            for update in updates:
                (op,) = [k for k in update if k in OPERATORS]
                if kind == "engage":
                    key: Any = str(update.get("$distinct_id", ""))
                    store: dict[Any, dict[str, Any]] = state.profiles
                    if op == "$delete" and not update.get("$ignore_alias"):
                        key = alias_target(state, key)
                else:
                    key = (str(update.get("$group_key")), str(update.get("$group_id")))
                    store = state.group_profiles
                if op == "$delete":
                    store.pop(key, None)
                    continue
                profile = store.setdefault(key, {})
                apply(profile, op, update[op])
                place = located(recorded, update)
                if place is not None:
                    profile.update(place)
                if kind == "engage" and not update.get("$ignore_time"):
                    profile["$last_seen"] = now
            return answer(recorded, True)

        return endpoint

    return [
        Route("/engage", handle("engage"), methods=["POST"]),
        Route("/groups", handle("groups"), methods=["POST"]),
    ]
