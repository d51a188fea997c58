"""The hosted endpoint as an ASGI app, for running several worker processes behind a reverse proxy:

    uvicorn --factory mixpanel_mcp.asgi:create_app --workers 4 --host 127.0.0.1 --port 8000 \\
        --proxy-headers --forwarded-allow-ips 127.0.0.1

Each worker builds the same server as `mixpanel-mcp --transport http --policy FILE --audit-log PATH`, from the
environment: the MIXPANEL_* variables of the command, plus

    MIXPANEL_MCP_POLICY      the policy file (required: every caller of a hosted endpoint needs an agent key)
    MIXPANEL_MCP_SECRET_KEY  at least 32 random characters, the same in every worker and replica (required)
    MIXPANEL_MCP_AUDIT_LOG   append one JSON line per tool call to this file ('-': stderr)
    MIXPANEL_MCP_AUDIT_FAIL_CLOSED  0: calls go on when the audit log cannot be written (default 1: refused)
    MIXPANEL_MCP_REDIS_URL   share the rate budgets, the result cache, spent confirmation codes and agents' caps
                             through this Redis (every worker and replica counts them once)
    MIXPANEL_MCP_WORKERS     without Redis: how many processes share the project's rate limits (default:
                             uvicorn's --workers, else WEB_CONCURRENCY, else 1; set it when another process
                             manager runs the workers)

Shared by the workers (so any request may reach any worker): the policy file (each re-reads it when it
changes), the secret, which keys the confirmation codes and the SDK's sealed requestState, and the audit log
file (each appends whole lines). With Redis, also everything the calls share (see client/redis_state.py).
Without it, per worker: the rate-limit counters (so each gets 1/MIXPANEL_MCP_WORKERS of every limit), the
result cache, the calls in flight per agent, and the record of confirmation codes already used (a code is
single-use per worker).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
from collections.abc import Mapping, Sequence

from starlette.types import ASGIApp

from mixpanel_mcp.audit import AuditLog, fail_closed_setting
from mixpanel_mcp.client.state import open_state
from mixpanel_mcp.config import BudgetSettings, ConfigError, load_redis
from mixpanel_mcp.confirm import check_secret, shared_codes, shared_request_state
from mixpanel_mcp.policy import PolicyError, PolicySource, load_policy, server_settings


logger = logging.getLogger("mixpanel_mcp")

POLICY_VAR = "MIXPANEL_MCP_POLICY"
SECRET_VAR = "MIXPANEL_MCP_SECRET_KEY"
AUDIT_VAR = "MIXPANEL_MCP_AUDIT_LOG"
WORKERS_VAR = "MIXPANEL_MCP_WORKERS"
CHECK_VAR = "MIXPANEL_STARTUP_CHECK"  # as for the command; default here: only with one worker
UVICORN_WORKERS_VAR = "WEB_CONCURRENCY"  # uvicorn's default for --workers
STARTUP_FAILURE = 3  # uvicorn's exit status for a worker that cannot start: the supervisor stops instead of respawning
ANY_ADDRESS = "0.0.0.0"  # behind a proxy the bind address says nothing about the Host header: only allowed_hosts count
# Where secrets are scrubbed from log lines. Not uvicorn.access: its formatter needs each record's arguments,
# which the scrubber folds into the message, and its lines (client, method, path, status) hold no secret.
LOGGERS = ("", "uvicorn", "uvicorn.error", "uvicorn.access")

NO_POLICY = f"""\
{POLICY_VAR} is not set: a hosted endpoint never serves callers without an agent key. Give each agent a key
and the access it needs in a policy file, then point {POLICY_VAR} at it:
  mixpanel-mcp new-agent-key reporting-bot >> policy.toml     (then edit its access = {{ ... }} line)
  export {POLICY_VAR}=$PWD/policy.toml"""

NO_HOSTS = """\
the policy lists no [server] allowed_hosts. Every request's Host header is checked (against DNS rebinding),
and behind a proxy the address uvicorn listens on is not the name clients use: list the names, e.g.
  [server]
  allowed_hosts = ["mcp.example.com"]
