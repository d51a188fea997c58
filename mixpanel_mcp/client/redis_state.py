"""What calls share, kept in Redis (MIXPANEL_MCP_REDIS_URL) so every replica of a hosted endpoint behaves as one
server: one rate budget per project, one result cache with one upstream call per question in flight, codes
spent once, and each agent's cap on calls in flight counted across replicas.

- Budgets: each rate window is a sorted set of request starts; concurrency slots are leases (a sorted set of
  token -> expiry) that the holder renews while its request runs, so a replica that dies mid-call gives its
  slots back within the lease time. A Lua script checks every window and takes a slot in one step, on Redis's
  clock, so replicas neither race nor disagree about the time.
- Cache: answers under `cache:<scope>:<generation>:<request>` with their TTL; a write bumps the scope's
  generation, which orphans every older answer. The first replica to ask holds `flight:<request>` (a renewed
  lease) and calls Mixpanel; the others wait for its answer.
- Keys start with PREFIX and all expire. Nothing secret is stored: scopes, requests and codes are digests,
  agents are digests of their names; the only payloads are Mixpanel's answers, in the cache.

When Redis cannot be reached: a request that needs the budget is not sent (SharedStateUnavailableError), a
code cannot be redeemed, the cache is bypassed, agent caps count in this process only, and `health` says so.
The client reconnects by itself on the next command, so the server recovers without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import httpx2

from mixpanel_mcp.client.budget import project_key
from mixpanel_mcp.client.cache import MAX_BYTES, Stored
from mixpanel_mcp.client.errors import Api, BudgetExhaustedError, SharedStateUnavailableError
from mixpanel_mcp.client.state import AgentSlots, CallsInFlightError
from mixpanel_mcp.config import Settings

logger = logging.getLogger(__name__)

PREFIX = "mixpanel-mcp:"
LEASE = 30.0  # seconds a slot stays taken after its holder stops renewing it (a dead replica)
DONE_TTL_MS = 5000  # how long an answer waits for the replicas that asked at the same time
GENERATION_TTL_S = 7 * 24 * 3600
POLL_FIRST, POLL_MAX = 0.005, 0.1  # seconds between looks while another replica holds what we wait for
TIMEOUT = 2.0  # seconds for one Redis command: past it, Redis counts as unreachable

# Windows, then a concurrency slot, in one step. KEYS[1]: the slots (token -> lease expiry, ms); KEYS[2..]: the
# windows (token -> start, ms). ARGV: token, slots (0: no cap), lease ms, then count and span ms per window.
# Returns {0, wait ms, window}: a window is full; {1}: every slot is taken; {2, left per window...}: taken.
ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local token, slots, lease = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local wait, which = 0, 0
for j = 1, #KEYS - 1 do
  local count, span = tonumber(ARGV[2 + 2 * j]), tonumber(ARGV[3 + 2 * j])
  redis.call('ZREMRANGEBYSCORE', KEYS[j + 1], '-inf', now - span)
  local n = redis.call('ZCARD', KEYS[j + 1])
  if n >= count then
    local oldest = redis.call('ZRANGE', KEYS[j + 1], n - count, n - count, 'WITHSCORES')
    local w = tonumber(oldest[2]) + span - now
    if w > wait then wait, which = w, j end
  end
end
if wait > 0 then return {0, wait, which} end
if slots > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  if redis.call('ZCARD', KEYS[1]) >= slots then return {1, redis.call('ZCARD', KEYS[1])} end
  redis.call('ZADD', KEYS[1], now + lease, token)
  redis.call('PEXPIRE', KEYS[1], lease * 2)
end
local left = {2}
for j = 1, #KEYS - 1 do
  local count, span = tonumber(ARGV[2 + 2 * j]), tonumber(ARGV[3 + 2 * j])
  redis.call('ZADD', KEYS[j + 1], now, token)
  redis.call('PEXPIRE', KEYS[j + 1], span + 1000)
  left[j + 1] = count - redis.call('ZCARD', KEYS[j + 1])
end
return left
"""

# KEYS[1]: a window; ARGV: count, span ms. What is left of it now.
REMAINING = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
return tonumber(ARGV[1]) - redis.call('ZCARD', KEYS[1])
"""

# KEYS[1]: slots; ARGV: lease ms, tokens. Pushes the leases still held further out.
RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[1])
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], 'XX', now + lease, ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], lease * 2)
"""

