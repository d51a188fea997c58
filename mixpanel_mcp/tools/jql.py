"""Run a JQL script (POST /jql)."""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import BeforeValidator, Field

from mixpanel_mcp.client import query
from mixpanel_mcp.tools._base import Access, Args, Needs, Result, Run, ToolGroup
from mixpanel_mcp.tools._params import decoded

group = ToolGroup(
    name="jql",
    title="JQL",
    description=(
        "Run a read-only JQL script (2-minute limit). Mixpanel keeps JQL in maintenance mode."
    ),
    single=True,
)


class JqlArgs(Args):
    script: str = Field(
        min_length=1,
        max_length=100_000,
        description="JavaScript defining main().",
        examples=['function main() { return Events(params).groupBy(["name"], mixpanel.reducer.count()); }'],
    )
    params: Annotated[dict[str, Any] | None, BeforeValidator(decoded("{"))] = Field(
        None, description="The script's `params` global."
    )


@group.operation("run", JqlArgs, access=Access.READ, needs=Needs.SCRIPT, summary="run a JQL script")
async def run_jql(run: Run, args: JqlArgs) -> Result:
    body = await query.jql(run.client, args.script, args.params)
    rows = body if isinstance(body, list) else [body]
    summary = f"JQL returned {len(rows):,} row(s)."
    if rows:
        preview = json.dumps(rows[0], ensure_ascii=False, separators=(",", ":"), default=str)
        summary = summary[:-1] + f"; first: {preview[:200] + '…' if len(preview) > 200 else preview}"
    return Result(
        summary=summary,
        data={"rows": len(rows), "results": rows},
        narrow_hint="aggregate in the script (groupBy/reduce) or narrow the dates in params",
    )
