"""The only code that turns a `ToolGroup` into an MCP tool, and the one path every call takes.

`MixpanelTool.run`: who is calling (their grant) -> may they use this operation -> are the arguments
valid -> does a destructive call have the person's confirmation -> the handler, with the client of the
caller's project -> errors mapped to agent text -> one audit record, whatever happened.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

import anyio
import httpx2
from mcp.server.apps import client_supports_apps
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp.shared.exceptions import MCPError
from mcp.server.mcpserver.tools import Tool
from mcp.server.mcpserver.utilities.func_metadata import ArgModelBase, FuncMetadata
from mcp.types import CallToolResult, ImageContent, TextContent, ToolAnnotations
from mcp_types import InputRequiredResult
from pydantic import ConfigDict, Field, TypeAdapter, ValidationError

from mixpanel_mcp import charts
from mixpanel_mcp.audit import AuditLog, Record, error_kind, touched, upstream_status
from mixpanel_mcp.client import CallDeadlineError, CallStats, MixpanelClient, MixpanelError, call_stats
from mixpanel_mcp.client.errors import SharedStateUnavailableError
from mixpanel_mcp.client.state import CallsInFlightError, LocalState, State
from mixpanel_mcp.config import Settings
from mixpanel_mcp.confirm import CODE_TTL, Codes, ask, can_ask, describe_effect, spend_answer
from mixpanel_mcp.errors import describe_error, describe_validation
from mixpanel_mcp.policy import Grant, PolicySource, current_grant, full_grant
from mixpanel_mcp.results import bound, clean, render, trimmed_headline
from mixpanel_mcp.text import strip_controls
from mixpanel_mcp.tools._base import Access, Operation, Run, ToolGroup, describe, discriminated, input_schema

logger = logging.getLogger(__name__)

DEADLINE_GRACE_SECONDS = 1.0  # lets the client's own, more precise deadline error come first

CONFIRM_FIELD = "confirm"
SANDBOX_WITHOUT_JQL = (
    "JQL is not offered in the sandbox: the local demo project runs no JavaScript. Use segmentation, funnels, "
    "retention, events or export, or run JQL against your own project."
)
# No description: the refusal that hands out a code says how to use it, and the field is in nine tools.
CONFIRM_SCHEMA = {"type": "string"}
# Taken by the report operations (charts.CHARTED); off by default because an image costs the agent's context.
CHART_FIELD = "chart"
CHART_SCHEMA = {"type": "boolean", "description": "Also a PNG chart; costs context."}


def annotations(group: ToolGroup, operations: list[Operation]) -> ToolAnnotations:
    read_only = all(op.access is Access.READ for op in operations)
    return ToolAnnotations(
        read_only_hint=read_only,
        destructive_hint=False if read_only else any(op.access is Access.DESTRUCTIVE for op in operations),
        idempotent_hint=all(op.idempotent for op in operations),
        open_world_hint=True,
    )


class Refused(ToolError):
    """A call stopped before anything was sent: by policy, for confirmation, or for being one too many."""


class MixpanelTool(Tool):
    """An MCP tool whose flat arguments are validated by the group's discriminated union."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    group: ToolGroup = Field(exclude=True)
    ops: dict[str, Operation] = Field(exclude=True)
    validator_factory: Callable[[], TypeAdapter[Any]] = Field(exclude=True)
    confirm_field: bool = Field(default=False, exclude=True)

    @classmethod
    def build(cls, group: ToolGroup, operations: list[Operation], *, confirm_field: bool = False) -> MixpanelTool:
        parameters = input_schema(group, operations)
        if confirm_field:
            parameters["properties"][CONFIRM_FIELD] = dict(CONFIRM_SCHEMA)
        drawn = [op.name for op in operations if charts.charted(group.name, op.name)]
        if drawn:
            parameters["properties"][CHART_FIELD] = dict(CHART_SCHEMA)
        return cls(
            fn=_unused,
            name=group.name,
            title=group.title,
            description=describe(group, operations),
            parameters=parameters,
            fn_metadata=FuncMetadata(arg_model=ArgModelBase),
            is_async=True,
            annotations=annotations(group, operations),
            # Hosts with MCP Apps draw the report in the chat with this view; others ignore the key.
            meta={"ui": {"resourceUri": charts.VIEW_URI}} if drawn else None,
            group=group,
            ops={op.name: op for op in operations},
            # Built on the first call, not at start-up: most tools of a session are never called.
            validator_factory=functools.cache(functools.partial(discriminated, group, operations)),
            confirm_field=confirm_field,
        )

    async def run(self, arguments: dict[str, Any], context: Any, convert_result: bool = False) -> Any:
        runtime: Runtime = context.request_context.lifespan_context.runtime
        grant = runtime.grant()
        settings = runtime.settings_for(grant)
        record = Record(agent=grant.agent, tool=self.name, project=project_label(grant, settings))
        started = time.monotonic()
        try:
            if runtime.audit.refuses_calls:
                record.decision, record.reason = "denied", "the audit log cannot be written"
                raise Refused(
                    "Not done: the server's audit log cannot be written, so calls are refused until it can be "
                    "(the operator set it to fail closed). Nothing was sent to Mixpanel."
                )
            return await self._run(runtime, grant, settings, dict(arguments), context, record)
        except Refused as exc:
            if record.decision == "allowed":
                record.decision = "denied"
            record.outcome = "refused"
            record.reason = record.reason or str(exc)
            raise
        except (ToolError, MCPError) as exc:
            record.outcome = "error"
            record.error = record.error or ("protocol" if isinstance(exc, MCPError) else "tool_error")
            raise
        except Exception as exc:
            # A bug: the SDK logs the traceback (scrubbed of secrets); the agent sees no exception text.
            record.outcome, record.error = "error", "internal"
            raise UnexpectedToolError(f"Error executing tool {self.name}") from exc
        except BaseException:  # cancelled: the client gave up, or the server is stopping
            record.outcome, record.error = "error", "cancelled"
            raise
        finally:
            record.duration_s = round(time.monotonic() - started, 3)
            runtime.audit.write(record)

    async def _run(
        self, runtime: Runtime, grant: Grant, settings: Settings | None, arguments: dict[str, Any], context: Any, record: Record
    ) -> Any:
        code = arguments.pop(CONFIRM_FIELD, None) if self.confirm_field else None
        want_chart = arguments.pop(CHART_FIELD, False) if CHART_FIELD in self.parameters["properties"] else False
        name = next(iter(self.group.operations)) if self.group.single else arguments.get("operation")
        if isinstance(name, str) and name in self.group.operations:
            record.operation = name
            wanted = self.group.operations[name]
            least = wanted.least_access
            if not grant.permits(self.name, least):
                record.access = least.value
                level = grant.level(self.name).value
                record.reason = f"{self.name} is '{level}' for this agent; {name} is a {least} operation"
                raise Refused(
                    f"Not allowed: this agent has '{level}' access to {self.name}, and {name} is a {least} "
                    "operation. Nothing was sent to Mixpanel; the server's operator decides what each agent may do."
                )
            if name not in self.ops and settings is not None and not wanted.needs.allowed(settings):
                record.error = "invalid_arguments"
                raise ToolError(
                    f"{self.name} {name} is not available: it needs {wanted.needs.settings_text}, which this server "
                    "does not have configured. Nothing was sent to Mixpanel."
                )
        try:
            args = self.validator_factory().validate_python(arguments)
        except ValidationError as exc:
            record.error = "invalid_arguments"
            raise ToolError(describe_validation(self.name, exc, list(self.ops), self.group.single)) from None
        op = next(iter(self.ops.values())) if self.group.single else self.ops[args.operation]
        if want_chart is not False and (want_chart is not True or not charts.charted(self.name, op.name)):
            record.error = "invalid_arguments"
            drawn = [name for name in self.ops if charts.charted(self.name, name)]
            raise ToolError(
                f"Invalid arguments for {self.name}: chart must be true or false, and works with operation "
                f"{' or '.join(drawn)} only (got chart={want_chart!r} with {op.name}). Example: chart=true"
            )
        access = op.access_for(args)
        record.operation, record.access = op.name, access.value
        record.touched = touched(self.name, args)
        assert settings is not None  # a caller without settings has no tools

        async with runtime.slot(grant, settings, record):
            if access is Access.DESTRUCTIVE and grant.confirm_destructive:
                pending = await self._confirm(runtime, grant, settings, op, args, code, context, record)
                if pending is not None:
                    return pending
            else:
                record.reason = None if access is not Access.DESTRUCTIVE else "confirmation turned off by the policy"
            client = await runtime.client_for(settings)
            run = Run(client=client, settings=settings, progress=context.report_progress)
            deadline = settings.call_deadline
            stats = CallStats(deadline=anyio.current_time() + deadline, deadline_seconds=deadline)
            token = call_stats.set(stats)
            try:
                # The client stops itself at the deadline, naming the request under way; this stops the
                # rest (reading files, writing an export) a moment later, whatever the call is doing.
                with anyio.move_on_after(deadline + DEADLINE_GRACE_SECONDS) as limit:
                    result = await op.handler(run, args)
                if limit.cancelled_caught:
                    raise CallDeadlineError(seconds=deadline, requests=stats.requests)
            except MixpanelError as exc:
                record.error, record.upstream_status = error_kind(exc), upstream_status(exc)
                raise ToolError(describe_error(exc)) from None
            finally:
                call_stats.reset(token)
                record.upstream_requests, record.retries = stats.requests, stats.retries
        full = clean(result.data)
        data, trimmed = bound(full, result.narrow_hint)
        summary = clean(result.summary)
        if trimmed:
            summary = trimmed_headline(full, data, result.narrow_hint) + " " + summary
        if stats.cached:
            data["cached"] = True
        if stats.budget:
            data["budget"] = stats.budget
        if result.refused:
            record.outcome, record.error = "error", "refused_input"
        content: list[Any] = [TextContent(type="text", text=render(summary, data))]
        meta = None
        view = client_supports_apps(context)  # a host that shows our chart view: it reads the description
        spec = None if result.refused or not (want_chart or view) else charts.chart_spec(self.name, op.name, args, result.data)
        if spec is not None:
            if view:
                meta = {charts.META_KEY: spec}  # for the view only; hosts keep `_meta` out of the model's context
            if want_chart:
                content.append(ImageContent(type="image", data=await _png(spec), mime_type="image/png"))
        return CallToolResult(content=content, structured_content=data, is_error=result.refused, _meta=meta)

    async def _confirm(
        self,
        runtime: Runtime,
        grant: Grant,
        settings: Settings,
        op: Operation,
        args: Any,
        code: Any,
        context: Any,
        record: Record,
    ) -> CallToolResult | InputRequiredResult | None:
        """None when the call may go ahead; else what to answer instead (a question, or a refusal with a code)."""
        bound_args = args.model_dump(mode="json", by_alias=True)
        effect = describe_effect(self.name, op.name, args, _project_words(grant, settings))
        rejected = None
        if isinstance(code, str) and code:
            try:
                rejected = await runtime.codes.redeem(code, grant.agent, self.name, bound_args, runtime.state.spend_once)
            except SharedStateUnavailableError as exc:
                record.reason = f"confirmation unavailable: {exc.reason}"
                raise Refused(describe_error(exc)) from None
            if rejected is None:
                record.reason = "confirmed with a one-time code"
                return None
        elif code is not None:
            rejected = "it is not a confirmation code"
        if can_ask(context):
            answer = await ask(context, f"Agent {grant.agent} wants to {effect}. Go ahead?")
            if isinstance(answer, InputRequiredResult):
                record.decision, record.outcome, record.reason = "asked", "pending", "destructive: asking the person"
                return answer
            if answer == "accept":
                try:
                    first = await spend_answer(runtime.state.spend_once)
                except SharedStateUnavailableError as exc:
                    record.reason = f"confirmation unavailable: {exc.reason}"
                    raise Refused(describe_error(exc)) from None
                if not first:
                    record.reason = "the person's answer was already used"
                    raise Refused(
                        "Not done again: the person's answer to this question was already used, and the call it "
                        "confirmed has run. Nothing was sent to Mixpanel. To do it once more, make the call again "
                        "and the person will be asked again."
                    )
                record.reason = "confirmed by the person"
                return None
            said = {"decline": "declined", "cancel": "cancelled"}.get(answer, answer)
            record.reason = f"the person {said}"
            raise Refused(f"Not done: the person {said} when asked to confirm. Nothing was sent to Mixpanel.")
        fresh = runtime.codes.issue(grant.agent, self.name, bound_args)
        minutes = round(runtime.codes.ttl / 60) or 1
        why = f"The confirmation code was not accepted: {rejected}. " if rejected else ""
        record.decision, record.outcome = "denied", "refused"
        record.reason = "destructive: needs confirmation" + (f"; code refused: {rejected}" if rejected else "")
        text = (
            f"{why}Not done yet: this would {effect}. It needs the person's confirmation and this client cannot ask "
            "them, so nothing was sent to Mixpanel. Tell the person exactly what will happen and ask; only if they "
            f'agree, repeat the same call with the same arguments plus confirm="{fresh}" (valid once, for '
            f"{minutes} minute(s))."
        )
        return CallToolResult(
            content=[TextContent(type="text", text=text)],
            structured_content={"confirmation_required": True, "confirm": fresh, "expires_in_s": int(runtime.codes.ttl)},
            is_error=True,
        )


