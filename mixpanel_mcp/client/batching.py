"""Sending many records to an ingestion endpoint: written once for events (/track, /import) and profiles
(/engage, /groups).

- Batches respect both of Mixpanel's per-request limits (records and uncompressed bytes); a 413 splits
  a batch in two and sends the halves.
- Several requests are in flight at once (bounded), paced under the project's ingestion ceiling.
- Records sharing a `key` (one profile) are sent in order: a batch waits for the earlier batches that
  touch the same key.
- Retries are not done here: `MixpanelClient.request` owns them (429/5xx/timeouts, backoff, Retry-After).
- Every record ends in exactly one `Status`; a cancelled run finishes (or abandons) what is in flight
  within a short grace period, logs which index ranges were and were not stored, and re-raises.

Knows nothing of MCP: a caller gives records as `Item`s (their wire JSON already encoded) and a `send`
function that posts one batch.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup

from mixpanel_mcp.client.errors import MixpanelError, PayloadTooLargeError
from mixpanel_mcp.client.http import MixpanelClient, call_stats

logger = logging.getLogger(__name__)

# Requests at once, per call. A 2,000-event request takes ~0.1-0.5 s to be answered, so 16 in flight carry
# 60k-300k events/s: enough to reach the project's ceiling below (the pacer keeps it from going over).
MAX_IN_FLIGHT = 16
MAX_RECORDS_PER_REQUEST = 2000
MAX_BYTES_PER_REQUEST = 10 * 1024 * 1024  # uncompressed JSON
MAX_RECORD_BYTES = 1024 * 1024  # one event or profile update
# Mixpanel's ingestion ceiling per project: 2 GB of uncompressed JSON a minute, about 30k events a second.
EVENTS_PER_SECOND = 30_000
BYTES_PER_SECOND = 2 * 1024**3 / 60
PACE_BURST_SECONDS = 1.0  # credit an idle client may spend at once
CANCEL_GRACE_SECONDS = 5.0  # on cancel, how long requests in flight may still finish
MAX_DETAILS_KEPT = 1000  # failed / in-doubt records kept for the report (all are counted)


class Status(StrEnum):
    STORED = "stored"
    FAILED = "failed"  # Mixpanel refused this record (it says why); the others in its batch were stored
    NOT_STORED = "not_stored"  # never sent, or the whole request was refused: safe to send again
    UNCONFIRMED = "unconfirmed"  # sent, no answer: may be stored; sending again is safe (deduplicated / idempotent)
    IN_DOUBT = "in_doubt"  # sent, no answer: may have been applied; sending again could apply it twice


@dataclass(slots=True)
class Item:
    """One record ready to send: its position in the caller's input and its wire JSON."""

    index: int
    body: bytes
    key: Hashable | None = None  # records with the same key keep their order (one profile)
    idempotent: bool = True  # applying it twice is harmless
    line: int | None = None  # where it came from in a file, for reports


@dataclass
class Sent:
    """What one request did, by position in the batch; positions not named were stored."""

    failed: dict[int, dict[str, Any]] = field(default_factory=dict)
    in_doubt: dict[int, dict[str, Any]] = field(default_factory=dict)
    answer: Any = None


SendFn = Callable[[list[Item]], Awaitable[Sent]]
Progress = Callable[[int, int], Awaitable[None]]
Ranges = list[tuple[int, int]]


@dataclass
class Outcome:
    """Where every record of a run ended up."""

    total: int
    counts: dict[Status, int]
    ranges: dict[Status, Ranges]  # inclusive index ranges, sorted
    failed: list[dict[str, Any]]  # details (index first), at most MAX_DETAILS_KEPT
    in_doubt: list[dict[str, Any]]
    batches: int  # requests planned, splits included (retries not)
    splits: int
    requests: int  # attempts, retries included
    retries: int
    seconds: float
    error: MixpanelError | None = None  # what stopped the run early
    answer: Any = None  # the last answer, for a single request

    def count(self, status: Status) -> int:
        return self.counts.get(status, 0)

    @property
    def rate(self) -> float:
        done = self.count(Status.STORED) + self.count(Status.FAILED)
        return done / self.seconds if self.seconds > 0 else 0.0


