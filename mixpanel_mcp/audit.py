"""The audit log: one JSON line per tool call, allowed or denied, ending in one plain-English sentence.

A record says who called what on which project, what the call touched (event names, dates, how many
records: never a property value), what was decided and why, how it ended, and how much upstream work it
took. It never holds a secret, a key or a token: nothing from the arguments goes in but the fields below.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import sys
import threading
from dataclasses import asdict, dataclass, field
from collections.abc import Mapping
from typing import IO, Any

from mixpanel_mcp.client import MixpanelError, TransportError, UpstreamError
from mixpanel_mcp.text import echo, scrubber, strip_controls

logger = logging.getLogger(__name__)

MAX_NAMES = 20
MAX_NAME_CHARS = 100

# What a call did, as "past/base phrase": the past tense for an allowed call ("ran a funnel report"),
# the base form after "asked to" for one that was refused or is waiting for confirmation.
_PHRASES: dict[tuple[str, str], str] = {
    ("track", "track"): "sent/send {records} event(s)",
    ("track", "import"): "imported/import {records} event(s)",
    ("track", "identify"): "linked/link an anonymous id to a user",
    ("track", "alias"): "created/create an alias",
    ("track", "merge"): "merged/merge two users",
    ("engage", "delete"): "deleted/delete a user profile",
    ("engage", "batch"): "sent/send {records} user profile update(s)",
    ("groups", "delete"): "deleted/delete a group profile",
    ("groups", "batch"): "sent/send {records} group profile update(s)",
    ("events", "names"): "listed/list top event names",
    ("events", "top"): "listed/list today's top events",
    ("events", "counts"): "counted/count events",
    ("events", "properties"): "listed/list event properties",
    ("events", "property_values"): "listed/list property values",
    ("events", "property_counts"): "counted/count events by property value",
    ("funnels", "list"): "listed/list saved funnels",
    ("funnels", "query"): "ran/run a funnel report",
    ("retention", "query"): "ran/run a retention report",
    ("retention", "frequency"): "ran/run a frequency report",
    ("insights", "insights"): "ran/run a saved Insights report",
    ("jql", "run"): "ran/run a JQL script",
    ("export", "events"): "exported/export raw events",
    ("export", "profiles"): "exported/export profiles",
    ("export", "cohorts"): "listed/list cohorts",
    ("export", "activity"): "read/read the activity of {records} user(s)",
    ("lexicon", "list"): "read/read Lexicon schemas",
    ("lexicon", "upsert"): "changed/change {records} Lexicon schema(s)",
    ("lexicon", "delete"): "deleted/delete Lexicon schemas",
    ("annotations", "list"): "listed/list annotations",
    ("annotations", "get"): "read/read an annotation",
    ("annotations", "create"): "created/create an annotation",
    ("annotations", "update"): "changed/change an annotation",
    ("annotations", "delete"): "deleted/delete an annotation",
    ("annotations", "tags"): "listed/list annotation tags",
    ("annotations", "create_tag"): "created/create an annotation tag",
    ("flags", "list"): "listed/list feature flags",
    ("flags", "get"): "read/read a feature flag",
    ("flags", "create"): "created/create a feature flag",
    ("flags", "update"): "changed/change a feature flag",
    ("flags", "delete"): "deleted/delete a feature flag",
    ("flags", "evaluate"): "evaluated/evaluate feature flags for a user",
    ("flags", "definitions"): "read/read feature flag definitions",
    ("experiments", "list"): "listed/list experiments",
    ("experiments", "get"): "read/read an experiment",
    ("experiments", "create"): "created/create an experiment",
    ("experiments", "update"): "changed/change an experiment",
    ("experiments", "launch"): "launched/launch an experiment",
    ("experiments", "decide"): "recorded/record an experiment's decision",
    ("experiments", "conclude"): "concluded/conclude an experiment",
    ("experiments", "archive"): "archived/archive an experiment",
    ("experiments", "unarchive"): "unarchived/unarchive an experiment",
    ("experiments", "delete"): "deleted/delete an experiment",
    ("lookup_tables", "list"): "listed/list lookup tables",
    ("lookup_tables", "replace"): "replaced/replace a lookup table with {records} row(s)",
    ("gdpr", "retrieve"): "requested/request a GDPR data retrieval for {records} user(s)",
    ("gdpr", "retrieval_status"): "checked/check a GDPR data retrieval",
    ("gdpr", "delete_data"): "requested/request a GDPR data deletion for {records} user(s)",
    ("gdpr", "deletion_status"): "checked/check a GDPR data deletion",
    ("gdpr", "cancel_deletion"): "cancelled/cancel a GDPR data deletion",
}
_GROUP_PHRASES = {
    "engage": "updated/update a user profile ({operation})",
    "groups": "updated/update a group profile ({operation})",
    "segmentation": "ran/run a segmentation report ({operation})",
}


@dataclass
class Record:
    agent: str
    tool: str | None
    operation: str | None = None
    project: int | str | None = None
    touched: dict[str, Any] = field(default_factory=dict)
    access: str | None = None  # read / write / destructive, for this call's arguments
    decision: str = "allowed"  # allowed / denied / asked (confirmation requested)
    reason: str | None = None
    outcome: str = "ok"  # ok / error / refused / pending
    error: str | None = None  # the kind of error: invalid_arguments, rate_limit, timeout, ...
    upstream_status: int | None = None
    upstream_requests: int = 0
    retries: int = 0
    duration_s: float = 0.0
    remote: str | None = None  # the client address, for requests refused before any tool was named
    time: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"))

    def sentence(self) -> str:
        if self.tool is None:
            source = f" from {self.remote}" if self.remote else ""
            return f"a request{source} was refused: {self.reason}"
        who = f"agent {self.agent}"
        where = f" on project {self.project}" if self.project is not None else ""
        when = f" for {date_span(self.touched.get('from_date'), self.touched.get('to_date'))}" if "from_date" in self.touched else ""
        past, base = _phrase(self.tool, self.operation, self.touched)
        if self.decision == "allowed":
            took = f"{self.duration_s:.1f}" if self.duration_s >= 0.1 else f"{self.duration_s:.2f}"
            if self.outcome == "ok":
                ending = f"allowed, ok in {took} s"
            else:
                status = f", Mixpanel answered {self.upstream_status}" if self.upstream_status else ""
                ending = f"allowed, failed ({self.error}{status}) in {took} s"
            return f"{who} {past}{where}{when}: {ending}"
        if self.decision == "asked":
            return f"{who} asked to {base}{where}{when}: confirmation requested ({self.reason})"
        return f"{who} asked to {base}{where}{when}: denied ({self.reason})"

    def line(self) -> str:
        record = {k: v for k, v in asdict(self).items() if v is not None}
        record["sentence"] = self.sentence()
        return json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=str)


def _phrase(tool: str, operation: str | None, touched: dict[str, Any]) -> tuple[str, str]:
    template = _PHRASES.get((tool, operation or tool)) or _GROUP_PHRASES.get(tool) or "called/call {tool} {operation}"
    if touched.get("truncate"):
        template = "replaced/replace the whole Lexicon dictionary with {records} schema(s)"
    text = template.format(records=touched.get("records", "some"), tool=tool, operation=operation or "")
    first, _, rest = text.partition(" ")
    past, _, base = first.partition("/")
    return f"{past} {rest}".strip(), f"{base} {rest}".strip()


def date_span(start: Any, end: Any) -> str:
    """2026-01-01..31, 2026-01-01..02-15, 2025-12-01..2026-01-05: the shortest unambiguous range."""
    a, b = str(start or "?"), str(end or "?")
    if len(a) == len(b) == 10 and a[4] == b[4] == "-":
        if a == b:
            return a
        if a[:7] == b[:7]:
            return f"{a}..{b[8:]}"
        if a[:4] == b[:4]:
            return f"{a}..{b[5:]}"
    return f"{a}..{b}"


def touched(tool: str, args: Any) -> dict[str, Any]:
    """What a call reads or changes, without any property value: event names, dates, number of records."""
    names: list[str] = []
    out: dict[str, Any] = {}
    for name in ("event", "born_event"):
        value = getattr(args, name, None)
        if isinstance(value, str):
            names.append(value)
        elif isinstance(value, list):
            names.extend(v for v in value if isinstance(v, str))
    records: int | None = None
    events = getattr(args, "events", None)
    if isinstance(events, list):
        for item in events:
            name = item.get("event") if isinstance(item, dict) else getattr(item, "event", None)
            if isinstance(name, str):
                names.append(name)
        records = len(events)
    for many in ("updates", "entries", "distinct_ids", "rows"):
        value = getattr(args, many, None)
        if isinstance(value, list):
            records = len(value)
    if tool == "lexicon":
        entries = getattr(args, "entries", None) or []
        names.extend(e.name for e in entries if getattr(e, "entityType", None) == "event")
        if getattr(args, "entity_type", None) == "event" and isinstance(getattr(args, "name", None), str):
            names.append(args.name)
        if getattr(args, "schema_", None) is not None:
            records = 1
        if getattr(args, "truncate", False):
            out["truncate"] = True
    elif tool in ("engage", "groups") and records is None:
        records = 1
    if names:
        unique = list(dict.fromkeys(strip_controls(n)[:MAX_NAME_CHARS] for n in names))
        out["events"] = unique[:MAX_NAMES]
        if len(unique) > MAX_NAMES:
            out["more_events"] = len(unique) - MAX_NAMES
    for name in ("from_date", "to_date"):
        value = getattr(args, name, None)
        if value is not None:
            out[name] = str(value)
    for name in ("funnel_id", "bookmark_id", "annotation_id"):
        value = getattr(args, name, None)
        if isinstance(value, int):
            out[name] = value
    for name in ("flag_id", "experiment_id", "table_id", "tracking_id"):  # ids of objects, never of people
        value = getattr(args, name, None)
        if isinstance(value, str):
            out[name] = strip_controls(value)[:MAX_NAME_CHARS]
    if records is not None:
        out["records"] = records
    return out


def error_kind(exc: BaseException) -> str:
    """A short, stable name for what went wrong (never the message, which may quote Mixpanel)."""
    if isinstance(exc, TransportError):
        return "timeout" if exc.timed_out else "unreachable"
    if isinstance(exc, MixpanelError):
        name = re.sub(r"(?<!^)(?=[A-Z])", "_", type(exc).__name__).lower().removesuffix("_error")
        return name or "mixpanel"
    return "internal"


def upstream_status(exc: BaseException) -> int | None:
    return exc.status if isinstance(exc, UpstreamError) else None


FAIL_CLOSED_VAR = "MIXPANEL_MCP_AUDIT_FAIL_CLOSED"


def fail_closed_setting(environ: Mapping[str, str], hosted: bool) -> bool:
    """Whether calls stop when the audit log cannot be written: by default yes when hosted, no locally."""
    value = environ.get(FAIL_CLOSED_VAR, "").strip().lower()
    if not value:
        return hosted
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{FAIL_CLOSED_VAR} must be 1 or 0 (true or false), not {echo(value)}")


class AuditLog:
    """Appends records to a file (`-` is stderr), one line each, flushed as written."""

    def __init__(self, path: str | None, *, fail_closed: bool = False) -> None:
        self.path = path
        # Fail closed: once a record could not be written, calls are refused until one can be again.
        self.fail_closed = fail_closed
        self.failing = False
        self._lock = threading.Lock()
        self._stream: IO[str] | None = None
        if path == "-":
            self._stream = sys.stderr
        elif path:
            self._stream = open(path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 - held for the process

    @property
    def enabled(self) -> bool:
        return self._stream is not None

    def write(self, record: Record) -> None:
        if self._stream is None:
            return
        line = scrubber.text(record.line())
        try:
            with self._lock:
                self._stream.write(line + "\n")
                self._stream.flush()
        except OSError as exc:
            self.failing = True
            then = "calls are refused until it can be written" if self.fail_closed else "calls go on"
            logger.error("Could not write the audit log %s: %s; %s", self.path, exc.strerror or exc, then)
        else:
            self.failing = False

    @property
    def refuses_calls(self) -> bool:
        return self.fail_closed and self.failing

    def close(self) -> None:
        if self._stream is not None and self._stream is not sys.stderr:
            self._stream.close()
        self._stream = None
