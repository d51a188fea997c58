"""The HTTP endpoint's gate: Host/Origin checks, the agent's bearer key, and the headers that narrow a grant.

Keys are required when the policy lists agents, and always on a non-loopback address; without them (local
use on loopback) every caller has the policy's [local] grant, or every group at full without a policy.

Order for every request to /mcp: Host and Origin (DNS rebinding) -> the bearer key (401 with a
`WWW-Authenticate` challenge when missing, unknown or revoked) -> `X-MCP-Toolsets` / `X-MCP-Readonly`, which
can only take groups or writes away -> the `Authorization` header is removed, so nothing past this point
(the SDK, the tools, the Mixpanel client) ever sees the agent's key.
"""

from __future__ import annotations

import ipaddress
import json
import re
from typing import TYPE_CHECKING

from mcp.server.transport_security import TransportSecuritySettings
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from mixpanel_mcp.audit import Record
from mixpanel_mcp.config import is_loopback
from mixpanel_mcp.policy import Policy, PolicyError, PolicySource, current_grant, parse_toolsets, truthy

if TYPE_CHECKING:
    from mixpanel_mcp.adapter import Runtime

MAX_BODY_BYTES = 4 * 1024 * 1024
MCP_PATH = "/mcp"
TOOLSETS_HEADER = "x-mcp-toolsets"
READONLY_HEADER = "x-mcp-readonly"
_LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
_WILDCARDS = ("0.0.0.0", "::", "")


def _host_form(host: str) -> str:
    """An address as it appears in a Host header: IPv6 in brackets."""
    try:
        if ipaddress.ip_address(host.strip("[]")).version == 6:
            return f"[{host.strip('[]')}]"
    except ValueError:
        pass
    return host


def _with_ports(names: list[str]) -> list[str]:
    out: list[str] = []
    for name in (name.lower() for name in names):  # host names are case-insensitive (RFC 9110 4.2.3)
        for form in (name, f"{name}:*") if not name.endswith(":*") else (name,):
            if form not in out:
                out.append(form)
    return out


def transport_security(host: str, policy: Policy | None) -> TransportSecuritySettings:
    """Host/Origin allowlists for the address the server listens on (always on; never the SDK's silent off).

    Loopback: the loopback names. A specific address: that address. A wildcard (0.0.0.0, ::): only what the
    policy lists in [server] allowed_hosts (the names clients use to reach the server).
    """
    allowed_hosts = list(policy.allowed_hosts) if policy is not None else []
    allowed_origins = list(policy.allowed_origins) if policy is not None else []
    if is_loopback(host):
        allowed_hosts += list(_LOOPBACK_HOSTS)
        allowed_origins += [f"http://{name}:*" for name in _LOOPBACK_HOSTS]
    elif host.strip("[]") not in _WILDCARDS:
        allowed_hosts.append(_host_form(host))
    elif not allowed_hosts:
        raise PolicyError(
            f"listening on {host or 'every address'} needs the host names clients will use: list them in the policy "
            'file, e.g. [server] allowed_hosts = ["mcp.example.com"] (requests with any other Host header are '
            "refused, against DNS rebinding)."
        )
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=_with_ports(allowed_hosts),
        allowed_origins=[origin.lower() for origin in allowed_origins],
    )


# `name[:port]` and nothing else: the SDK's own check takes any text after `name:` as the port
# (`localhost:1@evil.example` passed), so the gate parses the header before the SDK ever sees it.
_NAME = r"(?:\[[0-9a-f:.]+\]|[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?)"
_HOST = re.compile(rf"(?P<name>{_NAME})(?::(?P<port>[0-9]{{1,5}}))?")
_ORIGIN = re.compile(rf"(?P<name>https?://{_NAME})(?::(?P<port>[0-9]{{1,5}}))?")


def _allows(patterns: list[str], value: str, form: re.Pattern[str]) -> bool:
    """Whether a Host or Origin value, parsed strictly and compared without case, matches an allowed entry
    (`name` exactly, `name:port`, or `name:*` for any port)."""
    found = form.fullmatch(value.strip().lower())
    if found is None:
        return False
    name, port = found["name"], found["port"]
    wanted = {name} if port is None else {f"{name}:{port}", f"{name}:*"}
    return any(pattern in wanted for pattern in patterns)


