"""GDPR and CCPA requests about people: export their data, or delete it (irreversible once started)."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import AfterValidator, BeforeValidator, Field, model_validator
from pydantic_core import PydanticCustomError

from mixpanel_mcp.client.app import results
from mixpanel_mcp.client.gdpr import (
    cancel_deletion,
    create_deletion,
    create_retrieval,
    deletion_status,
    retrieval_status,
)
from mixpanel_mcp.tools._base import Access, Args, Needs, Result, Run, ToolGroup
from mixpanel_mcp.tools._params import PathId, UserId, at_most, json_list, optional

group = ToolGroup(
    name="gdpr",
    title="GDPR",
    description="GDPR/CCPA: export or delete all data of users.",
)

MAX_RETRIEVAL_IDS = 2000  # Mixpanel's limits per job
MAX_DELETION_IDS = 1999

ComplianceType = Literal["GDPR", "CCPA"]


def _ids(limit: int) -> Any:
    return Annotated[
        list[UserId],
        BeforeValidator(json_list),
        Field(min_length=1),
        AfterValidator(at_most(limit)),
        AfterValidator(_unique),
    ]


def _unique(ids: list[str]) -> list[str]:
    return list(dict.fromkeys(ids))


def _task(answer: Any) -> str | None:
    found = results(answer, dict).get("task_id")
    return str(found) if found is not None else None


class Retrieve(Args):
    distinct_ids: _ids(MAX_RETRIEVAL_IDS)
    compliance_type: ComplianceType = "GDPR"
    disclosure_type: optional(Literal["Data", "Categories", "Sources"]) = None  # CCPA only (checked below)

    @model_validator(mode="after")
    def _ccpa_only(self) -> Self:
        if self.disclosure_type is not None and self.compliance_type != "CCPA":
            raise PydanticCustomError(
                "ccpa_only", "disclosure_type applies to CCPA only", {"example": 'compliance_type="CCPA"'}
            )
        return self


@group.operation("retrieve", Retrieve, access=Access.WRITE, needs=Needs.GDPR, idempotent=False, summary="")
async def retrieve(run: Run, args: Retrieve) -> Result:
    task = _task(await create_retrieval(run.client, args.distinct_ids, args.compliance_type, args.disclosure_type))
    summary = (
        f"Mixpanel started a {args.compliance_type} data retrieval for {len(args.distinct_ids)} user(s): "
        f"tracking_id {task}. It can take hours; check it with retrieval_status."
    )
    return Result(
        summary, {"tracking_id": task, "users": len(args.distinct_ids), "compliance_type": args.compliance_type}
    )


class DeleteData(Args):
    distinct_ids: _ids(MAX_DELETION_IDS)
    compliance_type: ComplianceType = "GDPR"


@group.operation("delete_data", DeleteData, access=Access.DESTRUCTIVE, needs=Needs.GDPR, idempotent=False, summary="")
async def delete_data(run: Run, args: DeleteData) -> Result:
    task = _task(await create_deletion(run.client, args.distinct_ids, args.compliance_type))
    summary = (
        f"Mixpanel scheduled the deletion of every event and profile of {len(args.distinct_ids)} user(s) "
        f"({args.compliance_type}): tracking_id {task}. It can be cancelled until it starts (cancel_deletion); "
        "it may take up to 30 days (deletion_status)."
    )
    return Result(
        summary, {"tracking_id": task, "users": len(args.distinct_ids), "compliance_type": args.compliance_type}
    )


class Job(Args):
    tracking_id: PathId


def _status_of(job: dict[str, Any]) -> str:
    return str(job.get("status", "UNKNOWN"))


@group.operation("retrieval_status", Job, access=Access.READ, needs=Needs.GDPR, summary="")
async def retrieval_status_(run: Run, args: Job) -> Result:
    job = results(await retrieval_status(run.client, args.tracking_id), dict)
    link = job.get("results") or None
    summary = f"Retrieval {args.tracking_id}: {_status_of(job)}" + (f"; the export is at {link}." if link else ".")
    data = {
        "tracking_id": args.tracking_id,
        "status": _status_of(job),
        "export_url": link,
        "users": len(job.get("distinct_ids") or []),
    }
    return Result(summary, data)


@group.operation("deletion_status", Job, access=Access.READ, needs=Needs.GDPR, summary="")
async def deletion_status_(run: Run, args: Job) -> Result:
    job = results(await deletion_status(run.client, args.tracking_id), dict)
    status = _status_of(job)
    can_cancel = status in ("PENDING", "STAGING")
    summary = f"Deletion {args.tracking_id}: {status}" + ("; it can still be cancelled." if can_cancel else ".")
    data = {
        "tracking_id": args.tracking_id,
        "status": status,
        "can_cancel": can_cancel,
        "users": len(job.get("distinct_ids") or []),
        **{k: job.get(k) for k in ("compliance_type", "date_requested", "requesting_user") if k in job},
    }
    return Result(summary, data)


@group.operation("cancel_deletion", Job, access=Access.WRITE, needs=Needs.GDPR, idempotent=True, summary="")
async def cancel(run: Run, args: Job) -> Result:
    if await cancel_deletion(run.client, args.tracking_id):
        return Result(
            f"Cancelled deletion {args.tracking_id}: nothing of it will be deleted.",
            {"tracking_id": args.tracking_id, "cancelled": True},
        )
    return Result(
        f"Too late: deletion {args.tracking_id} has started and cannot be cancelled (Mixpanel answered 405).",
        {"tracking_id": args.tracking_id, "cancelled": False},
        refused=True,
    )
