"""Annotations: notes pinned to a date on the project's charts (a release, an outage), and their tags."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Self

from pydantic import AfterValidator, BeforeValidator, Field, model_validator
from pydantic_core import PydanticCustomError

from mixpanel_mcp.client.annotations import (
    create_annotation,
    create_tag,
    delete_annotation,
    get_annotation,
    list_annotations,
    list_tags,
    update_annotation,
)
from mixpanel_mcp.client.app import results
from mixpanel_mcp.tools._base import Access, Args, Needs, Result, Run, ToolGroup
from mixpanel_mcp.tools._params import Date, at_most, check_order, json_list, optional, positive

group = ToolGroup(
    name="annotations",
    title="Annotations",
    description="Chart notes (a release, an outage) and their tags.",
)

SHOWN = 5


def _moment(value: Any) -> str:
    """Mixpanel's "yyyy-mm-dd HH:mm:ss"; a plain date is midnight."""
    text = str(value).strip().replace("T", " ")
    for form in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d"):
        try:
            return dt.datetime.strptime(text, form).strftime("%Y-%m-%d %H:%M:%S")
        except ValueError:
            continue
    raise PydanticCustomError(
        "annotation_date",
        "must be yyyy-mm-dd or yyyy-mm-dd HH:mm:ss, not '{value}'",
        {"value": text, "example": "2026-03-02 14:00:00"},
    )


Moment = Annotated[str, BeforeValidator(_moment), Field(description="yyyy-mm-dd[ HH:mm:ss]")]
AnnotationId = Annotated[int, AfterValidator(positive)]
Description = Annotated[str, Field(min_length=1, max_length=4000)]
TagIds = Annotated[
    list[AnnotationId], BeforeValidator(json_list), AfterValidator(at_most(100)), Field(description="Tag ids.")
]


def _line(entry: Any) -> str:
    if not isinstance(entry, dict):
        return "?"
    return f"{str(entry.get('date', ''))[:10]} {entry.get('description', '')!s:.60} (#{entry.get('id')})"


def _one(answer: Any, verb: str) -> Result:
    entry = results(answer, dict)
    return Result(f"{verb} annotation {_line(entry)}.", {"annotation": entry})


# -- list / get -------------------------------------------------------------------------------------


class ListAnnotations(Args):
    from_date: optional(Date) = None
    to_date: optional(Date) = None

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        check_order(self.from_date, self.to_date)
        return self


@group.operation("list", ListAnnotations, access=Access.READ, needs=Needs.APP, summary="")
async def list_(run: Run, args: ListAnnotations) -> Result:
    entries = results(await list_annotations(run.client, args.from_date, args.to_date), list)
    span = (
        f" from {args.from_date or 'the start'} to {args.to_date or 'today'}" if args.from_date or args.to_date else ""
    )
    shown = "; ".join(_line(e) for e in entries[:SHOWN]) + ("; ..." if len(entries) > SHOWN else "")
    summary = f"{len(entries)} annotation(s){span}" + (f": {shown}." if entries else ".")
    return Result(summary, {"count": len(entries), "annotations": entries}, narrow_hint="give from_date and to_date")


class OneAnnotation(Args):
    annotation_id: AnnotationId


@group.operation("get", OneAnnotation, access=Access.READ, needs=Needs.APP, summary="")
async def get(run: Run, args: OneAnnotation) -> Result:
    return _one(await get_annotation(run.client, args.annotation_id), "Found")


# -- create / update / delete ------------------------------------------------------------------------


class CreateAnnotation(Args):
    date: Moment
    description: Description
    tags: optional(TagIds) = None


@group.operation("create", CreateAnnotation, access=Access.WRITE, needs=Needs.APP, idempotent=False, summary="")
async def create(run: Run, args: CreateAnnotation) -> Result:
    return _one(await create_annotation(run.client, args.date, args.description, args.tags), "Created")


class UpdateAnnotation(Args):
    annotation_id: AnnotationId
    description: optional(Description) = None
    tags: optional(TagIds) = None

    @model_validator(mode="after")
    def _something(self) -> Self:
        if self.description is None and self.tags is None:
            raise PydanticCustomError(
                "nothing_to_change", "give description and/or tags", {"example": 'description="Release 2.1"'}
            )
        return self


@group.operation("update", UpdateAnnotation, access=Access.WRITE, needs=Needs.APP, idempotent=True, summary="")
async def update(run: Run, args: UpdateAnnotation) -> Result:
    changes = {k: v for k, v in (("description", args.description), ("tags", args.tags)) if v is not None}
    return _one(await update_annotation(run.client, args.annotation_id, changes), "Updated")


@group.operation("delete", OneAnnotation, access=Access.DESTRUCTIVE, needs=Needs.APP, idempotent=True, summary="")
async def delete(run: Run, args: OneAnnotation) -> Result:
    deleted = results(await delete_annotation(run.client, args.annotation_id), dict)
    return Result(f"Deleted annotation #{args.annotation_id}.", {"deleted": deleted.get("id", args.annotation_id)})


# -- tags --------------------------------------------------------------------------------------------


class NoArgs(Args):
    pass


@group.operation("tags", NoArgs, access=Access.READ, needs=Needs.APP, summary="")
async def tags(run: Run, args: NoArgs) -> Result:
    answer = await list_tags(run.client)
    found = answer if isinstance(answer, list) else results(answer, list)
    names = ", ".join(f"{t.get('name')} (#{t.get('id')})" for t in found[:20] if isinstance(t, dict))
    return Result(
        f"{len(found)} annotation tag(s)" + (f": {names}." if names else "."), {"count": len(found), "tags": found}
    )


class CreateTag(Args):
    name: Annotated[str, Field(min_length=1, max_length=255)]


@group.operation("create_tag", CreateTag, access=Access.WRITE, needs=Needs.APP, idempotent=False, summary="")
async def create_tag_(run: Run, args: CreateTag) -> Result:
    tag = await create_tag(run.client, args.name)
    tag = tag if isinstance(tag, dict) else {}
    return Result(f"Created annotation tag {tag.get('name', args.name)!r} (#{tag.get('id')}).", {"tag": tag})
