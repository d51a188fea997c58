"""What sharing state through Redis costs, and what several replicas buy, next to one process keeping it itself.

    python bench/replicas.py [--calls 1000] [--throughput-calls 600] [--concurrency 16]

Needs `redis-server` on the PATH (it starts its own, on a free loopback port, without persistence) and the
`redis` client (pip install -e ".[redis]").

- Per call (median and p99 of --calls sequential calls through the Mixpanel client, against an in-memory
  transport that answers at once, so what is measured is the state's own cost):
    cached read      the same question again: answered from the result cache;
    budgeted report  a new question each time (no cache): a place in the query budget's window and a
                     concurrency slot taken and given back;
  with the in-process state (one server process) and the Redis state (every replica), side by side.
- Throughput on cached reads: --throughput-calls `tools/call` requests over Streamable HTTP, --concurrency at a
  time, spread over 4 `mixpanel-mcp --transport http` replicas sharing Redis, against 1 replica (same Redis),
  all against the local Mixpanel double.
Target: Redis adds at most 1 ms to the median call.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import anyio
import httpx2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mixpanel_mcp.client import MixpanelClient  # noqa: E402
from mixpanel_mcp.client.errors import Api  # noqa: E402
from mixpanel_mcp.client.state import LocalState, State  # noqa: E402
from mixpanel_mcp.config import load_settings  # noqa: E402
from mixpanel_mcp.double import DoubleState, running  # noqa: E402

CREDENTIALS = {
    "MIXPANEL_PROJECT_TOKEN": "test-token",
    "MIXPANEL_PROJECT_ID": "1234",
    "MIXPANEL_SERVICE_ACCOUNT_USERNAME": "bot.abc123.mp-service-account",
    "MIXPANEL_SERVICE_ACCOUNT_SECRET": "test-sa-secret",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def redis_server() -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("bench/replicas.py needs redis-server on the PATH (Debian/Ubuntu: apt-get install redis-server)")
    port = free_port()
    with tempfile.TemporaryDirectory() as directory:
        process = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", directory],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"redis://127.0.0.1:{port}/0"
        import redis

        client = redis.Redis.from_url(url)
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                break
            except redis.RedisError:
                if time.monotonic() > deadline:
                    process.kill()
                    raise SystemExit("redis-server did not start") from None
                time.sleep(0.05)
        client.close()
        try:
            yield url
        finally:
            process.terminate()
            process.wait(timeout=10)


# -- per call ------------------------------------------------------------------------------------------


def answer_at_once(request: httpx2.Request) -> httpx2.Response:
    return httpx2.Response(200, json={"data": {"series": [], "values": {}}, "legend_size": 0})


async def timed(calls: int, one: Callable[[int], Awaitable[object]]) -> list[float]:
    for i in range(20):  # warm up: connections, scripts loaded, code paths compiled
        await one(-1 - i)
    took = []
    for i in range(calls):
        started = time.perf_counter()
        await one(i)
        took.append((time.perf_counter() - started) * 1000)
    return took


async def per_call(state: State, calls: int) -> dict[str, list[float]]:
    settings = load_settings({**CREDENTIALS, "MIXPANEL_QUERY_LIMIT_PER_HOUR": str(10 * calls + 100)})
    results = {}
    async with MixpanelClient(settings, transport=httpx2.MockTransport(answer_at_once), state=state) as client:
        params = {"event": "Signed up", "from_date": "2026-01-01", "to_date": "2026-01-02"}
        results["cached read"] = await timed(calls, lambda i: client.request(Api.QUERY, "GET", "/query/segmentation", params=params))
        uncached = load_settings({**CREDENTIALS, "MIXPANEL_QUERY_LIMIT_PER_HOUR": str(10 * calls + 100), "MIXPANEL_CACHE_TTL": "0",
                                  "MIXPANEL_CACHE_TTL_TODAY": "0"})
    async with MixpanelClient(uncached, transport=httpx2.MockTransport(answer_at_once), state=state) as client:
        results["budgeted report"] = await timed(
            calls, lambda i: client.request(Api.QUERY, "GET", "/query/segmentation", params={**params, "event": f"E{i}"})
        )
    return results


def quantiles(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


# -- throughput ----------------------------------------------------------------------------------------


@contextmanager
def replica(env: dict[str, str], log_dir: Path) -> Iterator[str]:
    port = free_port()
    log = (log_dir / f"replica-{port}.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "mixpanel_mcp", "--transport", "http", "--port", str(port)],
        env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx2.get(f"{base}/healthz", timeout=1).status_code == 200:
                break
        except httpx2.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise SystemExit(f"a replica did not start: see {log.name}")
        time.sleep(0.05)
    try:
        yield f"{base}/mcp"
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


CALL = json.dumps(
    {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "funnels", "arguments": {"operation": "list"}},
    }
).encode()
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json", "MCP-Protocol-Version": "2025-11-25"}


async def throughput(urls: list[str], calls: int, concurrency: int) -> float:
    async with httpx2.AsyncClient(timeout=60) as http:
        for url in urls:  # the answer is in the shared cache before the clock starts
            response = await http.post(url, content=CALL, headers=HEADERS)
            response.raise_for_status()
        counter = iter(range(calls))
        failures = []

        async def worker() -> None:
            for i in counter:
                response = await http.post(urls[i % len(urls)], content=CALL, headers=HEADERS)
                if response.status_code != 200 or '"isError":true' in response.text:
                    failures.append(response.text[:200])

        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for _ in range(concurrency):
                tg.start_soon(worker)
        elapsed = time.perf_counter() - started
    if failures:
        raise SystemExit(f"{len(failures)} call(s) failed, e.g. {failures[0]}")
    return calls / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--throughput-calls", type=int, default=600)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    from mixpanel_mcp.client.redis_state import RedisState

    with redis_server() as redis_url:
        local = anyio.run(per_call, LocalState(), args.calls)

        async def with_redis() -> dict[str, list[float]]:
            state = RedisState(redis_url)
            try:
                return await per_call(state, args.calls)
            finally:
                await state.aclose()

        shared = anyio.run(with_redis)
        print(f"Per call, {args.calls} sequential calls through the client (ms):")
        print(f"  {'':<16} {'in-process median':>18} {'p99':>7}   {'Redis median':>13} {'p99':>7}   {'added (median)':>14}")
        for name in ("cached read", "budgeted report"):
            (lm, lp), (rm, rp) = quantiles(local[name]), quantiles(shared[name])
            print(f"  {name:<16} {lm:>18.3f} {lp:>7.3f}   {rm:>13.3f} {rp:>7.3f}   {rm - lm:>+14.3f}")

        state = DoubleState()
        with running(state) as double_url, ExitStack() as stack, tempfile.TemporaryDirectory() as logs:
            env = {
                **{k: v for k, v in os.environ.items() if not k.startswith("MIXPANEL_")},
                **CREDENTIALS,
                "MIXPANEL_INGESTION_URL": double_url,
                "MIXPANEL_QUERY_URL": f"{double_url}/api",
                "MIXPANEL_EXPORT_URL": f"{double_url}/api/2.0",
                "MIXPANEL_STARTUP_CHECK": "0",
                "MIXPANEL_MCP_REDIS_URL": redis_url,
                "MIXPANEL_MCP_SECRET_KEY": "bench-shared-secret-0123456789abcdefghijkl",
            }
            urls = [stack.enter_context(replica(env, Path(logs))) for _ in range(4)]
            one = anyio.run(throughput, urls[:1], args.throughput_calls, args.concurrency)
            four = anyio.run(throughput, urls, args.throughput_calls, args.concurrency)
        print(f"\nThroughput on cached reads ({args.throughput_calls} tools/call over HTTP, {args.concurrency} at a time, "
              f"{os.cpu_count()} CPU(s)):")
        print(f"  1 replica   {one:>8.0f} calls/s")
        print(f"  4 replicas  {four:>8.0f} calls/s   ({four / one:.2f}x)")
        print(f"\nUpstream requests the double received: {len(state.received())} (the first answer, then the shared cache)")


if __name__ == "__main__":
    main()
