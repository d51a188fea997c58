"""Annotations API: /api/app/projects/{id}/annotations[/{annotationId}] and /annotations/tags.

state.annotations maps id -> {id, date, description, user, tags: [tag id]}; answers carry the tags as
{id, name}. Dates are "YYYY-MM-DD HH:mm:ss"; the list's fromDate/toDate are inclusive days.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mixpanel_mcp.double.auth import app_auth
from mixpanel_mcp.double.responses import JSONResponse
from mixpanel_mcp.double.state import DoubleState, RecordedRequest

BASE = "/api/app/projects/{project_id}/annotations"
CREATOR = {"id": 1, "first_name": "Service", "last_name": "Account"}


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message, "status": "error"}, status)


def _moment(value: Any) -> str | None:
    try:
        return dt.datetime.strptime(str(value), "%Y-%m-%d %H:%M:%S").strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return None


def _day(value: str) -> dt.date | None:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        return None


def routes(state: DoubleState) -> list[Route]:
    def guarded(handler: Callable[[RecordedRequest, str | None], Response]) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            recorded: RecordedRequest = request.state.recorded
            if (denied := app_auth(state, recorded, request.path_params["project_id"])) is not None:
                return denied
            return handler(recorded, request.path_params.get("annotation_id"))

        return endpoint

    def shown(entry: dict[str, Any]) -> dict[str, Any]:
        tags = [
            {"id": t, "name": state.annotation_tags[t]["name"]} for t in entry["tags"] if t in state.annotation_tags
        ]
        return {**{k: v for k, v in entry.items() if k != "tags"}, "tags": tags}

    def find(annotation_id: str | None) -> dict[str, Any] | None:
        return state.annotations.get(int(annotation_id)) if annotation_id and annotation_id.isdigit() else None

    def tag_problem(tags: Any) -> str | None:
        if tags is None:
            return None
        if not isinstance(tags, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in tags):
            return "tags must be a list of tag ids"
        unknown = [t for t in tags if t not in state.annotation_tags]
        return f"unknown tag id(s): {unknown}" if unknown else None

    def list_(recorded: RecordedRequest, _: str | None) -> Response:
        bounds = []
        for name in ("fromDate", "toDate"):
            text = recorded.query.get(name)
            day = _day(text) if text else None
            if text and day is None:
                return error(400, f"{name} must be a date as yyyy-mm-dd")
            bounds.append(day)
        first, last = bounds
        entries = [
            shown(e)
            for e in sorted(state.annotations.values(), key=lambda e: (e["date"], e["id"]))
            if (first is None or e["date"][:10] >= first.isoformat())
            and (last is None or e["date"][:10] <= last.isoformat())
        ]
        return JSONResponse({"status": "ok", "results": entries})

    def create(recorded: RecordedRequest, _: str | None) -> Response:
        try:
            body = recorded.json()
        except ValueError:
            return error(400, "the body must be JSON")
        if not isinstance(body, dict):
            return error(400, "the body must be a JSON object")
        date = _moment(body.get("date"))
        if date is None:
            return error(400, 'date is required, as "YYYY-MM-DD HH:mm:ss"')
        description = body.get("description")
        if not isinstance(description, str) or not description:
            return error(400, "description is required")
        if (problem := tag_problem(body.get("tags"))) is not None:
            return error(400, problem)
        new_id = max(state.annotations, default=0) + 1
        entry = {
            "id": new_id,
            "date": date,
            "description": description,
            "user": CREATOR,
            "tags": list(body.get("tags") or []),
        }
        state.annotations[new_id] = entry
        return JSONResponse({"status": "ok", "results": shown(entry)}, 201)

    def get(recorded: RecordedRequest, annotation_id: str | None) -> Response:
        entry = find(annotation_id)
        if entry is None:
            return error(404, f"Annotation {annotation_id} not found")
        return JSONResponse({"status": "ok", "results": shown(entry)})

    def patch(recorded: RecordedRequest, annotation_id: str | None) -> Response:
        entry = find(annotation_id)
        if entry is None:
            return error(404, f"Annotation {annotation_id} not found")
        try:
            body = recorded.json()
        except ValueError:
            return error(400, "the body must be JSON")
        if not isinstance(body, dict) or set(body) - {"description", "tags"}:
            return error(400, "only description and tags can be changed")
        if "description" in body and (not isinstance(body["description"], str) or not body["description"]):
            return error(400, "description must be a non-empty string")
        if (problem := tag_problem(body.get("tags"))) is not None:
            return error(400, problem)
        entry.update({k: list(v) if k == "tags" else v for k, v in body.items() if v is not None})
        return JSONResponse({"status": "ok", "results": shown(entry)})

    def delete(recorded: RecordedRequest, annotation_id: str | None) -> Response:
        entry = find(annotation_id)
        if entry is None:
            return error(404, f"Annotation {annotation_id} not found")
        del state.annotations[entry["id"]]
        return JSONResponse({"status": "ok", "results": {"id": entry["id"]}})

    def tags(recorded: RecordedRequest, _: str | None) -> Response:
        used = {t for e in state.annotations.values() for t in e["tags"]}
        return JSONResponse([{**tag, "has_annotations": tag["id"] in used} for tag in state.annotation_tags.values()])

    def create_tag(recorded: RecordedRequest, _: str | None) -> Response:
        try:
            body = recorded.json()
        except ValueError:
            return error(400, "the body must be JSON")
        name = body.get("name") if isinstance(body, dict) else None
        if not isinstance(name, str) or not name.strip():
            return error(400, "name is required")
        if any(t["name"] == name for t in state.annotation_tags.values()):
            return error(400, f"a tag named {name!r} already exists")
        new_id = max(state.annotation_tags, default=0) + 1
        tag = {"id": new_id, "name": name, "project_id": state.project.project_id}
        state.annotation_tags[new_id] = tag
        return JSONResponse({**tag, "has_annotations": False})

    return [
        Route(BASE, guarded(list_), methods=["GET"]),
        Route(BASE, guarded(create), methods=["POST"]),
        Route(BASE + "/tags", guarded(tags), methods=["GET"]),
        Route(BASE + "/tags", guarded(create_tag), methods=["POST"]),
        Route(BASE + "/{annotation_id}", guarded(get), methods=["GET"]),
        Route(BASE + "/{annotation_id}", guarded(patch), methods=["PATCH"]),
        Route(BASE + "/{annotation_id}", guarded(delete), methods=["DELETE"]),
    ]
