"""The command line: flags, the console script, configuration errors, and a stdout kept for the protocol."""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import IO

import pytest

from mixpanel_mcp import __version__, cli
from mixpanel_mcp.config import ENV_VARS
from tests.conftest import TOKEN, server_env

ROOT = Path(__file__).resolve().parent.parent


def clean_env(**values: str) -> dict[str, str]:
    """The current environment without any MIXPANEL_* variable, plus `values`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIXPANEL_")}
    env.update(values)
    return env


def run_cli(*args: str, env: dict[str, str], stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "mixpanel_mcp", *args], env=env, input=stdin, capture_output=True, timeout=30, cwd=ROOT
    )


def read_lines(pipe: IO[bytes], count: int, timeout: float) -> list[bytes]:
    """`count` lines from a pipe, or fail after `timeout` seconds instead of hanging."""
    deadline = time.monotonic() + timeout
    buffer = b""
    while buffer.count(b"\n") < count:
        remaining = deadline - time.monotonic()
        ready, _, _ = select.select([pipe], [], [], max(remaining, 0))
        if not ready:
            pytest.fail(f"no answer in {timeout} s; got {buffer!r}")
        chunk = os.read(pipe.fileno(), 65536)
        if not chunk:
            pytest.fail(f"the server closed stdout early; got {buffer!r}")
        buffer += chunk
    lines = buffer.split(b"\n")
    return [line + b"\n" for line in lines[:-1]] + ([lines[-1]] if lines[-1] else [])


def test_help_lists_the_flags_and_the_variables():
    done = run_cli("--help", env=clean_env())
    assert done.returncode == 0
    out = done.stdout.decode()
    for flag in ("--transport", "--host", "--port", "--region", "--project-id", "--version", "{stdio,http}"):
        assert flag in out
    assert out.startswith("usage: mixpanel-mcp ")
    for name in ENV_VARS:
        assert name in out, name
    # Every MIXPANEL_MCP_* variable the package reads, as the README promises.
    package = Path(__file__).resolve().parent.parent / "mixpanel_mcp"
    read = {m for f in package.rglob("*.py") for m in re.findall(r"MIXPANEL_MCP_[A-Z_]+[A-Z]", f.read_text())}
    assert read and read <= set(re.findall(r"MIXPANEL_MCP_[A-Z_]+[A-Z]", out)), read
    assert done.stderr == b""


def test_version():
    done = run_cli("--version", env=clean_env())
    assert (done.returncode, done.stdout.decode().strip()) == (0, f"mixpanel-mcp {__version__}")


def test_console_script_is_mixpanel_mcp():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"] == {"mixpanel-mcp": "mixpanel_mcp.cli:main"}
    assert cli.parser().prog == "mixpanel-mcp"


@pytest.mark.parametrize(
    ("args", "env", "variable"),
    [
        ((), {}, "MIXPANEL_PROJECT_TOKEN"),  # no credential at all
        ((), {"MIXPANEL_PROJECT_TOKEN": TOKEN, "MIXPANEL_REGION": "mars"}, "MIXPANEL_REGION"),
        (("--transport", "http"), {"MIXPANEL_PROJECT_TOKEN": TOKEN, "MIXPANEL_TIMEOUT": "nan"}, "MIXPANEL_TIMEOUT"),
        (("--project-id", "abc"), {"MIXPANEL_PROJECT_TOKEN": TOKEN}, "MIXPANEL_PROJECT_ID"),
        (
            (),
            {"MIXPANEL_PROJECT_TOKEN": TOKEN, "MIXPANEL_QUERY_URL": "http://mixpanel.example.com/api"},
            "MIXPANEL_QUERY_URL",
        ),
        (
            (),
            {"MIXPANEL_SERVICE_ACCOUNT_USERNAME": "bot", "MIXPANEL_SERVICE_ACCOUNT_SECRET": "s3cr3t-value"},
            "MIXPANEL_PROJECT_ID",
        ),
    ],
)
def test_a_configuration_error_exits_2_naming_the_variable(args, env, variable):
    done = run_cli(*args, env=clean_env(**env))
    assert done.returncode == 2
    assert done.stdout == b""
    err = done.stderr.decode()
    assert err.startswith("mixpanel-mcp: configuration error: ")
    assert variable in err
    assert "Traceback" not in err
    assert "s3cr3t-value" not in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "args",
    [("--transport", "sse"), ("--port", "99999"), ("--port", "http"), ("--region", "mars"), ("--bogus",)],
)
def test_bad_flags_exit_2_with_usage_on_stderr(args):
    done = run_cli(*args, env=clean_env(MIXPANEL_PROJECT_TOKEN=TOKEN))
    assert done.returncode == 2
    assert done.stdout == b""
    assert "usage: mixpanel-mcp" in done.stderr.decode()
    assert args[0] in done.stderr.decode()


def test_config_error_in_process_prints_only_to_stderr(monkeypatch, capsys):
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MIXPANEL_API_SECRET", "legacy-secret")
    with pytest.raises(SystemExit) as info:
        cli.main(["--region", "eu", "--project-id", "-3"])
    assert info.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "MIXPANEL_PROJECT_ID must be a whole number" in err
    assert "legacy-secret" not in err


def test_stdio_stdout_carries_only_protocol_messages(double, double_url):
    """Even while the server logs (a retried 503), every stdout line is a JSON-RPC message."""
    double.fail("/engage", 503, times=1)
    requests = [
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}},
        },
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}},
        {
            "jsonrpc": "2.0",
            "id": 3,
            "method": "tools/call",
            "params": {"name": "engage", "arguments": {"operation": "set", "distinct_id": "cli-1", "properties": {"a": 1}}},
        },
    ]
    stdin = b"".join(json.dumps(r).encode() + b"\n" for r in requests)
    # Tool calls run concurrently with reading stdin: keep the pipe open until the call is answered.
    process = subprocess.Popen(
        [sys.executable, "-m", "mixpanel_mcp"],
        env=clean_env(**server_env(double_url)),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(stdin)
    process.stdin.flush()
    try:
        lines = read_lines(process.stdout, 3, timeout=20)
        rest, err = process.communicate(timeout=20)  # closes stdin: the server exits
    finally:
        process.kill()
    messages = [json.loads(line) for line in lines + rest.splitlines() if line.strip()]
    assert [m.get("id") for m in messages] == [1, 2, 3]
    assert all(m["jsonrpc"] == "2.0" and "result" in m for m in messages)
    call = messages[2]["result"]
    assert call["isError"] is False and call["structuredContent"]["updates_sent"] == 1
    assert len(double.received("/engage")) == 2  # the 503, then the retry
    assert "retrying" in err.decode()  # the log line exists, and went to stderr
    assert TOKEN not in err.decode()


def test_in_a_terminal_stdio_says_what_it_waits_for_and_ctrl_c_stops_it_at_once(tmp_path):
    import pty
    import signal

    main_end, terminal = pty.openpty()  # stdin is a terminal, as when a person runs the README's command
    process = subprocess.Popen(
        [sys.executable, "-m", "mixpanel_mcp", "--sandbox", "--sandbox-dir", str(tmp_path / "sandbox")],
        env=clean_env(), stdin=terminal, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
    )
    os.close(terminal)
    try:
        # Waits on what the server says (a cold start on a busy machine takes seconds); the limit ends a broken run.
        lines = []
        while not any(b"waiting for an MCP client on stdin" in line for line in lines):
            lines += read_lines(process.stderr, 1, timeout=120)
        hint = b"".join(lines).decode()
        assert "Use it from an MCP client" in hint and "Ctrl-C stops it" in hint
        process.send_signal(signal.SIGINT)  # one Ctrl-C
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
        os.close(main_end)
    assert process.returncode == 0
    assert b"mixpanel-mcp: stopped." in err and b"Traceback" not in err


def test_http_with_the_port_taken_says_so_and_never_claims_to_serve(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_cli(
            "--sandbox", "--sandbox-dir", str(tmp_path / "sandbox"), "--transport", "http", "--port", str(port),
            env=clean_env(),
        )
    err = done.stderr.decode()
    assert done.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}: the port is already in use" in err
    assert "Serving" not in err
