"""The hosted endpoint as `uvicorn --factory mixpanel_mcp.asgi:create_app --workers 2`: requests spread over
both workers; a confirmation code issued by one worker, and a question asked by one, are accepted by the
other; each worker spends its share of the rate limits; keys, Host and the proxy's client address hold; and
a worker that cannot start says why and stops uvicorn instead of being respawned."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import ElicitResult

from mixpanel_mcp.asgi import StartupError, build_app, worker_count
from mixpanel_mcp.double.app import free_port
from mixpanel_mcp.policy import agent_entry, new_key
from tests.conftest import error_text, server_env, structured
from tests.harness import ROOT, audit_records, base_env, post, rpc

SECRET = "test-shared-secret-0123456789abcdefghijklmnop"
OPS_KEY, OTHER_KEY = new_key(), new_key()
WORKERS = 2
# uvicorn's log lines with the pid of the process that wrote them (--log-config).
LOG_CONFIG = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"pid": {"format": "%(process)d %(levelname)s %(message)s"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "pid", "stream": "ext://sys.stderr"}},
    "loggers": {
        "uvicorn": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
        "uvicorn.access": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
    },
}


def write_policy(directory: Path) -> Path:
    entries = [
        agent_entry("ops", OPS_KEY).replace("access = {}", 'access = { "*" = "full" }'),
        agent_entry("other", OTHER_KEY).replace("access = {}", 'access = { "*" = "full" }'),
    ]
    path = directory / "policy.toml"
    path.write_text('[server]\nallowed_hosts = ["127.0.0.1"]\n\n' + "\n".join(entries))
    return path


def hosted_env(double_url: str, directory: Path, **extra: str) -> dict[str, str]:
    hosted = {
        "MIXPANEL_CACHE_TTL": "0",
        "MIXPANEL_CACHE_TTL_TODAY": "0",
        "MIXPANEL_MCP_POLICY": str(write_policy(directory)),
        "MIXPANEL_MCP_SECRET_KEY": SECRET,
        "MIXPANEL_MCP_AUDIT_LOG": str(directory / "audit.jsonl"),
        "MIXPANEL_MCP_WORKERS": str(WORKERS),
    }
    return base_env(**{**server_env(double_url), **hosted, **extra})


def uvicorn(port: int, *options: str) -> list[str]:
    """The command of the README's hosted deployment, on a loopback port."""
    command = [sys.executable, "-m", "uvicorn", "--factory", "mixpanel_mcp.asgi:create_app", "--workers", str(WORKERS)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--proxy-headers", "--forwarded-allow-ips", "127.0.0.1"]
    return command + list(options)


@dataclass
class Workers:
    url: str
    log: Path
    audit: Path
    sent: list[dict[str, Any]] = field(default_factory=list)  # every POST /mcp made through `client`

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    def pids(self) -> set[int]:
        return {int(pid) for pid in re.findall(r"^(\d+) INFO Started server process", self.stderr(), re.M)}

    def _pid_in_log(self, pattern: str) -> int:
        for _ in range(3000):  # the line is written as the response starts; a busy machine may take seconds
            found = re.search(pattern, self.stderr(), re.M)
            if found:
                return int(found.group(1))
            time.sleep(0.02)
        raise AssertionError(f"{pattern} not in the access log:\n{self.stderr()[-3000:]}")

    def pid_of(self, n: int) -> int:
        """The pid of the worker that answered POST number `n` (uvicorn's access log, with --log-config)."""
        return self._pid_in_log(rf'^(\d+) INFO \S+ - "POST /mcp\?n={n}&m=\S+ HTTP/1\.1" \d+$')

    async def connection(self, *, avoid: int | None = None) -> tuple[httpx2.AsyncHTTPTransport, int]:
        """A transport holding one kept-alive connection, and the pid of the worker that accepted it (not
        `avoid`): which worker accepts a connection is the kernel's choice, so connect until it suits."""
        base = self.url.removesuffix("/mcp")
        for attempt in range(100):
            transport = httpx2.AsyncHTTPTransport()
            probe = f"{time.monotonic_ns()}-{attempt}"
            response = await transport.handle_async_request(httpx2.Request("GET", f"{base}/healthz?probe={probe}"))
            await response.aread()
            await response.aclose()
            pid = self._pid_in_log(rf'^(\d+) INFO \S+ - "GET /healthz\?probe={probe} HTTP/1\.1" 200$')
            if pid != avoid:
                return transport, pid
            await transport.aclose()
        raise AssertionError(f"100 connections in a row were accepted by worker {avoid}")

    def calls(self) -> list[dict[str, Any]]:
        return [s for s in self.sent if s["method"] == "tools/call"]

    def numbered(self, connection: httpx2.AsyncBaseTransport) -> Numbered:
        return Numbered(connection, self.sent)

    @asynccontextmanager
    async def client(self, via: Numbered, key: str = OPS_KEY, **options: Any) -> AsyncIterator[Client]:
        """The SDK client over HTTP with the agent's key, through `via` (a connection to one worker, which
        the test may switch to another)."""
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx2.AsyncClient(headers=headers, transport=via, timeout=30) as http:
            async with Client(streamable_http_client(self.url, http_client=http), **options) as session:
                yield session


class Numbered(httpx2.AsyncBaseTransport):
    """Numbers every POST in its URL (?n=..&m=method) and records it; `switch` moves later requests to
    another connection (another worker) while the SDK client stays the same."""

    def __init__(self, inner: httpx2.AsyncBaseTransport, sent: list[dict[str, Any]]) -> None:
        self.inner = inner
        self.sent = sent
        self.others: list[httpx2.AsyncBaseTransport] = []

    def switch(self, to: httpx2.AsyncBaseTransport) -> None:
        self.others.append(self.inner)
        self.inner = to

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if request.method == "POST":
            body = json.loads(request.content or b"{}")
            n = len(self.sent)
            self.sent.append({"n": n, "method": body.get("method"), "headers": dict(request.headers), "body": body})
            request.url = request.url.copy_merge_params({"n": str(n), "m": str(body.get("method"))})
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        for transport in [*self.others, self.inner]:
            await transport.aclose()


@pytest.fixture(scope="module")
def workers(double_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workers]:
    directory = tmp_path_factory.mktemp("asgi")
    log_config = directory / "logging.json"
    log_config.write_text(json.dumps(LOG_CONFIG))
    port = free_port()
    log = directory / "stderr.log"
    process = subprocess.Popen(
        uvicorn(port, "--log-config", str(log_config)),
        env=hosted_env(double_url, directory, MIXPANEL_MCP_WORKERS=""),  # the count comes from uvicorn's --workers
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )
    deadline = time.monotonic() + 120  # only ends a broken start: two cold workers on a busy machine are slow
    while log.read_text().count("Application startup complete") < WORKERS:  # both workers serving
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"uvicorn did not start {WORKERS} workers: {log.read_text()}")
        time.sleep(0.05)
    try:
        yield Workers(url=f"http://127.0.0.1:{port}/mcp", log=log, audit=directory / "audit.jsonl")
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


