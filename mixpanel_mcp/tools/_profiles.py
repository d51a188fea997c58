"""What user profiles (/engage) and group profiles (/groups) share: operators, argument shapes, sending."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import Field, TypeAdapter, ValidationError, WithJsonSchema, create_model, model_validator
from pydantic_core import PydanticCustomError

from mixpanel_mcp.client.batching import Outcome, Status, render, size
from mixpanel_mcp.client.profiles import IDEMPOTENT_OPERATORS, apply_updates, profile_update
from mixpanel_mcp.errors import describe_error
from mixpanel_mcp.tools._base import Access, Args, Needs, Result, Run, ToolGroup

MAX_UPDATES = 100_000  # per call; sent 2,000 per request
SHOWN = 50
RANGES_SHOWN = 20

Scalar = str | float | int | bool | None

# operation -> (shape of `properties`, what it does, access)
SHAPES: dict[str, tuple[Any, str, Access]] = {
    "set": (dict[str, Any], "", Access.WRITE),
    "set_once": (dict[str, Any], "only where not set yet", Access.WRITE),
    "add": (dict[str, float], "numbers added (negative subtracts)", Access.WRITE),
    "append": (dict[str, Any], "", Access.WRITE),
    "union": (dict[str, list[str | float]], "lists merged without duplicates", Access.WRITE),
    "remove": (dict[str, Any], "", Access.WRITE),
    "unset": (list[str], "", Access.WRITE),  # `properties` says it is a list of names
    "delete": (None, "the whole profile, irreversibly", Access.DESTRUCTIVE),
}

PROPERTIES_DOC = "Property name -> value; for unset, a list of property names."


def _check_properties(operation: str, value: Any) -> Any:
    shape = SHAPES[operation][0]
    if shape is None:
        if value not in (None, {}, []):
            raise PydanticCustomError("no_properties", "delete takes no properties", {"example": "omit properties"})
        return None
    if not value:
        raise PydanticCustomError(
            "properties_required",
            "{operation} needs properties",
            {"operation": operation, "example": '["plan"]' if operation == "unset" else '{"plan": "pro"}'},
        )
    try:
        return TypeAdapter(shape).validate_python(value)
    except ValidationError:
        example = {"add": '{"credits": 5}', "union": '{"tags": ["beta"]}', "unset": '["plan"]'}.get(operation, '{"plan": "pro"}')
        raise PydanticCustomError(
            "properties_shape", "wrong shape for {operation}", {"operation": operation, "example": example}
        ) from None


# User profiles only: an agent's edit is not the user being seen, and deleting by an alias deletes the
# profile the alias points to unless told otherwise (Mixpanel's $ignore_time and $ignore_alias).
IGNORE_TIME = (bool, Field(True, description="Leave $last_seen as is."))
IGNORE_ALIAS = (bool, Field(False, description="Alias: delete its own profile only."))


def _to_update(args: Any, operation: str, properties: Any) -> dict[str, Any]:
    value = "" if operation == "delete" else properties
    if not hasattr(args, "distinct_id"):
        return profile_update("$" + operation, value, group=(args.group_key, args.group_id))
    update = profile_update("$" + operation, value, distinct_id=args.distinct_id)
    if operation == "delete":
        if getattr(args, "ignore_alias", False):
            update["$ignore_alias"] = True
    elif getattr(args, "ignore_time", True):
        update["$ignore_time"] = True
    return update


def _target(args: Any) -> str:
    if hasattr(args, "distinct_id"):
        return f"user {args.distinct_id}"
    return f"group {args.group_key}={args.group_id}"


def _in_doubt(outcome: Outcome, items: list[Any]) -> list[dict[str, Any]]:
    """The in-doubt updates named: index, operation and profile."""
    named = []
    for entry in outcome.in_doubt[:SHOWN]:
        item = items[entry["index"]]
        who = {"distinct_id": item.distinct_id} if hasattr(item, "distinct_id") else {"group_key": item.group_key, "group_id": item.group_id}
        named.append({"index": entry["index"], "operation": item.operation if hasattr(item, "operation") else None, **who})
    return named


IN_DOUBT_ADVICE = (
    "the request failed after it may have reached Mixpanel, and add/append/union/remove would apply twice if "
    "resent, so they were not: check those profiles (export operation profiles) before sending them again."
)


def _report(outcome: Outcome, items: list[Any], operation: str) -> dict[str, Any]:
    """Counts and what needs attention; raises the error when nothing is known to be applied."""
    applied, doubtful = outcome.count(Status.STORED), outcome.count(Status.IN_DOUBT)
    if outcome.error is not None and not (applied or doubtful or outcome.count(Status.UNCONFIRMED)):
        raise outcome.error  # nothing applied: the error says what to do, and every update may be sent again
    data: dict[str, Any] = {"operation": operation, "updates_sent": outcome.total, "applied": applied}
    if doubtful:
        data["in_doubt"] = doubtful
        data["in_doubt_updates"] = _in_doubt(outcome, items)
        if doubtful > SHOWN:
            data["in_doubt_updates_not_shown"] = doubtful - SHOWN
    for status in (Status.NOT_STORED, Status.UNCONFIRMED):
        ranges = outcome.ranges[status]
        if ranges:
            data["not_applied" if status is Status.NOT_STORED else "unconfirmed"] = {
                "count": size(ranges), "ranges": render(ranges, RANGES_SHOWN)
            }
    if outcome.error is not None:
        data["stopped_by"] = describe_error(outcome.error)
    return data


def add_profile_operations(group: ToolGroup, identity: type[Args], operations: list[str], send: str) -> None:
    """Register one operation per profile operator, plus `batch`, on `group`.

    `identity` holds the fields naming the profile; `send` is the endpoint, "engage" or "groups".
    """

    for operation in operations:
        shape, summary, access = SHAPES[operation]
        fields: dict[str, Any] = {}
        if shape is not None:
            fields["properties"] = (shape, Field(min_length=1, description=PROPERTIES_DOC))
        if send == "engage":
            fields.update({"ignore_alias": IGNORE_ALIAS} if operation == "delete" else {"ignore_time": IGNORE_TIME})
        model = create_model(f"{send}_{operation}_args", __base__=identity, **fields)

        async def handler(run: Run, args: Any, operation: str = operation) -> Result:
            update = _to_update(args, operation, getattr(args, "properties", None))
            outcome = await apply_updates(run.client, send, [update])
            data = _report(outcome, [args], operation)
            if outcome.count(Status.IN_DOUBT):
                return Result(summary=f"{operation} on {_target(args)} is in doubt: {IN_DOUBT_ADVICE}", data=data)
            data["mixpanel"] = outcome.answer
            return Result(summary=f"{operation} on {_target(args)}: Mixpanel accepted the update.", data=data)

        idempotent = "$" + operation in IDEMPOTENT_OPERATORS
        group.operation(operation, model, access=access, needs=Needs.TOKEN, summary=summary, idempotent=idempotent)(
            handler
        )

    item_fields: dict[str, Any] = {
        "operation": (Literal[tuple(operations)], Field(description="Operator for this update.")),  # type: ignore[misc]
        "properties": (Any, Field(default=None, description=PROPERTIES_DOC)),
    }
    if send == "engage":
        item_fields.update(ignore_time=IGNORE_TIME, ignore_alias=IGNORE_ALIAS)
    item_base = create_model(f"{send}_update", __base__=identity, **item_fields)

    class Update(item_base):  # type: ignore[valid-type,misc]
        @model_validator(mode="after")
        def _shape(self) -> Self:
            self.properties = _check_properties(self.operation, self.properties)
            return self

    batch_args = create_model(
        f"{send}_batch_args",
        __base__=Args,
        updates=(
            Annotated[list[Update], WithJsonSchema({"type": "array", "items": {"type": "object"}})],
            Field(min_length=1, max_length=MAX_UPDATES),
        ),
    )

    async def batch(run: Run, args: Any) -> Result:
        updates = [_to_update(u, u.operation, u.properties) for u in args.updates]

        async def progress(done: int, total: int) -> None:
            await run.progress(done, total, f"{done:,} of {total:,} updates sent")

        outcome = await apply_updates(run.client, send, updates, progress=progress)
        data = _report(outcome, args.updates, "batch")
        data.update(requests=outcome.requests, retries=outcome.retries, seconds=round(outcome.seconds, 2))
        summary = f"Applied {data['applied']:,} of {len(updates):,} profile update(s) in {outcome.batches:,} request(s)."
        if data.get("in_doubt"):
            summary += f" {data['in_doubt']:,} are in doubt (in_doubt_updates): {IN_DOUBT_ADVICE}"
        if outcome.error is not None:
            summary += (
                f" Stopped early: {data['stopped_by']} The updates in not_applied / unconfirmed (index ranges) "
                "can be sent again."
            )
        return Result(summary=summary, data=data, narrow_hint="send fewer updates per call")

    any_destructive = "delete" in operations
    group.operation(
        "batch",
        batch_args,
        access=Access.DESTRUCTIVE if any_destructive else Access.WRITE,
        needs=Needs.TOKEN,
        summary="updates: objects shaped like single calls (operation, ids, properties...)",
        idempotent=False,
    )(batch)