# KEYS[1]: the scope's generation, KEYS[2]: the request's flight lock. ARGV: cache prefix, done prefix, request.
# Returns {generation, lock held (0/1), the kept answer, the answer of the call just done (nil when none)}.
LOOKUP = """
local gen = redis.call('GET', KEYS[1]) or '0'
local kept = redis.call('GET', ARGV[1] .. gen .. ':' .. ARGV[3])
local done = redis.call('GET', ARGV[2] .. gen .. ':' .. ARGV[3])
return {gen, redis.call('EXISTS', KEYS[2]), kept, done}
"""

# KEYS[1]: generation, KEYS[2]: flight lock. ARGV: cache prefix, done prefix, request, generation when asked,
# answer, ttl ms (0: not kept), lock token, done ms. Keeps the answer unless a write came meanwhile; frees the lock.
STORE = """
local gen = redis.call('GET', KEYS[1]) or '0'
if gen == ARGV[4] then
  if tonumber(ARGV[6]) > 0 then redis.call('SET', ARGV[1] .. gen .. ':' .. ARGV[3], ARGV[5], 'PX', ARGV[6]) end
  redis.call('SET', ARGV[2] .. gen .. ':' .. ARGV[3], ARGV[5], 'PX', ARGV[8])
end
if redis.call('GET', KEYS[2]) == ARGV[7] then redis.call('DEL', KEYS[2]) end
"""

# KEYS: locks; ARGV: lease ms, then each lock's token. Extends the locks still ours.
RENEW_LOCKS = """
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[i + 1] then redis.call('PEXPIRE', KEYS[i], ARGV[1]) end
end
"""

UNLOCK = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


def digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]


def _encode(stored: Stored) -> bytes:
    return f"{stored.status}\n{stored.content_type or ''}\n".encode() + stored.content


def _decode(value: bytes) -> Stored:
    status, content_type, content = value.split(b"\n", 2)
    return Stored(int(status), content_type.decode() or None, content)


def _windows(api: Api, settings: Settings) -> tuple[list[tuple[int, int, str, str]], int]:
    """(count, span ms, name, description) per window, and the concurrency cap (0: none), of a family."""
    b = settings.budget
    if api is Api.QUERY:
        return [(b.query_per_hour, 3_600_000, "hour", f"{b.query_per_hour} an hour")], b.query_concurrent
    if api is Api.EXPORT:
        return [
            (b.export_per_hour, 3_600_000, "hour", f"{b.export_per_hour} an hour"),
            (b.export_per_second, 1000, "second", f"{b.export_per_second} a second"),
        ], b.export_concurrent
    return [(b.lexicon_per_minute, 60_000, "minute", f"{b.lexicon_per_minute} a minute")], 0


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return "cannot reach Redis: " + text[:200]


class _Lease:
    def __init__(self, state: RedisState, key: str, token: str, remaining: dict[str, Any]) -> None:
        self._state = state
        self._key = key
        self._token = token
        self.remaining = remaining

    async def release(self) -> None:
        await self._state._give_back(self._key, self._token)