(with nginx, forward the client's Host: proxy_set_header Host $host;)."""


class StartupError(Exception):
    """The worker cannot serve; the message says what to set or fix."""


def create_app() -> ASGIApp:
    """The uvicorn factory (`--factory mixpanel_mcp.asgi:create_app`): one worker's app, or a clear refusal."""
    try:
        return build_app(os.environ)
    except StartupError as exc:
        print(f"mixpanel-mcp: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(STARTUP_FAILURE) from None


def build_app(environ: Mapping[str, str]) -> ASGIApp:
    from mixpanel_mcp.server import build_server, configure_logging, http_app

    policy_path = environ.get(POLICY_VAR, "").strip()
    if not policy_path:
        raise StartupError(NO_POLICY)
    try:
        secret = check_secret(environ.get(SECRET_VAR, ""), SECRET_VAR)
    except ValueError as exc:
        raise StartupError(
            f"{exc} It lets a confirmation code or an answered question issued by one worker be accepted by another."
        ) from None
    # A uvicorn worker is a spawned child whose sys.argv is uvicorn's own command line.
    workers = worker_count(environ, sys.argv if multiprocessing.parent_process() is not None else ())
    try:
        policy = load_policy(policy_path, environ)
    except PolicyError as exc:
        raise StartupError(f"policy error: {exc}") from None
    if not policy.allowed_hosts:
        raise StartupError(f"policy error in {policy_path}: {NO_HOSTS}")
    try:
        settings = server_settings(environ, policy, hosted=True, local_files=False)
    except ConfigError as exc:
        raise StartupError(f"configuration error: {exc}") from None
    try:
        redis = load_redis(environ)
        state = open_state(redis)
    except ConfigError as exc:
        raise StartupError(str(exc)) from None
    audit_path = environ.get(AUDIT_VAR, "").strip() or None
    try:
        audit = AuditLog(audit_path, fail_closed=fail_closed_setting(environ, hosted=True))
    except ValueError as exc:
        raise StartupError(f"configuration error: {exc}") from None
    except OSError as exc:
        raise StartupError(f"cannot open the audit log {audit_path} ({AUDIT_VAR}): {exc.strerror or exc}") from None

    server = build_server(
        settings,
        policy=PolicySource(policy, policy_path, env=environ),
        audit=audit,
        codes=shared_codes(secret),
        # The credentials check spends real requests (a Lexicon one among them, of 5 a minute): one process
        # runs it; with several, every worker would (run `mixpanel-mcp check` once when deploying instead).
        check_at_start=environ.get(CHECK_VAR, "1" if workers == 1 else "0") != "0",
        request_state_security=shared_request_state(secret),
        state=state,
    )
    # The Redis password too: scrubbed from log lines, uvicorn's included.
    configure_logging([secret, *(redis.secrets() if redis is not None else [])], loggers=LOGGERS)
    if redis is not None:
        return http_app(server, ANY_ADDRESS, hosted=True)  # one budget for all: nothing to split
    server.runtime.share_limits(workers)

    budgets = {f"[projects.{name}]": project.budget for name, project in policy.projects.items()}
    if settings is not None:
        budgets["the server's project"] = settings.budget
    for project, budget in budgets.items():
        if note := oversubscribed(budget, workers):
            logger.warning("Rate limits of %s: %s", project, note)
    if not policy.agents:
        logger.warning("The policy defines no agents: every request will be refused (401).")
    return http_app(server, ANY_ADDRESS, hosted=True)


def worker_count(environ: Mapping[str, str], argv: Sequence[str] = ()) -> int:
    """MIXPANEL_MCP_WORKERS, else uvicorn's own rule: `--workers N` on its command line (`argv`), else
    WEB_CONCURRENCY, else 1."""
    flag = None
    for i, arg in enumerate(argv):
        if arg == "--workers" and i + 1 < len(argv):
            flag = argv[i + 1]
        elif arg.startswith("--workers="):
            flag = arg.partition("=")[2]
    sources = ((WORKERS_VAR, environ.get(WORKERS_VAR)), ("--workers", flag), (UVICORN_WORKERS_VAR, environ.get(UVICORN_WORKERS_VAR)))
    for name, value in sources:
        text = (value or "").strip()
        if text:
            if not (text.isascii() and text.isdigit()) or int(text) < 1:
                raise StartupError(f"{name} must be a whole number of worker processes, e.g. 4, not {text!r}.")
            return int(text)
    return 1


def oversubscribed(budget: BudgetSettings, workers: int) -> str | None:
    """Limits too small to split: each worker still gets 1, so together they may exceed the project's limit."""
    if workers <= 1:
        return None
    small = [
        f"{label} {value}"
        for label, value in (
            ("query requests an hour", budget.query_per_hour),
            ("queries at a time", budget.query_concurrent),
            ("exports an hour", budget.export_per_hour),
            ("exports a second", budget.export_per_second),
            ("exports at a time", budget.export_concurrent),
            ("Lexicon requests a minute", budget.lexicon_per_minute),
        )
        if value < workers
    ]
    if not small:
        return None
    return (
        f"{', '.join(small)} cannot be split over {workers} workers: each gets 1, so together they may send up to "
        f"{workers} (fewer workers, or a higher limit from Mixpanel, avoids it)."
    )


__all__ = ["build_app", "create_app"]
