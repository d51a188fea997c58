"""Command line: `mixpanel-mcp [--transport stdio|http] [--host H] [--port P] [--policy FILE] ...`,
`mixpanel-mcp --sandbox [--sandbox-dir DIR]` (a local demo project, no account), and
`mixpanel-mcp new-agent-key NAME`."""

from __future__ import annotations

import argparse
import errno
import logging
import os
import signal
import socket
import sys
from typing import TYPE_CHECKING

from mixpanel_mcp import __version__
from mixpanel_mcp.audit import AuditLog, fail_closed_setting
from mixpanel_mcp.client.state import open_state
from mixpanel_mcp.config import REDIS_URL_VAR, ENV_VARS, ConfigError, default_sandbox_dir, is_loopback, load_redis
from mixpanel_mcp.confirm import SPENT_FILE, check_secret, local_codes, shared_codes
from mixpanel_mcp.policy import (
    GROUPS,
    Policy,
    PolicyError,
    PolicySource,
    agent_entry,
    load_policy,
    new_key,
    parse_toolsets,
    server_settings,
)

if TYPE_CHECKING:
    from mixpanel_mcp.client.state import State
    from mixpanel_mcp.config import Settings
    from mixpanel_mcp.confirm import Codes
    from mixpanel_mcp.sandbox import Sandbox

logger = logging.getLogger("mixpanel_mcp")

SANDBOX_VAR = "MIXPANEL_SANDBOX"
SECRET_VAR = "MIXPANEL_MCP_SECRET_KEY"  # as for the ASGI app (asgi.py)

ENV_HELP = """\
try it without a Mixpanel account:
  mixpanel-mcp --sandbox              every tool against a local demo project (seeded on first run, kept in
                                      --sandbox-dir); MIXPANEL_* variables are ignored, nothing leaves the machine
                                      (MIXPANEL_SANDBOX=true does the same)

configuration (environment variables):
  MIXPANEL_PROJECT_TOKEN              project token: send events and profile updates
  MIXPANEL_SERVICE_ACCOUNT_USERNAME   service account: reports, export, Lexicon, /import
  MIXPANEL_SERVICE_ACCOUNT_SECRET     the service account's secret
  MIXPANEL_PROJECT_ID                 project id (required with a service account)
  MIXPANEL_API_SECRET                 legacy project secret (instead of a service account)
  MIXPANEL_REGION                     us (default), eu or in: your project's data residency
  MIXPANEL_WORKSPACE_ID               workspace (data view) id: feature flag management and experiments
  MIXPANEL_GDPR_TOKEN                 Mixpanel's GDPR OAuth token (with the project token): the gdpr tool
  MIXPANEL_INGESTION_URL, MIXPANEL_QUERY_URL, MIXPANEL_EXPORT_URL   override the API hosts
  MIXPANEL_MAX_RETRIES, MIXPANEL_RETRY_BASE_DELAY, MIXPANEL_TIMEOUT  retry and time limits
  MIXPANEL_CALL_DEADLINE              seconds one tool call may take in all (600)
  MIXPANEL_QUERY_LIMIT_PER_HOUR, MIXPANEL_QUERY_CONCURRENCY, MIXPANEL_EXPORT_LIMIT_PER_HOUR,
  MIXPANEL_EXPORT_LIMIT_PER_SECOND, MIXPANEL_EXPORT_CONCURRENCY, MIXPANEL_LEXICON_LIMIT_PER_MINUTE,
  MIXPANEL_RATE_LIMIT_MAX_WAIT        the project's rate limits, kept client-side
  MIXPANEL_CACHE_TTL, MIXPANEL_CACHE_TTL_TODAY   how long identical read queries are answered from memory
  MIXPANEL_STARTUP_CHECK              1 (default): log a quick credentials check at start; 0: skip it

several replicas (pip install 'mixpanel-mcp[redis]'):
  MIXPANEL_MCP_REDIS_URL              redis://host:6379/0 (or --redis-url): every replica shares one rate
                                      budget, one cache, spent confirmation codes and agents' caps
  MIXPANEL_MCP_SECRET_KEY             32+ random characters, the same on every replica (required with Redis
                                      over HTTP): a code issued by one replica is accepted by another
  MIXPANEL_MCP_REDIS_LEASE            seconds a stopped replica's slots stay taken (30)

hosted under uvicorn (uvicorn --factory mixpanel_mcp.asgi:create_app; see the README):
  MIXPANEL_MCP_POLICY                 the policy file (required: every caller needs an agent key)
  MIXPANEL_MCP_AUDIT_LOG              append one JSON line per tool call to this file ('-': stderr)
  MIXPANEL_MCP_AUDIT_FAIL_CLOSED      1: refuse calls while the audit log cannot be written (default when
                                      hosted: --transport http with a policy, or uvicorn); 0: calls go on
  MIXPANEL_MCP_WORKERS                without Redis: how many processes share the rate limits

check the credentials:
  mixpanel-mcp check                  what works, what does not, and the exact fix (exit 1 on a problem)

access:
  Locally every tool group the credentials allow is listed; merge, profile/group delete, Lexicon
  delete or truncate, and the other destructive operations (flag, experiment and annotation delete,
  experiment conclude and decide, lookup table replace, GDPR delete_data) ask the person first. --read-only, --toolsets and --policy narrow that.
  A shared endpoint: mixpanel-mcp --transport http --host 0.0.0.0 --policy policy.toml
  New agent key:     mixpanel-mcp new-agent-key NAME >> policy.toml   (the key is shown once, on stderr)
"""


