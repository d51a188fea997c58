"""Experiments: create and edit them, and move them through Mixpanel's lifecycle
(draft -> active -> concluded -> decided: success or fail; archive at any time)."""

from __future__ import annotations

from typing import Annotated, Any, Self

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from mixpanel_mcp.client import experiments as api
from mixpanel_mcp.client.app import results
from mixpanel_mcp.tools._base import Access, Args, Needs, Result, Run, ToolGroup
from mixpanel_mcp.tools._params import PathId, optional

group = ToolGroup(
    name="experiments",
    title="Experiments",
    description="Experiments: draft > launch > conclude > decide.",
)

SHOWN = 10
STATES = {
    "draft": "draft",
    "active": "running",
    "concluded": "concluded, not decided",
    "success": "decided: success",
    "fail": "decided: fail",
}


def _date(value: Any) -> str | None:
    return str(value)[:10] if value else None


def experiment_summary(experiment: dict[str, Any]) -> dict[str, Any]:
    """The state and dates of an experiment, its variants and its flag: what an agent usually needs."""
    summary = {k: experiment.get(k) for k in ("id", "name", "status") if experiment.get(k) is not None}
    summary["state"] = STATES.get(str(experiment.get("status")), str(experiment.get("status")))
    for name in ("start_date", "end_date"):
        if experiment.get(name):
            summary[name] = _date(experiment[name])
    variants = [v.get("key") or v.get("name") for v in experiment.get("variants") or [] if isinstance(v, dict)]
    if variants:
        summary["variants"] = variants
    flag = experiment.get("feature_flag")
    if isinstance(flag, dict) and flag.get("key"):
        summary["feature_flag"] = flag["key"]
    decision = (
        (experiment.get("settings") or {}).get("decision") if isinstance(experiment.get("settings"), dict) else None
    )
    if decision:
        summary["decision"] = decision
    return summary


def _line(experiment: dict[str, Any]) -> str:
    s = experiment_summary(experiment)
    dates = f", {s.get('start_date', '?')}..{s.get('end_date', '')}" if s.get("start_date") else ""
    flag = f", flag {s['feature_flag']}" if s.get("feature_flag") else ""
    return f"{s.get('name')!r} ({s.get('id')}): {s['state']}{dates}{flag}"


def _one(answer: Any, verb: str) -> Result:
    experiment = results(answer, dict)
    return Result(
        f"{verb} experiment {_line(experiment)}.", {"summary": experiment_summary(experiment), "experiment": experiment}
    )


class NoArgs(Args):
    pass


class OneExperiment(Args):
    experiment_id: PathId


Name = Annotated[str, Field(min_length=1, max_length=255)]
Description = Annotated[str, Field(max_length=400)]


class Fields(Args):
    name: optional(Name) = None
    description: optional(Description) = None
    settings: optional(dict[str, Any]) = None
    variants: optional(list[dict[str, Any]]) = None
    metrics: optional(list[dict[str, Any]]) = None

    def sent(self) -> dict[str, Any]:
        return {k: v for k, v in self.model_dump(exclude={"experiment_id", "operation"}).items() if v is not None}


class CreateExperiment(Fields):
    name: Name


class UpdateExperiment(Fields, OneExperiment):
    @model_validator(mode="after")
    def _something(self) -> Self:
        if not self.sent():
            raise PydanticCustomError(
                "nothing_to_change",
                "give at least one of name, description, settings, variants, metrics",
                {"example": 'description="Does the new checkout raise purchases?"'},
            )
        return self


class Decide(Args):
    experiment_id: PathId
    success: bool
    variant: optional(Annotated[str, Field(min_length=1, max_length=255)]) = None
    message: optional(str) = None


@group.operation("list", NoArgs, access=Access.READ, needs=Needs.WORKSPACE, summary="")
async def list_(run: Run, args: NoArgs) -> Result:
    found = [e for e in results(await api.list_experiments(run.client), list) if isinstance(e, dict)]
    shown = "; ".join(_line(e) for e in found[:SHOWN]) + ("; ..." if len(found) > SHOWN else "")
    summary = f"{len(found)} experiment(s)" + (f": {shown}." if found else ".")
    return Result(
        summary,
        {"count": len(found), "experiments": [experiment_summary(e) for e in found]},
        narrow_hint="get one experiment by experiment_id",
    )


@group.operation("get", OneExperiment, access=Access.READ, needs=Needs.WORKSPACE, summary="")
async def get(run: Run, args: OneExperiment) -> Result:
    return _one(await api.get_experiment(run.client, args.experiment_id), "Found")


@group.operation("create", CreateExperiment, access=Access.WRITE, needs=Needs.WORKSPACE, idempotent=False, summary="")
async def create(run: Run, args: CreateExperiment) -> Result:
    return _one(await api.create_experiment(run.client, args.sent()), "Created")


@group.operation("update", UpdateExperiment, access=Access.WRITE, needs=Needs.WORKSPACE, idempotent=True, summary="")
async def update(run: Run, args: UpdateExperiment) -> Result:
    return _one(await api.update_experiment(run.client, args.experiment_id, args.sent()), "Updated")


@group.operation("launch", OneExperiment, access=Access.WRITE, needs=Needs.WORKSPACE, idempotent=False, summary="")
async def launch(run: Run, args: OneExperiment) -> Result:
    return _one(await api.launch(run.client, args.experiment_id), "Launched")


@group.operation("decide", Decide, access=Access.DESTRUCTIVE, needs=Needs.WORKSPACE, idempotent=True, summary="")
async def decide(run: Run, args: Decide) -> Result:
    decision: dict[str, Any] = {"success": args.success}
    if args.variant is not None:
        decision["variant"] = args.variant
    if args.message is not None:
        decision["message"] = args.message
    return _one(await api.decide(run.client, args.experiment_id, decision), "Recorded the decision on")


@group.operation(
    "conclude", OneExperiment, access=Access.DESTRUCTIVE, needs=Needs.WORKSPACE, idempotent=False, summary=""
)
async def conclude(run: Run, args: OneExperiment) -> Result:
    return _one(await api.force_conclude(run.client, args.experiment_id), "Concluded")


@group.operation("archive", OneExperiment, access=Access.WRITE, needs=Needs.WORKSPACE, idempotent=True, summary="")
async def archive(run: Run, args: OneExperiment) -> Result:
    await api.archive(run.client, args.experiment_id)
    return Result(
        f"Archived experiment {args.experiment_id} (unarchive brings it back).",
        {"experiment_id": args.experiment_id, "archived": True},
    )


@group.operation("unarchive", OneExperiment, access=Access.WRITE, needs=Needs.WORKSPACE, idempotent=True, summary="")
async def unarchive(run: Run, args: OneExperiment) -> Result:
    return _one(await api.unarchive(run.client, args.experiment_id), "Unarchived")


@group.operation("delete", OneExperiment, access=Access.DESTRUCTIVE, needs=Needs.WORKSPACE, idempotent=True, summary="")
async def delete(run: Run, args: OneExperiment) -> Result:
    await api.delete_experiment(run.client, args.experiment_id)
    return Result(f"Deleted experiment {args.experiment_id}.", {"experiment_id": args.experiment_id, "deleted": True})