# -- pacing ---------------------------------------------------------------------------------------


class Pacer:
    """Keeps a client under `events_per_second` and `bytes_per_second`, allowing a short burst."""

    def __init__(self, events_per_second: float = EVENTS_PER_SECOND, bytes_per_second: float = BYTES_PER_SECOND,
                 burst: float = PACE_BURST_SECONDS) -> None:
        self.events_per_second = events_per_second
        self.bytes_per_second = bytes_per_second
        self.burst = burst
        self._next = -float("inf")

    async def wait(self, records: int, size: int) -> None:
        now = anyio.current_time()
        start = max(self._next, now - self.burst)
        self._next = start + max(records / self.events_per_second, size / self.bytes_per_second)
        if start > now:
            await anyio.sleep(start - now)


_pacers: weakref.WeakKeyDictionary[MixpanelClient, Pacer] = weakref.WeakKeyDictionary()


def pacer_for(client: MixpanelClient) -> Pacer:
    """One pacer per client: every ingestion call of a process shares the project's ceiling."""
    pacer = _pacers.get(client)
    if pacer is None:
        pacer = _pacers[client] = Pacer()
    return pacer


# -- index ranges ---------------------------------------------------------------------------------


def runs(indexes: Iterable[int]) -> Ranges:
    """Sorted, merged inclusive ranges of the given indexes."""
    merged: Ranges = []
    for index in sorted(indexes):
        if merged and index <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], index))
        else:
            merged.append((index, index))
    return merged


def merge(ranges: Iterable[tuple[int, int]]) -> Ranges:
    merged: Ranges = []
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def subtract(universe: Ranges, taken: Ranges) -> Ranges:
    """`universe` minus `taken`, both sorted and merged."""
    left: Ranges = []
    j = 0
    for start, end in universe:
        cursor = start
        while j < len(taken) and taken[j][1] < cursor:
            j += 1
        k = j
        while k < len(taken) and taken[k][0] <= end:
            if taken[k][0] > cursor:
                left.append((cursor, taken[k][0] - 1))
            cursor = max(cursor, taken[k][1] + 1)
            k += 1
        if cursor <= end:
            left.append((cursor, end))
    return left


def size(ranges: Ranges) -> int:
    return sum(end - start + 1 for start, end in ranges)


def render(ranges: Ranges, most: int | None = None) -> list[str]:
    """["0-1999", "4000"]: ranges as text, the first `most` of them."""
    shown = ranges if most is None else ranges[:most]
    return [f"{a}" if a == b else f"{a}-{b}" for a, b in shown]


# -- the run --------------------------------------------------------------------------------------


@dataclass
class _Batch:
    items: list[Item]
    after: list[anyio.Event]  # earlier batches touching the same keys
    done: anyio.Event = field(default_factory=anyio.Event)


