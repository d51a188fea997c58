"""Events from a local file, one record at a time: NDJSON, a JSON array, or CSV (chosen by extension).

Each record comes with its index (0-based, in file order) and its line number. A line that cannot be
read becomes a `RecordError` in its place, so it is reported like any other invalid record and the rest
of the file is still read.

CSV: a header row; the columns `event`, `distinct_id`, `time` and `$insert_id` fill those fields, every
other column becomes a property. Cells that are plain numbers become numbers, `true`/`false` booleans,
empty cells are left out; everything else stays a string.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mixpanel_mcp.client.events import Record, RecordError

# Mixpanel takes events of up to 1 MB each; a line longer than that cannot be an event (and a file with no
# newline at all, /dev/zero behind a symlink, would otherwise be read into memory whole).
MAX_LINE_BYTES = 1 << 20
MAX_FILE_BYTES = 1 << 30  # 1 GiB in one call; split larger files (an import of that size takes a while anyway)

FORMATS = {".ndjson": "ndjson", ".jsonl": "ndjson", ".json": "json", ".csv": "csv"}
CSV_FIELDS = ("event", "distinct_id", "time", "$insert_id")
_INTEGER = re.compile(r"-?(0|[1-9][0-9]{0,17})")
_DECIMAL = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?")


class FileProblem(Exception):
    """The file as a whole cannot be read (missing, unreadable, wrong kind)."""


def file_format(path: str) -> str | None:
    return FORMATS.get(Path(path).suffix.lower())


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


_DECODER = json.JSONDecoder(parse_constant=_no_constant)


def _malformed(line: int, reason: str) -> RecordError:
    return RecordError(None, f"line {line} is not valid JSON: {reason}")


def read_records(path: str) -> Iterator[Record]:
    """Every record of the file at `path`; raises FileProblem before the first one if it cannot be read."""
    kind = file_format(path)
    if kind is None:
        raise FileProblem(f"unknown file type '{Path(path).suffix}': use .ndjson, .jsonl, .json or .csv")
    handle = open_regular(path)
    with handle:
        if kind == "csv":
            yield from _csv(handle)
        elif kind == "json" and _opens_array(handle):
            try:
                text = handle.read().decode("utf-8-sig")
            except UnicodeDecodeError as exc:
                raise FileProblem(f"not UTF-8 text (byte {exc.start})") from None
            yield from _json_array(text)  # an array is read whole; NDJSON and CSV are read line by line
        else:
            yield from _ndjson(handle)


def open_regular(path: str, max_bytes: int = MAX_FILE_BYTES) -> Any:
    """The file at `path` opened for reading, if it is a regular file of at most `max_bytes`; else FileProblem.

    Opened without blocking, so a FIFO is refused instead of waiting for a writer; checked on the open handle,
    so what is checked is what is read.
    """
    try:
        fd = os.open(Path(path).expanduser(), os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise FileProblem(f"cannot open it ({exc.strerror or type(exc).__name__})") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise FileProblem("it is not a regular file (a device, FIFO, socket or directory): give the path of a file")
    if info.st_size > max_bytes:
        os.close(fd)
        raise FileProblem(f"it is {info.st_size:,} bytes, over the {max_bytes:,} bytes read in one call: split it")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def _lines(handle: Any) -> Iterator[tuple[int, bytes | None]]:
    """(line number, bytes) for each line; None for a line over MAX_LINE_BYTES (the rest of it is skipped)."""
    number = 0
    while True:
        raw = handle.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return
        number += 1
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            while (rest := handle.readline(MAX_LINE_BYTES)) and not rest.endswith(b"\n"):
                pass
            yield number, None
            continue
        yield number, raw


def _lone_surrogate(value: Any) -> bool:
    """True when a string in `value` holds half of a UTF-16 pair ("\\ud800" in JSON): it is not text."""
    if isinstance(value, str):
        return _SURROGATE.search(value) is not None
    if isinstance(value, dict):
        return any(_lone_surrogate(k) or _lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_lone_surrogate(v) for v in value)
    return False


_SURROGATE = re.compile("[\ud800-\udfff]")
SURROGATE_REASON = "holds a lone UTF-16 surrogate (such as \\ud800), which is not text; fix or remove it"


def _opens_array(handle: Any) -> bool:
    start = handle.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    handle.seek(0)
    return start.startswith(b"[")


def _ndjson(handle: Any) -> Iterator[Record]:
    index = 0
    for number, raw in _lines(handle):
        if raw is None:
            yield index, number, RecordError(None, f"line {number} is over {MAX_LINE_BYTES:,} bytes, more than an event may be")
            index += 1
            continue
        if not raw.strip():
            continue
        try:
            record = _DECODER.decode(raw.decode("utf-8-sig" if number == 1 else "utf-8"))
        except UnicodeDecodeError:
            record = RecordError(None, f"line {number} is not UTF-8 text")
        except ValueError as exc:
            record = _malformed(number, getattr(exc, "msg", str(exc)))
        else:
            if b"\\u" in raw and _lone_surrogate(record):
                record = RecordError(None, f"line {number} {SURROGATE_REASON}")
        yield index, number, record
        index += 1


class _Lines:
    """Line number of a position in `text`, for positions visited in increasing order."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.position = 0
        self.line = 1

    def at(self, position: int) -> int:
        self.line += self.text.count("\n", self.position, position)
        self.position = position
        return self.line


