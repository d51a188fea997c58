"""How a tool group is declared: one pydantic model and one short async function per operation.

A group becomes one MCP tool. Its arguments are flat (`{"operation": "set", "distinct_id": ...}`): the
advertised schema merges the operations' fields under an `operation` enum, and the call is validated by a
pydantic discriminated union built from the same models, so the schema and the validation cannot drift.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationInfo,
    create_model,
    field_validator,
)
from pydantic_core import PydanticCustomError

from mixpanel_mcp.client import MixpanelClient
from mixpanel_mcp.config import Settings


class Access(StrEnum):
    READ = "read"
    WRITE = "write"
    DESTRUCTIVE = "destructive"


class Needs(StrEnum):
    """Which credential an operation needs; a tool only advertises operations the settings allow."""

    TOKEN = "token"  # /track, /engage, /groups
    IMPORT = "import"  # /import
    QUERY = "query"  # Query API and Export
    LEXICON = "lexicon"  # Lexicon Schemas API
    APP = "app"  # the app API: annotations, listing lookup tables (service account)
    WORKSPACE = "workspace"  # feature flag management and experiments (service account + workspace)
    GDPR = "gdpr"  # the GDPR API (GDPR OAuth token + project token)
    SCRIPT = "script"  # JQL: the Query API of a real project (the sandbox runs no JavaScript)

    def allowed(self, settings: Settings) -> bool:
        return {
            Needs.TOKEN: settings.can_track,
            Needs.IMPORT: settings.can_import,
            Needs.QUERY: settings.can_query,
            Needs.SCRIPT: settings.can_query and not settings.sandbox,
            Needs.LEXICON: settings.can_lexicon,
            Needs.APP: settings.can_app,
            Needs.WORKSPACE: settings.can_workspace,
            Needs.GDPR: settings.can_gdpr,
        }[self]

    @property
    def settings_text(self) -> str:
        """What to configure, for an agent calling an operation that is not listed for lack of it."""
        return {
            Needs.TOKEN: "MIXPANEL_PROJECT_TOKEN",
            Needs.IMPORT: "a service account, MIXPANEL_API_SECRET or MIXPANEL_PROJECT_TOKEN",
            Needs.QUERY: "a service account (with MIXPANEL_PROJECT_ID) or MIXPANEL_API_SECRET",
            Needs.LEXICON: "a service account (with MIXPANEL_PROJECT_ID)",
            Needs.APP: "a service account (with MIXPANEL_PROJECT_ID)",
            Needs.WORKSPACE: "a service account and MIXPANEL_WORKSPACE_ID",
            Needs.GDPR: "MIXPANEL_GDPR_TOKEN and MIXPANEL_PROJECT_TOKEN",
        }[self]


def _numeric(annotation: Any) -> str | None:
    """"number" for a field that holds only numbers, "numbers" for a list of them, else None.

    pydantic's lax mode reads `true` as 1 wherever a number is expected; no id, limit or count means a boolean.
    """
    origin = get_origin(annotation)
    if origin is Annotated:
        return _numeric(get_args(annotation)[0])
    if annotation in (int, float):
        return "number"
    if origin in (Union, types.UnionType):
        members = [_numeric(member) for member in get_args(annotation) if member is not type(None)]
        return members[0] if members and all(member == members[0] for member in members) else None
    if origin is list and _numeric(get_args(annotation)[0]) == "number":
        return "numbers"
    return None


class Args(BaseModel):
    """Base of every operation's arguments: unknown keys are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_boolean_for_a_number(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, bool) or (isinstance(value, list) and any(isinstance(item, bool) for item in value)):
            shape = _numeric(cls.model_fields[info.field_name].annotation) if info.field_name else None
            if shape == "number" and isinstance(value, bool):
                raise PydanticCustomError(
                    "number_not_boolean", "must be a number, not {value}", {"value": str(value).lower(), "example": "12"}
                )
            if shape == "numbers" and isinstance(value, list):
                raise PydanticCustomError(
                    "numbers_not_boolean", "must be a list of numbers, without true or false", {"example": "[12, 14]"}
                )
        return value


