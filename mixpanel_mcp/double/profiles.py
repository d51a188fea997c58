"""POST /engage and /groups: profile updates, applied with Mixpanel's operator semantics."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

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
            for update in updates:
                (op,) = [k for k in update if k in OPERATORS]
                if kind == "engage":
                    key: Any = str(update.get("$distinct_id", ""))
                    store: dict[Any, dict[str, Any]] = state.profiles
                else:
                    key = (str(update.get("$group_key")), str(update.get("$group_id")))
                    store = state.group_profiles
                if op == "$delete":
                    store.pop(key, None)
                else:
                    apply(store.setdefault(key, {}), op, update[op])
            return answer(recorded, True)

        return endpoint

    return [
        Route("/engage", handle("engage"), methods=["POST"]),
        Route("/groups", handle("groups"), methods=["POST"]),
    ]
