"""The data dictionary: list, create/replace and delete event and profile schemas."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import AfterValidator, Field, WithJsonSchema, model_validator
from pydantic_core import PydanticCustomError

from mixpanel_mcp.client.lexicon import delete_schemas, list_schemas, upload_schema, upload_schemas
from mixpanel_mcp.tools._base import Access, Args, Needs, Result, Run, ToolGroup
from mixpanel_mcp.tools._params import optional

group = ToolGroup(
    name="lexicon",
    title="Lexicon",
    description="The data dictionary: list, create/replace and delete event and profile schemas. Needs a service account.",
)

MAX_ENTRIES = 3000
PROPERTY_TYPES = frozenset({"array", "boolean", "integer", "null", "number", "object", "string"})
ONE_ENTITY = 'entity_type="event", name="Signed up"'
SCHEMA_EXAMPLE = '{"description": "User signed up", "properties": {"plan": {"type": "string", "description": "Plan chosen"}}}'


def _check_schema(value: dict[str, Any]) -> dict[str, Any]:
    """The part of Mixpanel's schema rules worth checking before sending: each property has a JSON type."""
    properties = value.get("properties")
    if properties is None:
        return value
    if not isinstance(properties, dict):
        raise PydanticCustomError(
            "schema_properties", "properties must map names to {type, description}", {"example": SCHEMA_EXAMPLE}
        )
    for name, prop in properties.items():
        kind = prop.get("type") if isinstance(prop, dict) else None
        kinds = kind if isinstance(kind, list) else [kind]
        if not kinds or not all(k in PROPERTY_TYPES for k in kinds):
            raise PydanticCustomError(
                "schema_property_type",
                "property '{name}' needs a type: one of " + ", ".join(sorted(PROPERTY_TYPES)),
                {"name": name, "example": SCHEMA_EXAMPLE},
            )
    return value


EntityType = Literal["event", "profile"]
EntityName = Annotated[
    str, Field(min_length=1, max_length=255, description='Event name, or "$user" for the user profile schema.')
]
Schema = Annotated[dict[str, Any], AfterValidator(_check_schema)]
ENTRIES_SCHEMA = {
    "type": "array",
    "description": "Bulk form; or give entity_type + name + schema.",
    "items": {
        "type": "object",
        "properties": {
            "entityType": {"enum": ["event", "profile"]},
            "name": {"type": "string"},
            "schemaJson": {"type": "object"},
        },
        "required": ["entityType", "name", "schemaJson"],
    },
}


def _level(entity_type: str | None, name: str | None) -> str:
    if name is not None:
        return f"{entity_type} '{name}'"
    return f"{entity_type} entities" if entity_type else "the whole project"


def _results(answer: Any, kind: type) -> Any:
    """Mixpanel's `results`, or an empty one of the kind expected."""
    results = answer.get("results") if isinstance(answer, dict) else None
    return results if isinstance(results, kind) else kind()


def _name_needs_type(entity_type: str | None, name: str | None) -> None:
    if name is not None and entity_type is None:
        raise PydanticCustomError("entity_type_required", "name needs entity_type", {"example": ONE_ENTITY})


# -- list -----------------------------------------------------------------------------------


class ListSchemas(Args):
    entity_type: optional(EntityType) = None
    name: optional(EntityName) = None

    @model_validator(mode="after")
    def _levels(self) -> Self:
        _name_needs_type(self.entity_type, self.name)
        return self


@group.operation("list", ListSchemas, access=Access.READ, needs=Needs.LEXICON, summary="schemas: all, of a type, or one")
async def list_(run: Run, args: ListSchemas) -> Result:
    answer = await list_schemas(run.client, args.entity_type, args.name)
    if args.name is not None:
        schema = answer
        if not isinstance(schema, dict):
            summary = f"No schema for {_level(args.entity_type, args.name)}."
            return Result(summary, {"entity_type": args.entity_type, "name": args.name, "schema": None})
        count = len(schema.get("properties") or {})
        summary = f"Schema of {_level(args.entity_type, args.name)}: {count} propert{'y' if count == 1 else 'ies'} described."
        return Result(summary, {"entity_type": args.entity_type, "name": args.name, "schema": schema})
    entries = _results(answer, list)
    names = [str(e.get("name")) for e in entries[:5] if isinstance(e, dict)]
    summary = f"{len(entries)} schema(s) for {_level(args.entity_type, None)}"
    summary += (": " + ", ".join(names) + (", ..." if len(entries) > 5 else "") + ".") if names else "."
    return Result(summary, {"count": len(entries), "schemas": entries}, narrow_hint="give entity_type, or entity_type + name")