ProgressFn = Callable[[float, float | None, str | None], Awaitable[None]]


async def _no_progress(progress: float, total: float | None, message: str | None) -> None:
    return None


@dataclass
class Run:
    """What an operation gets besides its arguments."""

    client: MixpanelClient
    settings: Settings
    progress: ProgressFn = _no_progress


@dataclass
class Result:
    """An operation's answer: one or two sentences for the agent, and the data as structured content."""

    summary: str
    data: dict[str, Any]
    narrow_hint: str = "narrow the request"
    # Nothing was sent: the agent must change something first. Answered as an error, with the data
    # (e.g. which records break which rule) still attached.
    refused: bool = False


Handler = Callable[[Run, Any], Awaitable[Result]]
Refinement = Callable[[Any], Access]


def _truncating(args: Any) -> Access:
    """A Lexicon upsert replaces schemas (a write); with truncate=true it first wipes the whole dictionary."""
    return Access.DESTRUCTIVE if getattr(args, "truncate", False) else Access.WRITE


def _deleting(args: Any) -> Access:
    """A profile batch is a write unless one of its updates deletes a profile."""
    updates = getattr(args, "updates", None) or []
    return Access.DESTRUCTIVE if any(getattr(u, "operation", None) == "delete" for u in updates) else Access.WRITE


# Operations whose class depends on the arguments of the call, by (group, operation). Their registered
# `access` is the most they can do (what annotations and read-only filtering use); `Operation.access_for`
# gives the class of one call (what confirmation uses). This table and the `access=` of each registration
# are the whole classification.
REFINEMENTS: dict[tuple[str, str], Refinement] = {
    ("lexicon", "upsert"): _truncating,
    ("engage", "batch"): _deleting,
    ("groups", "batch"): _deleting,
}


@dataclass(frozen=True)
class Operation:
    name: str
    args: type[Args]
    handler: Handler
    access: Access  # the most this operation can do
    needs: Needs
    idempotent: bool
    summary: str
    refine: Refinement | None = None

    @property
    def least_access(self) -> Access:
        """What every call of it does at least: an operation refined by its arguments is a write unless they make
        it more (a Lexicon upsert without truncate is no deletion, and must not be called one)."""
        return self.access if self.refine is None else Access.WRITE

    def access_for(self, args: Any) -> Access:
        """The class of one call: `access`, or what the arguments make it."""
        return self.access if self.refine is None else self.refine(args)


@dataclass
class ToolGroup:
    """One MCP tool: a Mixpanel endpoint group and its operations."""

    name: str
    title: str
    description: str
    operations: dict[str, Operation] = field(default_factory=dict)
    single: bool = False  # one operation, no `operation` argument (insights, jql)

    def operation(
        self,
        name: str,
        args: type[Args],
        *,
        access: Access,
        needs: Needs,
        summary: str,
        idempotent: bool | None = None,
    ) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.operations[name] = Operation(
                name=name,
                args=args,
                handler=handler,
                access=access,
                needs=needs,
                idempotent=access is Access.READ if idempotent is None else idempotent,
                summary=summary,
                refine=REFINEMENTS.get((self.name, name)),
            )
            return handler

        return register

    def available(self, settings: Settings) -> list[Operation]:
        return [op for op in self.operations.values() if op.needs.allowed(settings)]


@functools.cache
def args_schema(args: type[Args]) -> dict[str, Any]:
    """An operation's JSON schema, built once: both the tool's schema and its description read it."""
    return args.model_json_schema()


def discriminated(group: ToolGroup, operations: list[Operation]) -> TypeAdapter[Any]:
    """The validating type for a call: a union of the operations' models tagged by `operation`."""
    if group.single:
        return TypeAdapter(operations[0].args)
    variants = [
        create_model(
            f"{group.name}_{op.name}",
            __base__=op.args,
            operation=(Literal[op.name], Field()),  # type: ignore[valid-type]
        )
        for op in operations
    ]
    if len(variants) == 1:
        return TypeAdapter(variants[0])
    # A callable discriminator, not `discriminator="operation"`: pydantic refuses that form once Args has a
    # validator on every field (the boolean rule), though `operation` is only ever a string.
    tagged = tuple(Annotated[variant, Tag(op.name)] for variant, op in zip(variants, operations, strict=True))
    return TypeAdapter(Annotated[Union[tagged], Discriminator(_operation_of)])  # noqa: UP007


