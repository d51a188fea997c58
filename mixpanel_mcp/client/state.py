"""Where the server keeps what its calls share: the rate budgets, the result cache with its calls in flight,
the confirmation codes already spent, and each agent's calls in flight.

`LocalState` keeps them in this process (one server process: a laptop, or one container). `RedisState`
(`redis_state.py`, with MIXPANEL_MCP_REDIS_URL) keeps them in Redis, so that every replica of a hosted
endpoint counts one budget, answers from one cache, spends a code once and caps an agent once.

Calls over an agent's cap wait their turn (first come, first served) for up to the project's
`BudgetSettings.max_wait` seconds, with at most QUEUE_FACTOR x the cap waiting; past either bound the call is
refused with CallsInFlightError, and nothing is sent.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol

import anyio
import httpx2

from mixpanel_mcp.client.budget import budget_for
from mixpanel_mcp.client.cache import Stored, result_cache
from mixpanel_mcp.client.errors import Api
from mixpanel_mcp.config import REDIS_URL_VAR, ConfigError, RedisSettings, Settings

try:
    import fcntl
except ImportError:  # Windows: used codes are remembered per process
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

QUEUE_FACTOR = 4  # calls of one agent that may wait for a slot, per slot of its cap


class CallsInFlightError(Exception):
    """An agent's call found every one of its slots taken, and could not wait for one."""

    def __init__(self, *, busy: int, limit: int, waiting: int, waited: float) -> None:
        super().__init__(f"{busy} calls already in flight (limit {limit}), {waiting} waiting")
        self.busy = busy
        self.limit = limit
        self.waiting = waiting
        self.waited = waited  # seconds this call waited (0: the queue was full)


class Ticket(Protocol):
    """A concurrency slot held for one request; `remaining` is what is left of the budget's longest window."""

    remaining: dict[str, Any]

    async def release(self) -> None: ...


class State(Protocol):
    name: str  # "in-process", "redis"

    async def acquire(self, api: Api, settings: Settings, endpoint: str) -> Ticket | None:
        """Wait for the project's budget of `api` (None: the family has no limits); BudgetExhaustedError when
        the wait would be too long, SharedStateUnavailableError when the budget cannot be counted."""

    async def remaining(self, api: Api, settings: Settings) -> dict[str, Any] | None: ...

    async def fetch(
        self, key: str, scope: str, ttl: float, call: Callable[[], Awaitable[httpx2.Response]]
    ) -> httpx2.Response | Stored:
        """The stored answer (from cache or an identical call in flight), or the response of our own call."""

    async def invalidate(self, scope: str) -> None:
        """Forget every answer of `scope` (a write changed what they say)."""

    async def spend_once(self, token: str, until: float) -> bool:
        """True the first time `token` is spent (remembered until the epoch second `until`), False after."""

    def agent_slot(self, agent: str, limit: int, max_wait: float) -> Any:
        """An async context manager holding one of `agent`'s `limit` call slots; CallsInFlightError when none
        frees up within `max_wait` seconds."""

    async def health(self) -> str | None:
        """None when healthy; else why not."""

    async def aclose(self) -> None: ...


class _LocalTicket:
    def __init__(self, inner: Any, remaining: dict[str, Any]) -> None:
        self._inner = inner
        self.remaining = remaining

    async def release(self) -> None:
        self._inner.release()


class AgentSlots:
    """Each agent's calls in flight in this process, and the calls waiting for one of them (in order)."""

    def __init__(self) -> None:
        self._busy: dict[str, int] = {}
        self._waiting: dict[str, deque[anyio.Event]] = {}

    def busy(self, agent: str) -> int:
        return self._busy.get(agent, 0)

    @asynccontextmanager
    async def hold(self, agent: str, limit: int, max_wait: float) -> AsyncIterator[None]:
        await self._take(agent, limit, max_wait)
        try:
            yield
        finally:
            self._give_back(agent)

    async def _take(self, agent: str, limit: int, max_wait: float) -> None:
        busy = self._busy.get(agent, 0)
        queue = self._waiting.setdefault(agent, deque())
        if busy < limit and not queue:
            self._busy[agent] = busy + 1
            return
        if len(queue) >= QUEUE_FACTOR * limit or max_wait <= 0:
            raise CallsInFlightError(busy=busy, limit=limit, waiting=len(queue), waited=0.0)
        turn = anyio.Event()
        queue.append(turn)
        try:
            with anyio.move_on_after(max_wait):
                await turn.wait()
        except BaseException:  # cancelled while waiting: pass on a slot handed over meanwhile
            if turn.is_set():
                self._give_back(agent)
            else:
                queue.remove(turn)
            raise
        if turn.is_set():  # a finishing call handed its slot over
            return
        queue.remove(turn)
        raise CallsInFlightError(busy=self._busy.get(agent, 0), limit=limit, waiting=len(queue), waited=max_wait)

    def _give_back(self, agent: str) -> None:
        queue = self._waiting.get(agent)
        if queue:
            queue.popleft().set()  # the slot goes straight to the next in line
            return
        self._busy[agent] -= 1
        if not self._busy[agent]:
            del self._busy[agent]
            self._waiting.pop(agent, None)


