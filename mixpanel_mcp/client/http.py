"""The one async HTTP core every Mixpanel call goes through: hosts, auth, retries, status -> exception.

It knows nothing of MCP. Tests give it a real loopback server; `transport=` is the seam for anything else.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import logging
import math
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx2

from mixpanel_mcp import __version__
from mixpanel_mcp.client.cache import Stored, request_key, ttl_for
from mixpanel_mcp.client.errors import (
    Api,
    CallDeadlineError,
    Credential,
    CredentialMissingError,
    MixpanelError,
    TransportError,
    UnexpectedAnswerError,
    UnsendableRequestError,
    UpstreamError,
    error_for_status,
)
from mixpanel_mcp.client.state import LocalState, State
from mixpanel_mcp.config import Settings
from mixpanel_mcp.text import scrub

logger = logging.getLogger(__name__)

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
# A 429 or a connection that never opened means Mixpanel did not process the body; anything else
# after the body was sent (5xx, timeout, reset) may have been applied already.
UNAMBIGUOUS_STATUSES = frozenset({429})


@dataclass
class CallStats:
    """Upstream work done for one tool call (read by the audit log and results)."""

    requests: int = 0
    retries: int = 0
    cached: bool = False  # answered (at least in part) from the result cache
    budget: dict[str, Any] = field(default_factory=dict)  # what is left of each rate budget, by API family
    deadline: float | None = None  # anyio.current_time() by which the whole call must be done
    deadline_seconds: float | None = None  # the setting it came from, for the report


call_stats: ContextVar[CallStats | None] = ContextVar("mixpanel_call_stats", default=None)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP date); None when absent or nonsense."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        parsed = email.utils.parsedate_tz(value)
        if parsed is None:
            return None
        # A date already past means "now"; a negative number of seconds is simply invalid.
        seconds = max(email.utils.mktime_tz(parsed) - (time.time() if now is None else now), 0.0)
    if math.isnan(seconds) or math.isinf(seconds) or seconds < 0:
        return None
    return seconds


def error_detail(response: httpx2.Response, secrets: list[str]) -> str | None:
    """Mixpanel's own error text, from a JSON `error` field or a short plain-text body, scrubbed."""
    text: str | None
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, Mapping):
        text = body.get("error") if isinstance(body.get("error"), str) else None
    else:
        text = response.text.strip() or None
    if text is None:
        return None
    # Scrubbed before cutting, so no part of a secret survives at the cut.
    return scrub(text, secrets)[: 500 if isinstance(body, Mapping) else 300]


# Reads the result cache may answer: every Query API GET, its read-only POSTs, and Lexicon GETs.
CACHEABLE_QUERY_POSTS = frozenset({"/jql", "/engage", "/cohorts/list"})


def cacheable(api: Api, method: str, path: str) -> bool:
    if api is Api.QUERY:
        return method == "GET" or (method == "POST" and path in CACHEABLE_QUERY_POSTS)
    return api is Api.LEXICON and method == "GET"


def _scope(settings: Settings) -> str:
    """Who is asking: cached answers are only ever shared between clients with the same hosts and credentials."""
    parts = [
        settings.ingestion_url,
        settings.query_url,
        settings.export_url,
        str(settings.project_id),
        str(settings.workspace_id),
        settings.service_account_username or "",
        *settings.secrets(),
    ]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]