# -- several workers ------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_requests_reach_both_workers_and_each_answers_alike(double, workers):
    first, first_pid = await workers.connection()
    second, second_pid = await workers.connection(avoid=first_pid)
    via = workers.numbered(first)
    listings = []
    async with workers.client(via) as client:
        for i in range(20):
            if i == 10:
                via.switch(second)
            listings.append(sorted(t.name for t in (await client.list_tools()).tools))
    listed = [s["n"] for s in workers.sent if s["method"] == "tools/list"][-20:]
    assert [workers.pid_of(n) for n in listed] == [first_pid] * 10 + [second_pid] * 10
    assert workers.pids() == {first_pid, second_pid}  # uvicorn started two workers, and both answered
    assert all(listing == listings[0] for listing in listings)
    assert {"engage", "events", "segmentation", "lexicon", "track"} <= set(listings[0])


@pytest.mark.asyncio
async def test_a_code_issued_by_one_worker_is_accepted_by_the_other_once(double, workers):
    issuing, issuing_pid = await workers.connection()
    other, other_pid = await workers.connection(avoid=issuing_pid)
    via = workers.numbered(issuing)
    args = {"operation": "delete", "distinct_id": "user-1"}
    async with workers.client(via) as client:
        refused = await client.call_tool("engage", args)
        issued = workers.calls()[-1]
        code = refused.structured_content["confirm"]
        via.switch(other)
        confirmed = await client.call_tool("engage", {**args, "confirm": code})
        accepted = workers.calls()[-1]
        again = await client.call_tool("engage", {**args, "confirm": code})

    assert (workers.pid_of(issued["n"]), workers.pid_of(accepted["n"])) == (issuing_pid, other_pid)
    assert 'Not done yet: this would delete the profile of user "user-1"' in error_text(refused)
    assert structured(confirmed)["updates_sent"] == 1
    assert "it was already used" in error_text(again)  # single use, on the worker that accepted it
    assert [r.json()[0]["$distinct_id"] for r in double.received("/engage")] == ["user-1"]
    reasons = [r["reason"] for r in audit_records(workers.audit) if r.get("tool") == "engage"][-3:]
    assert reasons == [
        "destructive: needs confirmation",
        "confirmed with a one-time code",
        "destructive: needs confirmation; code refused: it was already used",
    ]


