"""Feature flags: management (/api/app/projects/{id}/workspaces/{ws}/feature-flags[/{flag_id}]) and evaluation on
the ingestion host (GET /flags, GET /flags/definitions).

state.flags maps id -> the flag as the management API answers it. Deleting a flag archives it (a soft delete:
listed again with include_archived=true).

Evaluation, for each enabled flag: the value of its assignment key (`context`: distinct_id, device_id, or a
group key from custom_properties); a QA tester listed in ruleset.test.users gets their variant; otherwise the
first rollout group the user is eligible for (runtime definitions and simple JsonLogic rules are checked
against custom_properties; cohorts cannot be computed here, so cohort groups never match) includes them when
a hash of (key value, flag key, "rollout") falls under its rollout_percentage, and the variant is picked by a
hash of (key value, flag key, the flag's salt) over the variant splits. The hash is 64-bit FNV-1a, reduced to
[0, 1): the same user always gets the same answer, and users spread evenly over the splits.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mixpanel_mcp.double.auth import workspace_auth
from mixpanel_mcp.double.responses import JSONResponse
from mixpanel_mcp.double.state import DoubleState, RecordedRequest

BASE = "/api/app/projects/{project_id}/workspaces/{workspace_id}/feature-flags"
REQUEST_FIELDS = {
    "name",
    "key",
    "description",
    "tags",
    "experiment_id",
    "status",
    "context",
    "data_group_id",
    "serving_method",
    "ruleset",
    "workspace_id",
    "is_experiment_active",
    "hash_salt",
    "reset_hash_salt",
}
REQUIRED = ("name", "key", "tags", "context", "serving_method", "ruleset")
STATUSES = ("enabled", "disabled", "archived")
SERVING = ("client", "server", "remote_or_local", "remote_only")
CREATOR = {"creator_id": 1, "creator_name": "Service Account", "creator_email": "service-account@mixpanel.local"}
RULE_KEYS = {"variants", "rollout", "test"}
VARIANT_KEYS = {"key", "value", "description", "is_control", "split", "is_sticky"}
ROLLOUT_KEYS = {
    "name",
    "cohort_definition",
    "runtime_evaluation_definition",
    "runtime_evaluation_rule",
    "runtime_event_rule",
    "cohort_hash",
    "rollout_percentage",
    "variant_override",
    "variant_splits",
}


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def problem(status: int, kind: str, message: str) -> JSONResponse:
    return JSONResponse({"status": "error", "type": kind, "error": message}, status)


# -- evaluation ----------------------------------------------------------------------------------------------


def fraction(text: str) -> float:
    """64-bit FNV-1a of `text`, as a number in [0, 1)."""
    value = 0xCBF29CE484222325
    for byte in text.encode():
        value = ((value ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return (value % 1_000_000) / 1_000_000


def _fraction_of(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def _pick(weights: list[tuple[str, float]], at: float) -> str | None:
    total = sum(w for _, w in weights)
    if total <= 0:
        return None
    running = 0.0
    for key, weight in weights:
        running += weight / total
        if at < running:
            return key
    return weights[-1][0]


def rule_holds(rule: Any, values: dict[str, Any]) -> bool:
    """A small JsonLogic: var, ==, !=, in, and, or, !, <, <=, >, >=."""

    def value(node: Any) -> Any:
        if isinstance(node, dict) and len(node) == 1:
            ((op, arg),) = node.items()
            if op == "var":
                name = arg[0] if isinstance(arg, list) else arg
                found = values.get(str(name))
                return found.lower() if isinstance(found, str) else found
            return rule_holds(node, values)
        return node.lower() if isinstance(node, str) else node

    if not isinstance(rule, dict) or len(rule) != 1:
        return bool(rule)
    ((op, args),) = rule.items()
    args = args if isinstance(args, list) else [args]
    if op == "and":
        return all(rule_holds(a, values) for a in args)
    if op == "or":
        return any(rule_holds(a, values) for a in args)
    if op == "!":
        return not rule_holds(args[0], values)
    left, right = (value(a) for a in (args + [None, None])[:2])
    try:
        return {
            "==": lambda: left == right,
            "!=": lambda: left != right,
            "in": lambda: left in right if isinstance(right, (list, str)) else False,
            "<": lambda: left < right,
            "<=": lambda: left <= right,
            ">": lambda: left > right,
            ">=": lambda: left >= right,
        }[op]()
    except (KeyError, TypeError):
        return False


def _eligible(rollout: dict[str, Any], properties: dict[str, Any]) -> bool:
    if rollout.get("cohort_definition") or rollout.get("cohort_hash"):
        return False
    definition = rollout.get("runtime_evaluation_definition") or {}
    lowered = {k: v.lower() if isinstance(v, str) else v for k, v in properties.items()}
    for key, expected in definition.items():
        if lowered.get(key) != (expected.lower() if isinstance(expected, str) else expected):
            return False
    rule = rollout.get("runtime_evaluation_rule")
    return rule_holds(rule, lowered) if rule else True


def assign(flag: dict[str, Any], context: dict[str, Any]) -> dict[str, Any] | None:
    """The variant one user gets from an enabled flag, or None when no rollout group includes them."""
    properties = context.get("custom_properties") if isinstance(context.get("custom_properties"), dict) else {}
    key_name = flag.get("context") or "distinct_id"
    key_value = context.get(key_name, properties.get(key_name))
    if key_value in (None, ""):
        return None
    ruleset = flag.get("ruleset") or {}
    variants = {v["key"]: v for v in ruleset.get("variants") or []}
    chosen = None
    qa = ((ruleset.get("test") or {}).get("users") or {}).get(str(context.get("distinct_id")))
    if qa in variants:
        chosen, tester = qa, True
    else:
        tester = False
        salt = flag.get("hash_salt") or "variant"
        for rollout in ruleset.get("rollout") or []:
            if not _eligible(rollout, properties):
                continue
            if fraction(f"{key_value}{flag['key']}rollout") >= _fraction_of(rollout.get("rollout_percentage")):
                continue
            override = (rollout.get("variant_override") or {}).get("key")
            splits = rollout.get("variant_splits") or {k: v.get("split", 0) for k, v in variants.items()}
            chosen = (
                override
                if override in variants
                else _pick(
                    [(k, _fraction_of(splits.get(k, 0))) for k in variants], fraction(f"{key_value}{flag['key']}{salt}")
                )
            )
            break
    if chosen is None:
        return None
    selected: dict[str, Any] = {"variant_key": chosen, "variant_value": variants[chosen].get("value")}
    if flag.get("experiment_id"):
        selected["experiment_id"] = flag["experiment_id"]
        selected["is_experiment_active"] = bool(flag.get("is_experiment_active"))
    if tester:
        selected["is_qa_tester"] = True
    return selected


# -- checking what the management API is sent ---------------------------------------------------------------


def ruleset_problem(ruleset: Any) -> str | None:
    if not isinstance(ruleset, dict) or set(ruleset) - RULE_KEYS or not {"variants", "rollout"} <= set(ruleset):
        return "ruleset must be an object with variants and rollout (and optionally test)"
    variants, rollouts = ruleset["variants"], ruleset["rollout"]
    if not isinstance(variants, list) or len(variants) > 11 or not isinstance(rollouts, list):
        return "ruleset.variants must be a list of at most 11 variants, and ruleset.rollout a list"
    keys = []
    for variant in variants:
        if (
            not isinstance(variant, dict)
            or set(variant) - VARIANT_KEYS
            or not {"key", "value", "is_control", "split"} <= set(variant)
        ):
            return "each variant needs key, value, is_control and split"
        split = variant["split"]
        if not isinstance(split, (int, float)) or isinstance(split, bool) or not 0 <= split <= 1:
            return f"variant {variant['key']!r}: split must be a number from 0 to 1"
        keys.append(variant["key"])
    if len(set(keys)) != len(keys):
        return "variant keys must be unique"
    if variants and abs(sum(v["split"] for v in variants) - 1) > 1e-6:
        return "the variants' splits must add up to 1"
    for rollout in rollouts:
        if (
            not isinstance(rollout, dict)
            or set(rollout) - ROLLOUT_KEYS
            or not {"rollout_percentage", "variant_splits"} <= set(rollout)
        ):
            return "each rollout needs rollout_percentage and variant_splits"
        percentage = rollout["rollout_percentage"]
        if not isinstance(percentage, (int, float)) or isinstance(percentage, bool) or not 0 <= percentage <= 1:
            return "rollout_percentage must be a number from 0 to 1"
        splits = rollout["variant_splits"]
        if not isinstance(splits, dict) or set(splits) - set(keys):
            return "variant_splits must map variant keys to their share"
    return None


def flag_problem(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "the body must be a JSON object"
    extra = set(body) - REQUEST_FIELDS
    if extra:
        return f"unknown field(s): {', '.join(sorted(extra))}"
    missing = [k for k in REQUIRED if k not in body]
    if missing:
        return f"missing required field(s): {', '.join(missing)}"
    for name in ("name", "key", "context"):
        if not isinstance(body[name], str) or not 1 <= len(body[name]) <= 255:
            return f"{name} must be a string of 1 to 255 characters"
    if not isinstance(body["tags"], list) or not all(isinstance(t, str) for t in body["tags"]):
        return "tags must be a list of strings"
    if body.get("status", "disabled") not in STATUSES:
        return f"status must be one of {', '.join(STATUSES)}"
    if body["serving_method"] not in SERVING:
        return f"serving_method must be one of {', '.join(SERVING)}"
    salt = body.get("hash_salt")
    if salt is not None and (not isinstance(salt, str) or len(salt) != 32):
        return "hash_salt must be 32 characters"
    return ruleset_problem(body["ruleset"])


# -- routes --------------------------------------------------------------------------------------------------


def routes(state: DoubleState) -> list[Route]:
    def managed(handler: Callable[[RecordedRequest, str | None], Response]) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            recorded: RecordedRequest = request.state.recorded
            params = request.path_params
            if (denied := workspace_auth(state, recorded, params["workspace_id"], params["project_id"])) is not None:
                return denied
            return handler(recorded, params.get("flag_id"))

        return endpoint

    def one(flag: dict[str, Any]) -> JSONResponse:
        return JSONResponse({"status": "ok", "results": flag})

    def missing(flag_id: str | None) -> JSONResponse:
        return problem(404, "not_found", f"Feature flag {flag_id} not found")

    def body_of(recorded: RecordedRequest) -> tuple[Any, JSONResponse | None]:
        try:
            body = recorded.json()
        except ValueError:
            return None, problem(400, "validation_error", "the body must be JSON")
        if (found := flag_problem(body)) is not None:
            return None, problem(400, "validation_error", found)
        return body, None

    def key_taken(key: str, except_id: str | None = None) -> bool:
        return any(f["key"] == key and f["id"] != except_id and f.get("deleted") is None for f in state.flags.values())

    def list_(recorded: RecordedRequest, _: str | None) -> Response:
        archived = recorded.query.get("include_archived", "false")
        if archived not in ("true", "false"):
            return problem(400, "validation_error", "include_archived must be 'true' or 'false'")
        flags = [f for f in state.flags.values() if archived == "true" or f.get("status") != "archived"]
        return JSONResponse({"status": "ok", "results": flags})

    def create(recorded: RecordedRequest, _: str | None) -> Response:
        body, refused = body_of(recorded)
        if refused is not None:
            return refused
        if key_taken(body["key"]):
            return problem(400, "validation_error", f"a flag with key {body['key']!r} already exists")
        stamp = now()
        flag = {
            "can_update_basic": True,
            "can_view": True,
            "can_share": True,
            "is_shared_with_project": True,
            "description": None,
            "experiment_id": None,
            "status": "disabled",
            "data_group_id": None,
            "is_experiment_active": None,
            "deleted": None,
            "enabled_at": None,
            **{k: v for k, v in body.items() if k != "reset_hash_salt"},
            "id": str(uuid.uuid4()),
            "project_id": state.project.project_id,
            "workspace_id": state.project.workspace_id,
            "content_type": "feature-flags",
            "created": stamp,
            "modified": stamp,
            **CREATOR,
        }
        flag["hash_salt"] = body.get("hash_salt") or uuid.uuid4().hex
        if flag["status"] == "enabled":
            flag["enabled_at"] = stamp
        state.flags[flag["id"]] = flag
        return one(flag)

    def get(recorded: RecordedRequest, flag_id: str | None) -> Response:
        flag = state.flags.get(flag_id or "")
        return one(flag) if flag is not None else missing(flag_id)

    def put(recorded: RecordedRequest, flag_id: str | None) -> Response:
        flag = state.flags.get(flag_id or "")
        if flag is None:
            return missing(flag_id)
        body, refused = body_of(recorded)
        if refused is not None:
            return refused
        if key_taken(body["key"], flag["id"]):
            return problem(400, "validation_error", f"a flag with key {body['key']!r} already exists")
        was = flag.get("status")
        flag.update({k: v for k, v in body.items() if k not in ("reset_hash_salt", "workspace_id")})
        if body.get("reset_hash_salt"):
            flag["hash_salt"] = uuid.uuid4().hex
        flag["modified"] = now()
        if flag.get("status") == "enabled" and was != "enabled":
            flag["enabled_at"] = flag["modified"]
        return one(flag)

    def delete(recorded: RecordedRequest, flag_id: str | None) -> Response:
        flag = state.flags.get(flag_id or "")
        if flag is None:
            return missing(flag_id)
        flag.update(status="archived", deleted=now())
        return JSONResponse({"status": "ok", "results": {}})

    # -- evaluation on the ingestion host ----------------------------------------------------------------------

    def evaluation_auth(recorded: RecordedRequest) -> Response | None:
        project = state.project
        auth = recorded.basic_auth
        if auth == (project.sa_username, project.sa_secret):
            if recorded.query.get("project_id") != str(project.project_id):
                return JSONResponse({"error": "project_id is required with a service account", "status": "error"}, 401)
            return None
        if auth is not None and auth[0] in (project.api_secret, project.token):
            return None
        if recorded.query.get("token") == project.token:
            return None
        return JSONResponse({"error": "Invalid credentials", "status": "error"}, 401)

    async def evaluate(request: Request) -> Response:
        recorded: RecordedRequest = request.state.recorded
        if (denied := evaluation_auth(recorded)) is not None:
            return denied
        try:
            context = json.loads(recorded.query.get("context", ""))
        except ValueError:
            return JSONResponse({"error": "context must be a URL-encoded JSON object", "status": "error"}, 400)
        if (
            not isinstance(context, dict)
            or not isinstance(context.get("distinct_id"), str)
            or not context["distinct_id"]
        ):
            return JSONResponse({"error": "context.distinct_id is required", "status": "error"}, 400)
        selected = {}
        for flag in state.flags.values():
            if flag.get("status") == "enabled" and (variant := assign(flag, context)) is not None:
                selected[flag["key"]] = variant
        return JSONResponse({"flags": selected})

    async def flag_definitions(request: Request) -> Response:
        recorded: RecordedRequest = request.state.recorded
        if (denied := evaluation_auth(recorded)) is not None:
            return denied
        fields = ("id", "name", "key", "status", "project_id", "workspace_id", "ruleset", "context", "hash_salt")
        definitions = []
        for flag in state.flags.values():
            if flag.get("status") != "enabled":
                continue
            definition = {k: flag[k] for k in fields if flag.get(k) is not None}
            definition.setdefault("project_id", state.project.project_id)  # every definition names both
            definition.setdefault("workspace_id", state.project.workspace_id)
            if flag.get("experiment_id"):
                definition["experiment_id"] = flag["experiment_id"]
                definition["is_experiment_active"] = bool(flag.get("is_experiment_active"))
            definitions.append(definition)
        return JSONResponse({"flags": definitions})

    return [
        Route(BASE, managed(list_), methods=["GET"]),
        Route(BASE, managed(create), methods=["POST"]),
        Route(BASE + "/{flag_id}", managed(get), methods=["GET"]),
        Route(BASE + "/{flag_id}", managed(put), methods=["PUT"]),
        Route(BASE + "/{flag_id}", managed(delete), methods=["DELETE"]),
        Route("/flags", evaluate, methods=["GET"]),
        Route("/flags/definitions", flag_definitions, methods=["GET"]),
    ]
