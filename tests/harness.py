"""Running the real server for the access-control tests: stdio with flags (and an elicitation callback),
Streamable HTTP with a policy, raw HTTP requests, policy files and audit logs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx2
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client

from mixpanel_mcp.double.app import free_port
from mixpanel_mcp.policy import hash_key

ROOT = Path(__file__).resolve().parent.parent
LEGACY = "2025-11-25"


@asynccontextmanager
async def stdio(
    env: dict[str, str], *args: str, mode: str = "auto", errlog: IO[str] | None = None, **client: Any
) -> AsyncIterator[Client]:
    """`python -m mixpanel_mcp ARGS` over stdio, driven by the SDK client (`client` kwargs: callbacks)."""
    params = StdioServerParameters(command=sys.executable, args=["-m", "mixpanel_mcp", *args], env=env, cwd=str(ROOT))
    transport = stdio_client(params, errlog=errlog) if errlog is not None else params
    async with Client(transport, mode=mode, **client) as session:
        yield session


@dataclass
class Served:
    url: str  # .../mcp
    base: str
    port: int
    log: Path  # the server's stderr
    process: subprocess.Popen[bytes] | None = None

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def http_server(env: dict[str, str], *args: str, log_dir: Path, host: str = "127.0.0.1") -> Iterator[Served]:
    """`mixpanel-mcp --transport http ARGS` on a free port, started and stopped around the block."""
    port = free_port()
    log = log_dir / f"server-{port}.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "mixpanel_mcp", "--transport", "http", "--host", host, "--port", str(port), *args],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120  # only ends a broken start: a cold start on a busy machine is slow
    while True:
        try:
            if httpx2.get(f"{base}/healthz", timeout=1).status_code == 200:
                break
        except httpx2.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"HTTP server did not start: {log.read_text()}")
        time.sleep(0.05)
    try:
        yield Served(url=f"{base}/mcp", base=base, port=port, log=log, process=process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


@asynccontextmanager
async def http_client(url: str, key: str | None = None, mode: str = "auto", **headers: str) -> AsyncIterator[Client]:
    """The SDK client over HTTP, sending the agent's key (and any narrowing headers)."""
    from mcp.client.streamable_http import streamable_http_client

    sent = {name.replace("_", "-"): value for name, value in headers.items()}
    if key is not None:
        sent["Authorization"] = f"Bearer {key}"
    async with httpx2.AsyncClient(headers=sent, timeout=30) as http:
        async with Client(streamable_http_client(url, http_client=http), mode=mode) as session:
            yield session


def rpc(method: str, params: dict[str, Any], id_: int = 1) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": id_, "method": method, "params": params}


def post(url: str, body: dict[str, Any] | bytes, *, key: str | None = None, **headers: str) -> httpx2.Response:
    """A raw legacy-era JSON-RPC POST, as a non-SDK client would send it."""
    sent = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json", "MCP-Protocol-Version": LEGACY}
    if key is not None:
        sent["Authorization"] = f"Bearer {key}"
    sent.update({name.replace("_", "-"): value for name, value in headers.items()})
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx2.post(url, content=content, headers=sent, timeout=30)


def answer(response: httpx2.Response) -> dict[str, Any]:
    """The JSON-RPC answer from an SSE (`data: ...`) or a plain JSON response."""
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        data = [line[5:].strip() for line in response.text.splitlines() if line.startswith("data:")]
        return json.loads(data[-1])
    return response.json()


def tools_of(response: httpx2.Response) -> dict[str, dict[str, Any]]:
    return {tool["name"]: tool for tool in answer(response)["result"]["tools"]}


def operations(tool: Any) -> list[str]:
    schema = tool.input_schema if hasattr(tool, "input_schema") else tool["inputSchema"]
    return schema["properties"].get("operation", {}).get("enum", [])


def policy_file(directory: Path, text: str, name: str = "policy.toml") -> Path:
    path = directory / name
    path.write_text(text)
    return path


def agent(name: str, key: str, access: str, extra: str = "") -> str:
    """A policy-file entry for agent `name` holding `key`, with `access` as TOML inline-table text."""
    return f'[agents.{name}]\nkey_sha256 = "{hash_key(key)}"\naccess = {access}\n{extra}\n'


def audit_records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def base_env(**values: str) -> dict[str, str]:
    """The current environment without any MIXPANEL_* variable, plus `values`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIXPANEL_")}
    env.update(values)
    return env