class HostCheck:
    """DNS-rebinding protection: the Host header must name this server, and an Origin, if sent, an allowed page."""

    def __init__(self, security: TransportSecuritySettings) -> None:
        self.hosts = list(security.allowed_hosts)
        self.origins = list(security.allowed_origins)

    def refusal(self, request: Request) -> Response | None:
        if not _allows(self.hosts, request.headers.get("host", ""), _HOST):
            return Response("Invalid Host header", status_code=421)
        origin = request.headers.get("origin")
        if origin and not _allows(self.origins, origin, _ORIGIN):
            return Response("Invalid Origin header", status_code=403)
        return None


def _lowercased(scope: Scope, names: tuple[bytes, ...]) -> Scope:
    """The checked headers in lower case, as the SDK's own (case-sensitive) check behind the gate compares them."""
    headers = [(k, v.lower() if k.lower() in names else v) for k, v in scope["headers"]]
    return {**scope, "headers": headers}


def bearer_key(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


class AgentGate:
    """ASGI middleware in front of the MCP app; other paths (/healthz) pass through untouched."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        runtime: Runtime,
        policy: PolicySource | None,
        security: TransportSecuritySettings,
        keys_required: bool,
        path: str = MCP_PATH,
    ) -> None:
        self.app = app
        self.runtime = runtime
        self.policy = policy
        self.keys_required = keys_required
        self.checks = HostCheck(security)
        self.path = path

    def _ours(self, scope: Scope) -> bool:
        path = scope.get("path", "")
        return scope["type"] == "http" and (path == self.path or path.startswith(self.path + "/"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._ours(scope):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        refused = self.checks.refusal(request)
        if refused is not None:
            await refused(scope, receive, send)
            return
        scope = _lowercased(scope, (b"host", b"origin"))
        policy = self.policy.current() if self.policy is not None else None
        # Keys are required when the server started hosted, and from the moment the policy lists agents.
        if policy is None or not (self.keys_required or policy.agents):
            grant = self.runtime.local
        else:
            key = bearer_key(request.headers.get("authorization"))
            found = policy.authenticate(key)
            if found is None:
                await self._unauthorized(scope, receive, send, presented=key is not None)
                return
            grant = self.runtime.narrow(found)
        # A header sent twice narrows by every copy (a proxy may add one to the agent's): any "true" takes writes
        # away, and several toolset lists leave only the groups they all name.
        read_only = any(truthy(value) for value in request.headers.getlist(READONLY_HEADER))
        toolsets = None
        for value in request.headers.getlist(TOOLSETS_HEADER):
            listed = parse_toolsets(value, strict=False)
            toolsets = listed if toolsets is None else toolsets & listed
        if toolsets is not None or read_only:
            grant = grant.narrowed(toolsets, read_only)
        scope = {**scope, "headers": [(k, v) for k, v in scope["headers"] if k.lower() != b"authorization"]}
        token = current_grant.set(grant)
        try:
            await self.app(scope, receive, send)
        finally:
            current_grant.reset(token)

    async def _unauthorized(self, scope: Scope, receive: Receive, send: Send, *, presented: bool) -> None:
        reason = "unknown or revoked key" if presented else "no bearer key"
        client = scope.get("client")
        record = Record(agent="(unauthenticated)", tool=None, decision="denied", outcome="refused", reason=reason)
        record.remote = client[0] if client else None
        self.runtime.audit.write(record)
        challenge = 'Bearer realm="mixpanel-mcp"'
        if presented:
            challenge += ', error="invalid_token", error_description="The agent key is unknown or revoked"'
        body = {
            "error": "invalid_token" if presented else "unauthorized",
            "error_description": (
                "The agent key is unknown or revoked." if presented
                else "This endpoint needs an agent key: send Authorization: Bearer <key>."
            ),
        }
        payload = json.dumps(body).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                    (b"www-authenticate", challenge.encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})