# -- upsert ---------------------------------------------------------------------------------


class SchemaEntry(Args):
    entityType: EntityType  # noqa: N815 - Mixpanel's own key
    name: EntityName
    schemaJson: Schema  # noqa: N815


class UpsertSchemas(Args):
    entries: Annotated[list[SchemaEntry] | None, WithJsonSchema(ENTRIES_SCHEMA)] = Field(
        None, min_length=1, max_length=MAX_ENTRIES
    )
    truncate: bool = Field(False, description="Bulk only: delete the WHOLE dictionary before adding entries.")
    entity_type: optional(EntityType) = None
    name: optional(EntityName) = None
    schema_: Annotated[Schema | None, WithJsonSchema({"type": "object"})] = Field(
        None, alias="schema", description="One entity's schema: {description, properties: {name: {type, description}}}."
    )

    @model_validator(mode="after")
    def _one_form(self) -> Self:
        single = (self.entity_type, self.name, self.schema_)
        if self.entries is not None:
            if any(v is not None for v in single):
                raise PydanticCustomError(
                    "one_form", "give entries, or entity_type + name + schema, not both", {"example": "entries=[...]"}
                )
            return self
        if self.truncate:
            raise PydanticCustomError("truncate_bulk", "truncate only applies with entries", {"example": "truncate=false"})
        if any(v is None for v in single):
            raise PydanticCustomError(
                "single_form",
                "give entries, or all of entity_type, name and schema",
                {"example": f"{ONE_ENTITY}, schema={SCHEMA_EXAMPLE}"},
            )
        if self.name in (".", "..") or "/" in self.name or "\\" in self.name:  # type: ignore[operator]
            # The one-entity upload has the name in its path, where these would change the path itself.
            raise PydanticCustomError(
                "name_not_a_segment",
                "this name cannot be sent in the one-schema form (it contains '/' or '\\', or is '.' or '..'); "
                "send it in the bulk form",
                {"example": 'entries=[{"entityType": "event", "name": "a/b", "schemaJson": {"description": "..."}}]'},
            )
        return self


@group.operation(
    "upsert",
    UpsertSchemas,
    access=Access.DESTRUCTIVE,
    needs=Needs.LEXICON,
    idempotent=True,
    summary="create/replace schemas; truncate=true wipes the dictionary first",
)
async def upsert(run: Run, args: UpsertSchemas) -> Result:
    if args.entries is not None:
        entries = [e.model_dump() for e in args.entries]
        answer = await upload_schemas(run.client, entries, truncate=args.truncate)
        results = _results(answer, dict)
        added, deleted = results.get("added", len(entries)), results.get("deleted", 0)
        summary = f"Mixpanel added or replaced {added} schema(s)"
        summary += f" after deleting the whole dictionary ({deleted} schema(s))." if args.truncate else "."
        return Result(summary, {"sent": len(entries), "truncate": args.truncate, "added": added, "deleted": deleted})
    assert args.entity_type is not None and args.name is not None and args.schema_ is not None
    await upload_schema(run.client, args.entity_type, args.name, args.schema_)
    summary = f"Saved the schema of {_level(args.entity_type, args.name)}, replacing any earlier one."
    return Result(summary, {"entity_type": args.entity_type, "name": args.name, "saved": True})


# -- delete ---------------------------------------------------------------------------------


class DeleteSchemas(Args):
    entity_type: optional(EntityType) = None
    name: optional(EntityName) = None
    all: bool = Field(False, description="Must be true to delete every schema (no entity_type).")

    @model_validator(mode="after")
    def _levels(self) -> Self:
        _name_needs_type(self.entity_type, self.name)
        if self.entity_type is None and not self.all:
            raise PydanticCustomError(
                "scope_required", "give entity_type (and name), or all=true to delete every schema", {"example": ONE_ENTITY}
            )
        if self.entity_type is not None and self.all:
            raise PydanticCustomError(
                "all_alone", "all=true deletes everything: leave out entity_type and name", {"example": "all=true"}
            )
        return self


@group.operation(
    "delete",
    DeleteSchemas,
    access=Access.DESTRUCTIVE,
    needs=Needs.LEXICON,
    idempotent=True,
    summary="delete schemas: one, of a type, or all",
)
async def delete(run: Run, args: DeleteSchemas) -> Result:
    answer = await delete_schemas(run.client, args.entity_type, args.name)
    count = _results(answer, dict).get("delete_count", 0)
    summary = f"Deleted {count} schema(s) of {_level(args.entity_type, args.name)}."
    return Result(summary, {"entity_type": args.entity_type, "name": args.name, "delete_count": count})
