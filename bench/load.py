"""Throughput and latency under load: 20 concurrent HTTP clients and one stdio client, next to a bare server.

    python bench/load.py [--http-clients 20] [--calls 50] [--stdio-calls 500]

Each HTTP client is the SDK's own client with its own session, making --calls calls one after another; all of
them run at once against one `mixpanel-mcp --transport http`. The stdio client makes --stdio-calls calls over
its pipe. Calls alternate a report read (`funnels list`) and a one-event `track`, both sent to the local
Mixpanel double (each write empties the result cache, so reads go upstream too). The baseline is a bare MCPServer of the same SDK, serving a `hello` tool under the same load in the same
run. Printed per row: calls/s, p50/p95/p99 latency, and the server process's RSS before and after the load.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx2
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mixpanel_mcp.double import DoubleState, running  # noqa: E402

BARE_SERVER = '''\
import sys

from mcp.server import MCPServer

server = MCPServer("hello")


@server.tool()
def hello(name: str) -> str:
    """Say hello."""
    return f"hello {name}"


if sys.argv[1:2] == ["http"]:
    server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
else:
    server.run()
'''
NO_CONFIRM = ROOT / "tests" / "policies" / "no-confirm.toml"

Call = Callable[[Client, int], Awaitable[Any]]


def base_env() -> dict[str, str]:
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
        "MIXPANEL_STARTUP_CHECK": "0",
        # The double has no rate limit: the bench measures the server, not how it keeps to Mixpanel's.
        "MIXPANEL_QUERY_LIMIT_PER_HOUR": "1000000",
        "MIXPANEL_QUERY_CONCURRENCY": "100",
    }


async def ours_call(client: Client, n: int) -> Any:
    if n % 2:
        return await client.call_tool("funnels", {"operation": "list"})
    event = {"event": "Bench", "properties": {"distinct_id": f"u{n}", "n": n}}
    return await client.call_tool("track", {"operation": "track", "events": [event]})


async def bare_call(client: Client, n: int) -> Any:
    return await client.call_tool("hello", {"name": f"bench {n}"})


def rss_kib(pid: int) -> int:
    """Resident set size of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def child_pids() -> set[int]:
    """Our child processes: the stdio servers the SDK client spawned."""
    children = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == os.getpid():
                children.add(int(entry.name))
    return children


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the HTTP server exited at start")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("the HTTP server did not start")


@dataclass
class Row:
    name: str
    calls: int
    seconds: float
    latencies: list[float]
    errors: int
    rss_before: int
    rss_after: int

    def line(self) -> str:
        lat = sorted(self.latencies)

        def pct(p: float) -> float:
            return lat[min(len(lat) - 1, int(len(lat) * p))] * 1000

        return (
            f"  {self.name:<30} {self.calls:>6} {self.calls / self.seconds:>9.0f} {statistics.median(lat) * 1000:>8.1f} "
            f"{pct(0.95):>8.1f} {pct(0.99):>8.1f} {self.errors:>6} {self.rss_before / 1024:>9.1f} {self.rss_after / 1024:>9.1f}"
        )


async def load(clients: list[Client], calls: int, call: Call) -> tuple[float, list[float], int]:
    """Every client makes `calls` calls, all clients at once; (seconds, latencies, errors)."""
    latencies: list[float] = []
    errors = 0

    async def one(client: Client, first: int) -> None:
        nonlocal errors
        for n in range(first, first + calls):
            started = time.perf_counter()
            result = await call(client, n)
            latencies.append(time.perf_counter() - started)
            errors += bool(result.is_error)

    started = time.perf_counter()
    async with anyio.create_task_group() as group:
        for i, client in enumerate(clients):
            group.start_soon(one, client, i * calls)
    return time.perf_counter() - started, latencies, errors


async def http_row(name: str, command: list[str], env: dict[str, str], port: int, clients: int, calls: int, call: Call) -> Row:
    process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, process)
        url = f"http://127.0.0.1:{port}/mcp"
        async with httpx2.AsyncClient(timeout=120) as http:
            sessions = []
            try:
                for _ in range(clients):
                    session = Client(streamable_http_client(url, http_client=http))
                    await session.__aenter__()
                    sessions.append(session)
                for n, session in enumerate(sessions):  # warm-up: one call each (fills the result cache)
                    await call(session, n)
                before = rss_kib(process.pid)
                seconds, latencies, errors = await load(sessions, calls, call)
                after = rss_kib(process.pid)
            finally:
                for session in reversed(sessions):
                    await session.__aexit__(None, None, None)
        return Row(name, clients * calls, seconds, latencies, errors, before, after)
    finally:
        process.terminate()
        process.wait(timeout=10)


async def stdio_row(name: str, params: StdioServerParameters, calls: int, call: Call) -> Row:
    known = child_pids()
    async with Client(params) as client:
        for n in range(5):
            await call(client, n)
        (pid,) = child_pids() - known
        before = rss_kib(pid)
        seconds, latencies, errors = await load([client], calls, call)
        after = rss_kib(pid)
    return Row(name, calls, seconds, latencies, errors, before, after)


async def main(http_clients: int, calls: int, stdio_calls: int) -> None:
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="mixpanel-load-") as tmp, running(DoubleState()) as double_url:
        bare_file = Path(tmp) / "hello_server.py"
        bare_file.write_text(BARE_SERVER)
        env = our_env(double_url)
        port = free_port()
        rows.append(await http_row(
            f"bare MCPServer, HTTP x{http_clients}", [sys.executable, str(bare_file), "http", str(port)], base_env(), port,
            http_clients, calls, bare_call,
        ))
        port = free_port()
        ours = [sys.executable, "-m", "mixpanel_mcp", "--transport", "http", "--port", str(port), "--policy", str(NO_CONFIRM)]
        rows.append(await http_row(f"mixpanel-mcp, HTTP x{http_clients}", ours, env, port, http_clients, calls, ours_call))
        rows.append(await stdio_row(
            "bare MCPServer, stdio x1", StdioServerParameters(command=sys.executable, args=[str(bare_file)], env=base_env()),
            stdio_calls, bare_call,
        ))
        stdio_params = StdioServerParameters(
            command=sys.executable, args=["-m", "mixpanel_mcp", "--policy", str(NO_CONFIRM)], env=env, cwd=str(ROOT)
        )
        rows.append(await stdio_row("mixpanel-mcp, stdio x1", stdio_params, stdio_calls, ours_call))

    print("Calls alternate funnels list and a one-event track, both sent to the local double; bare: hello.")
    print(f"  {'server, transport x clients':<30} {'calls':>6} {'calls/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
          f"{'errors':>6} {'RSS MiB<':>9} {'RSS MiB>':>9}")
    for row in rows:
        print(row.line())
    print("  (RSS MiB< before the load, after warm-up; RSS MiB> after it)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--http-clients", type=int, default=20)
    parser.add_argument("--calls", type=int, default=50, help="calls per HTTP client")
    parser.add_argument("--stdio-calls", type=int, default=500)
    options = parser.parse_args()
    anyio.run(main, options.http_clients, options.calls, options.stdio_calls)