async def _png(spec: dict[str, Any]) -> str:
    """The chart as base64 PNG, drawn off the event loop (matplotlib is imported on the first chart)."""

    def draw() -> str:
        import base64

        from mixpanel_mcp.charts import png

        return base64.b64encode(png.render(spec)).decode("ascii")

    return await anyio.to_thread.run_sync(draw)


async def _unused() -> None:  # pragma: no cover - MixpanelTool.run never calls fn
    raise NotImplementedError


def project_label(grant: Grant, settings: Settings | None) -> int | str | None:
    if settings is not None and settings.project_id is not None:
        return settings.project_id
    return grant.project


def _project_words(grant: Grant, settings: Settings) -> str:
    label = project_label(grant, settings)
    return f"project {label}" if label is not None else "the project of the configured token"


def build_tools(
    groups: list[ToolGroup], settings: Settings, grant: Grant | None = None, *, confirm: bool | None = None
) -> list[MixpanelTool]:
    """One tool per group with at least one operation the credentials allow and the grant permits.

    A tool with a destructive operation takes a `confirm` code when destructive calls need confirmation.
    """
    confirm = grant.confirm_destructive if confirm is None and grant is not None else bool(confirm)
    tools = []
    for group in groups:
        operations = [
            op for op in group.available(settings) if grant is None or grant.permits(group.name, op.access)
        ]
        if operations:
            destructive = any(op.access is Access.DESTRUCTIVE for op in operations)
            tools.append(MixpanelTool.build(group, operations, confirm_field=confirm and destructive))
    return tools