_SPACE = re.compile(r"\s*")
_NEXT_OBJECT = re.compile(r"\n\s*\{")


def _json_array(text: str) -> Iterator[Record]:
    """Elements of a JSON array one by one; after a broken element, reading resumes at the next line that
    opens an object (so a file with one object per line loses only the broken one)."""
    lines = _Lines(text)
    position = _SPACE.match(text).end() + 1  # past "["
    index = 0
    while True:
        position = _SPACE.match(text, position).end()
        if position >= len(text) or text[position] == "]":
            return
        line = lines.at(position)
        try:
            record, end = _DECODER.raw_decode(text, position)
        except ValueError as exc:
            where = getattr(exc, "pos", position)
            yield index, line, _malformed(lines.at(max(where, position)), getattr(exc, "msg", str(exc)))
            index += 1
            resume = _NEXT_OBJECT.search(text, max(where, position))
            if resume is None:
                return
            position = resume.end() - 1
            continue
        if _lone_surrogate(record):
            record = RecordError(None, f"line {line} {SURROGATE_REASON}")
        yield index, line, record
        index += 1
        position = _SPACE.match(text, end).end()
        if position < len(text) and text[position] == ",":
            position += 1
        elif position < len(text) and text[position] != "]":
            # Something other than a comma between elements: report it as the next record and resume.
            yield index, lines.at(position), _malformed(lines.at(position), "expected ',' or ']' between elements")
            index += 1
            resume = _NEXT_OBJECT.search(text, position)
            if resume is None:
                return
            position = resume.end() - 1


def _cell(text: str) -> Any:
    if _INTEGER.fullmatch(text):
        return int(text)
    if _DECIMAL.fullmatch(text):
        return float(text)
    if text in ("true", "false"):
        return text == "true"
    return text


def _csv(handle: Any) -> Iterator[Record]:
    stream = io.TextIOWrapper(handle, encoding="utf-8-sig", newline="")
    reader = csv.reader(stream)
    try:
        header = next(reader, None)
    except (csv.Error, UnicodeDecodeError) as exc:
        raise FileProblem(f"the CSV header cannot be read ({exc})") from None
    if not header:
        raise FileProblem("the CSV file is empty: it needs a header row")
    header = [name.strip() for name in header]
    missing = [name for name in ("event", "distinct_id") if name not in header]
    if missing:
        raise FileProblem(f"the CSV header has no {' or '.join(missing)} column (columns: event, distinct_id, time, $insert_id, any others)")
    index = 0
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except (csv.Error, UnicodeDecodeError) as exc:
            yield index, start, RecordError(None, f"line {start} cannot be read as CSV: {exc}")
            index += 1
            continue
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            yield index, start, RecordError(None, f"line {start} has {len(row)} cells; the header has {len(header)}")
        else:
            cells = dict(zip(header, row, strict=True))
            properties: dict[str, Any] = {}
            for name in ("distinct_id", "time", "$insert_id"):
                if cells.get(name, "") != "":
                    properties[name] = cells[name]
            for name, value in cells.items():
                if name not in CSV_FIELDS and value != "":
                    properties[name] = _cell(value)
            yield index, start, {"event": cells["event"], "properties": properties}
        index += 1
