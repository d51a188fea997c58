"""Asking a person before a destructive call: elicitation when the client can show a question, otherwise a
one-time code bound to the exact arguments that the agent must bring back (after asking the person itself).

Elicitation goes through the SDK's `Resolve`/`Elicit` machinery, which works in both protocol eras: on
2026-07-28 the call returns an `InputRequiredResult` and the client calls again with the answer; on older
connections with a back-channel the question is sent mid-call.

Both round trips carry something the server sealed (the code's HMAC; the SDK's encrypted `requestState`), and
the call that brings it back may reach another worker or replica. One process uses random keys; several share
one operator secret (`MIXPANEL_MCP_SECRET_KEY`), from which `shared_codes` and `shared_request_state` derive
a separate key each.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from mcp.server.context import ServerRequestContext
from mcp.server.mcpserver import Context, Elicit, RequestStateSecurity, Resolve
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.resolve import build_resolver_plans, resolve_arguments
from mcp_types import InputRequiredResult
from mcp_types.version import is_version_at_least
from pydantic import BaseModel, Field

from mixpanel_mcp.policy import current_grant
from mixpanel_mcp.text import echo, strip_controls

logger = logging.getLogger(__name__)

CODE_TTL = 300.0  # seconds a confirmation code stays valid
REQUEST_STATE_TTL = 600.0  # seconds a client has to answer a question asked through InputRequiredResult
MIN_SECRET_BYTES = 32
MODERN = "2026-07-28"
GDPR_IDS_SHOWN = 200  # distinct_ids a GDPR deletion's question lists by name

Answer = Literal["accept", "decline", "cancel"]


class Confirmation(BaseModel):
    """The form shown to the person: one checkbox."""

    confirm: bool = Field(title="Go ahead", description="Yes, do it (it cannot be undone)")


async def _ask(question: str) -> Elicit[Confirmation]:
    return Elicit(question, Confirmation)


_RESOLVE = Resolve(_ask)
_PARAMS = {"answer": (_RESOLVE, True)}
_PLANS = build_resolver_plans(_PARAMS, {"question"})


# The sealed requestState of the tools/call under way (a digest of it), as the client sent it: the plaintext the
# handler sees is the same for every asking of the same question, the sealed token is unique (a random nonce).
answered_state: ContextVar[str | None] = ContextVar("answered_state", default=None)


def state_digest(sealed: str) -> str:
    return hashlib.sha256(b"request-state\n" + sealed.encode()).hexdigest()[:32]


async def spend_answer(spend: Callable[[str, float], Awaitable[bool]], clock: Callable[[], float] = time.time) -> bool:
    """After the person accepted through InputRequiredResult: True the first time this answered state is used.

    The SDK checks the state's seal, expiry and agent, but a client may send the same final round twice (a
    retry, or a replay): the person agreed to one call, so only the first goes ahead. Kept past the longest a
    state lives (the SDK's own default is the same 600 s)."""
    token = answered_state.get()
    return True if token is None else await spend(token, clock() + REQUEST_STATE_TTL)


UNREADABLE_ANSWER = (
    "Not done: the client's reply to the confirmation question did not fit its form (one yes/no field, confirm), "
    "so it was not taken as a yes. Nothing was sent to Mixpanel; call again to be asked again."
)


def can_ask(context: Context[Any, Any]) -> bool:
    """Whether the person can be asked on this connection: form elicitation declared, and a way to ask."""
    try:
        capabilities = context.client_capabilities
    except ValueError:  # no request context (a direct call outside a request)
        return False
    elicitation = capabilities.elicitation if capabilities is not None else None
    if elicitation is None or (elicitation.form is None and elicitation.url is not None):
        return False
    version = context.protocol_version
    if version is not None and is_version_at_least(version, MODERN):
        return True  # asked through InputRequiredResult: no back-channel needed
    return bool(context.session.can_send_request)


async def ask(context: Context[Any, Any], question: str) -> Answer | InputRequiredResult:
    """Ask `question`; the person's answer, or (2026-07-28) the result that makes the client ask and call again."""
    try:
        outcome = await resolve_arguments(_PARAMS, _PLANS, {"question": question}, context)
    except ToolError:  # the reply did not fit the form (the SDK's own words name its internals)
        raise ToolError(UNREADABLE_ANSWER) from None
    if isinstance(outcome, InputRequiredResult):
        return outcome
    answer = outcome["answer"]
    if answer.action == "accept":
        return "accept" if answer.data.confirm else "decline"
    return answer.action


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


SEAL_LENGTH = 6
AGENT_TAG_LENGTH = 4


class Codes:
    """One-time confirmation codes: HMAC over (agent, tool, exact arguments, expiry, nonce), used once.

    Stateless to issue; what is remembered is which codes were already used, until they expire, by the
    server's state (`spend`: in this process, or in Redis for every replica). The key is random per
    process, so a restart invalidates outstanding codes (the agent just asks again), unless it is derived from
    a shared secret (`shared_codes`): then every worker holding the secret accepts the code. Without a shared
    state, "used once" holds per worker: with N workers the same agent could replay a code, for the exact call
    it confirms, at most once on each other worker within its TTL.
    """

    def __init__(self, ttl: float = CODE_TTL, clock: Callable[[], float] = time.time, key: bytes | None = None) -> None:
        self.ttl = ttl
        self._clock = clock
        self._key = key or secrets.token_bytes(32)
        # Leads every nonce: a code signed with another key (another server, or one since restarted) is told apart.
        self._key_id = hmac.new(self._key, b"key-id", hashlib.sha256).hexdigest()[:4]

    def _mac(self, agent: str, tool: str, arguments: str, expiry: int, nonce: str) -> str:
        message = "\n".join((agent, tool, str(expiry), nonce, arguments)).encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()[:24]

    def _seal(self, expiry: int, nonce: str) -> str:
        """Ends every nonce: a code altered or mistyped is told apart from one issued for another call."""
        return hmac.new(self._key, f"seal\n{expiry}\n{nonce}".encode(), hashlib.sha256).hexdigest()[:SEAL_LENGTH]

    def _agent_tag(self, agent: str, expiry: int, nonce: str) -> str:
        """Inside the sealed nonce: a code shown to another agent is told apart from one for another call."""
        return hmac.new(self._key, f"agent\n{agent}\n{expiry}\n{nonce}".encode(), hashlib.sha256).hexdigest()[:AGENT_TAG_LENGTH]

    def issue(self, agent: str, tool: str, arguments: Any) -> str:
        expiry = int(self._clock() + self.ttl)
        nonce = self._key_id + secrets.token_hex(4)
        nonce += self._agent_tag(agent, expiry, nonce)
        nonce += self._seal(expiry, nonce)
        return f"{expiry:x}-{nonce}-{self._mac(agent, tool, canonical(arguments), expiry, nonce)}"

    async def redeem(
        self, code: str, agent: str, tool: str, arguments: Any, spend: Callable[[str, float], Awaitable[bool]]
    ) -> str | None:
        """None when `code` confirms exactly this call (and is now spent); else why it does not.

        `spend(token, until)` records the code as used (True the first time); it may raise when it cannot
        tell (the shared state is unreachable): then the code is not accepted."""
        parts = code.strip().split("-")
        if len(parts) != 3 or not all(parts):
            return "it is not a confirmation code"
        expiry_text, nonce, mac = parts
        try:
            expiry = int(expiry_text, 16)
        except ValueError:
            return "it is not a confirmation code"
        if not nonce.startswith(self._key_id):
            return (
                "it was issued by another server process, or by this one before it restarted (codes are signed with a "
                "key of their own): ask again with the same call for a new code"
            )
        sealed, seal = nonce[:-SEAL_LENGTH], nonce[-SEAL_LENGTH:].lower()
        if len(sealed) <= len(self._key_id) + AGENT_TAG_LENGTH or not hmac.compare_digest(self._seal(expiry, sealed), seal):
            return "it is not the code as issued (changed or mistyped): ask again with the same call for a new code"
        unsigned, tag = sealed[:-AGENT_TAG_LENGTH], sealed[-AGENT_TAG_LENGTH:].lower()
        if not hmac.compare_digest(self._agent_tag(agent, expiry, unsigned), tag):
            return (
                "it was issued to another agent (a code confirms a call only for the agent that asked for it): ask "
                "again with the same call for a code of your own"
            )
        if expiry < self._clock():
            expired_at = time.strftime("%H:%M:%S UTC", time.gmtime(expiry))
            return (
                f"it expired at {expired_at} (a code is valid for {self.ttl / 60:g} minutes): ask again with the same "
                "call for a new code"
            )
        expected = self._mac(agent, tool, canonical(arguments), expiry, nonce)
        if not hmac.compare_digest(expected, mac.lower()):
            return "it was issued for other arguments (a code confirms only the exact call it was given for)"
        # What is remembered is a digest of the code, never the code itself.
        token = hashlib.sha256(f"{expiry_text}-{nonce}-{mac.lower()}".encode()).hexdigest()[:32]
        if not await spend(token, expiry):
            return "it was already used"
        return None


def derive_key(secret: str, purpose: str) -> bytes:
    """A 32-byte key for one purpose from the operator's secret, so no two uses ever share a key."""
    return hmac.new(secret.encode(), f"mixpanel-mcp/{purpose}/v1".encode(), hashlib.sha256).digest()


def check_secret(secret: str, name: str) -> str:
    """The secret, or ValueError naming the variable and how to make a good one."""
    secret = secret.strip()
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise ValueError(
            f"{name} must be at least {MIN_SECRET_BYTES} characters of random text, the same on every worker and "
            "replica (make one with: python -c \"import secrets; print(secrets.token_urlsafe(32))\")."
        )
    return secret


KEY_FILE = "confirmation.key"
SPENT_FILE = "confirmation.spent"  # beside it: digests of the codes and answers already used, until they expire


def local_codes(folder: Path, ttl: float = CODE_TTL) -> Codes:
    """Codes signed with a key kept in `folder` (created once, readable by its owner only), so a code issued by
    one local server process is accepted by the next: some clients start a server per call. A key file that
    others could read, or none that can be made, falls back to a key of this process alone."""
    path = folder / KEY_FILE
    try:
        folder.mkdir(parents=True, exist_ok=True)
        try:
            handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(handle, "wb") as f:
                f.write(secrets.token_bytes(32))
        if os.name == "posix" and path.stat().st_mode & 0o077:
            logger.warning("%s can be read by others: confirmation codes use a key of this process instead", path)
            return Codes(ttl)
        key = path.read_bytes()
    except OSError as exc:
        logger.warning("cannot keep a confirmation key in %s (%s): codes are valid in this process only", path, exc)
        return Codes(ttl)
    if len(key) < 32:
        logger.warning("%s is not a key this server made: codes are valid in this process only", path)
        return Codes(ttl)
    return Codes(ttl, key=key)


def shared_codes(secret: str, ttl: float = CODE_TTL) -> Codes:
    """Confirmation codes any process holding `secret` issues and verifies alike."""
    return Codes(ttl, key=derive_key(secret, "confirmation-codes"))


def agent_principal(_: ServerRequestContext[Any, Any]) -> str | None:
    """The caller a sealed requestState belongs to: the agent the HTTP gate authenticated (None on stdio)."""
    grant = current_grant.get()
    return None if grant is None else f"agent:{grant.agent}"


def shared_request_state(secret: str, ttl: float = REQUEST_STATE_TTL) -> RequestStateSecurity:
    """The SDK's requestState sealing (AES-256-GCM) under a key from `secret`, bound to the calling agent: a
    question asked by one worker can be answered on any other, and only by the agent it was asked of."""
    return RequestStateSecurity(keys=[derive_key(secret, "request-state")], ttl=ttl, bind_principal=agent_principal)


def describe_effect(tool: str, operation: str, args: Any, project: str) -> str:
    """What a destructive call will do, in words a person can check: what, which ids, which project."""
    # Every argument shown is quoted, on one line and clipped: a value cannot forge lines of the question.
    where = f"in Mixpanel {project}"
    if tool == "track" and operation == "merge":
        first, second = args.distinct_ids
        what = f"merge the users {echo(str(first))} and {echo(str(second))} into one {where}; this cannot be undone"
    elif tool in ("engage", "groups") and operation == "delete":
        who = f"user {echo(str(args.distinct_id))}" if tool == "engage" else f"group {echo(str(args.group_key))}={echo(str(args.group_id))}"
        what = f"delete the profile of {who} {where}, irreversibly"
    elif tool in ("engage", "groups") and operation == "batch":
        deletes = [u for u in args.updates if getattr(u, "operation", None) == "delete"]
        ids = [echo(str(getattr(u, "distinct_id", None) or f"{getattr(u, 'group_key', '')}={getattr(u, 'group_id', '')}")) for u in deletes]
        shown = ", ".join(ids[:10]) + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")
        kind = "user" if tool == "engage" else "group"
        what = (
            f"send {len(args.updates)} {kind} profile update(s) {where}, deleting {len(deletes)} profile(s) "
            f"irreversibly: {shown}"
        )
    elif tool == "lexicon" and operation == "delete":
        if args.name is not None:
            target = f"the Lexicon schema of {args.entity_type} {echo(str(args.name))}"
        elif args.entity_type is not None:
            target = f"every Lexicon schema of type {args.entity_type}"
        else:
            target = "every Lexicon schema (the whole data dictionary)"
        what = f"delete {target} {where}"
    elif tool == "lexicon" and operation == "upsert":
        count = len(args.entries or [])
        what = f"delete the WHOLE Lexicon data dictionary {where}, then add {count} schema(s)"
    elif tool == "annotations" and operation == "delete":
        what = f"delete annotation #{args.annotation_id} {where}"
    elif tool == "flags" and operation == "delete":
        what = f"delete the feature flag {echo(str(args.flag_id))} {where}; apps asking for it get their fallback"
    elif tool == "experiments" and operation == "delete":
        what = f"delete the experiment {echo(str(args.experiment_id))} {where}, irreversibly"
    elif tool == "experiments" and operation == "conclude":
        what = f"conclude the experiment {echo(str(args.experiment_id))} {where} (it stops collecting results)"
    elif tool == "experiments" and operation == "decide":
        outcome = f"ship variant {echo(str(args.variant))}" if args.variant else ("a success" if args.success else "a failure")
        what = f"record the decision on experiment {echo(str(args.experiment_id))} as {outcome} {where}"
    elif tool == "lookup_tables" and operation == "replace":
        what = f"replace the whole content of lookup table {echo(str(args.table_id))} {where}"
    elif tool == "gdpr" and operation == "delete_data":
        ids = list(args.distinct_ids)  # the person checks whose data goes: every id, up to a screenful or two
        shown = ", ".join(echo(str(i)) for i in ids[:GDPR_IDS_SHOWN])
        shown += f" and {len(ids) - GDPR_IDS_SHOWN} more" if len(ids) > GDPR_IDS_SHOWN else ""
        what = (
            f"delete ALL data (events and profiles) of {len(ids)} user(s) {where} under {args.compliance_type}, "
            f"irreversibly once Mixpanel starts: {shown}"
        )
    else:
        what = f"run {tool} {operation} {where}"
    return strip_controls(what)