class MixpanelClient:
    """Async client for every Mixpanel API family; one instance per server process (or per agent project)."""

    def __init__(
        self,
        settings: Settings,
        *,
        transport: httpx2.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        state: State | None = None,
    ) -> None:
        self.settings = settings
        self.state: State = state if state is not None else LocalState()
        self._sleep = sleep
        self._scope = _scope(settings)
        self._transport = transport
        self._client: httpx2.AsyncClient | None = None

    @property
    def _http(self) -> httpx2.AsyncClient:
        """The connection pool, made on first use: building its TLS context costs ~50 ms, which a server
        should not spend before it can answer tools/list."""
        if self._client is None:
            self._client = httpx2.AsyncClient(
                transport=self._transport,
                timeout=httpx2.Timeout(self.settings.timeout, connect=10.0),
                headers={"User-Agent": f"mixpanel-mcp/{__version__}"},
                limits=httpx2.Limits(max_connections=100, max_keepalive_connections=20),
                follow_redirects=False,
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    async def __aenter__(self) -> MixpanelClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- hosts and credentials -------------------------------------------------------------

    def url(self, api: Api, path: str) -> str:
        s = self.settings
        base = {
            Api.INGESTION: s.ingestion_url,
            Api.IMPORT: s.ingestion_url,
            Api.QUERY: s.query_url + "/query",
            Api.LEXICON: s.query_url + "/app",
            Api.APP: s.query_url + "/app",
            Api.GDPR: s.query_url + "/app",
            Api.FLAGS: s.ingestion_url,
            Api.LOOKUP: s.ingestion_url,
            Api.EXPORT: s.export_url,
        }[api]
        return base + path

    def credentials(self, api: Api) -> tuple[Credential | None, tuple[str, str] | str | None, dict[str, Any]]:
        """(which credential, Basic auth pair or Bearer token, extra query params) for an API family."""
        s = self.settings
        if api is Api.GDPR:
            if s.gdpr_token is None:
                raise CredentialMissingError(api, "Mixpanel's GDPR OAuth token (MIXPANEL_GDPR_TOKEN)")
            if s.project_token is None:
                raise CredentialMissingError(api, "MIXPANEL_PROJECT_TOKEN (the GDPR API names the project by its token)")
            return Credential.GDPR_TOKEN, s.gdpr_token.get_secret_value(), {"token": s.project_token.get_secret_value()}
        if api is Api.INGESTION:
            if s.project_token is None:
                raise CredentialMissingError(api, "MIXPANEL_PROJECT_TOKEN")
            return Credential.PROJECT_TOKEN, None, {}
        if s.service_account_username and s.service_account_secret:
            auth = (s.service_account_username, s.service_account_secret.get_secret_value())
            params: dict[str, Any] = {}
            if api in (Api.QUERY, Api.EXPORT, Api.IMPORT, Api.FLAGS, Api.LOOKUP):  # the app API has it in its paths
                params["project_id"] = s.project_id
            if api is Api.QUERY and s.workspace_id is not None:
                params["workspace_id"] = s.workspace_id
            return Credential.SERVICE_ACCOUNT, auth, params
        if api in (Api.LEXICON, Api.APP):
            raise CredentialMissingError(api, "a service account (MIXPANEL_SERVICE_ACCOUNT_USERNAME/_SECRET)")
        if s.api_secret is not None:
            return Credential.API_SECRET, (s.api_secret.get_secret_value(), ""), {}
        if api is Api.IMPORT and s.project_token is not None:
            return Credential.PROJECT_TOKEN, (s.project_token.get_secret_value(), ""), {}
        raise CredentialMissingError(api, "a service account or MIXPANEL_API_SECRET")

    # -- requests --------------------------------------------------------------------------

    async def request(
        self,
        api: Api,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        idempotent: bool = True,
        accept: frozenset[int] = frozenset(),
        **kwargs: Any,
    ) -> httpx2.Response:
        """Send one logical request, retrying what is safe to retry; raise a typed error on failure.

        A response whose status is in `accept` is returned as it is (not raised, not retried). A read
        (see `cacheable`) may be answered from the result cache, or share an identical request in flight.
        """
        credential, request = self._build(api, method, path, params, **kwargs)
        cache_settings = self.settings.cache
        if cacheable(api, method, path) and (cache_settings.ttl > 0 or cache_settings.ttl_today > 0):
            ttl = ttl_for(cache_settings.ttl, cache_settings.ttl_today, params, kwargs.get("data"))

            async def call() -> httpx2.Response:
                async with self._send(api, path, credential, request, idempotent=idempotent, stream=False, accept=accept) as r:
                    return r

            answer = await self.state.fetch(request_key(self._scope, request), self._scope, ttl, call)
            if isinstance(answer, Stored):
                await self._note_cached(api)
                return answer.response(request)
            return answer
        write = method not in ("GET", "HEAD") and not cacheable(api, method, path)
        if write:  # what was read before may have changed: forget it (again once the write is done)
            await self.state.invalidate(self._scope)
        try:
            async with self._send(api, path, credential, request, idempotent=idempotent, stream=False, accept=accept) as r:
                return r
        finally:
            if write:
                with anyio.CancelScope(shield=True):
                    await self.state.invalidate(self._scope)

    @asynccontextmanager
    async def stream(
        self, api: Api, method: str, path: str, *, params: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> AsyncIterator[httpx2.Response]:
        """Like `request`, but the body is left unread for the caller to iterate (never cached)."""
        credential, request = self._build(api, method, path, params, **kwargs)
        async with self._send(api, path, credential, request, idempotent=True, stream=True) as r:
            yield r

    def _build(
        self, api: Api, method: str, path: str, params: Mapping[str, Any] | None, **kwargs: Any
    ) -> tuple[Credential | None, httpx2.Request]:
        credential, auth, auth_params = self.credentials(api)
        query = {**auth_params, **{k: v for k, v in (params or {}).items() if v is not None}}
        try:
            request = self._http.build_request(method, self.url(api, path), params=query, **kwargs)
        except httpx2.InvalidURL:  # a component past the URL's limit (64 KB): nothing can be sent
            raise UnsendableRequestError(
                api=api, endpoint=path, reason="the arguments make a URL longer than HTTP allows"
            ) from None
        if isinstance(auth, str):
            request.headers["Authorization"] = f"Bearer {auth}"
        elif auth is not None:
            request.headers["Authorization"] = basic_auth(*auth)
        if api is Api.EXPORT:  # the only compression export offers (export.openapi.yaml, Accept-Encoding)
            request.headers["Accept-Encoding"] = "gzip"
        return credential, request

    async def _note_cached(self, api: Api) -> None:
        stats = call_stats.get()
        if stats is None:
            return
        stats.cached = True
        try:
            left = await self.state.remaining(api, self.settings)
        except MixpanelError:  # the shared counts are out of reach: the answer stands without them
            left = None
        if left is not None:
            stats.budget[api.value] = left

    @asynccontextmanager
    async def _send(
        self,
        api: Api,
        path: str,
        credential: Credential | None,
        request: httpx2.Request,
        *,
        idempotent: bool,
        stream: bool,
        accept: frozenset[int] = frozenset(),
    ) -> AsyncIterator[httpx2.Response]:
        stats = call_stats.get()
        retry = self.settings.retry
        attempt = 0
        timeouts = 0
        maybe_applied = False  # an earlier attempt was sent and went unanswered (or answered 5xx)
        while True:
            # Every attempt is a request Mixpanel counts: each one waits for, and spends, the budget.
            ticket = await self.state.acquire(api, self.settings, path)
            try:
                attempt += 1
                left = _time_left(stats)
                if left is not None and left <= 0:
                    raise _deadline(stats, path)
                capped = left is not None and left < self.settings.timeout
                if capped:  # this attempt may not outlast the call
                    request.extensions["timeout"] = httpx2.Timeout(left, connect=min(10.0, left)).as_dict()
                if stats is not None:
                    stats.requests += 1
                    stats.retries += attempt > 1
                    if ticket is not None:
                        stats.budget[api.value] = ticket.remaining
                wait: float | None
                try:
                    response = await self._http.send(request, stream=stream)
                except (httpx2.TimeoutException, httpx2.NetworkError, httpx2.RemoteProtocolError) as exc:
                    never_sent = isinstance(exc, (httpx2.ConnectError, httpx2.ConnectTimeout))
                    timed_out = isinstance(exc, httpx2.TimeoutException)
                    maybe_applied = maybe_applied or not never_sent
                    if timed_out and capped:
                        raise _deadline(stats, path) from None
                    # A query that ran out of time is costly (a slot and one of the hour's queries for up to
                    # MIXPANEL_TIMEOUT): tried again once at most, and only if the budget and the call's
                    # deadline leave room for a whole second attempt.
                    timeouts += timed_out and not never_sent
                    left_over = ticket.remaining if ticket is not None else None
                    give_up_query = api is Api.QUERY and timeouts > 0 and (
                        timeouts > 1
                        or (left_over is not None and left_over.get("remaining", 1) < 1)
                        or (left is not None and left < 2 * self.settings.timeout)
                    )
                    if attempt > retry.max_retries or not (idempotent or never_sent) or give_up_query:
                        raise TransportError(
                            api=api,
                            endpoint=path,
                            reason=_transport_reason(exc),
                            timed_out=timed_out,
                            attempts=attempt,
                            maybe_applied=maybe_applied,
                            budget=left_over,
                        ) from None
                    wait = None
                else:
                    # Redirects are not followed (credentials stay on the configured host), so a 3xx is a failure.
                    if response.status_code < 300 or response.status_code in accept:
                        try:
                            yield response
                        finally:
                            await response.aclose()
                        return
                    if stream:
                        await response.aread()
                    wait = parse_retry_after(response.headers.get("Retry-After"))
                    retryable = response.status_code in RETRYABLE_STATUSES and (
                        idempotent or response.status_code in UNAMBIGUOUS_STATUSES
                    )
                    too_long = wait is not None and wait > retry.max_delay
                    maybe_applied = maybe_applied or response.status_code >= 500
                    if not retryable or too_long or attempt > retry.max_retries:
                        raise error_for_status(response.status_code)(
                            api=api,
                            status=response.status_code,
                            detail=error_detail(response, self.settings.secrets()),
                            credential=credential,
                            endpoint=path,
                            retry_after=wait,
                            attempts=attempt,
                            maybe_applied=maybe_applied,
                        )
                    logger.info("%s %s answered %d; retrying", request.method, path, response.status_code)
            finally:
                if ticket is not None:
                    with anyio.CancelScope(shield=True):
                        await ticket.release()
            delay = wait if wait is not None else self.backoff(attempt)
            left = _time_left(stats)
            if left is not None and delay >= left:  # waiting would outlast the call: stop now, and say so
                raise _deadline(stats, path)
            await self._sleep(delay)

    def backoff(self, attempt: int) -> float:
        """Delay before retry `attempt` (1-based): base, doubling to the cap, plus 0.5-2.5x base of jitter."""
        retry = self.settings.retry
        delay = min(retry.base_delay * 2 ** (attempt - 1), retry.max_delay)
        return delay + retry.base_delay * (0.5 + 2 * random.random())


def _time_left(stats: CallStats | None) -> float | None:
    if stats is None or stats.deadline is None:
        return None
    return stats.deadline - anyio.current_time()


def _deadline(stats: CallStats | None, path: str) -> CallDeadlineError:
    assert stats is not None and stats.deadline_seconds is not None
    return CallDeadlineError(seconds=stats.deadline_seconds, requests=stats.requests, endpoint=path)


def basic_auth(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def _transport_reason(exc: Exception) -> str:
    if isinstance(exc, httpx2.ConnectTimeout):
        return "could not connect in time"
    if isinstance(exc, httpx2.TimeoutException):
        return "no answer in time"
    if isinstance(exc, httpx2.ConnectError):
        return "could not connect"
    return "the connection was closed before an answer arrived"


def raise_for_body_status(response: httpx2.Response, api: Api, endpoint: str, secrets: list[str]) -> Any:
    """The JSON of a successful answer; raise when it is a failure in disguise.

    Mixpanel's verbose ingestion answers 200 with {"status": 0, "error": ...} on failure, and the Query API
    can answer 200 with {"error": ...}. Only ingestion's plain "1" is a body that is not JSON; any other
    (an HTML page from a proxy or a login wall) is an error, never an empty result.
    """
    if response.status_code == 204:  # No Content: the documented answer of some deletes
        return ""
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()
        if text == "0":
            raise error_for_status(400)(
                api=api, status=200, detail="no valid record in the request", credential=None, endpoint=endpoint
            ) from None
        if text == "1" and api in (Api.INGESTION, Api.IMPORT):
            return text
        raise UnexpectedAnswerError(
            api=api,
            status=response.status_code,
            detail=f"the body is not JSON ({_kind_of_body(response)})",
            credential=None,
            endpoint=endpoint,
        ) from None
    failed = isinstance(body, Mapping) and (
        body.get("status") in (0, "0", "error") or (isinstance(body.get("error"), str) and body["error"].strip() != "")
    )
    if failed:
        raise error_for_status(400)(
            api=api,
            status=response.status_code,
            detail=error_detail(response, secrets),
            credential=None,
            endpoint=endpoint,
        )
    return body


def _kind_of_body(response: httpx2.Response) -> str:
    """What came instead of JSON, in words that echo nothing of it."""
    content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
    size = len(response.content)
    if not size:
        return "it is empty"
    what = "an HTML page" if content_type == "text/html" or response.text.lstrip()[:1] == "<" else "plain text"
    return f"{what} of {size:,} bytes"


__all__ = ["CallStats", "MixpanelClient", "UpstreamError", "call_stats", "parse_retry_after", "raise_for_body_status"]
