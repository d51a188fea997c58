"""What the server costs on top of the MCP SDK: cold start and per-call overhead, next to a bare server.

    python bench/overhead.py [--starts 10] [--calls 1000]

- Cold start: spawn -> the first `tools/list` answer over stdio (the SDK's client), median of --starts.
- Per call: median latency of --calls sequential calls of a cheap tool over stdio: ours is `funnels list`
  against the local Mixpanel double (answered from the result cache after the first call), the bare
  server's is a `hello` tool. Both servers are built on the same SDK (MCPServer); the bare one is written
  to a temporary file by this script.
Targets: cold start <= 1.2x the bare server, per call <= 1.5x.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio
from mcp import Client
from mcp.client.stdio import StdioServerParameters

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mixpanel_mcp.double import DoubleState, running  # noqa: E402

BARE_SERVER = '''\
from mcp.server import MCPServer

server = MCPServer("hello")


@server.tool()
def hello(name: str) -> str:
    """Say hello."""
    return f"hello {name}"


server.run()
'''


def base_env() -> dict[str, str]:
    """This environment, minus PYTHONDONTWRITEBYTECODE: an installed package has its bytecode compiled, so
    neither server should pay for compiling its modules on every start (the warm-up start writes them)."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def our_env(double_url: str) -> dict[str, str]:
    return {
        **base_env(),
        "MIXPANEL_PROJECT_TOKEN": "test-token",
        "MIXPANEL_PROJECT_ID": "1234",
        "MIXPANEL_SERVICE_ACCOUNT_USERNAME": "bot.abc123.mp-service-account",
        "MIXPANEL_SERVICE_ACCOUNT_SECRET": "test-sa-secret",
        "MIXPANEL_INGESTION_URL": double_url,
        "MIXPANEL_QUERY_URL": f"{double_url}/api",
        "MIXPANEL_EXPORT_URL": f"{double_url}/api/2.0",
    }


async def cold_start(params: StdioServerParameters) -> float:
    started = time.perf_counter()
    async with Client(params) as client:
        await client.list_tools()
        return time.perf_counter() - started


async def per_call(params: StdioServerParameters, tool: str, arguments: dict, calls: int) -> tuple[float, float]:
    """(median, p90) seconds per call, after a few warm-up calls."""
    async with Client(params) as client:
        for _ in range(5):
            result = await client.call_tool(tool, arguments)
            assert not result.is_error, result.content
        times = []
        for _ in range(calls):
            started = time.perf_counter()
            await client.call_tool(tool, arguments)
            times.append(time.perf_counter() - started)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.9)]


async def main(starts: int, calls: int) -> None:
    with tempfile.TemporaryDirectory(prefix="mixpanel-overhead-") as tmp, running(DoubleState()) as double_url:
        bare_file = Path(tmp) / "hello_server.py"
        bare_file.write_text(BARE_SERVER)
        ours = StdioServerParameters(command=sys.executable, args=["-m", "mixpanel_mcp"], env=our_env(double_url), cwd=str(ROOT))
        bare = StdioServerParameters(command=sys.executable, args=[str(bare_file)], env=base_env())

        await cold_start(bare)  # warm-up: bytecode written, files in the page cache
        await cold_start(ours)
        starts_ours, starts_bare = [], []
        for _ in range(starts):  # interleaved, so both see the same machine load
            starts_bare.append(await cold_start(bare))
            starts_ours.append(await cold_start(ours))
        ours_start, bare_start = statistics.median(starts_ours), statistics.median(starts_bare)

        bare_call = await per_call(bare, "hello", {"name": "bench"}, calls)
        ours_call = await per_call(ours, "funnels", {"operation": "list"}, calls)

    print(f"cold start (spawn -> first tools/list), median of {starts}:")
    print(f"  bare MCPServer   {bare_start * 1000:8.0f} ms")
    print(f"  mixpanel-mcp     {ours_start * 1000:8.0f} ms   = {ours_start / bare_start:.2f}x (target <= 1.2x)")
    print(f"per call over stdio, {calls} sequential calls (median / p90):")
    print(f"  bare hello       {bare_call[0] * 1000:8.2f} ms / {bare_call[1] * 1000:.2f} ms")
    print(
        f"  funnels list     {ours_call[0] * 1000:8.2f} ms / {ours_call[1] * 1000:.2f} ms   = "
        f"{ours_call[0] / bare_call[0]:.2f}x (target <= 1.5x; served from the result cache)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=10)
    parser.add_argument("--calls", type=int, default=1000)
    options = parser.parse_args()
    anyio.run(main, options.starts, options.calls)