_UNLISTED = [name for name in ENV_VARS if name not in ENV_HELP]
if _UNLISTED:  # a setting added to config.py is listed even before it gets its own line here
    ENV_HELP = ENV_HELP.replace("\naccess:", "  also: " + ", ".join(_UNLISTED) + "\n\naccess:")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mixpanel-mcp",
        description="An MCP server for the Mixpanel API (ingestion, reports, export, Lexicon, feature flags, experiments, ...).",
        epilog=ENV_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--transport", choices=["stdio", "http"], default="stdio", help="stdio (default) or Streamable HTTP")
    p.add_argument("--host", default="127.0.0.1", help="HTTP listen address (default 127.0.0.1)")
    p.add_argument("--port", type=_port, default=8000, help="HTTP port (default 8000)")
    p.add_argument("--region", choices=["us", "eu", "in"], help="overrides MIXPANEL_REGION")
    p.add_argument("--project-id", help="overrides MIXPANEL_PROJECT_ID")
    p.add_argument("--read-only", action="store_true", help="list and allow read operations only")
    p.add_argument("--toolsets", metavar="GROUP,...", help="only these tool groups, e.g. segmentation,funnels")
    p.add_argument(
        "--policy",
        metavar="FILE",
        help="access policy (TOML): levels per group, agents (by key hash) and their projects; over HTTP, "
        "callers must present an agent key when it lists agents (always off loopback)",
    )
    p.add_argument("--audit-log", metavar="PATH", help="append one JSON line per tool call to PATH ('-': stderr)")
    p.add_argument(
        "--redis-url",
        metavar="URL",
        help="overrides MIXPANEL_MCP_REDIS_URL: share rate limits, cache, codes and agents' caps with every "
        "replica using this Redis",
    )
    p.add_argument(
        "--sandbox",
        action="store_true",
        help="serve a local demo project instead of Mixpanel: no credentials, no network",
    )
    p.add_argument(
        "--sandbox-dir",
        metavar="DIR",
        help=f"the sandbox's folder, created and seeded when new (default: {default_sandbox_dir()})",
    )
    p.add_argument("--version", action="version", version=f"mixpanel-mcp {__version__}")
    return p


def _port(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (1-65535)")
    return int(text)


NO_POLICY = """\
mixpanel-mcp: refusing to listen on {host} without --policy: anyone who can reach that address could use
your Mixpanel credentials. Give each agent a key and the access it needs in a policy file:
  mixpanel-mcp new-agent-key reporting-bot >> policy.toml     (then edit its access = {{ ... }} line)
  mixpanel-mcp --transport http --host {host} --policy policy.toml
or listen on 127.0.0.1 (the default) for use from this machine only."""


def key_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mixpanel-mcp new-agent-key",
        description="Create a key for an agent of the HTTP endpoint. The key is printed once, on stderr; "
        "stdout gets the policy-file entry holding only its SHA-256 (append it: ... >> policy.toml).",
    )
    p.add_argument("name", metavar="NAME", help="the agent's name: letters, digits, '-' and '_'")
    return p