@pytest.mark.asyncio
async def test_a_question_asked_by_one_worker_is_answered_on_the_other(double, workers):
    asking, asking_pid = await workers.connection()
    answering, answering_pid = await workers.connection(avoid=asking_pid)
    via = workers.numbered(asking)
    questions = []

    async def person(context: Any, params: Any) -> ElicitResult:
        questions.append(params.message)
        via.switch(answering)  # the client's next request (the answer) goes to the other worker
        return ElicitResult(action="accept", content={"confirm": True})

    async with workers.client(via, elicitation_callback=person) as client:
        before = len(workers.calls())
        result = await client.call_tool("engage", {"operation": "delete", "distinct_id": "asked-1"})
        version = client.protocol_version
    asked, answered = workers.calls()[before:]

    assert version == "2026-07-28"  # asked through InputRequiredResult: the answer comes in a second request
    assert (workers.pid_of(asked["n"]), workers.pid_of(answered["n"])) == (asking_pid, answering_pid)
    assert "requestState" in answered["body"]["params"]
    assert structured(result)["updates_sent"] == 1
    assert questions == [
        'Agent ops wants to delete the profile of user "asked-1" in Mixpanel project 1234, irreversibly. Go ahead?'
    ]
    assert [r.json()[0]["$distinct_id"] for r in double.received("/engage")] == ["asked-1"]

    # The sealed state belongs to the agent that was asked: another agent's key cannot replay it.
    headers = {k: v for k, v in answered["headers"].items() if k not in ("authorization", "content-length", "host")}
    headers["authorization"] = f"Bearer {OTHER_KEY}"
    response = httpx2.post(workers.url, json=answered["body"], headers=headers, timeout=30)
    assert "Invalid or expired requestState" in response.text, response.text
    assert len(double.received("/engage")) == 1


@pytest.mark.asyncio
async def test_each_worker_spends_its_share_of_the_query_budget(double, workers):
    connection, _ = await workers.connection()
    async with workers.client(workers.numbered(connection)) as client:
        names = structured(await client.call_tool("events", {"operation": "names"}))
    assert names["budget"]["query"]["limit"] == 60 // WORKERS
    assert double.received("/api/query/events/names")[0].query["project_id"] == "1234"


# -- the gate, behind a proxy ---------------------------------------------------------------------


def test_no_key_gets_401_and_the_audit_names_the_client_the_proxy_forwarded(double, workers):
    listing = rpc("tools/list", {})
    missing = post(workers.url, listing, X_Forwarded_For="203.0.113.9")
    wrong = post(workers.url, listing, key="mxp_not-a-key")
    foreign_host = post(workers.url, listing, key=OPS_KEY, Host="evil.example")
    listed = post(workers.url, listing, key=OPS_KEY)

    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == 'Bearer realm="mixpanel-mcp"'
    assert wrong.status_code == 401
    assert foreign_host.status_code == 421
    assert listed.status_code == 200
    refused = [r for r in audit_records(workers.audit) if r["agent"] == "(unauthenticated)"]
    assert refused[-2]["remote"] == "203.0.113.9"  # --proxy-headers: the address the trusted proxy saw
    assert refused[-1]["remote"] == "127.0.0.1"
    assert SECRET not in workers.stderr() and OPS_KEY not in workers.stderr()


# -- refusing to start ----------------------------------------------------------------------------


def test_without_a_policy_uvicorn_stops_with_the_reason_instead_of_respawning(double_url, tmp_path):
    env = hosted_env(double_url, tmp_path)
    del env["MIXPANEL_MCP_POLICY"]
    # A dead worker is noticed at its next health check (5 s by default).
    command = uvicorn(free_port(), "--timeout-worker-healthcheck", "1")
    # That the supervisor ends at all is the point: a respawning one never does. uvicorn may respawn a worker
    # a couple of times before it reads the exit status (a few seconds each on a busy machine), so the limit
    # only ends a broken run and is generous.
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    # Each worker exits with uvicorn's STARTUP_FAILURE status, so the supervisor stops (its own status is 0).
    assert "mixpanel-mcp: MIXPANEL_MCP_POLICY is not set: a hosted endpoint never serves callers" in done.stderr
    assert "failed to start, stopping the parent process" in done.stderr
    assert "Application startup complete" not in done.stderr


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"MIXPANEL_MCP_SECRET_KEY": None}, "MIXPANEL_MCP_SECRET_KEY must be at least 32 characters of random text"),
        ({"MIXPANEL_MCP_SECRET_KEY": "too-short"}, "MIXPANEL_MCP_SECRET_KEY must be at least 32 characters"),
        ({"MIXPANEL_MCP_WORKERS": "two"}, "MIXPANEL_MCP_WORKERS must be a whole number of worker processes, e.g. 4"),
        ({"MIXPANEL_MCP_POLICY": "/nonexistent/policy.toml"}, "policy error: cannot read the policy file /nonexistent"),
        (
            dict.fromkeys(["MIXPANEL_PROJECT_TOKEN", "MIXPANEL_SERVICE_ACCOUNT_USERNAME", "MIXPANEL_SERVICE_ACCOUNT_SECRET"]),
            "configuration error: No Mixpanel credential is configured.",
        ),
        ({"MIXPANEL_MCP_AUDIT_LOG": "/nonexistent/dir/audit.jsonl"}, "cannot open the audit log /nonexistent/dir/audit"),
    ],
)
def test_a_worker_that_cannot_start_says_what_to_fix(double_url, tmp_path, change, message):
    env = hosted_env(double_url, tmp_path)
    for name, value in change.items():
        if value is None:
            env.pop(name)
        else:
            env[name] = value
    with pytest.raises(StartupError) as refused:
        build_app(env)
    assert str(refused.value).startswith(message)


