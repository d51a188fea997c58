"""`mixpanel-mcp --transport http`: the real server as a subprocess, driven by the SDK client and by raw POSTs."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import httpx2
import pytest
from mcp import Client

from mixpanel_mcp import __version__
from tests.conftest import TOKEN, stdio_client, structured

LEGACY_VERSION = "2025-11-25"
SSE_OR_JSON = "application/json, text/event-stream"


def engage_set(distinct_id: str, properties: dict[str, Any]) -> dict[str, Any]:
    return {"operation": "set", "distinct_id": distinct_id, "properties": properties}


def rpc(method: str, params: dict[str, Any], id_: int = 1) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": id_, "method": method, "params": params}


INITIALIZE = rpc(
    "initialize",
    {"protocolVersion": LEGACY_VERSION, "capabilities": {}, "clientInfo": {"name": "raw-test", "version": "1"}},
)


def post(url: str, body: dict[str, Any] | bytes, **headers: str) -> httpx2.Response:
    """A raw legacy-era JSON-RPC POST, as a non-SDK client would send it."""
    all_headers = {"Accept": SSE_OR_JSON, "Content-Type": "application/json", "MCP-Protocol-Version": LEGACY_VERSION}
    all_headers.update(headers)
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx2.post(url, content=content, headers=all_headers, timeout=10)


def message(response: httpx2.Response) -> dict[str, Any]:
    """The JSON-RPC answer from an SSE (`data: ...`) or a plain JSON response."""
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        data = [line[len("data:") :].strip() for line in response.text.splitlines() if line.startswith("data:")]
        assert len(data) == 1, response.text
        return json.loads(data[0])
    return response.json()


def tool_call(distinct_id: str, properties: dict[str, Any]) -> dict[str, Any]:
    return rpc("tools/call", {"name": "engage", "arguments": engage_set(distinct_id, properties)}, id_=7)


# -- the SDK client, both protocol eras ------------------------------------------------------------


@pytest.mark.asyncio
async def test_tools_list_over_http_matches_stdio_in_both_eras(http_server, env):
    async with Client(http_server) as modern:
        assert modern.protocol_version == "2026-07-28"
        modern_tools = (await modern.list_tools()).tools
    async with Client(http_server, mode="legacy") as legacy:
        assert legacy.protocol_version == LEGACY_VERSION
        legacy_tools = (await legacy.list_tools()).tools
    async with stdio_client(env) as client:
        stdio_tools = (await client.list_tools()).tools
    names = [tool.name for tool in modern_tools]
    assert names[:3] == ["track", "engage", "groups"]
    assert "lexicon" in names and len(names) == len(set(names))
    assert modern_tools == stdio_tools
    assert legacy_tools == stdio_tools


@pytest.mark.asyncio
@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_engage_call_over_http_reaches_the_double(double, http_server, mode):
    async with Client(http_server, mode=mode) as client:
        result = await client.call_tool("engage", engage_set(f"http-{mode}", {"plan": "team", "seats": 3}))
    data = structured(result)
    assert data["updates_sent"] == 1
    assert data["mixpanel"] == {"status": 1, "error": None}
    assert f"http-{mode}" in result.content[0].text
    (request,) = double.received("/engage")
    assert request.method == "POST"
    assert request.query == {"verbose": "1", "ip": "0"}  # ip=0: not geolocated from this server's address
    assert "authorization" not in request.headers
    assert request.json() == [
        {"$token": TOKEN, "$distinct_id": f"http-{mode}", "$set": {"plan": "team", "seats": 3}, "$ignore_time": True, "$ip": "0"}
    ]
    assert double.profiles == {f"http-{mode}": {"plan": "team", "seats": 3}}


# -- plain HTTP ------------------------------------------------------------------------------------


def test_healthz(http_server):
    base = http_server.removesuffix("/mcp")
    response = httpx2.get(f"{base}/healthz", timeout=5)
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "version": __version__}


def test_legacy_initialize_gets_no_session_and_later_calls_need_none(double, http_server):
    """stateless_http=True: no Mcp-Session-Id is issued, and a call without one (or initialize) is served."""
    response = post(http_server, INITIALIZE)
    assert response.status_code == 200
    assert "mcp-session-id" not in response.headers
    answer = message(response)
    assert answer["id"] == 1
    assert answer["result"]["protocolVersion"] == LEGACY_VERSION
    assert answer["result"]["serverInfo"]["name"] == "mixpanel-mcp"

    listed = post(http_server, rpc("tools/list", {}, id_=2))
    assert listed.status_code == 200
    assert "mcp-session-id" not in listed.headers
    assert "engage" in [tool["name"] for tool in message(listed)["result"]["tools"]]

    called = post(http_server, tool_call("raw-1", {"plan": "free"}))
    assert called.status_code == 200
    result = message(called)["result"]
    assert result["isError"] is False
    assert result["structuredContent"]["updates_sent"] == 1
    assert double.profiles == {"raw-1": {"plan": "free"}}


def test_a_loopback_origin_is_accepted(double, http_server):
    """The control for the two refusals below: same request, a legitimate Origin and Host."""
    port = urlsplit(http_server).port
    response = post(http_server, tool_call("ok-origin", {"a": 1}), Origin=f"http://localhost:{port}")
    assert response.status_code == 200
    assert message(response)["result"]["isError"] is False
    assert len(double.received("/engage")) == 1


def test_a_foreign_host_header_is_refused(double, http_server):
    response = post(http_server, tool_call("evil-host", {"a": 1}), Host="evil.example")
    assert response.status_code == 421
    assert "Invalid Host header" in response.text
    assert double.received() == []


def test_a_foreign_origin_is_refused(double, http_server):
    response = post(http_server, tool_call("evil-origin", {"a": 1}), Origin="http://evil.example")
    assert response.status_code == 403
    assert "Invalid Origin header" in response.text
    assert double.received() == []


@pytest.mark.parametrize(
    "host", ["127.0.0.1:1@evil.example", "localhost:evil.example", "localhost:80:81", "evil.example:{port}", "localhost:"]
)
def test_a_host_header_is_parsed_strictly(double, http_server, host):
    """Only `name[:port]`: the SDK's own check accepted anything after an allowed `name:`."""
    response = post(http_server, tool_call("tricky-host", {"a": 1}), Host=host.format(port=urlsplit(http_server).port))
    assert (response.status_code, response.text) == (421, "Invalid Host header")
    assert double.received() == []