def new_agent_key(argv: list[str]) -> None:
    args = key_parser().parse_args(argv)
    try:
        key = new_key()
        entry = agent_entry(args.name, key)
    except PolicyError as exc:
        print(f"mixpanel-mcp: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    print(
        f"Key for agent {args.name} (shown only now; the server keeps only its hash). The agent sends it as\n"
        f"  Authorization: Bearer {key}\n"
        "Add the entry below (printed on stdout) to the policy file and grant the access it needs.",
        file=sys.stderr,
    )
    print("\n" + entry, end="")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "new-agent-key":
        new_agent_key(argv[1:])
        return
    if argv and argv[0] == "check":
        from mixpanel_mcp.check import main_check

        raise SystemExit(main_check(argv[1:]))
    args = parser().parse_args(argv)
    # The Claude Desktop bundle's "demo project" switch arrives as an environment variable.
    args.sandbox = args.sandbox or os.environ.get(SANDBOX_VAR, "").strip().lower() in ("1", "true", "yes")
    if args.sandbox_dir is not None and not args.sandbox:
        print("mixpanel-mcp: --sandbox-dir is the sandbox's folder: add --sandbox to use it.", file=sys.stderr)
        raise SystemExit(2)
    if args.transport == "http" and not is_loopback(args.host) and args.policy is None:
        print(NO_POLICY.format(host=args.host), file=sys.stderr)
        raise SystemExit(2)
    try:
        toolsets = parse_toolsets(args.toolsets, strict=True) if args.toolsets is not None else None
        if toolsets is not None and not toolsets:
            raise PolicyError("--toolsets needs at least one group: " + ",".join(GROUPS))
        policy = load_policy(args.policy) if args.policy is not None else None
    except PolicyError as exc:
        print(f"mixpanel-mcp: policy error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    # Every caller of an HTTP endpoint needs an agent key when the policy lists agents, and always off loopback.
    hosted = args.transport == "http" and policy is not None and (bool(policy.agents) or not is_loopback(args.host))
    sandbox = open_sandbox(args, policy) if args.sandbox else None
    if sandbox is not None:
        # Over HTTP the agent is not on this machine: its tools must not read or write files here.
        settings = sandbox.settings(local_files=args.transport == "stdio")
    else:
        try:
            settings = server_settings(
                os.environ,
                policy,
                hosted,
                overrides={"MIXPANEL_REGION": args.region, "MIXPANEL_PROJECT_ID": args.project_id},
                local_files=args.transport == "stdio",
            )
        except ConfigError as exc:
            print(f"mixpanel-mcp: configuration error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
    try:
        audit = AuditLog(args.audit_log, fail_closed=fail_closed_setting(os.environ, args.transport == "http" and policy is not None))
    except ValueError as exc:
        print(f"mixpanel-mcp: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except OSError as exc:
        print(f"mixpanel-mcp: cannot open the audit log {args.audit_log}: {exc.strerror or exc}", file=sys.stderr)
        raise SystemExit(2) from None

    try:
        redis = load_redis(os.environ, args.redis_url)
        secret = os.environ.get(SECRET_VAR, "").strip()
        if redis is not None and args.transport == "http" and not secret:
            raise ConfigError(
                f"with {REDIS_URL_VAR}, the replicas also need one {SECRET_VAR} (32+ random characters, the same on "
                "every replica), so that a confirmation code issued by one is accepted by another: "
                "python -c \"import secrets; print(secrets.token_urlsafe(32))\""
            )
        codes = shared_codes(check_secret(secret, SECRET_VAR)) if secret else None
        spent_file = None
        if codes is None and not hosted:
            # A local install keeps its key beside the sandbox's data: a code outlives the process that issued it,
            # and so must the record of it being used.
            codes = local_codes(default_sandbox_dir().parent)
            spent_file = default_sandbox_dir().parent / SPENT_FILE
        state = open_state(redis, spent_file)
    except (ConfigError, ValueError) as exc:
        print(f"mixpanel-mcp: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    try:
        serve(args, settings, policy, toolsets, audit, hosted, sandbox, state=state, codes=codes, secret=secret or None,
              scrub=redis.secrets() if redis is not None else [])
    finally:
        if sandbox is not None:
            sandbox.close()


def open_sandbox(args: argparse.Namespace, policy: Policy | None) -> Sandbox:
    """The local demo project, and a line on stderr saying so (and which settings it ignores)."""
    import sqlite3

    from mixpanel_mcp.sandbox import open_sandbox as open_folder

    if policy is not None and policy.projects:
        print(
            "mixpanel-mcp: --sandbox serves only the local demo project: remove the policy's [projects.*] tables "
            "(and agents' project = ...), or leave out --sandbox.",
            file=sys.stderr,
        )
        raise SystemExit(2)
    folder = args.sandbox_dir if args.sandbox_dir is not None else str(default_sandbox_dir())
    try:
        sandbox = open_folder(folder)
    except (OSError, sqlite3.Error) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        print(f"mixpanel-mcp: cannot open the sandbox in {folder}: {reason}", file=sys.stderr)
        raise SystemExit(2) from None
    print(
        f"mixpanel-mcp: sandbox: serving a local demo project from {sandbox.directory} ({sandbox.describe()}); "
        "nothing is sent to Mixpanel.",
        file=sys.stderr,
    )
    # A setting at its default changes nothing, so ignoring it is not worth a word (the bundle always sends a region).
    defaults = {"MIXPANEL_REGION": "us"}
    ignored = [
        name for name in ENV_VARS
        if (value := os.environ.get(name, "").strip()) and value.lower() != defaults.get(name)
    ]
    ignored += [flag for flag, value in (("--region", args.region), ("--project-id", args.project_id)) if value is not None]
    if ignored:
        print(
            f"mixpanel-mcp: sandbox: ignoring {', '.join(ignored)}: the sandbox uses its own local credentials "
            "and settings (leave out --sandbox to use your Mixpanel project).",
            file=sys.stderr,
        )
    return sandbox


def serve(
    args: argparse.Namespace,
    settings: Settings | None,
    policy: Policy | None,
    toolsets: frozenset[str] | None,
    audit: AuditLog,
    hosted: bool,
    sandbox: Sandbox | None,
    *,
    state: State | None = None,
    codes: Codes | None = None,
    secret: str | None = None,
    scrub: list[str] | None = None,
) -> None:
    from mixpanel_mcp.hosting import transport_security
    from mixpanel_mcp.confirm import shared_request_state
    from mixpanel_mcp.server import build_server, configure_logging, serve_http

    server = build_server(
        settings,
        policy=PolicySource(policy, args.policy) if policy is not None else None,
        toolsets=toolsets,
        read_only=args.read_only,
        audit=audit,
        transport=sandbox.transport() if sandbox is not None else None,
        instructions=sandbox.instructions() if sandbox is not None else None,
        check_at_start=sandbox is None and os.environ.get("MIXPANEL_STARTUP_CHECK", "1") != "0",
        state=state,
        codes=codes,
        request_state_security=shared_request_state(secret) if secret else None,
    )
    if sandbox is not None:
        sandbox.add_reports_resource(server)
    configure_logging([*([secret] if secret else []), *(scrub or [])])  # the Redis password among them
    if args.transport == "stdio":
        stop_at_once_on_interrupt()
        if sys.stdin.isatty():  # a person started it in a terminal, not a client
            print(STDIO_HINT, file=sys.stderr, flush=True)
        server.run()
        return
    try:
        transport_security(args.host, policy)  # a wildcard address needs the policy's allowed_hosts
    except PolicyError as exc:
        print(f"mixpanel-mcp: policy error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if hosted and policy is not None and not policy.agents:
        logger.warning("The policy defines no agents: every request will be refused (401).")
    problem = port_problem(args.host, args.port)
    if problem:
        print(f"mixpanel-mcp: cannot listen on {args.host}:{args.port}: {problem}. Choose another --port.", file=sys.stderr)
        raise SystemExit(2)
    logger.info("Serving Streamable HTTP on http://%s:%d/mcp", args.host, args.port)
    serve_http(server, args.host, args.port, hosted=hosted)


STDIO_HINT = (
    "mixpanel-mcp: waiting for an MCP client on stdin. This is the stdio transport: an MCP client (Claude "
    "Desktop, Claude Code, VS Code, Cursor) starts this command itself; see 'Use it from an MCP client' in the "
    "README. Ctrl-C stops it."
)


def stop_at_once_on_interrupt() -> None:
    """Ctrl-C ends a stdio server at once and quietly. The SDK's own handling waits for the thread reading
    stdin, which never returns while a terminal is attached, and a second Ctrl-C prints a traceback."""

    def stop(signum: int, frame: object) -> None:
        sys.stderr.write("mixpanel-mcp: stopped.\n")
        sys.stderr.flush()
        logging.shutdown()  # the audit log and every handler flushed
        os._exit(0)

    signal.signal(signal.SIGINT, stop)


def port_problem(host: str, port: int) -> str | None:
    """Why `host:port` cannot be listened on (taken, not an address of this machine), or None."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return f"the address cannot be resolved ({exc.strerror})"
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: a closing socket is no obstacle
        try:
            probe.bind(address)
        except OSError as exc:
            return "the port is already in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
    return None


__all__ = ["ENV_VARS", "main"]
