"""Feature flags: manage them in the project's workspace, and see which variant a user gets."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema, model_validator
from pydantic_core import PydanticCustomError

from mixpanel_mcp.client.app import results
from mixpanel_mcp.client.flags import create_flag, definitions, delete_flag, evaluate, get_flag, list_flags, update_flag
from mixpanel_mcp.tools._base import Access, Args, Needs, Result, Run, ToolGroup
from mixpanel_mcp.tools._params import PathId, UserId, optional

group = ToolGroup(
    name="flags",
    title="Feature flags",
    description="Feature flags: manage them, or see a user's variants (evaluate).",
)

RULESET_EXAMPLE = (
    '{"variants": [{"key": "off", "value": false, "is_control": true, "split": 0.5}, {"key": "on", "value": true, '
    '"is_control": false, "split": 0.5}], "rollout": [{"rollout_percentage": 0.2, "variant_splits": {"off": 0.5, "on": 0.5}}]}'
)
SHOWN = 20


# -- the ruleset: checked against Mixpanel's shape, summarised in words ---------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


class Variant(_Strict):
    key: str = Field(min_length=1)
    value: Any
    description: str | None = None
    is_control: bool
    split: Fraction
    is_sticky: bool = False


class Rollout(_Strict):
    name: str | None = None
    cohort_definition: dict[str, Any] | None = None
    runtime_evaluation_definition: dict[str, Any] | None = None
    runtime_evaluation_rule: dict[str, Any] | None = None
    runtime_event_rule: dict[str, Any] | None = None
    cohort_hash: str | None = None
    rollout_percentage: Fraction
    variant_override: dict[str, Any] | None = None
    variant_splits: dict[str, Fraction]


class Ruleset(_Strict):
    variants: list[Variant] = Field(max_length=11)
    rollout: list[Rollout]
    test: dict[str, dict[str, str]] | None = None

    @model_validator(mode="after")
    def _splits(self) -> Self:
        keys = [v.key for v in self.variants]
        if self.variants and abs(sum(v.split for v in self.variants) - 1.0) > 1e-6:
            raise PydanticCustomError(
                "split_sum",
                "the variants' splits must add up to 1 (fractions, not percents)",
                {"example": RULESET_EXAMPLE},
            )
        for rollout in self.rollout:
            unknown = set(rollout.variant_splits) - set(keys)
            if unknown:
                raise PydanticCustomError(
                    "unknown_variant",
                    "variant_splits names variants not in variants: {names}",
                    {"names": sorted(unknown), "example": RULESET_EXAMPLE},
                )
        return self


RulesetArg = Annotated[
    Ruleset, WithJsonSchema({"type": "object", "description": "{variants, rollout}; fractions 0-1."})
]


def _percent(value: Any) -> str:
    try:
        return f"{float(value) * 100:g}%"
    except (TypeError, ValueError):
        return "?"


def _who(rollout: dict[str, Any]) -> str:
    """The targeting of one rollout group, in words."""
    parts = []
    if rollout.get("cohort_definition") or rollout.get("cohort_hash"):
        parts.append(f"cohort {rollout.get('name') or '(unnamed)'}")
    definition = rollout.get("runtime_evaluation_definition") or {}
    if definition:
        parts.append(" and ".join(f"{k} = {v}" for k, v in definition.items()))
    if rollout.get("runtime_evaluation_rule"):
        parts.append("where " + json.dumps(rollout["runtime_evaluation_rule"], separators=(",", ":"))[:120])
    event = rollout.get("runtime_event_rule") or {}
    if event.get("event_name"):
        parts.append(f"after {event['event_name']}")
    return ", ".join(parts) or "everyone"


def ruleset_words(ruleset: Any) -> dict[str, Any]:
    """variants with their split, each rollout group's targeting and percentage."""
    ruleset = ruleset if isinstance(ruleset, dict) else {}
    variants = [v for v in ruleset.get("variants") or [] if isinstance(v, dict)]
    rollouts = [r for r in ruleset.get("rollout") or [] if isinstance(r, dict)]
    words = {
        "variants": ", ".join(
            f"{v.get('key')} {_percent(v.get('split'))}" + (" (control)" if v.get("is_control") else "")
            for v in variants
        ),
        "rollout": "; ".join(
            f"{_who(r)}: {_percent(r.get('rollout_percentage'))}"
            + (
                f" ({', '.join(f'{k} {_percent(s)}' for k, s in r['variant_splits'].items())})"
                if r.get("variant_splits")
                else ""
            )
            for r in rollouts
        )
        or "nobody",
    }
    testers = ((ruleset.get("test") or {}).get("users") or {}) if isinstance(ruleset.get("test"), dict) else {}
    if testers:
        words["qa_testers"] = len(testers)
    return words


