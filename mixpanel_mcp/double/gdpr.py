"""GDPR API (v3): /api/app/data-retrievals/v3.0[/{tracking_id}] and /api/app/data-deletions/v3.0[/{tracking_id}].

Bearer GDPR token, and the project token in `token`. A job moves one stage each time its status is read
(PENDING -> STAGING -> STARTED -> SUCCESS), standing in for Mixpanel's hours or days. A deletion can be
cancelled (REVOKED, 204) while PENDING or STAGING, and answers 405 after; when it succeeds, the double
removes the users' events and profiles, as Mixpanel does.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mixpanel_mcp.double.responses import JSONResponse
from mixpanel_mcp.double.state import DoubleState, RecordedRequest

RETRIEVALS = "/api/app/data-retrievals/v3.0"
DELETIONS = "/api/app/data-deletions/v3.0"
STAGES = ("PENDING", "STAGING", "STARTED", "SUCCESS")
LIMITS = {"retrieval": 2000, "deletion": 1999}
REQUESTER = "gdpr-token@mixpanel.local"


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message, "status": "error"}, status)


def routes(state: DoubleState) -> list[Route]:
    def guarded(kind: str, handler: Callable[[RecordedRequest, str, str | None], Response]) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            recorded: RecordedRequest = request.state.recorded
            project = state.project
            if recorded.headers.get("authorization", "") != f"Bearer {project.gdpr_token}":
                return error(401, "Invalid or missing OAuth token")
            if recorded.query.get("token") != project.token:
                return error(403, "The token does not name a project this OAuth token may manage")
            return handler(recorded, kind, request.path_params.get("tracking_id"))

        return endpoint

    def create(recorded: RecordedRequest, kind: str, _: str | None) -> Response:
        try:
            body = recorded.json()
        except ValueError:
            return error(400, "the body must be JSON")
        ids = body.get("distinct_ids") if isinstance(body, dict) else None
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) and i for i in ids):
            return error(400, "distinct_ids must be a non-empty list of strings")
        if len(ids) > LIMITS[kind]:
            return error(400, f"at most {LIMITS[kind]} distinct_ids per request")
        compliance = str(body.get("compliance_type", "GDPR")).upper()
        if compliance not in ("GDPR", "CCPA"):
            return error(400, "compliance_type must be GDPR or CCPA")
        disclosure = body.get("disclosure_type")
        if kind == "deletion" and disclosure is not None:
            return error(400, "disclosure_type applies to retrievals only")
        if disclosure is not None and str(disclosure).capitalize() not in ("Data", "Categories", "Sources"):
            return error(400, "disclosure_type must be Data, Categories or Sources")
        tracking_id = str(uuid.uuid4())
        state.gdpr_jobs[tracking_id] = {
            "kind": kind,
            "tracking_id": tracking_id,
            "status": "PENDING",
            "requesting_user": REQUESTER,
            "compliance_type": compliance,
            "project_id": state.project.project_id,
            "date_requested": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S"),
            "distinct_ids": list(dict.fromkeys(ids)),
        }
        return JSONResponse({"status": "ok", "results": {"task_id": tracking_id}}, 201)

    def advance(job: dict[str, Any]) -> None:
        if job["status"] in STAGES[:-1]:
            job["status"] = STAGES[STAGES.index(job["status"]) + 1]
            if job["status"] == "SUCCESS" and job["kind"] == "deletion":
                forget(set(job["distinct_ids"]))

    def forget(users: set[str]) -> None:
        state.events = [e for e in state.events if str((e.get("properties") or {}).get("distinct_id")) not in users]
        for user in users:
            state.profiles.pop(user, None)

    def job_of(kind: str, tracking_id: str | None) -> dict[str, Any] | None:
        job = state.gdpr_jobs.get(tracking_id or "")
        return job if job is not None and job["kind"] == kind else None

    def status(recorded: RecordedRequest, kind: str, tracking_id: str | None) -> Response:
        job = job_of(kind, tracking_id)
        if job is None:
            if kind == "retrieval":
                return JSONResponse(
                    {"status": "ok", "results": {"status": "NOT_FOUND", "results": "", "distinct_ids": []}}
                )
            return error(404, f"No deletion task {tracking_id}")
        advance(job)
        if kind == "retrieval":
            link = f"https://gdpr-exports.mixpanel.local/{job['tracking_id']}.zip" if job["status"] == "SUCCESS" else ""
            return JSONResponse(
                {
                    "status": "ok",
                    "results": {"status": job["status"], "results": link, "distinct_ids": job["distinct_ids"]},
                }
            )
        shown = {k: v for k, v in job.items() if k != "kind"}
        return JSONResponse({"status": "ok", "results": shown})

    def cancel(recorded: RecordedRequest, kind: str, tracking_id: str | None) -> Response:
        job = job_of(kind, tracking_id)
        if job is None:
            return error(404, f"No deletion task {tracking_id}")
        if job["status"] not in ("PENDING", "STAGING", "REVOKED"):
            return error(405, f"The deletion task is {job['status']} and can no longer be cancelled")
        job["status"] = "REVOKED"
        return Response(status_code=204)

    return [
        Route(RETRIEVALS, guarded("retrieval", create), methods=["POST"]),
        Route(RETRIEVALS + "/{tracking_id}", guarded("retrieval", status), methods=["GET"]),
        Route(DELETIONS, guarded("deletion", create), methods=["POST"]),
        Route(DELETIONS + "/{tracking_id}", guarded("deletion", status), methods=["GET"]),
        Route(DELETIONS + "/{tracking_id}", guarded("deletion", cancel), methods=["DELETE"]),
    ]
