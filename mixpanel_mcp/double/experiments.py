"""Experiments: /api/app/workspaces/{workspace_id}/experiments[/{experiment_id}[/launch|force_conclude|decide|archive]].

state.experiments maps id -> the experiment as the API answers it, plus "_archived" (never shown). The
lifecycle, as Mixpanel runs it: a new experiment is a draft; launch makes a draft active (and turns its
feature flag's experiment on); force_conclude ends an active one; decide records success or fail on a
concluded (or already decided: edit the decision) one, and a decision to ship a variant of a flag
experiment rolls the flag out to that variant; editing the settings, variants or metrics of a decided
experiment clears the decision and reopens it (concluded). Anything else is refused with a 400.

The feature flag of an experiment is the flag whose experiment_id is the experiment's id, or the one named by
settings.feature_flag_id.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mixpanel_mcp.double.auth import workspace_auth
from mixpanel_mcp.double.responses import JSONResponse
from mixpanel_mcp.double.state import DoubleState, RecordedRequest

BASE = "/api/app/workspaces/{workspace_id}/experiments"
CREATE_FIELDS = {"name", "description", "hypothesis", "settings", "variants", "metrics", "global_access_type"}
UPDATE_FIELDS = CREATE_FIELDS | {"status", "start_date", "end_date", "exposures_cache", "results_cache", "tags"}
REOPENING = {"settings", "variants", "metrics", "start_date", "end_date"}
DECIDED = ("success", "fail")


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def problem(status: int, kind: str, message: str) -> JSONResponse:
    return JSONResponse({"status": "error", "type": kind, "error": message}, status)


def fields_problem(body: Any, allowed: set[str]) -> str | None:
    if not isinstance(body, dict):
        return "the body must be a JSON object"
    extra = set(body) - allowed
    if extra:
        return f"unknown field(s): {', '.join(sorted(extra))}"
    if "name" in body and (not isinstance(body["name"], str) or not 1 <= len(body["name"]) <= 255):
        return "name must be a string of 1 to 255 characters"
    if "description" in body and (not isinstance(body["description"], str) or len(body["description"]) > 400):
        return "description must be a string of at most 400 characters"
    for name, kind in (("settings", dict), ("variants", list), ("metrics", list), ("tags", list)):
        if name in body and not isinstance(body[name], kind):
            return f"{name} must be {'an object' if kind is dict else 'a list'}"
    return None


def routes(state: DoubleState) -> list[Route]:
    def guarded(handler: Callable[[RecordedRequest, str | None], Response]) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            recorded: RecordedRequest = request.state.recorded
            if (denied := workspace_auth(state, recorded, request.path_params["workspace_id"])) is not None:
                return denied
            return handler(recorded, request.path_params.get("experiment_id"))

        return endpoint

    def flag_of(experiment: dict[str, Any]) -> dict[str, Any] | None:
        named = (experiment.get("settings") or {}).get("feature_flag_id")
        for flag in state.flags.values():
            if flag.get("experiment_id") == experiment["id"] or (named and flag["id"] == named):
                return flag
        return None

    def shown(experiment: dict[str, Any]) -> dict[str, Any]:
        flag = flag_of(experiment)
        public = {k: v for k, v in experiment.items() if not k.startswith("_")}
        public["feature_flag"] = (
            None if flag is None else {k: flag.get(k) for k in ("id", "key", "name", "status", "ruleset")}
        )
        return public

    def one(experiment: dict[str, Any], status: int = 200) -> JSONResponse:
        return JSONResponse({"status": "ok", "results": shown(experiment)}, status)

    def body_of(recorded: RecordedRequest, allowed: set[str]) -> tuple[Any, JSONResponse | None]:
        if not recorded.body:
            return {}, None
        try:
            body = recorded.json()
        except ValueError:
            return None, problem(400, "validation_error", "the body must be JSON")
        if (found := fields_problem(body, allowed)) is not None:
            return None, problem(400, "validation_error", found)
        return body, None

    def found(experiment_id: str | None) -> dict[str, Any] | None:
        return state.experiments.get(experiment_id or "")

    def missing(experiment_id: str | None) -> JSONResponse:
        return problem(404, "not_found", f"Experiment {experiment_id} not found")

    def wrong_state(action: str, experiment: dict[str, Any], needed: str) -> JSONResponse:
        return problem(
            400, "invalid_state", f"Cannot {action} an experiment that is {experiment['status']}: it must be {needed}"
        )

    def list_(recorded: RecordedRequest, _: str | None) -> Response:
        return JSONResponse(
            {"status": "ok", "results": [shown(e) for e in state.experiments.values() if not e.get("_archived")]}
        )

    def create(recorded: RecordedRequest, _: str | None) -> Response:
        body, refused = body_of(recorded, CREATE_FIELDS)
        if refused is not None:
            return refused
        if "name" not in body:
            return problem(400, "validation_error", "name is required")
        stamp = now()
        experiment = {
            "id": str(uuid.uuid4()),
            "name": body["name"],
            "content_type": "experiments",
            "description": body.get("description"),
            "hypothesis": body.get("hypothesis"),
            "created": stamp,
            "modified": stamp,
            "creator_id": 1,
            "creator_name": "Service Account",
            "creator_email": "service-account@mixpanel.local",
            "deleted": None,
            "is_favorited": False,
            "pinned_date": None,
            "tags": [],
            "status": "draft",
            "variants": body.get("variants") or [],
            "metrics": body.get("metrics") or [],
            "settings": body.get("settings") or {},
            "exposures_cache": {},
            "results_cache": {},
            "start_date": None,
            "end_date": None,
            "_archived": False,
        }
        state.experiments[experiment["id"]] = experiment
        flag = flag_of(experiment)
        if flag is not None:
            flag["experiment_id"] = experiment["id"]
        return one(experiment, 201)

    def get(recorded: RecordedRequest, experiment_id: str | None) -> Response:
        experiment = found(experiment_id)
        return one(experiment) if experiment is not None else missing(experiment_id)

    def patch(recorded: RecordedRequest, experiment_id: str | None) -> Response:
        experiment = found(experiment_id)
        if experiment is None:
            return missing(experiment_id)
        body, refused = body_of(recorded, UPDATE_FIELDS)
        if refused is not None:
            return refused
        if "status" in body and body["status"] != experiment["status"]:
            return problem(400, "invalid_state", "status changes through launch, force_conclude and decide")
        experiment.update(body)
        if experiment["status"] in DECIDED and REOPENING & set(body):
            experiment["status"] = "concluded"  # editing a decided experiment clears the decision
            experiment["settings"] = {k: v for k, v in experiment["settings"].items() if k != "decision"}
        experiment["modified"] = now()
        return one(experiment)

    def delete(recorded: RecordedRequest, experiment_id: str | None) -> Response:
        experiment = found(experiment_id)
        if experiment is None:
            return missing(experiment_id)
        del state.experiments[experiment["id"]]
        return JSONResponse({"status": "ok", "results": {}})

    def launch(recorded: RecordedRequest, experiment_id: str | None) -> Response:
        experiment = found(experiment_id)
        if experiment is None:
            return missing(experiment_id)
        if experiment["status"] != "draft":
            return wrong_state("launch", experiment, "a draft")
        experiment.update(status="active", start_date=now(), modified=now())
        flag = flag_of(experiment)
        if flag is not None:
            flag.update(experiment_id=experiment["id"], is_experiment_active=True, status="enabled")
        return one(experiment)

    def conclude(recorded: RecordedRequest, experiment_id: str | None) -> Response:
        experiment = found(experiment_id)
        if experiment is None:
            return missing(experiment_id)
        body, refused = body_of(recorded, {"end_date"})
        if refused is not None:
            return refused
        if experiment["status"] != "active":
            return wrong_state("conclude", experiment, "active")
        experiment.update(status="concluded", end_date=body.get("end_date") or now(), modified=now())
        flag = flag_of(experiment)
        if flag is not None:
            flag["is_experiment_active"] = False
        return one(experiment)

    def decide(recorded: RecordedRequest, experiment_id: str | None) -> Response:
        experiment = found(experiment_id)
        if experiment is None:
            return missing(experiment_id)
        body, refused = body_of(recorded, {"success", "variant", "message"})
        if refused is not None:
            return refused
        if not isinstance(body.get("success"), bool):
            return problem(400, "validation_error", "success is required: true or false")
        if experiment["status"] not in ("concluded", *DECIDED):
            return wrong_state("decide", experiment, "concluded")
        flag = flag_of(experiment)
        variant = body.get("variant")
        keys = [v.get("key") for v in experiment["variants"] if isinstance(v, dict)]
        if flag is not None:
            keys += [v.get("key") for v in (flag.get("ruleset") or {}).get("variants") or []]
        if variant is not None and keys and variant not in keys:
            return problem(
                400,
                "validation_error",
                f"variant {variant!r} is not one of the experiment's: {', '.join(map(str, keys))}",
            )
        decision = {k: body[k] for k in ("success", "variant", "message") if k in body}
        experiment.update(status="success" if body["success"] else "fail", modified=now())
        experiment["settings"] = {**experiment["settings"], "decision": decision}
        if flag is not None and body["success"] and variant is not None:
            for rollout in (flag.get("ruleset") or {}).get("rollout") or []:  # ship the variant to everyone in the flag
                rollout["variant_splits"] = {
                    key: 1.0 if key == variant else 0.0 for key in rollout.get("variant_splits") or {variant: 1.0}
                }
        return one(experiment)

    def archive(recorded: RecordedRequest, experiment_id: str | None) -> Response:
        experiment = found(experiment_id)
        if experiment is None:
            return missing(experiment_id)
        experiment.update(_archived=True, modified=now())
        return JSONResponse({"status": "ok", "results": {}})

    def unarchive(recorded: RecordedRequest, experiment_id: str | None) -> Response:
        experiment = found(experiment_id)
        if experiment is None:
            return missing(experiment_id)
        if not experiment.get("_archived"):
            return problem(400, "invalid_state", "the experiment is not archived")
        experiment.update(_archived=False, modified=now())
        return one(experiment)

    return [
        Route(BASE, guarded(list_), methods=["GET"]),
        Route(BASE, guarded(create), methods=["POST"]),
        Route(BASE + "/{experiment_id}", guarded(get), methods=["GET"]),
        Route(BASE + "/{experiment_id}", guarded(patch), methods=["PATCH"]),
        Route(BASE + "/{experiment_id}", guarded(delete), methods=["DELETE"]),
        Route(BASE + "/{experiment_id}/launch", guarded(launch), methods=["PUT"]),
        Route(BASE + "/{experiment_id}/force_conclude", guarded(conclude), methods=["PUT"]),
        Route(BASE + "/{experiment_id}/decide", guarded(decide), methods=["PATCH"]),
        Route(BASE + "/{experiment_id}/archive", guarded(archive), methods=["POST"]),
        Route(BASE + "/{experiment_id}/archive", guarded(unarchive), methods=["DELETE"]),
    ]
