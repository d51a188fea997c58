"""Lexicon Schemas API: /api/app/projects/{id}/schemas at its three levels.

state.schemas maps (entityType, name) -> schema. An upload replaces the stored schema, except that
"com.mixpanel" metadata keys it leaves out are kept from the old one (a null value removes a key).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mixpanel_mcp.double.auth import lexicon_auth
from mixpanel_mcp.double.responses import JSONResponse
from mixpanel_mcp.double.state import DoubleState, RecordedRequest

ENTITY_TYPES = ("event", "profile")
PROPERTY_TYPES = {"array", "boolean", "integer", "null", "number", "object", "string"}
ENTRY_KEYS = {"entityType", "name", "schemaJson"}
MAX_DELETIONS = 3000  # "fewer than 3000 truncations or deletions per request"
BASE = "/api/app/projects/{project_id}/schemas"


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message, "status": "error"}, status)


def schema_problem(schema: Any) -> str | None:
    if not isinstance(schema, dict):
        return "schema must be a JSON object"
    properties = schema.get("properties", {})
    if not isinstance(properties, dict):
        return "properties must be an object"
    for name, prop in properties.items():
        kinds = prop.get("type") if isinstance(prop, dict) else None
        kinds = kinds if isinstance(kinds, list) else [kinds]
        if not kinds or not all(k in PROPERTY_TYPES for k in kinds):
            return f"property {name!r}: type is required and must be one of {sorted(PROPERTY_TYPES)}"
    return None


def merged(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """The schema to store: `new`, with entity metadata keys it omits carried over from `old`."""
    result = dict(new)
    old_meta = ((old or {}).get("metadata") or {}).get("com.mixpanel") or {}
    new_meta = (new.get("metadata") or {}).get("com.mixpanel") or {}
    combined = {k: v for k, v in {**old_meta, **new_meta}.items() if v is not None}
    if combined:
        result["metadata"] = {**(new.get("metadata") or {}), "com.mixpanel": combined}
    return result


def routes(state: DoubleState) -> list[Route]:
    def guarded(handler: Callable[..., Response]) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            recorded: RecordedRequest = request.state.recorded
            params = request.path_params
            if (denied := lexicon_auth(state, recorded, params["project_id"])) is not None:
                return denied
            entity_type = params.get("entity_type")
            if entity_type is not None and entity_type not in ENTITY_TYPES:
                return error(400, f"entityType must be one of {', '.join(ENTITY_TYPES)}, not {entity_type!r}")
            return handler(recorded, entity_type, params.get("name"))

        return endpoint

    def selected(recorded: RecordedRequest, entity_type: str | None, name: str | None) -> list[tuple[str, str]]:
        name = name if name is not None else recorded.query.get("entity_name")
        return [
            key for key in sorted(state.schemas)
            if (entity_type is None or key[0] == entity_type) and (name is None or key[1] == name)
        ]

    def get(recorded: RecordedRequest, entity_type: str | None, name: str | None) -> Response:
        if name is not None:
            schema = state.schemas.get((entity_type or "", name))
            if schema is None:
                return error(404, f"no schema for {entity_type} {name!r}")
            # Wrapped, as the live API answers (the spec shows the schema bare; docs/fidelity.md).
            return JSONResponse({"results": schema, "status": "ok"})
        keys = selected(recorded, entity_type, name)
        entries = [{"entityType": t, "name": n, "schemaJson": state.schemas[(t, n)]} for t, n in keys]
        return JSONResponse({"results": entries, "status": "ok"})

    def delete(recorded: RecordedRequest, entity_type: str | None, name: str | None) -> Response:
        keys = selected(recorded, entity_type, name)
        if len(keys) >= MAX_DELETIONS:
            return error(400, f"too many deletions in one request ({len(keys)}); the limit is {MAX_DELETIONS - 1}")
        for key in keys:
            del state.schemas[key]
        return JSONResponse({"results": {"delete_count": len(keys)}, "status": "ok"})

    def post_one(recorded: RecordedRequest, entity_type: str | None, name: str | None) -> Response:
        try:
            schema = recorded.json()
        except ValueError:
            return error(400, "the body must be a JSON schema object")
        if (problem := schema_problem(schema)) is not None:
            return error(400, problem)
        key = (entity_type or "", name or "")
        state.schemas[key] = merged(state.schemas.get(key), schema)
        return JSONResponse({"status": "ok"})

    def post_bulk(recorded: RecordedRequest, entity_type: str | None, name: str | None) -> Response:
        try:
            body = recorded.json()
        except ValueError:
            return error(400, "the body must be JSON: {\"entries\": [...], \"truncate\": false}")
        if not isinstance(body, dict) or set(body) - {"entries", "truncate"} or not isinstance(body.get("entries"), list):
            return error(400, "entries is required, and only entries and truncate are allowed")
        truncate = body.get("truncate", False)
        if not isinstance(truncate, bool):
            return error(400, "truncate must be a boolean")
        for entry in body["entries"]:
            if not isinstance(entry, dict) or set(entry) != ENTRY_KEYS:
                return error(400, "each entry needs exactly entityType, name and schemaJson")
            if entry["entityType"] not in ENTITY_TYPES:
                return error(400, f"entityType must be one of {', '.join(ENTITY_TYPES)}, not {entry['entityType']!r}")
            if (problem := schema_problem(entry["schemaJson"])) is not None:
                return error(400, f"{entry['name']}: {problem}")
        deleted = 0
        if truncate:
            if len(state.schemas) >= MAX_DELETIONS:
                return error(400, f"too many truncations in one request; the limit is {MAX_DELETIONS - 1}")
            deleted = len(state.schemas)
            state.schemas.clear()
        for entry in body["entries"]:
            key = (entry["entityType"], entry["name"])
            state.schemas[key] = merged(state.schemas.get(key), entry["schemaJson"])
        return JSONResponse({"results": {"added": len(body["entries"]), "deleted": deleted}, "status": "ok"})

    return [
        Route(BASE, guarded(get), methods=["GET"]),
        Route(BASE, guarded(post_bulk), methods=["POST"]),
        Route(BASE, guarded(delete), methods=["DELETE"]),
        Route(BASE + "/{entity_type}", guarded(get), methods=["GET"]),
        Route(BASE + "/{entity_type}", guarded(delete), methods=["DELETE"]),
        Route(BASE + "/{entity_type}/{name:path}", guarded(get), methods=["GET"]),
        Route(BASE + "/{entity_type}/{name:path}", guarded(post_one), methods=["POST"]),
        Route(BASE + "/{entity_type}/{name:path}", guarded(delete), methods=["DELETE"]),
    ]