def flag_summary(flag: dict[str, Any]) -> dict[str, Any]:
    summary = {k: flag.get(k) for k in ("id", "key", "name", "status", "context") if flag.get(k) is not None}
    summary.update(ruleset_words(flag.get("ruleset")))
    if flag.get("experiment_id"):
        summary["experiment_id"] = flag["experiment_id"]
        summary["is_experiment_active"] = bool(flag.get("is_experiment_active"))
    return summary


def _line(flag: dict[str, Any]) -> str:
    words = ruleset_words(flag.get("ruleset"))
    return f"{flag.get('key')} ({flag.get('status', '?')}; rollout {words['rollout']}; variants {words['variants'] or 'none'})"


def _one(answer: Any, verb: str) -> Result:
    flag = results(answer, dict)
    return Result(f"{verb} flag {_line(flag)}.", {"summary": flag_summary(flag), "flag": flag})


# -- management ----------------------------------------------------------------------------------------------

Status = Literal["enabled", "disabled"]  # archiving is delete
Name = Annotated[str, Field(min_length=1, max_length=255)]


class NoArgs(Args):
    pass


@group.operation("list", NoArgs, access=Access.READ, needs=Needs.WORKSPACE, summary="")
async def list_(run: Run, args: NoArgs) -> Result:
    flags = [f for f in results(await list_flags(run.client), list) if isinstance(f, dict)]
    shown = "; ".join(_line(f) for f in flags[:SHOWN]) + ("; ..." if len(flags) > SHOWN else "")
    summary = f"{len(flags)} feature flag(s)" + (f": {shown}." if flags else ".")
    return Result(
        summary, {"count": len(flags), "flags": [flag_summary(f) for f in flags]}, narrow_hint="get one flag by flag_id"
    )


class OneFlag(Args):
    flag_id: PathId


@group.operation("get", OneFlag, access=Access.READ, needs=Needs.WORKSPACE, summary="")
async def get(run: Run, args: OneFlag) -> Result:
    return _one(await get_flag(run.client, args.flag_id), "Found")


class CreateFlag(Args):
    name: Name
    key: Name
    ruleset: RulesetArg
    status: Status = "disabled"


@group.operation("create", CreateFlag, access=Access.WRITE, needs=Needs.WORKSPACE, idempotent=False, summary="")
async def create(run: Run, args: CreateFlag) -> Result:
    flag = {
        "name": args.name,
        "key": args.key,
        "tags": [],
        "status": args.status,
        "context": "distinct_id",
        "serving_method": "remote_or_local",
        "ruleset": args.ruleset.model_dump(exclude_none=True),
    }
    return _one(await create_flag(run.client, flag), "Created")


def _fraction(value: float) -> float:
    if not 0 <= value <= 1:
        raise PydanticCustomError(
            "fraction", "must be a fraction from 0 to 1, not {value}", {"value": value, "example": "0.2 for 20 %"}
        )
    return value


class UpdateFlag(Args):
    flag_id: PathId
    name: optional(Name) = None
    key: optional(Name) = None
    ruleset: optional(RulesetArg) = None
    # Every rollout group's share, 0-1 (the error says so when a percent is given: undescribed, to save tokens).
    rollout_percentage: optional(Annotated[float, AfterValidator(_fraction)]) = None
    status: optional(Status) = None

    @model_validator(mode="after")
    def _something(self) -> Self:
        if all(getattr(self, f) is None for f in ("name", "key", "ruleset", "rollout_percentage", "status")):
            raise PydanticCustomError(
                "nothing_to_change",
                "give at least one of name, key, ruleset, rollout_percentage, status",
                {"example": 'status="enabled"'},
            )
        if self.ruleset is not None and self.rollout_percentage is not None:
            raise PydanticCustomError(
                "one_ruleset", "give ruleset or rollout_percentage, not both", {"example": "rollout_percentage=0.2"}
            )
        return self


