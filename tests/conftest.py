"""Shared test harness: a real Mixpanel double on 127.0.0.1, and the real server started as a subprocess.

Async tests open their MCP client inside the test body (`async with stdio_client(env)`): an async fixture
holding the SDK client would be torn down in another task than the one that entered its cancel scopes.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters

from mixpanel_mcp.double import DoubleState, running

PROJECT_ID = 1234
TOKEN = "test-token"
SA_USER = "bot.abc123.mp-service-account"
SA_SECRET = "test-sa-secret"
API_SECRET = "test-api-secret"


# Contract mode (MIXPANEL_OPENAPI_DIR set; mixpanel_mcp/double/contract.py): every double, in this process or in
# a server's subprocess, appends what broke Mixpanel's specs to one log; the test during which a line was added
# fails with it. Variables kept for subprocesses that otherwise start without any MIXPANEL_* setting:
CONTRACT_VARIABLES = ("MIXPANEL_OPENAPI_DIR", "MIXPANEL_CONTRACT_LOG")


_contract_log: Path | None = None  # set for the session (a test may point MIXPANEL_CONTRACT_LOG elsewhere)
_contract_offset = 0


def pytest_configure(config: pytest.Config) -> None:
    global _contract_log
    # The servers under test keep per-user files (the confirmation key, the sandbox) in the user's data folder:
    # a folder of this run instead, so the suite leaves nothing in the home directory of whoever runs it.
    os.environ["XDG_DATA_HOME"] = tempfile.mkdtemp(prefix="mixpanel-mcp-tests-")
    folder = os.environ.get("MIXPANEL_OPENAPI_DIR")
    if folder:
        os.environ["MIXPANEL_OPENAPI_DIR"] = str(Path(folder).resolve())
        _contract_log = Path(tempfile.mkdtemp(prefix="mixpanel-contract-")) / "violations.jsonl"
        _contract_log.touch()
        os.environ["MIXPANEL_CONTRACT_LOG"] = str(_contract_log)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    global _contract_offset
    if _contract_log is not None:
        _contract_offset = _contract_log.stat().st_size


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Any:
    result = yield
    if _contract_log is not None:
        with _contract_log.open("rb") as f:
            f.seek(_contract_offset)
            new = [json.loads(line)["violation"] for line in f.read().decode().splitlines() if line.strip()]
        if new:
            raise AssertionError("the Mixpanel double broke Mixpanel's OpenAPI specs:\n" + "\n".join(new))
    return result


def keep_contract_mode(env: dict[str, str]) -> dict[str, str]:
    """`env` plus the contract-mode variables, for a subprocess that runs its own double (the sandbox)."""
    return {**env, **{name: os.environ[name] for name in CONTRACT_VARIABLES if name in os.environ}}


@pytest.fixture(scope="session")
def double_state() -> DoubleState:
    return DoubleState()


@pytest.fixture(scope="session")
def double_url(double_state: DoubleState) -> Iterator[str]:
    with running(double_state) as url:
        yield url


@pytest.fixture
def double(double_state: DoubleState, double_url: str) -> DoubleState:
    """The double, emptied for this test."""
    double_state.reset()
    return double_state


def server_env(double_url: str, **overrides: str | None) -> dict[str, str]:
    """Environment for a server pointed at the double with every credential; `NAME=None` removes one."""
    env = {
        "MIXPANEL_PROJECT_TOKEN": TOKEN,
        "MIXPANEL_PROJECT_ID": str(PROJECT_ID),
        "MIXPANEL_SERVICE_ACCOUNT_USERNAME": SA_USER,
        "MIXPANEL_SERVICE_ACCOUNT_SECRET": SA_SECRET,
        "MIXPANEL_INGESTION_URL": double_url,
        "MIXPANEL_QUERY_URL": f"{double_url}/api",
        "MIXPANEL_EXPORT_URL": f"{double_url}/api/2.0",
        "MIXPANEL_RETRY_BASE_DELAY": "0.01",
        # The start-up credentials check sends requests; tests count every request the double receives.
        "MIXPANEL_STARTUP_CHECK": "0",
        "MIXPANEL_TIMEOUT": "10",
        "XDG_DATA_HOME": os.environ["XDG_DATA_HOME"],
    }
    for name, value in overrides.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


@pytest.fixture
def env(double_url: str) -> dict[str, str]:
    return server_env(double_url)


# Tests of what tools send run with confirmation off (as an operator's policy may set it); the default
# (ask first) is covered by tests/test_confirm.py and by the tool-list tests (confirm=True).
NO_CONFIRM = Path(__file__).parent / "policies" / "no-confirm.toml"


@asynccontextmanager
async def stdio_client(
    env: dict[str, str], *args: str, confirm: bool = False, extensions: list[Any] | None = None
) -> AsyncIterator[Client]:
    """The real server, `python -m mixpanel_mcp ARGS`, over stdio. confirm=True: the default configuration.
    extensions: client extensions to advertise (e.g. MCP Apps)."""
    flags = list(args) if confirm else ["--policy", str(NO_CONFIRM), *args]
    params = StdioServerParameters(command=sys.executable, args=["-m", "mixpanel_mcp", *flags], env=env)
    async with Client(params, extensions=extensions) as client:
        yield client


@pytest.fixture(scope="module")
def http_server(double_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`mixpanel-mcp --transport http` as a subprocess on a free loopback port; yields the /mcp URL."""
    from tests.harness import http_server as serve

    env = {**os.environ, **server_env(double_url)}
    with serve(env, "--policy", str(NO_CONFIRM), log_dir=tmp_path_factory.mktemp("http-server")) as served:
        yield served.url


def stored_event(name: str, user: str, at: str | float, **properties: Any) -> dict[str, Any]:
    """An event as the double stores it; `at` is epoch seconds, or an ISO datetime taken as UTC (whole seconds)."""
    if isinstance(at, str):
        at = int(dt.datetime.fromisoformat(at).replace(tzinfo=dt.UTC).timestamp())
    return {"event": name, "properties": {"time": at, "distinct_id": user, **properties}}


def structured(result: Any) -> dict[str, Any]:
    assert not result.is_error, result.content[0].text
    assert result.structured_content is not None
    return result.structured_content


def refused(result: Any) -> dict[str, Any]:
    """An error result that still carries data (e.g. which records broke which rule): nothing was sent."""
    assert result.is_error, f"expected a refusal, got {result.structured_content}"
    assert result.structured_content is not None
    return result.structured_content


def error_text(result: Any) -> str:
    assert result.is_error, f"expected an error, got {result.structured_content}"
    return result.content[0].text