class _Run:
    def __init__(self, send: SendFn, total: int, progress: Progress | None, pacer: Pacer | None) -> None:
        self.send = send
        self.total = total
        self.progress = progress
        self.pacer = pacer
        self.marked: dict[Status, Ranges] = {status: [] for status in Status}
        self.counts: dict[Status, int] = dict.fromkeys(Status, 0)
        self.failed: list[dict[str, Any]] = []
        self.in_doubt: list[dict[str, Any]] = []
        self.done = 0
        self.batches = 0
        self.splits = 0
        self.error: MixpanelError | None = None
        self.answer: Any = None
        self.finished = False
        self.grace_until: float | None = None
        self.shields: set[anyio.CancelScope] = set()

    # -- bookkeeping

    def mark(self, status: Status, items: Sequence[Item]) -> None:
        if not items:
            return
        self.marked[status].extend(runs(item.index for item in items))
        self.counts[status] += len(items)
        self.done += len(items)

    def detail(self, into: list[dict[str, Any]], item: Item, details: dict[str, Any]) -> None:
        if len(into) < MAX_DETAILS_KEPT:
            entry: dict[str, Any] = {"index": item.index}
            if item.line is not None:
                entry["line"] = item.line
            entry.update({k: v for k, v in details.items() if k not in ("index", "line")})
            into.append(entry)

    def ambiguous(self, items: Sequence[Item]) -> None:
        """Sent, and no answer: deduplicated or idempotent records are unconfirmed, the others in doubt."""
        self.mark(Status.UNCONFIRMED, [i for i in items if i.idempotent])
        doubtful = [i for i in items if not i.idempotent]
        self.mark(Status.IN_DOUBT, doubtful)
        for item in doubtful:
            self.detail(self.in_doubt, item, {})

    def stop(self, error: MixpanelError) -> None:
        if self.error is None:
            self.error = error

    def begin_grace(self) -> None:
        self.grace_until = anyio.current_time() + CANCEL_GRACE_SECONDS
        logger.info("Cancelled: waiting up to %.0f s for the answers to %d request(s) in flight.", CANCEL_GRACE_SECONDS, len(self.shields))
        for scope in self.shields:
            scope.deadline = min(scope.deadline, self.grace_until)

    # -- sending

    async def batch(self, batch: _Batch) -> None:
        try:
            for earlier in batch.after:
                await earlier.wait()
            await self.attempt(batch.items)
        finally:
            batch.done.set()

    async def attempt(self, items: list[Item]) -> None:
        if self.error is not None:
            self.mark(Status.NOT_STORED, items)
            return
        if self.pacer is not None:
            await self.pacer.wait(len(items), sum(len(i.body) + 1 for i in items) + 1)
        await anyio.lowlevel.checkpoint_if_cancelled()  # nothing new starts once the call is cancelled
        outcome: Sent | MixpanelError | None = None
        with anyio.CancelScope(shield=True) as shield:
            if self.grace_until is not None:
                shield.deadline = self.grace_until
            self.shields.add(shield)
            try:
                outcome = await self.send(items)
            except MixpanelError as exc:
                outcome = exc
            finally:
                self.shields.discard(shield)
        if outcome is None:  # abandoned at the end of the grace period
            self.ambiguous(items)
            return
        if isinstance(outcome, PayloadTooLargeError) and len(items) > 1:
            self.splits += 1
            self.batches += 1
            middle = len(items) // 2
            await self.attempt(items[:middle])
            await self.attempt(items[middle:])
            return
        if isinstance(outcome, PayloadTooLargeError):
            self.mark(Status.FAILED, items)
            self.detail(self.failed, items[0], {"field": None, "message": "too large for a request on its own (413)"})
        elif isinstance(outcome, MixpanelError):
            # Whatever the last answer, a request that may have reached Mixpanel earlier may be stored.
            if getattr(outcome, "maybe_applied", False):
                self.ambiguous(items)
            else:
                self.mark(Status.NOT_STORED, items)
            self.stop(outcome)
        else:
            self.answer = outcome.answer
            named = outcome.failed.keys() | outcome.in_doubt.keys()
            self.mark(Status.STORED, [item for p, item in enumerate(items) if p not in named])
            for position, details in sorted(outcome.failed.items()):
                self.mark(Status.FAILED, [items[position]])
                self.detail(self.failed, items[position], details)
            for position, details in sorted(outcome.in_doubt.items()):
                self.mark(Status.IN_DOUBT, [items[position]])
                self.detail(self.in_doubt, items[position], details)
        if self.progress is not None:
            await self.progress(self.done, self.total)