def rolled_out(ruleset: dict[str, Any], percentage: float) -> dict[str, Any]:
    """The ruleset with every rollout group at `percentage`; a flag without one gets a group for everyone, split
    as its variants are."""
    groups = [dict(group) for group in ruleset.get("rollout") or [] if isinstance(group, dict)]
    if not groups:
        splits = {v["key"]: v.get("split", 0) for v in ruleset.get("variants") or [] if isinstance(v, dict) and "key" in v}
        groups = [{"rollout_percentage": percentage, "variant_splits": splits}]
    return {**ruleset, "rollout": [{**group, "rollout_percentage": percentage} for group in groups]}


@group.operation("update", UpdateFlag, access=Access.WRITE, needs=Needs.WORKSPACE, idempotent=True, summary="")
async def update(run: Run, args: UpdateFlag) -> Result:
    # Mixpanel's update replaces the whole flag: start from what it holds now.
    flag = dict(results(await get_flag(run.client, args.flag_id), dict))
    for name in ("name", "key", "status"):
        if getattr(args, name) is not None:
            flag[name] = getattr(args, name)
    if args.ruleset is not None:
        flag["ruleset"] = args.ruleset.model_dump(exclude_none=True)
    if args.rollout_percentage is not None:
        flag["ruleset"] = rolled_out(flag.get("ruleset") or {}, args.rollout_percentage)
    return _one(await update_flag(run.client, args.flag_id, flag), "Updated")


@group.operation("delete", OneFlag, access=Access.DESTRUCTIVE, needs=Needs.WORKSPACE, idempotent=True, summary="")
async def delete(run: Run, args: OneFlag) -> Result:
    await delete_flag(run.client, args.flag_id)
    return Result(
        f"Deleted feature flag {args.flag_id}; apps asking for it now get their fallback.",
        {"flag_id": args.flag_id, "deleted": True},
    )


# -- evaluation ----------------------------------------------------------------------------------------------


class Evaluate(Args):
    distinct_id: UserId
    device_id: optional(Annotated[str, Field(min_length=1, max_length=255)]) = None
    custom_properties: optional(dict[str, Any]) = None


@group.operation("evaluate", Evaluate, access=Access.READ, needs=Needs.QUERY, summary="")
async def evaluate_(run: Run, args: Evaluate) -> Result:
    answer = await evaluate(run.client, args.distinct_id, args.device_id, args.custom_properties)
    flags = answer.get("flags") if isinstance(answer, dict) and isinstance(answer.get("flags"), dict) else {}
    got = "; ".join(f"{key} = {v.get('variant_key')}" for key, v in list(flags.items())[:SHOWN] if isinstance(v, dict))
    summary = (
        f"User {args.distinct_id!r} gets {len(flags)} flag(s): {got}."
        if flags
        else f"User {args.distinct_id!r} gets no flag: no enabled flag's rollout includes them (apps use their fallback)."
    )
    return Result(summary, {"distinct_id": args.distinct_id, "flags": flags})


@group.operation("definitions", NoArgs, access=Access.READ, needs=Needs.QUERY, summary="")
async def definitions_(run: Run, args: NoArgs) -> Result:
    answer = await definitions(run.client)
    flags = [f for f in (answer.get("flags") if isinstance(answer, dict) else None) or [] if isinstance(f, dict)]
    shown = "; ".join(_line(f) for f in flags[:SHOWN]) + ("; ..." if len(flags) > SHOWN else "")
    summary = f"{len(flags)} enabled flag definition(s)" + (f": {shown}." if flags else ".")
    return Result(summary, {"count": len(flags), "summaries": [flag_summary(f) for f in flags], "flags": flags})
