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
    # stdin stays open until the last answer is in: closing it ends the session, and the SDK then cancels
    # whatever it has not answered yet, so an early close would make the test depend on the machine's speed.
    server = subprocess.Popen(
        [sys.executable, "-m", "mixpanel_mcp"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, env=env, cwd=str(ROOT),
    )
    try:
        assert server.stdin is not None and server.stdout is not None
        server.stdin.write(b"\n".join(lines) + b"\n")
        server.stdin.flush()
        answers = []
        while not any(a.get("id") == "after" for a in answers):
            line = server.stdout.readline()  # the server answers every line; EOF means it died
            assert line, f"the server closed stdout after {len(answers)} answer(s)"
            answers.append(json.loads(line))
    finally:
        if server.stdin is not None:
            server.stdin.close()
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
    by_id = {a.get("id"): a for a in answers if a.get("id") in ("init", "after")}
    assert "result" in by_id["init"] and by_id["after"] == {"jsonrpc": "2.0", "id": "after", "result": {}}
    errors = [a for a in answers if a.get("id") not in ("init", "after")]
    assert [(e["error"]["code"], e["id"]) for e in errors] == [(code, id_) for _, code, id_ in MALFORMED]
    for error in errors:  # nothing of the line is echoed
        assert len(error["error"]["message"]) < 80 and "garbage" not in error["error"]["message"]
