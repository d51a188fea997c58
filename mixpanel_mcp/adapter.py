"""The only code that turns a `ToolGroup` into an MCP tool: schema, annotations, validation, errors, results."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.tools import Tool
from mcp.server.mcpserver.utilities.func_metadata import ArgModelBase, FuncMetadata
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import ConfigDict, Field, TypeAdapter, ValidationError

from mixpanel_mcp.client import CallStats, MixpanelClient, MixpanelError, call_stats
from mixpanel_mcp.config import Settings
from mixpanel_mcp.errors import describe_error, describe_validation
from mixpanel_mcp.results import bound, clean, render
from mixpanel_mcp.tools._base import Access, Operation, Run, ToolGroup, describe, discriminated, input_schema

logger = logging.getLogger(__name__)


@dataclass
class AppState:
    """What the server's lifespan holds: one client for the process."""

    settings: Settings
    client: MixpanelClient


def annotations(group: ToolGroup, operations: list[Operation]) -> ToolAnnotations:
    read_only = all(op.access is Access.READ for op in operations)
    return ToolAnnotations(
        read_only_hint=read_only,
        destructive_hint=False if read_only else any(op.access is Access.DESTRUCTIVE for op in operations),
        idempotent_hint=all(op.idempotent for op in operations),
        open_world_hint=True,
    )


class MixpanelTool(Tool):
    """An MCP tool whose flat arguments are validated by the group's discriminated union."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    group: ToolGroup = Field(exclude=True)
    ops: dict[str, Operation] = Field(exclude=True)
    validator: TypeAdapter[Any] = Field(exclude=True)

    @classmethod
    def build(cls, group: ToolGroup, operations: list[Operation]) -> MixpanelTool:
        return cls(
            fn=_unused,
            name=group.name,
            title=group.title,
            description=describe(group, operations),
            parameters=input_schema(group, operations),
            fn_metadata=FuncMetadata(arg_model=ArgModelBase),
            is_async=True,
            annotations=annotations(group, operations),
            group=group,
            ops={op.name: op for op in operations},
            validator=discriminated(group, operations),
        )

    async def run(self, arguments: dict[str, Any], context: Any, convert_result: bool = False) -> Any:
        try:
            args = self.validator.validate_python(arguments)
        except ValidationError as exc:
            raise ToolError(describe_validation(self.name, exc, list(self.ops), self.group.single)) from None
        op = next(iter(self.ops.values())) if self.group.single else self.ops[args.operation]
        state: AppState = context.request_context.lifespan_context
        run = Run(client=state.client, settings=state.settings, progress=context.report_progress)
        stats = CallStats()
        token = call_stats.set(stats)
        try:
            result = await op.handler(run, args)
        except MixpanelError as exc:
            raise ToolError(describe_error(exc)) from None
        finally:
            call_stats.reset(token)
        data, _ = bound(clean(result.data), result.narrow_hint)
        if stats.cached:
            data["cached"] = True
        if stats.budget:
            data["budget"] = stats.budget
        return CallToolResult(
            content=[TextContent(type="text", text=render(clean(result.summary), data))],
            structured_content=data,
        )


async def _unused() -> None:  # pragma: no cover - MixpanelTool.run never calls fn
    raise NotImplementedError


def build_tools(groups: list[ToolGroup], settings: Settings) -> list[MixpanelTool]:
    """One tool per group that has at least one operation the configured credentials allow."""
    tools = []
    for group in groups:
        operations = group.available(settings)
        if operations:
            tools.append(MixpanelTool.build(group, operations))
    return tools
