"""The result cache for read queries, and sharing of identical requests in flight.

A read (a Query API GET, POST /jql, /engage, /cohorts/list, a Lexicon GET) is keyed by everything that
makes its answer: the credentials' scope, the method, the full URL with its query string, and the body.
- An identical request within the TTL is answered from memory: no request, no budget spent. The TTL is
  short (`CacheSettings.ttl_today`) when the date range includes today (UTC) or there is no date range,
  long (`CacheSettings.ttl`) for a closed range entirely in the past.
- Identical requests in flight at the same time share one upstream call: the first sends it, the others
  wait for its answer (or its error).
- Only successful answers are kept (2xx, and not a 200 carrying {"error"} / {"status": "error"}).
- A write through a client (anything not cached, other than a GET) forgets every answer of its scope, so
  an agent that changes something and reads it back sees the change.
Memory is bounded: at most MAX_ENTRIES answers and MAX_BYTES of bodies, least recently used dropped first.

Kept per event loop (see budget.py) and shared by every client of the loop; entries of different
credentials never mix (the scope is part of the key).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import time
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx2

MAX_ENTRIES = 512
MAX_BYTES = 32 * 1024 * 1024
ERROR_PROBE = 4096  # bodies up to this size are checked for an error inside a 200


@dataclass(frozen=True)
class Stored:
    """A response as kept: enough to rebuild an equivalent httpx2.Response."""

    status: int
    content_type: str | None
    content: bytes

    @classmethod
    def of(cls, response: httpx2.Response) -> Stored:
        return cls(response.status_code, response.headers.get("content-type"), response.content)

    def response(self, request: httpx2.Request) -> httpx2.Response:
        headers = {"content-type": self.content_type} if self.content_type else {}
        return httpx2.Response(self.status, headers=headers, content=self.content, request=request)

    @property
    def keepable(self) -> bool:
        if not 200 <= self.status < 300:
            return False
        if len(self.content) > ERROR_PROBE:
            return True
        try:
            body = json.loads(self.content)
        except ValueError:
            return True
        return not (isinstance(body, dict) and ("error" in body or body.get("status") in (0, "0", "error")))


@dataclass
class _Entry:
    stored: Stored
    expires: float
    scope: str


@dataclass
class _Call:
    """An upstream call in flight that identical requests wait for."""

    done: anyio.Event = field(default_factory=anyio.Event)
    stored: Stored | None = None
    error: Exception | None = None


def request_key(scope: str, request: httpx2.Request) -> str:
    digest = hashlib.sha256()
    for part in (scope, request.method, str(request.url)):
        digest.update(part.encode())
        digest.update(b"\0")
    digest.update(request.content)
    return digest.hexdigest()


def ttl_for(settings_ttl: float, settings_ttl_today: float, *sources: Mapping[str, Any] | None, today: dt.date | None = None) -> float:
    """The long TTL when a to_date (in the query or the form) is before today (UTC), else the short one."""
    today = today or dt.datetime.now(dt.UTC).date()
    for source in sources:
        value = source.get("to_date") if isinstance(source, Mapping) else None
        if isinstance(value, str):
            try:
                return settings_ttl if dt.date.fromisoformat(value) < today else settings_ttl_today
            except ValueError:
                break
    return settings_ttl_today


class ResultCache:
    def __init__(self, *, max_entries: int = MAX_ENTRIES, max_bytes: int = MAX_BYTES, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._bytes = 0
        self._in_flight: dict[str, _Call] = {}
        self._generation: dict[str, int] = {}  # per scope: bumped by every write

    def __len__(self) -> int:
        return len(self._entries)

    def _get(self, key: str) -> Stored | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires <= self._clock():
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return entry.stored

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key)
        self._bytes -= len(entry.stored.content)

    def _put(self, key: str, scope: str, stored: Stored, ttl: float) -> None:
        size = len(stored.content)
        if size > self.max_bytes // 4:  # one answer may not push out everything else
            return
        if key in self._entries:
            self._drop(key)
        self._entries[key] = _Entry(stored, self._clock() + ttl, scope)
        self._bytes += size
        while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))

    def invalidate(self, scope: str) -> None:
        """Forget every answer of `scope`, and keep answers in flight now from being stored."""
        self._generation[scope] = self._generation.get(scope, 0) + 1
        for key in [k for k, e in self._entries.items() if e.scope == scope]:
            self._drop(key)

    async def fetch(
        self, key: str, scope: str, ttl: float, call: Callable[[], Awaitable[httpx2.Response]]
    ) -> httpx2.Response | Stored:
        """The stored answer (a Stored: from cache or a shared call), or the response of our own call."""
        while True:
            stored = self._get(key)
            if stored is not None:
                return stored
            pending = self._in_flight.get(key)
            if pending is None:
                break
            await pending.done.wait()
            if pending.error is not None:
                raise pending.error
            if pending.stored is not None:
                return pending.stored
            # The call was cancelled: try again, perhaps as the one who sends it.
        pending = self._in_flight[key] = _Call()
        generation = self._generation.get(scope, 0)
        try:
            response = await call()
            pending.stored = stored = Stored.of(response)
        except Exception as exc:
            pending.error = exc
            raise
        finally:
            del self._in_flight[key]
            pending.done.set()
        if ttl > 0 and stored.keepable and self._generation.get(scope, 0) == generation:
            self._put(key, scope, stored, ttl)
        return response


_caches: weakref.WeakKeyDictionary[Any, ResultCache] = weakref.WeakKeyDictionary()
_fallback = ResultCache()  # outside asyncio (e.g. trio): one cache


def result_cache() -> ResultCache:
    """The cache of the running event loop."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return _fallback
    cache = _caches.get(loop)
    if cache is None:
        cache = _caches[loop] = ResultCache()
    return cache
