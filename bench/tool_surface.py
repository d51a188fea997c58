"""How much context the tool list costs: bytes of the `tools/list` JSON per tool and in total.

    python bench/tool_surface.py

Tokens are estimated as bytes/4 (compact JSON, as clients send it to the model). The budget: aim under
3,000 tokens for every operation, 5,000 at most.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import anyio
from mcp import Client

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mixpanel_mcp.config import load_settings  # noqa: E402
from mixpanel_mcp.server import build_server  # noqa: E402

FULL_ACCESS = {
    "MIXPANEL_PROJECT_TOKEN": "token",
    "MIXPANEL_PROJECT_ID": "1",
    "MIXPANEL_SERVICE_ACCOUNT_USERNAME": "bench",
    "MIXPANEL_SERVICE_ACCOUNT_SECRET": "secret",
    "MIXPANEL_WORKSPACE_ID": "2",
    "MIXPANEL_GDPR_TOKEN": "gdpr",
}


async def tool_list() -> list[dict]:
    async with Client(build_server(load_settings(FULL_ACCESS))) as client:
        result = await client.list_tools()
    # `_meta` is for the host (e.g. which MCP Apps view draws the result); hosts do not show it to the model.
    return [tool.model_dump(mode="json", by_alias=True, exclude_none=True, exclude={"meta"}) for tool in result.tools]


def main() -> None:
    tools = anyio.run(tool_list)
    whole = len(json.dumps({"tools": tools}, separators=(",", ":")))
    print(f"{'tool':<14}{'bytes':>8}{'tokens~':>9}{'schema':>8}{'descr':>7}")
    for tool in tools:
        size = len(json.dumps(tool, separators=(",", ":")))
        schema = len(json.dumps(tool["inputSchema"], separators=(",", ":")))
        print(f"{tool['name']:<14}{size:>8}{size // 4:>9}{schema:>8}{len(tool.get('description', '')):>7}")
    operations = sum(len(t["inputSchema"]["properties"].get("operation", {}).get("enum", [None])) for t in tools)
    print(f"{'total':<14}{whole:>8}{whole // 4:>9}   ({len(tools)} tools, {operations} operations)")
    print(f"budget: aim 3,000 tokens, at most 5,000 -> {whole // 4 / 3000:.2f}x of the aim, {whole // 4 / 5000:.2f}x of the most")


if __name__ == "__main__":
    main()