def test_a_policy_without_allowed_hosts_is_refused(double_url, tmp_path):
    env = hosted_env(double_url, tmp_path)
    Path(env["MIXPANEL_MCP_POLICY"]).write_text(agent_entry("ops", OPS_KEY))
    with pytest.raises(StartupError, match=r"the policy lists no \[server\] allowed_hosts"):
        build_app(env)


def test_the_worker_count_is_mixpanel_mcp_workers_else_uvicorns_own():
    uvicorn_argv = ["uvicorn", "--factory", "mixpanel_mcp.asgi:create_app", "--workers", "3", "--port", "8000"]
    assert worker_count({"MIXPANEL_MCP_WORKERS": "5", "WEB_CONCURRENCY": "2"}, uvicorn_argv) == 5
    assert worker_count({"WEB_CONCURRENCY": "2"}, uvicorn_argv) == 3
    assert worker_count({"WEB_CONCURRENCY": "2"}, ["uvicorn", "--workers=4"]) == 4
    assert worker_count({"WEB_CONCURRENCY": "2"}, ["uvicorn", "--port", "8000"]) == 2
    assert worker_count({}, ["uvicorn"]) == 1
    with pytest.raises(StartupError, match="--workers must be a whole number of worker processes, e.g. 4, not 'x'"):
        worker_count({}, ["uvicorn", "--workers", "x"])


def test_limits_follow_web_concurrency_when_nothing_else_says(double_url, tmp_path):
    env = hosted_env(double_url, tmp_path, WEB_CONCURRENCY="3", MIXPANEL_MCP_WORKERS="")
    assert build_app(env).runtime.settings.budget.query_per_hour == 20


def test_limits_are_split_over_the_workers_and_what_cannot_be_split_is_said(double_url, tmp_path, caplog):
    env = hosted_env(double_url, tmp_path, MIXPANEL_MCP_WORKERS="4", MIXPANEL_QUERY_LIMIT_PER_HOUR="600")
    app = build_app(env)
    budget = app.runtime.settings.budget
    assert (budget.query_per_hour, budget.query_concurrent, budget.export_per_hour) == (150, 1, 15)
    assert (budget.export_per_second, budget.export_concurrent, budget.lexicon_per_minute) == (1, 25, 1)
    assert (
        "Rate limits of the server's project: exports a second 3 cannot be split over 4 workers: each gets 1, so "
        "together they may send up to 4" in caplog.text
    )


def test_check_says_whether_a_worker_would_start_as_uvicorn_exits_0_either_way(double, double_url, tmp_path):
    """With --workers 2+, uvicorn stops on a worker's start-up failure but exits 0 (its supervisor's status), so
    the README deploys with `mixpanel-mcp check && uvicorn ...`: check builds a worker's app and fails with it."""
    check = [sys.executable, "-m", "mixpanel_mcp", "check"]
    good = subprocess.run(check, env=hosted_env(double_url, tmp_path), cwd=ROOT, capture_output=True, text=True, timeout=120)
    bad = hosted_env(double_url, tmp_path, MIXPANEL_MCP_SECRET_KEY="too-short-" + "x" * 5)
    refused = subprocess.run(check, env=bad, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert good.returncode == 0, good.stdout + good.stderr
    assert "[ok]" in good.stdout and "HOSTED: the hosted endpoint's worker settings" in good.stdout
    assert refused.returncode == 1
    assert re.search(r"\[FAILED\] +HOSTED", refused.stdout)
    assert "a worker would not start: MIXPANEL_MCP_SECRET_KEY must be at least 32 characters" in refused.stdout
    assert "too-short-xxxxx" not in refused.stdout + refused.stderr