def _operation_of(value: Any) -> Any:
    return value.get("operation") if isinstance(value, dict) else getattr(value, "operation", None)


def input_schema(group: ToolGroup, operations: list[Operation]) -> dict[str, Any]:
    """A flat object schema: `operation` plus every operation's fields (schemas hoisted, titles dropped)."""
    properties: dict[str, Any] = {}
    defs: dict[str, Any] = {}
    required: list[str] = []
    if not group.single:
        properties["operation"] = {"type": "string", "enum": [op.name for op in operations]}
        required.append("operation")
    for op in operations:
        schema = args_schema(op.args)
        defs.update(schema.get("$defs", {}))
        for name, prop in schema.get("properties", {}).items():
            properties[name] = _merge(properties[name], prop) if name in properties else prop
        if group.single:
            required.extend(schema.get("required", []))
    result: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        result["required"] = required
    if defs:
        result["$defs"] = defs
    return _compact(result)


def _merge(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    """One schema for a field that operations type differently: `anyOf` their shapes, one description."""
    if _shape(first) == _shape(second):
        return first
    description = first.get("description") or second.get("description")
    variants = []
    for schema in (*first.get("anyOf", [first]), *second.get("anyOf", [second])):
        # Only the type is advertised; the operation's own model checks the details.
        shape = {k: v for k, v in schema.items() if k in ("type", "items")}
        if shape not in variants:
            variants.append(shape)
    merged: dict[str, Any] = {"anyOf": variants}
    if description:
        merged["description"] = description
    return merged


# Limits the server checks itself; advertising them costs tokens on every turn and helps an LLM little.
_UNADVERTISED = frozenset({"title", "examples", "minLength", "maxLength", "minItems", "minProperties", "default"})


def _shape(schema: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in schema.items() if k not in ("default", "description", "title")}


def _compact(node: Any) -> Any:
    """Drop what costs tokens and tells an LLM little (examples stay in error messages)."""
    if isinstance(node, dict):
        # `X | None = None` is advertised as plain X: leaving the field out is how a caller says None.
        variants = node.get("anyOf")
        if isinstance(variants, list) and {"type": "null"} in variants and len(variants) == 2:
            (kept,) = [v for v in variants if v != {"type": "null"}]
            node = {**{k: v for k, v in node.items() if k != "anyOf"}, **kept}
        return {
            k: _compact(v)
            for k, v in node.items()
            if not (k in _UNADVERTISED and not isinstance(v, dict)) and not (k == "additionalProperties" and v is True)
        }
    if isinstance(node, list):
        return [_compact(v) for v in node]
    return node


def signature(op: Operation) -> str:
    """`(required, optional?)`: the argument list the description shows for an operation."""
    schema = args_schema(op.args)
    required = set(schema.get("required", []))
    return "(" + ", ".join(n if n in required else n + "?" for n in schema.get("properties", {})) + ")"


def describe(group: ToolGroup, operations: list[Operation]) -> str:
    """The group's sentence, then operations sharing an argument list on one line, then per-op notes."""
    if group.single:
        arguments = signature(operations[0])[1:-1]
        return f"{group.description}\nArguments: {arguments}."
    by_signature: dict[str, list[str]] = {}
    for op in operations:
        by_signature.setdefault(signature(op), []).append(op.name)
    calls = "; ".join("|".join(names) + sig for sig, names in by_signature.items())
    lines = [group.description, f"operation: {calls}."]  # `name?` is optional, as in TypeScript
    lines.extend(f"{op.name}: {op.summary}" for op in operations if op.summary)
    return "\n".join(lines)
