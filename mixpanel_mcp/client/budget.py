"""The client-side limiter: Mixpanel's per-project rate limits, counted here so the server never earns a 429.

    Query (every /api/query request, JQL included)   60 an hour (rolling), 5 at a time
    Export (/api/2.0/export)                         60 an hour, 3 a second, 100 at a time
    Lexicon (/api/app/.../schemas)                   5 a minute (per organization)

Every request sent counts, retries included (Mixpanel counts each one). A request first waits for a
concurrency slot; then, if a rate window is full, it waits when the window frees up within
`BudgetSettings.max_wait` seconds (the 3-a-second export limit), and otherwise fails at once with
BudgetExhaustedError saying when it can run again (the hour's budget): nothing is sent.

The budgets are shared by every MixpanelClient that talks to the same project (a hosted endpoint may hold
several): a registry keyed by (API family, host, project). The registry is kept per event loop, because a
semaphore belongs to the loop it was made in; a server process runs one loop, so in practice it is per process.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

import anyio

from mixpanel_mcp.client.errors import Api, BudgetExhaustedError
from mixpanel_mcp.config import Settings

Clock = Callable[[], float]


class Window:
    """At most `count` request starts in any `seconds`-long rolling window."""

    def __init__(self, count: int, seconds: float, name: str) -> None:
        self.count = count
        self.seconds = seconds
        self.name = name  # "hour", "minute", "second"
        self._starts: deque[float] = deque()

    def _expire(self, now: float) -> None:
        while self._starts and self._starts[0] <= now - self.seconds:
            self._starts.popleft()

    def wait(self, now: float) -> float:
        """Seconds until one more request may start (0: now)."""
        self._expire(now)
        if len(self._starts) < self.count:
            return 0.0
        return self._starts[len(self._starts) - self.count] + self.seconds - now

    def take(self, now: float) -> None:
        self._starts.append(now)

    def remaining(self, now: float) -> int:
        self._expire(now)
        return max(self.count - len(self._starts), 0)

    def describe(self) -> str:
        return f"{self.count} a{'n' if self.name == 'hour' else ''} {self.name}"


class Ticket:
    """A concurrency slot held for one request; released when the response is done with."""

    def __init__(self, semaphore: anyio.Semaphore | None) -> None:
        self._semaphore = semaphore

    def release(self) -> None:
        if self._semaphore is not None:
            self._semaphore.release()
            self._semaphore = None


class FamilyBudget:
    """One API family's limits for one project."""

    def __init__(
        self, api: Api, windows: list[Window], concurrent: int | None, *, max_wait: float, clock: Clock = time.monotonic
    ) -> None:
        self.api = api
        self.windows = windows
        self.concurrent = concurrent
        self.max_wait = max_wait
        self._clock = clock
        self._slots = anyio.Semaphore(concurrent) if concurrent else None

    def _check(self, endpoint: str, now: float) -> float:
        """The wait before a request may start; raises when it is longer than `max_wait`."""
        waits = [(window.wait(now), window) for window in self.windows]
        wait, window = max(waits, key=lambda pair: pair[0], default=(0.0, None))
        if window is not None and wait > self.max_wait:
            raise BudgetExhaustedError(
                api=self.api,
                endpoint=endpoint,
                limit=window.describe(),
                retry_after=wait,
                until=time.time() + wait,
            )
        return wait

    async def acquire(self, endpoint: str) -> Ticket:
        """Wait for a slot and a place in every window, or raise BudgetExhaustedError at once."""
        self._check(endpoint, self._clock())  # a spent budget fails now, not after queueing for a slot
        if self._slots is not None:
            await self._slots.acquire()
        ticket = Ticket(self._slots)
        try:
            while (wait := self._check(endpoint, self._clock())) > 0:
                await anyio.sleep(wait)
        except BaseException:
            ticket.release()
            raise
        now = self._clock()
        for window in self.windows:
            window.take(now)
        return ticket

    def remaining(self) -> dict[str, Any]:
        """What is left of the longest window (the one that makes a caller wait longest once spent)."""
        window = max(self.windows, key=lambda w: w.seconds)
        return {"remaining": window.remaining(self._clock()), "limit": window.count, "window": window.name}


def _fingerprint(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:16]


def project_key(api: Api, settings: Settings) -> tuple[str, ...] | None:
    """(family, host, project) for a limited family; None for ingestion, which has no such limits."""
    if api is Api.LEXICON:
        # Lexicon's limit is per organization; a service account belongs to exactly one.
        who = settings.service_account_username or ""
        return (api.value, settings.query_url, "org:" + who)
    if api not in (Api.QUERY, Api.EXPORT):
        return None
    host = settings.query_url if api is Api.QUERY else settings.export_url
    if settings.has_service_account:
        return (api.value, host, f"project:{settings.project_id}")
    secret = settings.api_secret.get_secret_value() if settings.api_secret is not None else ""
    return (api.value, host, "secret:" + _fingerprint(secret))  # the legacy secret is one project's


def _build(api: Api, settings: Settings, clock: Clock) -> FamilyBudget:
    b = settings.budget
    if api is Api.QUERY:
        return FamilyBudget(api, [Window(b.query_per_hour, 3600, "hour")], b.query_concurrent, max_wait=b.max_wait, clock=clock)
    if api is Api.EXPORT:
        windows = [Window(b.export_per_hour, 3600, "hour"), Window(b.export_per_second, 1, "second")]
        return FamilyBudget(api, windows, b.export_concurrent, max_wait=b.max_wait, clock=clock)
    return FamilyBudget(api, [Window(b.lexicon_per_minute, 60, "minute")], None, max_wait=b.max_wait, clock=clock)


_registries: weakref.WeakKeyDictionary[Any, dict[tuple[str, ...], FamilyBudget]] = weakref.WeakKeyDictionary()
_fallback: dict[tuple[str, ...], FamilyBudget] = {}  # outside asyncio (e.g. trio): one registry
clock: Clock = time.monotonic  # what new budgets read the time from (tests may replace it)


def _registry() -> dict[tuple[str, ...], FamilyBudget]:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return _fallback
    registry = _registries.get(loop)
    if registry is None:
        registry = _registries[loop] = {}
    return registry


def budget_for(api: Api, settings: Settings) -> FamilyBudget | None:
    """The shared budget of this project's API family (made with these settings' limits the first time)."""
    key = project_key(api, settings)
    if key is None:
        return None
    registry = _registry()
    budget = registry.get(key)
    if budget is None:
        budget = registry[key] = _build(api, settings, clock)
    return budget
