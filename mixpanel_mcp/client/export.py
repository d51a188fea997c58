"""Reading data out: the raw event export (NDJSON, streamed) and the Query API's profile, cohort and
activity-feed endpoints.

The export body can be gigabytes. It is read as raw chunks, cut into lines here (no text decoding of the
whole line stream), and each line parsed on its own (orjson when installed). Memory stays flat however
large the export:
- inline, at most `limit` events are kept, and the connection is closed as soon as one more has arrived;
- to a file, every event is written as it arrives (the NDJSON line as Mixpanel sent it, or a CSV row), and
  only a summary is kept: counts by name (the first MAX_NAMES names), distinct users (exact up to
  DistinctCounter.EXACT, then a HyperLogLog estimate), the time span.
A stream cut short (a truncated last line, a dropped connection) keeps what arrived and says so; lines
that are not events (blank, cut, a notice, not JSON) are counted as skipped.

Lists Mixpanel wants as one parameter (`event`, `distinct_ids`, `output_properties`) are JSON-encoded here.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx2

from mixpanel_mcp.client.errors import Api, OutputFileError, TransportError
from mixpanel_mcp.client.http import MixpanelClient, raise_for_body_status

try:  # about 3x faster than the standard library on export lines; optional
    import orjson

    loads: Callable[[bytes], Any] = orjson.loads

    def dumps(value: Any) -> bytes:
        return orjson.dumps(value)

except ImportError:  # pragma: no cover - exercised only where orjson is missing
    loads = json.loads

    def dumps(value: Any) -> bytes:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


EXPORT_MAX_LIMIT = 100_000  # Mixpanel refuses a larger `limit`
ENGAGE_PAGE_SIZE = 1000  # what /engage pages hold when the answer does not say
MAX_NAMES = 10_000  # event names counted one by one; the rest are counted together
PROGRESS_EVERY = 0.5  # seconds between progress reports
MAX_LINE = 16 * 1024 * 1024  # a longer "line" is skipped, not held (Mixpanel events are at most ~1 MB)

Format = Literal["ndjson", "csv"]
# A progress report: items so far, the total when known, bytes so far.
Progress = Callable[[int, int | None, int], Awaitable[None]]

_STREAM_ERRORS = (httpx2.TimeoutException, httpx2.NetworkError, httpx2.RemoteProtocolError, httpx2.DecodingError)


def _json(values: list[Any] | dict[str, Any] | None) -> str | None:
    return None if values is None else json.dumps(values, ensure_ascii=False, separators=(",", ":"))


def file_format(path: str) -> Format | None:
    """The output format a file name asks for: .ndjson/.jsonl -> NDJSON, .csv -> CSV, else None."""
    suffix = Path(path).suffix.lower()
    return "csv" if suffix == ".csv" else "ndjson" if suffix in (".ndjson", ".jsonl") else None


# -- what an export contained, in constant memory -------------------------------------------


class DistinctCounter:
    """Distinct values: exact up to EXACT, then a HyperLogLog estimate (16,384 registers, ~1% error)."""

    EXACT = 100_000
    _P = 14
    _M = 1 << _P
    _LOW = (1 << (64 - _P)) - 1

    def __init__(self) -> None:
        self.exact_values: set[str] | None = set()  # None once estimating
        self._registers: bytearray | None = None

    def add(self, value: str) -> None:
        if self.exact_values is not None:
            self.exact_values.add(value)
            if len(self.exact_values) > self.EXACT:
                self.spill()
        else:
            self._hll(value)

    def spill(self) -> None:
        """From exact to estimated: every value seen so far goes into the registers."""
        if self.exact_values is None:
            return
        self._registers = bytearray(self._M)
        for seen in self.exact_values:
            self._hll(seen)
        self.exact_values = None

    def _hll(self, value: str) -> None:
        registers = self._registers
        assert registers is not None
        h = hash(value) & 0xFFFFFFFFFFFFFFFF  # str hashes are stable within a process, which is all this needs
        index = h >> (64 - self._P)
        rank = 64 - self._P - (h & self._LOW).bit_length() + 1
        if rank > registers[index]:
            registers[index] = rank

    @property
    def exact(self) -> bool:
        return self.exact_values is not None

    def __len__(self) -> int:
        if self.exact_values is not None:
            return len(self.exact_values)
        registers = self._registers
        assert registers is not None
        m = self._M
        estimate = 0.7213 / (1 + 1.079 / m) * m * m / sum(2.0**-r for r in registers)
        zeros = registers.count(0)
        if estimate <= 2.5 * m and zeros:
            estimate = m * math.log(m / zeros)
        return int(estimate)


class ExportSummary:
    """What an export contained: counts by name, distinct users, time span, what could not be read.

    `add` runs once per event of exports of millions: it is written for speed (no helper calls on the
    common path)."""

    def __init__(self) -> None:
        self.count = 0
        self.by_event: dict[str, int] = {}
        self.other_names = 0  # events whose name came after the first MAX_NAMES names
        self.users = DistinctCounter()
        self._ids = self.users.exact_values  # the exact set, added to directly while there is one
        self._first = math.inf
        self._last = -math.inf
        self.skipped_lines = 0
        self.bytes = 0  # bytes received

    @property
    def first_time(self) -> float | None:
        return None if self._first == math.inf else self._first

    @property
    def last_time(self) -> float | None:
        return None if self._last == -math.inf else self._last

    def take(
        self, lines: list[bytes], room: int, records: list[dict[str, Any]] | None
    ) -> tuple[list[bytes], bool]:
        """Parse the lines of one chunk and count the events among them, at most `room` of them.

        Returns the lines that were events (to write as they came), and whether an event beyond `room`
        arrived. Parsed events are appended to `records` when it is given. Lines that are not events
        (cut short, not JSON, not an object with a string "event") are counted in `skipped_lines`;
        blank lines are ignored. One loop with local names: this runs for every event of the export.
        """
        taken: list[bytes] | None = None  # None while every line so far was an event: `lines` itself
        remember = records.append if records is not None else None
        by_event = self.by_event
        ids = self._ids
        users = self.users
        first, last, count, skipped = self._first, self._last, self.count, self.skipped_lines
        over = False
        parse = loads
        index = -1
        for line in lines:
            index += 1
            try:
                record = parse(line)
            except ValueError:
                record = None
            if record.__class__ is not dict or (name := record.get("event")).__class__ is not str:
                if taken is None:
                    taken = lines[:index]
                if line.strip():
                    skipped += 1
                continue
            if room <= 0:
                over = True
                if taken is None:
                    taken = lines[:index]
                break
            room -= 1
            properties = record.get("properties")
            if properties.__class__ is not dict:
                properties = record["properties"] = {}
            count += 1
            try:
                by_event[name] += 1
            except KeyError:
                if len(by_event) < MAX_NAMES:
                    by_event[name] = 1
                else:
                    self.other_names += 1
            user = properties.get("distinct_id")
            if user is None:
                user = properties.get("$distinct_id")
            if user is not None and user != "":
                if user.__class__ is not str:
                    user = str(user)
                if ids is not None:
                    ids.add(user)
                else:
                    users.add(user)
            moment = properties.get("time")
            kind = moment.__class__
            if (kind is int or kind is float) and not first <= moment <= last:
                if moment < first:
                    first = moment
                if moment > last:
                    last = moment
            if taken is not None:
                taken.append(line)
            if remember is not None:
                remember(record)
        if ids is not None and len(ids) > DistinctCounter.EXACT:  # checked once a chunk: a few hundred over at most
            users.spill()
            self._ids = None
        self._first, self._last, self.count, self.skipped_lines = first, last, count, skipped
        return (lines if taken is None else taken), over


class _Throttle:
    """Calls `progress` at most every PROGRESS_EVERY seconds, and once at the end."""

    def __init__(self, progress: Progress | None, total: int | None) -> None:
        self.progress = progress
        self.total = total
        self._next = time.monotonic() + PROGRESS_EVERY

    async def tick(self, done: int, size: int, *, final: bool = False) -> None:
        if self.progress is None:
            return
        now = time.monotonic()
        if final or now >= self._next:
            self._next = now + PROGRESS_EVERY
            await self.progress(done, self.total, size)


# -- raw event export ------------------------------------------------------------------------


@dataclass
class ExportRead:
    """What was read from one export stream."""

    events: list[dict[str, Any]] = field(default_factory=list)  # inline only
    summary: ExportSummary = field(default_factory=ExportSummary)
    more: bool = False  # an event past `limit` arrived, or the read stopped at Mixpanel's maximum
    interrupted: str | None = None  # the connection broke off mid-stream: what happened
    path: str | None = None  # the file written, if any
    format: Format | None = None
    written_bytes: int = 0

    @property
    def skipped_lines(self) -> int:
        return self.summary.skipped_lines


def _export_params(
    from_date: str, to_date: str, limit: int | None, event: list[str] | None, where: str | None, time_in_ms: bool
) -> dict[str, Any]:
    return {
        "from_date": from_date,
        "to_date": to_date,
        "limit": limit,
        "event": _json(event),
        "where": where,
        "time_in_ms": "true" if time_in_ms else None,
    }


Sink = Callable[[list[bytes], list[dict[str, Any]] | None], None]


async def _read_export(
    client: MixpanelClient,
    params: dict[str, Any],
    read: ExportRead,
    *,
    room: int,
    full_means_more: bool,
    records: list[dict[str, Any]] | None,
    sink: Sink | None,
    throttle: _Throttle,
) -> None:
    """Stream GET /export chunk by chunk: take at most `room` events, hand each chunk's to `sink`.

    Stops (closing the connection) once an event beyond `room` arrives, or when `room` is filled and
    `full_means_more` (Mixpanel was asked for exactly that many: more may exist).
    """
    summary = read.summary
    per_chunk = records if sink is None else ([] if getattr(sink, "needs_records", False) else None)
    async with client.stream(Api.EXPORT, "GET", "/export", params=params) as response:
        try:
            rest = b""
            dropping = False  # inside a line longer than MAX_LINE: skip to its end
            async for chunk in response.aiter_bytes():
                summary.bytes += len(chunk)
                if dropping:
                    end = chunk.find(b"\n")
                    if end < 0:
                        continue
                    chunk, dropping = chunk[end + 1 :], False
                lines = (rest + chunk if rest else chunk).split(b"\n")
                rest = lines.pop()
                if len(rest) > MAX_LINE:  # no event is this long: memory stays bounded whatever arrives
                    rest, dropping = b"", True
                    summary.skipped_lines += 1
                if per_chunk is not None and per_chunk is not records:
                    per_chunk = []
                taken, over = summary.take(lines, room - summary.count, per_chunk)
                if sink is not None and taken:
                    sink(taken, per_chunk)
                if over or (full_means_more and summary.count >= room):
                    read.more = True
                    return
                await throttle.tick(summary.count, summary.bytes)
            if rest.strip():  # a last line without its newline: whole, or cut short
                if per_chunk is not None and per_chunk is not records:
                    per_chunk = []
                taken, over = summary.take([rest], room - summary.count, per_chunk)
                if sink is not None and taken:
                    sink(taken, per_chunk)
                read.more = over or (full_means_more and summary.count >= room)
        except _STREAM_ERRORS as exc:
            timed_out = isinstance(exc, httpx2.TimeoutException)
            reason = "no data arrived in time" if timed_out else "the connection closed mid-stream"
            if not summary.count:
                raise TransportError(
                    api=Api.EXPORT, endpoint="/export", reason=reason, timed_out=timed_out, attempts=1, maybe_applied=False
                ) from None
            read.interrupted = reason


async def export_events(
    client: MixpanelClient,
    *,
    from_date: str,
    to_date: str,
    limit: int,
    event: list[str] | None = None,
    where: str | None = None,
    time_in_ms: bool = False,
    progress: Progress | None = None,
) -> ExportRead:
    """Up to `limit` events from GET /export, kept in memory, reading no further than needed.

    One event more than `limit` is asked for, so a full answer tells whether more exist.
    """
    asked = min(limit + 1, EXPORT_MAX_LIMIT)
    read = ExportRead()
    throttle = _Throttle(progress, limit)
    params = _export_params(from_date, to_date, asked, event, where, time_in_ms)
    # At Mixpanel's own maximum (asked == limit) a full answer cannot tell: more may exist.
    await _read_export(
        client, params, read, room=limit, full_means_more=asked == limit, records=read.events, sink=None, throttle=throttle
    )
    await throttle.tick(read.summary.count, read.summary.bytes, final=True)
    return read


async def export_events_to_file(
    client: MixpanelClient,
    *,
    path: str,
    from_date: str,
    to_date: str,
    limit: int | None = None,
    event: list[str] | None = None,
    where: str | None = None,
    time_in_ms: bool = False,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> ExportRead:
    """Every event of GET /export (or the first `limit`) written to `path`: NDJSON or CSV by its extension.

    The file must not exist yet, unless `overwrite` (then it is replaced once the export is complete). A stream that broke off leaves the events that
    arrived (and says so in `interrupted`); a failure (Mixpanel refused, the disk is full, the call was
    cancelled) removes the file again.
    """
    fmt = file_format(path) or "ndjson"
    writer = open_writer(path, fmt, EVENT_LAYOUT, overwrite)
    read = ExportRead(path=writer.path, format=fmt)
    throttle = _Throttle(progress, limit)
    try:
        params = _export_params(from_date, to_date, limit, event, where, time_in_ms)
        # Mixpanel sends at most `limit`: a full answer means more may exist.
        room = limit if limit is not None else sys.maxsize
        await _read_export(
            client, params, read, room=room, full_means_more=limit is not None, records=None, sink=writer, throttle=throttle
        )
        await throttle.tick(read.summary.count, read.summary.bytes, final=True)
        read.written_bytes = await writer.finish(throttle)
    except BaseException:
        writer.abort()
        raise
    return read


# -- writing items to a file -----------------------------------------------------------------


MAX_CSV_COLUMNS = 2000  # property columns; properties past these go to one JSON column
OTHER_COLUMN = "other_properties"
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class Layout:
    """How an item becomes a CSV row: fixed columns first, then one column per property name."""

    fixed: tuple[str, ...]
    values: Callable[[dict[str, Any]], list[Any]]  # the fixed columns' values
    properties: Callable[[dict[str, Any]], Any]  # the item's properties (a dict, or anything else: none)
    skip: frozenset[str] = frozenset()  # properties already shown in a fixed column


def _event_values(record: dict[str, Any]) -> list[Any]:
    p = record["properties"]
    return [record["event"], p.get("distinct_id"), p.get("time"), p.get("$insert_id")]


EVENT_LAYOUT = Layout(
    ("event", "distinct_id", "time", "$insert_id"),
    _event_values,
    lambda record: record["properties"],
    frozenset({"distinct_id", "time", "$insert_id"}),
)
PROFILE_LAYOUT = Layout(("$distinct_id",), lambda record: [record.get("$distinct_id")], lambda record: record.get("$properties"))


def _cell(value: Any) -> Any:
    """A CSV cell. Exported data is written by anyone holding the public project token, so text that a
    spreadsheet would run as a formula (=, +, -, @ first) is prefixed with a quote, unless it is a number."""
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        try:
            float(value)
        except ValueError:
            return "'" + value
    return value


class _Writer:
    """NDJSON: each line written as it came.

    The file is created exclusively: an existing one is never touched, unless `overwrite`: then the export goes
    to a new file of a random name beside it (O_EXCL, never through a symlink), which replaces the old one only
    once it is complete; a failed export leaves the old file as it was.
    """

    def __init__(self, path: str, overwrite: bool = False) -> None:
        self.path = os.path.abspath(os.path.expanduser(path))
        self._replacement: str | None = None
        try:
            if overwrite:
                if os.path.isdir(self.path):
                    raise OutputFileError(self.path, "it is a directory; give a file name")
                directory, name = os.path.split(self.path)
                fd, self._replacement = tempfile.mkstemp(prefix=f".{name}.", suffix=".new", dir=directory)
                self._file = os.fdopen(fd, "wb", buffering=1 << 20)
            else:
                self._file = open(self.path, "xb", buffering=1 << 20)  # noqa: SIM115 - closed in finish/abort
        except FileExistsError:
            raise OutputFileError(self.path, "it already exists (nothing is overwritten unless you pass overwrite=true)") from None
        except OSError as exc:
            raise OutputFileError(self.path, exc.strerror or exc.__class__.__name__) from None
        self.count = 0

    needs_records = False  # NDJSON writes the lines as they came

    def __call__(self, lines: list[bytes], records: list[dict[str, Any]] | None) -> None:
        """Write a batch of items: their lines (and, for CSV, their parsed form)."""
        try:
            self._file.write(b"\n".join(lines))
            self._file.write(b"\n")
        except OSError as exc:
            raise OutputFileError(self.path, exc.strerror or "write failed", written=self.count) from None
        self.count += len(lines)

    async def finish(self, throttle: _Throttle) -> int:
        try:
            self._file.close()
        except OSError as exc:
            raise OutputFileError(self.path, exc.strerror or "write failed", written=self.count) from None
        return self._complete()

    def _complete(self) -> int:
        """The written file in its place (replacing the old one when overwriting); its size."""
        try:
            if self._replacement is not None:
                os.replace(self._replacement, self.path)  # a symlink at the path is replaced, never followed
                self._replacement = None
            return os.path.getsize(self.path)
        except OSError as exc:
            raise OutputFileError(self.path, exc.strerror or "cannot replace it", written=self.count) from None

    def abort(self) -> None:
        """After a failure: close and remove what was written (a file that is not what was asked for)."""
        try:
            self._file.close()
        except OSError:
            pass
        _remove(self._replacement or self.path)


class _CsvWriter(_Writer):
    """CSV needs its header first, and the property names are only known at the end: the items are
    spooled as NDJSON next to the file (pass one, collecting the names), then turned into rows (pass two)."""

    def __init__(self, path: str, layout: Layout, overwrite: bool = False) -> None:
        super().__init__(path, overwrite)
        self.final = self.path
        self._layout = layout
        self._columns: dict[str, None] = {}  # property names in first-seen order (an ordered set)
        self._overflow = False
        directory, name = os.path.split(self.final)
        try:
            # Created exclusively under a random name (O_EXCL: never an existing file, never through a symlink),
            # and read back through the same handle, so nothing planted next to the output can take its place.
            fd, self._spool = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=directory)
            self._spool_file = os.fdopen(fd, "w+b", buffering=1 << 20)
        except OSError as exc:
            super().abort()
            raise OutputFileError(self.final, exc.strerror or "cannot write next to it") from None

    needs_records = True  # the property names make the columns

    def __call__(self, lines: list[bytes], records: list[dict[str, Any]] | None) -> None:
        columns, skip, properties_of = self._columns, self._layout.skip, self._layout.properties
        for record in records or ():
            properties = properties_of(record)
            if isinstance(properties, dict):
                for key in properties:
                    if key not in columns and key not in skip:
                        if len(columns) < MAX_CSV_COLUMNS:
                            columns[key] = None
                        else:
                            self._overflow = True
        try:
            self._spool_file.write(b"\n".join(lines))
            self._spool_file.write(b"\n")
        except OSError as exc:
            raise OutputFileError(self.final, exc.strerror or "write failed", written=self.count) from None
        self.count += len(lines)

    async def finish(self, throttle: _Throttle) -> int:
        layout = self._layout
        columns = list(self._columns)
        header = [*layout.fixed, *columns] + ([OTHER_COLUMN] if self._overflow else [])
        known = set(columns) | layout.skip
        done = 0
        try:
            self._spool_file.flush()
            self._spool_file.seek(0)
            # The file created exclusively at the start, not the path again: it cannot have been swapped since.
            with io.TextIOWrapper(self._file, encoding="utf-8", newline="") as out, self._spool_file as spool:
                writer = csv.writer(out)
                writer.writerow(header)
                for line in spool:
                    record = loads(line)
                    properties = layout.properties(record)
                    if not isinstance(properties, dict):
                        properties = {}
                    row = [_cell(v) for v in layout.values(record)]
                    row.extend(_cell(properties.get(c)) for c in columns)
                    if self._overflow:
                        rest = {k: v for k, v in properties.items() if k not in known}
                        row.append(_cell(rest) if rest else "")
                    writer.writerow(row)
                    done += 1
                    if not done % 10_000:
                        await throttle.tick(done, out.tell())
        except OSError as exc:
            raise OutputFileError(self.final, exc.strerror or "write failed", written=done) from None
        finally:
            _remove(self._spool)
        return self._complete()

    def abort(self) -> None:
        super().abort()
        self._spool_file.close()
        _remove(self._spool)


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def open_writer(path: str, fmt: Format, layout: Layout, overwrite: bool = False) -> _Writer:
    return _CsvWriter(path, layout, overwrite) if fmt == "csv" else _Writer(path, overwrite)


# -- profiles, cohorts, activity feed (Query API) ---------------------------------------------


@dataclass
class ProfilePages:
    """Profiles collected across /engage pages (or written to a file)."""

    results: list[dict[str, Any]]
    total: int | None
    pages: int
    session_id: str | None
    more: bool  # profiles past those returned exist
    resume_page: int | None  # with session_id: the page to ask for next (None when nothing is left)
    resume_skip: int = 0  # profiles of that page already returned (a page cut short at `limit`)
    written: int = 0  # profiles written to the file
    path: str | None = None
    format: Format | None = None
    written_bytes: int = 0


async def query_profiles(
    client: MixpanelClient,
    *,
    limit: int,
    distinct_id: str | None = None,
    distinct_ids: list[str] | None = None,
    where: str | None = None,
    data_group_id: str | None = None,
    output_properties: list[str] | None = None,
    filter_by_cohort: int | None = None,
    include_all_users: bool = False,
    session_id: str | None = None,
    page: int | None = None,
    skip: int = 0,
    output_file: str | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> ProfilePages:
    """POST /engage page after page (same query, Mixpanel's session_id, page + 1) until a short page or `limit`.

    `skip` leaves out the first profiles of the first page read: those an earlier call already returned when
    `limit` cut that page short. The result says where to resume (page and skip), so following it never
    returns a profile twice.

    With `output_file`, every profile read is written there (NDJSON or CSV) instead of being kept.
    """
    query = {
        "distinct_id": distinct_id,
        "distinct_ids": _json(distinct_ids),
        "where": where,
        "data_group_id": data_group_id,
        "output_properties": _json(output_properties),
        "filter_by_cohort": _json({"id": filter_by_cohort}) if filter_by_cohort is not None else None,
        # Mixpanel's default is true (cohort members without a profile too): always said, never left to it.
        "include_all_users": ("true" if include_all_users else "false") if filter_by_cohort is not None else None,
    }
    form = {k: v for k, v in query.items() if v is not None}
    fmt: Format | None = None
    writer: _Writer | None = None
    if output_file is not None:
        fmt = file_format(output_file) or "ndjson"
        writer = open_writer(output_file, fmt, PROFILE_LAYOUT, overwrite)
    results: list[dict[str, Any]] = []
    seen = 0  # profiles read (kept or written), at most `limit`
    total: int | None = None
    pages = 0
    current = page
    throttle = _Throttle(progress, None)
    try:
        while True:
            body = dict(form)
            if session_id is not None:
                body["session_id"] = session_id
            if current is not None:
                body["page"] = str(current)
            response = await client.request(Api.QUERY, "POST", "/engage", data=body)
            answer = raise_for_body_status(response, Api.QUERY, "/engage", client.settings.secrets())
            if not isinstance(answer, dict):
                answer = {}
            batch = answer.get("results") if isinstance(answer.get("results"), list) else []
            pages += 1
            total = _int(answer.get("total"), total)
            session_id = answer.get("session_id") or session_id
            page_size = _int(answer.get("page_size"), None) or ENGAGE_PAGE_SIZE
            current = _int(answer.get("page"), current or 0)
            last_page_full = len(batch) >= page_size
            offset = skip if pages == 1 else 0
            batch = batch[offset:]
            kept = batch[: max(limit - seen, 0)]
            if writer is not None:
                profiles = [p for p in kept if isinstance(p, dict)]
                if profiles:
                    writer([dumps(p) for p in profiles], profiles)
            else:
                results.extend(kept)
            seen += len(kept)
            cut = len(batch) > len(kept)
            throttle.total = total if isinstance(total, int) else None
            await throttle.tick(seen, 0, final=True)
            if not last_page_full or seen >= limit or session_id is None:
                break
            current += 1
        written_bytes = await writer.finish(throttle) if writer is not None else 0
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    more = cut or last_page_full
    # A page cut short at `limit` is asked for again, past what was returned of it; otherwise the next one.
    resume = None if not more or session_id is None else current if cut else current + 1
    return ProfilePages(
        results,
        total,
        pages,
        session_id,
        more,
        resume,
        resume_skip=offset + len(kept) if cut and resume is not None else 0,
        written=seen if writer is not None else 0,
        path=writer.path if writer is not None else None,
        format=fmt,
        written_bytes=written_bytes,
    )


def _int(value: Any, default: int | None) -> Any:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


async def list_cohorts(client: MixpanelClient) -> list[dict[str, Any]]:
    """POST /cohorts/list (an empty form): every saved cohort of the project."""
    response = await client.request(
        Api.QUERY,
        "POST",
        "/cohorts/list",
        content=b"",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    answer = raise_for_body_status(response, Api.QUERY, "/cohorts/list", client.settings.secrets())
    return answer if isinstance(answer, list) else []


async def activity_stream(
    client: MixpanelClient, *, distinct_ids: list[str], from_date: str, to_date: str
) -> list[dict[str, Any]]:
    """GET /stream/query: the events of these users, oldest first as Mixpanel sends them."""
    params = {"distinct_ids": _json(distinct_ids), "from_date": from_date, "to_date": to_date}
    response = await client.request(Api.QUERY, "GET", "/stream/query", params=params)
    answer = raise_for_body_status(response, Api.QUERY, "/stream/query", client.settings.secrets())
    results = answer.get("results") if isinstance(answer, dict) else None
    events = results.get("events") if isinstance(results, dict) else None
    return events if isinstance(events, list) else []