def _batches(items: Iterable[Item], max_records: int, max_bytes: int, ordered: bool) -> Iterator[_Batch]:
    """Consecutive items grouped under both limits; with `ordered`, each batch knows the earlier batches
    sharing one of its keys."""
    last: dict[Hashable, anyio.Event] = {}

    def close(chunk: list[Item]) -> _Batch:
        batch = _Batch(chunk, [])
        if ordered:
            keys = {item.key for item in chunk}
            batch.after = list({id(e): e for e in (last[k] for k in keys if k in last)}.values())
            for key in keys:
                last[key] = batch.done
        return batch

    chunk: list[Item] = []
    used = 2  # the brackets of the JSON array
    for item in items:
        cost = len(item.body) + 1
        if chunk and (len(chunk) >= max_records or used + cost > max_bytes):
            yield close(chunk)
            chunk, used = [], 2
        chunk.append(item)
        used += cost
    if chunk:
        yield close(chunk)


async def send_all(
    items: Iterable[Item],
    send: SendFn,
    *,
    universe: Ranges,
    progress: Progress | None = None,
    pacer: Pacer | None = None,
    ordered: bool = False,
    max_in_flight: int = MAX_IN_FLIGHT,
    max_records: int = MAX_RECORDS_PER_REQUEST,
    max_bytes: int = MAX_BYTES_PER_REQUEST,
    what: str = "records",
) -> Outcome:
    """Send `items` in batches, `max_in_flight` at a time, and say where each one ended up.

    `universe` is every index `items` will yield (sorted, merged ranges): what was never reached is
    reported as not stored. `items` is consumed lazily, so a file is never held in memory whole.
    """
    total = size(universe)
    run = _Run(send, total, progress, pacer)
    stats = call_stats.get()
    requests_before, retries_before = (stats.requests, stats.retries) if stats is not None else (0, 0)
    started = time.monotonic()
    source = _batches(items, max_records, max_bytes, ordered)

    async def worker() -> None:
        while run.error is None:
            batch = next(source, None)  # encoding happens here, one batch at a time
            if batch is None:
                return
            run.batches += 1
            await run.batch(batch)

    async def workers(outer: TaskGroup) -> None:
        async with anyio.create_task_group() as group:
            for _ in range(max_in_flight):
                group.start_soon(worker)
        run.finished = True
        outer.cancel_scope.cancel()

    async def watch() -> None:
        try:
            await anyio.sleep_forever()
        finally:
            if not run.finished:  # cancelled from outside: give what is in flight a short while
                run.begin_grace()

    def outcome() -> Outcome:
        taken = merge(r for status in Status for r in run.marked[status])
        ranges = {status: merge(run.marked[status]) for status in Status}
        missing = subtract(universe, taken)
        ranges[Status.NOT_STORED] = merge(ranges[Status.NOT_STORED] + missing)
        counts = dict(run.counts)
        counts[Status.NOT_STORED] += size(missing)
        requests = (stats.requests - requests_before) if stats is not None else run.batches
        retries = (stats.retries - retries_before) if stats is not None else 0
        return Outcome(
            total=total,
            counts=counts,
            ranges=ranges,
            failed=sorted(run.failed, key=lambda d: d["index"]),
            in_doubt=sorted(run.in_doubt, key=lambda d: d["index"]),
            batches=run.batches,
            splits=run.splits,
            requests=requests,
            retries=retries,
            seconds=time.monotonic() - started,
            error=run.error,
            answer=run.answer,
        )

    try:
        async with anyio.create_task_group() as outer:
            outer.start_soon(watch)
            outer.start_soon(workers, outer)
    except BaseException:
        if not run.finished:
            log_interrupted(outcome(), what)
        raise
    return outcome()


def log_interrupted(outcome: Outcome, what: str) -> None:
    """The record of a cancelled run: index ranges only (never values), on stderr through logging."""
    parts = []
    for status in Status:
        ranges = outcome.ranges[status]
        if ranges:
            shown = ", ".join(render(ranges, 200)) + (f", ... ({len(ranges) - 200} more ranges)" if len(ranges) > 200 else "")
            parts.append(f"{status.value} {size(ranges):,} [{shown}]")
    logger.warning(
        "Sending %s was cancelled after %.1f s; by index: %s. Not stored and unconfirmed ones are safe to send again.",
        what,
        outcome.seconds,
        "; ".join(parts) or "nothing sent",
    )
