"""Command line: `mixpanel-mcp [--transport stdio|http] [--host H] [--port P]`."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import replace

from mixpanel_mcp import __version__
from mixpanel_mcp.config import ENV_VARS, ConfigError, is_loopback, load_settings

logger = logging.getLogger("mixpanel_mcp")

ENV_HELP = """\
configuration (environment variables):
  MIXPANEL_PROJECT_TOKEN              project token: send events and profile updates
  MIXPANEL_SERVICE_ACCOUNT_USERNAME   service account: reports, export, Lexicon, /import
  MIXPANEL_SERVICE_ACCOUNT_SECRET     the service account's secret
  MIXPANEL_PROJECT_ID                 project id (required with a service account)
  MIXPANEL_API_SECRET                 legacy project secret (instead of a service account)
  MIXPANEL_REGION                     us (default), eu or in: your project's data residency
  MIXPANEL_WORKSPACE_ID               data view id (optional)
  MIXPANEL_INGESTION_URL, MIXPANEL_QUERY_URL, MIXPANEL_EXPORT_URL   override the API hosts
  MIXPANEL_MAX_RETRIES, MIXPANEL_RETRY_BASE_DELAY, MIXPANEL_TIMEOUT  retry and time limits
"""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mixpanel-mcp",
        description="An MCP server for the Mixpanel API (ingestion, reports, export, Lexicon).",
        epilog=ENV_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--transport", choices=["stdio", "http"], default="stdio", help="stdio (default) or Streamable HTTP")
    p.add_argument("--host", default="127.0.0.1", help="HTTP listen address (default 127.0.0.1)")
    p.add_argument("--port", type=_port, default=8000, help="HTTP port (default 8000)")
    p.add_argument("--region", choices=["us", "eu", "in"], help="overrides MIXPANEL_REGION")
    p.add_argument("--project-id", help="overrides MIXPANEL_PROJECT_ID")
    p.add_argument("--version", action="version", version=f"mixpanel-mcp {__version__}")
    return p


def _port(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (1-65535)")
    return int(text)


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        settings = load_settings(
            os.environ, {"MIXPANEL_REGION": args.region, "MIXPANEL_PROJECT_ID": args.project_id}
        )
    except ConfigError as exc:
        print(f"mixpanel-mcp: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None

    from mixpanel_mcp.server import build_server, serve_http

    # Over HTTP the agent is not on this machine: its tools must not read or write files here.
    server = build_server(replace(settings, local_files=args.transport == "stdio"))
    if args.transport == "stdio":
        server.run()
        return
    if not is_loopback(args.host):
        logger.warning(
            "Listening on %s: anyone who can reach this address can use your Mixpanel credentials.", args.host
        )
    logger.info("Serving Streamable HTTP on http://%s:%d/mcp", args.host, args.port)
    serve_http(server, args.host, args.port)


__all__ = ["ENV_VARS", "main"]