def test_host_and_origin_are_compared_without_case(double, http_server):
    port = urlsplit(http_server).port
    response = post(
        http_server, tool_call("upper-case", {"a": 1}), Host=f"LocalHost:{port}", Origin=f"HTTP://LOCALHOST:{port}"
    )
    assert response.status_code == 200
    assert message(response)["result"]["isError"] is False
    tricky = post(http_server, tool_call("tricky-origin", {"a": 1}), Origin=f"http://localhost:{port}@evil.example")
    assert (tricky.status_code, tricky.text) == (403, "Invalid Origin header")
    assert len(double.received("/engage")) == 1


def test_a_body_over_4_mib_is_refused(double, http_server):
    big = json.dumps(tool_call("big", {"blob": "x" * (4 * 1024 * 1024 + 1)})).encode()
    response = post(http_server, big)
    assert response.status_code == 413
    assert double.received() == []
    # The control: a 3 MiB body is read, and the call goes through to Mixpanel.
    fits = json.dumps(tool_call("fits", {"blob": "x" * (3 * 1024 * 1024)})).encode()
    response = post(http_server, fits)
    assert response.status_code == 200
    assert message(response)["result"]["isError"] is False
    assert len(double.received("/engage")) == 1


@pytest.mark.asyncio
async def test_a_stateless_request_logs_no_session_ending(double, double_url, tmp_path):
    import os

    from tests.conftest import server_env
    from tests.harness import http_server as serve

    with serve({**os.environ, **server_env(double_url)}, log_dir=tmp_path) as served:
        async with Client(served.url) as client:
            await client.list_tools()
            await client.call_tool("events", {"operation": "names"})
        log = served.stderr()
    assert "Terminating session" not in log


def test_legacy_requests_log_no_session_ending_either(double, double_url, tmp_path):
    """Raw legacy-era POSTs (as the MCP Inspector sends them) go through the SDK's per-request transport, which
    logs "Terminating session: None" at INFO for each one; INFO lines do reach the log."""
    import os

    from tests.conftest import server_env
    from tests.harness import http_server as serve

    with serve({**os.environ, **server_env(double_url)}, log_dir=tmp_path) as served:
        for id_ in (1, 2):
            assert message(post(served.url, {**INITIALIZE, "id": id_}))["id"] == id_
        log = served.stderr()
    assert "Serving Streamable HTTP on" in log
    assert "Terminating session" not in log
