"""The stdio wire itself: a line that is not a JSON-RPC message gets the error JSON-RPC prescribes (-32700
for a line that is not JSON, -32600 for JSON that is not a request), and the server carries on.

Raw bytes are written to the server's stdin (the SDK client cannot send malformed messages)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.harness import ROOT

INITIALIZE = {
    "jsonrpc": "2.0", "id": "init", "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}},
}
MALFORMED: list[tuple[bytes, int, object]] = [  # (line, code, id in the answer)
    (b'{"jsonrpc": "2.0", "id": 1, "method": "tools/li', -32700, None),  # truncated
    (b"[" * 1000 + b"]" * 1000, -32700, None),  # nesting of 1,000 levels: past what is parsed
    (b"{" + b'"a":{' * 1000 + b"}" * 1001, -32700, None),
    (b'{"jsonrpc": "2.0", "id": {"x": 1}, "method": "ping"}', -32600, None),  # an object id
    (b'{"jsonrpc": "1.0", "id": 7, "method": "ping"}', -32600, 7),
    (b'{"jsonrpc": "2.0", "id": 8, "method": "ping"\x00}', -32700, None),  # a NUL byte
    (b'[{"jsonrpc": "2.0", "id": 9, "method": "ping"}]', -32600, None),  # a batch array
    (b"", -32700, None),  # an empty line
    (b"\xff\xfe garbage", -32700, None),
    (b'{"jsonrpc": "2.0", "id": 10, "method": "tools/call", "params": {"name": "\\ud800", "arguments": {}}}', -32600, 10),  # a lone surrogate
]


def test_malformed_lines_get_their_jsonrpc_error_and_the_server_carries_on(env):
    lines = [json.dumps(INITIALIZE).encode()]
    lines += [line for line, _, _ in MALFORMED]
    lines.append(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}).encode())
    lines.append(json.dumps({"jsonrpc": "2.0", "id": "after", "method": "ping"}).encode())
    server = subprocess.run(
        [sys.executable, "-m", "mixpanel_mcp"], input=b"\n".join(lines) + b"\n", capture_output=True, env=env,
        cwd=str(ROOT), timeout=120,
    )
    answers = [json.loads(line) for line in server.stdout.splitlines()]
    by_id = {a.get("id"): a for a in answers if a.get("id") in ("init", "after")}
    assert "result" in by_id["init"] and by_id["after"] == {"jsonrpc": "2.0", "id": "after", "result": {}}
    errors = [a for a in answers if a.get("id") not in ("init", "after")]
    assert [(e["error"]["code"], e["id"]) for e in errors] == [(code, id_) for _, code, id_ in MALFORMED]
    for error in errors:  # nothing of the line is echoed
        assert len(error["error"]["message"]) < 80 and "garbage" not in error["error"]["message"]