def per_worker(settings: Settings, workers: int) -> Settings:
    """The settings with each of the project's rate limits split evenly over `workers` processes (at least 1
    each): every process counts its own requests, so N processes with the full limits could spend N times them."""
    if workers <= 1:
        return settings
    b = settings.budget
    return replace(
        settings,
        budget=replace(
            b,
            query_per_hour=max(1, b.query_per_hour // workers),
            query_concurrent=max(1, b.query_concurrent // workers),
            export_per_hour=max(1, b.export_per_hour // workers),
            export_per_second=max(1, b.export_per_second // workers),
            export_concurrent=max(1, b.export_concurrent // workers),
            lexicon_per_minute=max(1, b.lexicon_per_minute // workers),
        ),
    )


@dataclass
class AppState:
    """What the server's lifespan holds."""

    runtime: Runtime


class Runtime:
    """Everything calls share: the policy, the projects' settings and clients, tool lists per grant,
    confirmation codes, calls in flight per agent, and the audit log."""

    def __init__(
        self,
        *,
        settings: Settings | None,
        groups: list[ToolGroup],
        policy: PolicySource | None = None,
        local: Grant | None = None,
        cap: tuple[frozenset[str] | None, bool] = (None, False),
        audit: AuditLog | None = None,
        codes: Codes | None = None,
        transport: httpx2.AsyncBaseTransport | None = None,
        state: State | None = None,
    ) -> None:
        self.settings = settings
        self.state: State = state if state is not None else LocalState()
        self.groups = groups
        self.policy = policy
        self.cap = cap
        self._local_default = local if local is not None else full_grant()
        self._local_from: Grant | None = None
        self._local = self._local_default
        self.audit = audit or AuditLog(None)
        self.codes = codes or Codes(CODE_TTL)
        self._transport = transport
        self._clients: list[tuple[Settings, MixpanelClient]] = []
        self._views: dict[tuple[Any, ...], dict[str, MixpanelTool]] = {}  # by Grant.view_key (project first)
        self._projects: dict[str, Settings] = {}
        self._policy_seen: Any = None
        self.workers = 1

    def share_limits(self, workers: int) -> None:
        """This is one of `workers` processes serving the same projects: use its share of each rate limit.

        Call before the first request (a project's budget is made with the limits of its first call)."""
        self.workers = workers
        if self.settings is not None:
            self.settings = per_worker(self.settings, workers)
        self._projects, self._views = {}, {}

    def narrow(self, grant: Grant) -> Grant:
        """The operator's flags (--toolsets, --read-only) bound every grant."""
        toolsets, read_only = self.cap
        return grant.narrowed(toolsets, read_only) if toolsets is not None or read_only else grant

    @property
    def local(self) -> Grant:
        """The grant of local use (stdio, and HTTP without keys): the policy's [local], narrowed by the flags."""
        base = self.policy.current().local if self.policy is not None else self._local_default
        if base is not self._local_from:  # first use, or the policy file was reloaded
            self._local_from, self._local = base, self.narrow(base)
        return self._local

    def grant(self) -> Grant:
        return current_grant.get() or self.local

    def settings_for(self, grant: Grant) -> Settings | None:
        """The settings of the caller's project: the server's own, or a policy project's (None if unknown)."""
        if grant.project is None:
            return self.settings
        policy = self.policy.current() if self.policy is not None else None
        if policy is not self._policy_seen:  # reloaded: forget what was derived from the old one
            self._policy_seen = policy
            self._projects = {}
            self._views = {key: view for key, view in self._views.items() if key[0] is None}
        settings = self._projects.get(grant.project)
        if settings is None and policy is not None and grant.project in policy.projects:
            local_files = self.settings.local_files if self.settings is not None else False
            project = replace(policy.projects[grant.project], local_files=local_files)
            settings = self._projects[grant.project] = per_worker(project, self.workers)
        return settings

    def tools_for(self, grant: Grant) -> dict[str, MixpanelTool]:
        settings = self.settings_for(grant)
        if settings is None:
            return {}
        view = self._views.get(grant.view_key)
        if view is None:
            view = {tool.name: tool for tool in build_tools(self.groups, settings, grant)}
            self._views[grant.view_key] = view
        return view

    async def client_for(self, settings: Settings) -> MixpanelClient:
        """One client per project (settings compared by value: a reloaded policy keeps its clients)."""
        for known, client in self._clients:
            if known == settings:
                return client
        client = MixpanelClient(settings, transport=self._transport, state=self.state)
        self._clients.append((settings, client))
        return client

    @asynccontextmanager
    async def slot(self, grant: Grant, settings: Settings, record: Record) -> AsyncIterator[None]:
        """Hold one of the agent's call slots; when all are taken, wait for one (in turn, for at most the
        project's max_wait), and refuse the call only when none frees up in time or too many already wait."""
        limit = grant.max_in_flight
        try:
            async with self.state.agent_slot(grant.agent, limit, settings.budget.max_wait):
                yield
        except CallsInFlightError as exc:  # raised only on the way in: the call never ran
            if exc.waited:
                record.reason = f"{exc.busy} calls in flight (limit {limit}); none finished within {exc.waited:g} s"
                why = f"none of them finished within {exc.waited:g} s of waiting"
            else:
                record.reason = f"{exc.busy} calls in flight (limit {limit}), {exc.waiting} more waiting"
                why = f"{exc.waiting} more are already waiting for a turn"
            raise Refused(
                f"Too many calls at once: this agent already has {exc.busy} call(s) in progress (limit {limit}), and "
                f"{why}. Nothing was sent to Mixpanel; try again when one of them has finished."
            ) from None

    def refuse_unknown(self, name: str) -> ToolError:
        """Audit a call to a tool this caller does not have (not granted, or no such tool)."""
        grant = self.grant()
        shown = strip_controls(str(name))[:64]
        record = Record(agent=grant.agent, tool=shown, project=project_label(grant, self.settings_for(grant)))
        record.decision, record.outcome = "denied", "refused"
        known = any(group.name == name for group in self.groups)
        record.reason = f"{shown} is not available to this agent" if known else "no such tool"
        self.audit.write(record)
        settings = self.settings_for(grant)
        if name == "jql" and settings is not None and settings.sandbox:
            return ToolError(f"Unknown tool: {shown}. {SANDBOX_WITHOUT_JQL}")
        return ToolError(f"Unknown tool: {shown}")

    async def aclose(self) -> None:
        for _, client in self._clients:
            await client.aclose()
        self._clients.clear()
        await self.state.aclose()