class RedisState:
    name = "redis"

    def __init__(self, url: str, *, lease: float = LEASE, prefix: str = PREFIX) -> None:
        import redis.asyncio as aioredis  # the optional extra: imported only when Redis is configured
        from redis.exceptions import RedisError

        self._errors: tuple[type[BaseException], ...] = (RedisError, OSError, asyncio.TimeoutError)
        self._redis = aioredis.Redis.from_url(url, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT)
        self.lease = lease
        self.prefix = prefix
        self._acquire = self._redis.register_script(ACQUIRE)
        self._remaining = self._redis.register_script(REMAINING)
        self._renew = self._redis.register_script(RENEW)
        self._lookup = self._redis.register_script(LOOKUP)
        self._store = self._redis.register_script(STORE)
        self._renew_locks = self._redis.register_script(RENEW_LOCKS)
        self._unlock = self._redis.register_script(UNLOCK)
        self.local_slots = AgentSlots()
        self._held: dict[str, set[str]] = {}  # slot leases to renew: key -> tokens
        self._locks: dict[str, str] = {}  # flight locks to renew: key -> token
        self._renewer: asyncio.Task[None] | None = None
        self._stale_scopes: set[str] = set()  # writes Redis did not hear of (it was down): forget them on return
        self._warned = 0.0

    def _key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def _unavailable(self, what: str, exc: BaseException) -> SharedStateUnavailableError:
        now = time.monotonic()
        if now - self._warned > 10:  # one line per outage burst, not one per call
            self._warned = now
            logger.warning("Redis is unreachable (%s): %s", _reason(exc), "failing closed on budgets and codes")
        return SharedStateUnavailableError(what, _reason(exc))

    # -- leases -------------------------------------------------------------------------------------------

    def _hold(self, key: str, token: str) -> None:
        self._held.setdefault(key, set()).add(token)
        self._start_renewer()

    def _start_renewer(self) -> None:
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.get_running_loop().create_task(self._renew_forever())

    async def _renew_forever(self) -> None:
        while self._held or self._locks:
            await asyncio.sleep(self.lease / 3)
            lease_ms = int(self.lease * 1000)
            try:
                for key, tokens in list(self._held.items()):
                    if tokens:
                        await self._renew(keys=[key], args=[lease_ms, *tokens])
                if self._locks:
                    keys = list(self._locks)
                    await self._renew_locks(keys=keys, args=[lease_ms, *(self._locks[k] for k in keys)])
            except self._errors as exc:  # the leases run out on their own; new calls fail closed meanwhile
                logger.debug("renewing leases failed: %s", _reason(exc))

    async def _give_back(self, key: str, token: str) -> None:
        tokens = self._held.get(key)
        if tokens is not None:
            tokens.discard(token)
            if not tokens:
                del self._held[key]
        try:
            await self._redis.zrem(key, token)
        except self._errors as exc:  # the lease expires by itself
            logger.debug("releasing a slot failed: %s", _reason(exc))

    async def _take(self, slots_key: str, windows: list[tuple[str, int, int]], slots: int) -> tuple[str, list[int]] | int | tuple[float, int]:
        token = uuid.uuid4().hex
        args: list[Any] = [token, slots, int(self.lease * 1000)]
        for _, count, span in windows:
            args += [count, span]
        answer = await self._acquire(keys=[slots_key, *(key for key, _, _ in windows)], args=args)
        if answer[0] == 0:
            return (answer[1] / 1000, int(answer[2]))
        if answer[0] == 1:
            return int(answer[1])
        if slots:
            self._hold(slots_key, token)
        return token, [int(x) for x in answer[1:]]

    # -- budgets ------------------------------------------------------------------------------------------

    async def acquire(self, api: Api, settings: Settings, endpoint: str) -> _Lease | None:
        project = project_key(api, settings)
        if project is None:
            return None
        windows, cap = _windows(api, settings)
        base = self._key("budget", digest(*project))
        keys = [(f"{base}:{name}", count, span) for count, span, name, _ in windows]
        pause = POLL_FIRST
        while True:
            try:
                taken = await self._take(f"{base}:slots", keys, cap)
            except self._errors as exc:
                raise self._unavailable("rate limiter", exc) from None
            if isinstance(taken, tuple) and isinstance(taken[0], str):
                token, left = taken
                longest = max(range(len(windows)), key=lambda j: windows[j][1])
                count, _, name, _ = windows[longest]
                return _Lease(self, f"{base}:slots", token, {"remaining": max(left[longest], 0), "limit": count, "window": name})
            if isinstance(taken, tuple):  # a window is full
                wait, which = taken
                if wait > settings.budget.max_wait:
                    raise BudgetExhaustedError(
                        api=api, endpoint=endpoint, limit=windows[which - 1][3], retry_after=wait, until=time.time() + wait
                    )
                await anyio.sleep(wait)
                continue
            await anyio.sleep(pause)  # every slot is taken: look again soon
            pause = min(pause * 2, POLL_MAX)

    async def remaining(self, api: Api, settings: Settings) -> dict[str, Any] | None:
        project = project_key(api, settings)
        if project is None:
            return None
        windows, _ = _windows(api, settings)
        count, span, name, _ = max(windows, key=lambda w: w[1])
        try:
            left = await self._remaining(keys=[self._key("budget", digest(*project), name)], args=[count, span])
        except self._errors as exc:
            raise self._unavailable("rate limiter", exc) from None
        return {"remaining": max(int(left), 0), "limit": count, "window": name}

    # -- cache --------------------------------------------------------------------------------------------

    async def fetch(
        self, key: str, scope: str, ttl: float, call: Callable[[], Awaitable[httpx2.Response]]
    ) -> httpx2.Response | Stored:
        scope_id = digest(scope)
        generation_key = self._key("gen", scope_id)
        flight_key = self._key("flight", key)
        prefixes = [self._key("cache", scope_id, ""), self._key("done", scope_id, "")]
        pause = POLL_FIRST
        waited = False  # an answer that is not kept goes only to who waited for its call
        try:
            await self._forget_stale()
            while True:
                generation, busy, kept, done = await self._lookup(keys=[generation_key, flight_key], args=[*prefixes, key])
                if kept is not None:
                    return _decode(kept)
                if waited and done is not None:
                    return _decode(done)
                waited = waited or bool(busy)
                if not busy:
                    token = uuid.uuid4().hex
                    if await self._redis.set(flight_key, token, nx=True, px=int(self.lease * 1000)):
                        break
                await anyio.sleep(pause)  # another replica is asking Mixpanel: wait for its answer
                pause = min(pause * 2, POLL_MAX)
        except self._errors as exc:
            self._unavailable("cache", exc)
            return await call()  # the cache is bypassed; the budget still counts (or refuses) the request
        self._locks[flight_key] = token
        self._start_renewer()
        try:
            response = await call()
        except BaseException:
            self._locks.pop(flight_key, None)
            with anyio.CancelScope(shield=True), contextlib.suppress(*self._errors):
                await self._unlock(keys=[flight_key], args=[token])
            raise
        self._locks.pop(flight_key, None)
        stored = Stored.of(response)
        keep = ttl > 0 and stored.keepable and len(stored.content) <= MAX_BYTES // 4
        try:
            await self._store(
                keys=[generation_key, flight_key],
                args=[*prefixes, key, generation, _encode(stored), int(ttl * 1000) if keep else 0, token, DONE_TTL_MS],
            )
        except self._errors as exc:
            self._unavailable("cache", exc)
        return response

    async def invalidate(self, scope: str) -> None:
        self._stale_scopes.add(scope)
        try:
            await self._forget_stale()
        except self._errors as exc:
            self._unavailable("cache", exc)

    async def _forget_stale(self) -> None:
        while self._stale_scopes:
            scope = next(iter(self._stale_scopes))
            key = self._key("gen", digest(scope))
            async with self._redis.pipeline(transaction=True) as pipe:
                await pipe.incr(key).expire(key, GENERATION_TTL_S).execute()
            self._stale_scopes.discard(scope)

    # -- codes --------------------------------------------------------------------------------------------

    async def spend_once(self, token: str, until: float) -> bool:
        try:
            return bool(await self._redis.set(self._key("code", token), 1, nx=True, exat=int(until) + 60))
        except self._errors as exc:
            raise self._unavailable("record of used confirmation codes", exc) from None

    # -- agents -------------------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def agent_slot(self, agent: str, limit: int, max_wait: float) -> AsyncIterator[None]:
        deadline = time.monotonic() + max_wait
        async with self.local_slots.hold(agent, limit, max_wait):  # in turn within this replica first
            key = self._key("agent", digest(agent))
            lease: str | None = None
            pause = POLL_FIRST
            while lease is None:
                try:
                    taken = await self._take(key, [], limit)
                except self._errors as exc:  # caps count in this process only until Redis is back
                    self._unavailable("agent caps", exc)
                    break
                if isinstance(taken, tuple):
                    lease = str(taken[0])
                    break
                busy = taken if isinstance(taken, int) else limit
                if time.monotonic() + pause > deadline:
                    raise CallsInFlightError(busy=busy, limit=limit, waiting=0, waited=max_wait)
                await anyio.sleep(pause)
                pause = min(pause * 2, POLL_MAX)
            try:
                yield
            finally:
                if lease is not None:
                    with anyio.CancelScope(shield=True):
                        await self._give_back(key, lease)

    # -- the service --------------------------------------------------------------------------------------

    async def health(self) -> str | None:
        try:
            await self._redis.ping()
        except self._errors as exc:
            return _reason(exc)
        return None

    async def aclose(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
        with contextlib.suppress(*self._errors):
            await self._redis.aclose()


def check_redis(url: str) -> str:
    """Connect once (start-up and `mixpanel-mcp check`): the server's version, or ConnectionError saying why."""
    import redis
    from redis.exceptions import RedisError

    client = redis.Redis.from_url(url, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT)
    try:
        info = client.info("server")
    except RedisError as exc:
        raise ConnectionError(_reason(exc)) from None
    finally:
        client.close()
    return str(info.get("redis_version", "?"))
