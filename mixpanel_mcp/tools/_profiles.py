"""What user profiles (/engage) and group profiles (/groups) share: operators, argument shapes, sending."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import Field, TypeAdapter, ValidationError, WithJsonSchema, create_model, model_validator
from pydantic_core import PydanticCustomError

from mixpanel_mcp.client.profiles import IDEMPOTENT_OPERATORS, profile_update, send_updates
from mixpanel_mcp.tools._base import Access, Args, Needs, Result, Run, ToolGroup
from mixpanel_mcp.tools._params import MAX_BATCH

Scalar = str | float | int | bool | None

# operation -> (shape of `properties`, what it does, access)
SHAPES: dict[str, tuple[Any, str, Access]] = {
    "set": (dict[str, Any], "", Access.WRITE),
    "set_once": (dict[str, Any], "only where not set yet", Access.WRITE),
    "add": (dict[str, float], "numbers added (negative subtracts)", Access.WRITE),
    "append": (dict[str, Any], "", Access.WRITE),
    "union": (dict[str, list[str | float]], "lists merged without duplicates", Access.WRITE),
    "remove": (dict[str, Any], "", Access.WRITE),
    "unset": (list[str], "properties is a list of names", Access.WRITE),
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


def _to_update(args: Any, operation: str, properties: Any) -> dict[str, Any]:
    value = "" if operation == "delete" else properties
    if hasattr(args, "distinct_id"):
        return profile_update("$" + operation, value, distinct_id=args.distinct_id)
    return profile_update("$" + operation, value, group=(args.group_key, args.group_id))


def _target(args: Any) -> str:
    if hasattr(args, "distinct_id"):
        return f"user {args.distinct_id}"
    return f"group {args.group_key}={args.group_id}"


def add_profile_operations(group: ToolGroup, identity: type[Args], operations: list[str], send: str) -> None:
    """Register one operation per profile operator, plus `batch`, on `group`.

    `identity` holds the fields naming the profile; `send` is the endpoint, "engage" or "groups".
    """

    for operation in operations:
        shape, summary, access = SHAPES[operation]
        fields: dict[str, Any] = {}
        if shape is not None:
            fields["properties"] = (shape, Field(min_length=1, description=PROPERTIES_DOC))
        model = create_model(f"{send}_{operation}_args", __base__=identity, **fields)

        async def handler(run: Run, args: Any, operation: str = operation) -> Result:
            update = _to_update(args, operation, getattr(args, "properties", None))
            response = await send_updates(run.client, send, [update])
            return Result(
                summary=f"{operation} on {_target(args)}: Mixpanel accepted the update.",
                data={"operation": operation, "updates_sent": 1, "mixpanel": response},
            )

        idempotent = "$" + operation in IDEMPOTENT_OPERATORS
        group.operation(operation, model, access=access, needs=Needs.TOKEN, summary=summary, idempotent=idempotent)(
            handler
        )

    item_fields: dict[str, Any] = {
        "operation": (Literal[tuple(operations)], Field(description="Operator for this update.")),  # type: ignore[misc]
        "properties": (Any, Field(default=None, description=PROPERTIES_DOC)),
    }
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
            Field(min_length=1, max_length=MAX_BATCH),
        ),
    )

    async def batch(run: Run, args: Any) -> Result:
        updates = [_to_update(u, u.operation, u.properties) for u in args.updates]
        response = await send_updates(run.client, send, updates)
        return Result(
            summary=f"Sent {len(updates)} profile update(s); Mixpanel accepted the request.",
            data={"operation": "batch", "updates_sent": len(updates), "mixpanel": response},
        )

    any_destructive = "delete" in operations
    group.operation(
        "batch",
        batch_args,
        access=Access.DESTRUCTIVE if any_destructive else Access.WRITE,
        needs=Needs.TOKEN,
        summary=f"updates: up to {MAX_BATCH} objects shaped like single calls (operation, id fields, properties)",
        idempotent=False,
    )(batch)