class LocalState:
    """Everything in this process (budgets and cache per event loop: see budget.py and cache.py).

    `spent_file`: where used confirmation codes and answers are remembered instead, for a local install whose
    codes outlive the process (some clients start one server per call: a code spent in one process must be
    spent for the next)."""

    name = "in-process"

    def __init__(self, spent_file: Path | None = None) -> None:
        self.slots = AgentSlots()
        self._spent: dict[str, float] = {}
        self._spent_file = spent_file if spent_file is not None and fcntl is not None else None

    async def acquire(self, api: Api, settings: Settings, endpoint: str) -> Ticket | None:
        budget = budget_for(api, settings)
        if budget is None:
            return None
        inner = await budget.acquire(endpoint)
        return _LocalTicket(inner, budget.remaining())

    async def remaining(self, api: Api, settings: Settings) -> dict[str, Any] | None:
        budget = budget_for(api, settings)
        return budget.remaining() if budget is not None else None

    async def fetch(
        self, key: str, scope: str, ttl: float, call: Callable[[], Awaitable[httpx2.Response]]
    ) -> httpx2.Response | Stored:
        return await result_cache().fetch(key, scope, ttl, call)

    async def invalidate(self, scope: str) -> None:
        result_cache().invalidate(scope)

    async def spend_once(self, token: str, until: float) -> bool:
        if self._spent_file is not None:
            try:
                return _spend_in_file(self._spent_file, token, until)
            except OSError as exc:
                logger.warning("cannot use %s (%s): used codes are remembered by this process only", self._spent_file, exc)
                self._spent_file = None
        now = time.time()
        self._spent = {t: u for t, u in self._spent.items() if u >= now}
        if token in self._spent:
            return False
        self._spent[token] = until
        return True

    def agent_slot(self, agent: str, limit: int, max_wait: float) -> Any:
        return self.slots.hold(agent, limit, max_wait)

    async def health(self) -> str | None:
        return None

    async def aclose(self) -> None:
        return None


def _spend_in_file(path: Path, token: str, until: float) -> bool:
    """spend_once across the processes of one user: lines of `token until`, rewritten under an exclusive lock.
    The tokens are digests, never codes; the file holds only what has not expired (a few lines)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with os.fdopen(os.dup(fd), "r+", encoding="ascii") as file:
            now = time.time()
            live = {}
            for line in file:
                spent, _, expiry = line.partition(" ")
                try:
                    if float(expiry) >= now:
                        live[spent] = float(expiry)
                except ValueError:
                    continue  # a line cut short by a crash is dropped (at worst, that one code works once more)
            fresh = token not in live
            live[token] = max(until, live.get(token, until))
            file.seek(0)
            file.truncate()
            file.writelines(f"{spent} {expiry}\n" for spent, expiry in live.items())
        return fresh
    finally:
        os.close(fd)  # releases the lock


def open_state(redis: RedisSettings | None, spent_file: Path | None = None) -> State:
    """In this process, or in Redis once it answers: ConfigError saying why not (the server does not start).
    `spent_file`: see LocalState."""
    if redis is None:
        return LocalState(spent_file)
    try:
        import redis as _client  # noqa: F401 - the optional extra
    except ImportError:
        raise ConfigError(
            f"{REDIS_URL_VAR} is set but the Redis client is not installed: pip install 'mixpanel-mcp[redis]'."
        ) from None
    from mixpanel_mcp.client.redis_state import RedisState, check_redis

    try:
        check_redis(redis.url.get_secret_value())
    except ConnectionError as exc:
        raise ConfigError(
            f"cannot reach Redis at {redis.shown} ({REDIS_URL_VAR}): {exc}. Start it or correct the URL (without "
            f"{REDIS_URL_VAR}, one server process keeps its limits and cache to itself)."
        ) from None
    return RedisState(redis.url.get_secret_value(), lease=redis.lease)
