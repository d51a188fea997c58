"""A DoubleState kept on disk: one SQLite file (standard library) that survives restarts.

The double keeps working on its in-memory state (state.events, state.profiles, ...), exactly as in the tests;
a store loads that working set when it opens, and after every request the double handled, `save` writes what
changed, in one transaction: events appended since the last save, and each keyed row (a profile, a group
profile, a schema, a funnel, a cohort, a bookmark) whose JSON differs from what was last written (deleted keys
are deleted). Events are never edited or removed by the APIs the double serves, so they are append-only here;
if the list ever shrinks, the table is rewritten.

Tables (readable with any SQLite tool): events(seq, event, time, distinct_id, body), one (key, body) table per
keyed collection, and meta(key, value). One server process per file: a second process on the same folder works
on what it loaded when it started.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from mixpanel_mcp.double.state import DoubleState

SCHEMA_VERSION = "1"


def _key_pair(key: Any) -> str:
    return json.dumps(list(key), ensure_ascii=False)


def _pair(text: str) -> tuple[str, str]:
    first, second = json.loads(text)
    return str(first), str(second)


def _listed(id_field: str) -> tuple[Callable[[Any], Iterable[tuple[str, Any]]], Callable[[list[tuple[str, Any]]], Any]]:
    """A list of dicts keyed by one of their fields (funnel_id, id)."""

    def rows(items: Any) -> Iterable[tuple[str, Any]]:
        for index, item in enumerate(items):
            key = item.get(id_field) if isinstance(item, dict) else None
            yield (str(key) if key is not None else f"#{index}"), item

    return rows, lambda loaded: [body for _, body in loaded]


def _mapped(encode: Callable[[Any], str], decode: Callable[[str], Any]) -> tuple[Any, Any]:
    return (lambda items: ((encode(k), v) for k, v in items.items())), (lambda loaded: {decode(k): v for k, v in loaded})


# attribute of DoubleState -> (its rows as (key, value), rebuilding it from rows in order)
COLLECTIONS: dict[str, tuple[Callable[[Any], Iterable[tuple[str, Any]]], Callable[[list[tuple[str, Any]]], Any]]] = {
    "profiles": _mapped(str, str),
    "group_profiles": _mapped(_key_pair, _pair),
    "schemas": _mapped(_key_pair, _pair),
    "funnels": _listed("funnel_id"),
    "cohorts": _listed("id"),
    "bookmarks": _mapped(str, int),
    "annotations": _mapped(str, int),
    "annotation_tags": _mapped(str, int),
    "flags": _mapped(str, str),
    "experiments": _mapped(str, str),
    "lookup_tables": _mapped(str, str),
    "gdpr_jobs": _mapped(str, str),
}


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


class SqliteStore:
    """The sandbox's file. `load` fills a state; `save` writes what changed since the last load or save."""

    FILE_NAME = "sandbox.sqlite3"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        # The double runs in the server's event loop thread, and tests may read from another one.
        self.db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA busy_timeout=5000")
        with self.db:
            self.db.execute("BEGIN")
            self.db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            self.db.execute(
                "CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY, event TEXT, time INTEGER, "
                "distinct_id TEXT, body TEXT NOT NULL)"
            )
            for name in COLLECTIONS:
                self.db.execute(f"CREATE TABLE IF NOT EXISTS {name} (key TEXT PRIMARY KEY, body TEXT NOT NULL)")
            self.db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (SCHEMA_VERSION,))
        self._events_saved = 0
        self._rows: dict[str, dict[str, str]] = {name: {} for name in COLLECTIONS}

    @classmethod
    def in_folder(cls, folder: str | Path) -> SqliteStore:
        directory = Path(folder)
        directory.mkdir(parents=True, exist_ok=True)
        return cls(directory / cls.FILE_NAME)

    def close(self) -> None:
        self.db.close()

    # -- meta ------------------------------------------------------------------------------

    def get(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set(self, key: str, value: str) -> None:
        self.db.execute("INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))

    # -- the working set -------------------------------------------------------------------

    def load(self, state: DoubleState) -> None:
        """Replace the state's data with the file's (faults and recorded requests are left alone)."""
        events = [json.loads(body) for (body,) in self.db.execute("SELECT body FROM events ORDER BY seq")]
        loaded: dict[str, Any] = {}
        for name, (_, rebuild) in COLLECTIONS.items():
            rows = self.db.execute(f"SELECT key, body FROM {name} ORDER BY rowid").fetchall()
            self._rows[name] = {key: body for key, body in rows}
            loaded[name] = rebuild([(key, json.loads(body)) for key, body in rows])
        with state.lock:
            state.events = events
            for name, value in loaded.items():
                setattr(state, name, value)
        self._events_saved = len(events)

    def save(self, state: DoubleState) -> int:
        """Write what changed (the caller holds the state's lock); returns how many rows were written."""
        written = 0
        with self.db:
            self.db.execute("BEGIN")
            events = state.events
            if len(events) < self._events_saved:
                self.db.execute("DELETE FROM events")
                self._events_saved = 0
            new = events[self._events_saved :]
            if new:
                self.db.executemany(
                    "INSERT INTO events (event, time, distinct_id, body) VALUES (?, ?, ?, ?)",
                    [(_text(e.get("event")), _time(e), _text(_props(e).get("distinct_id")), _dumps(e)) for e in new],
                )
                written += len(new)
            for name, (rows_of, _) in COLLECTIONS.items():
                current = {key: _dumps(value) for key, value in rows_of(getattr(state, name))}
                saved = self._rows[name]
                changed = [(key, body) for key, body in current.items() if saved.get(key) != body]
                gone = [(key,) for key in saved if key not in current]
                if changed:
                    self.db.executemany(
                        f"INSERT INTO {name} (key, body) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET body = excluded.body",
                        changed,
                    )
                if gone:
                    self.db.executemany(f"DELETE FROM {name} WHERE key = ?", gone)
                written += len(changed) + len(gone)
                self._rows[name] = current
        self._events_saved = len(events)
        return written

    def is_empty(self) -> bool:
        """Nothing was ever stored (a new folder): the sandbox seeds it."""
        if self.get("seeded_at") is not None:
            return False
        if self.db.execute("SELECT 1 FROM events LIMIT 1").fetchone():
            return False
        return not any(self.db.execute(f"SELECT 1 FROM {name} LIMIT 1").fetchone() for name in COLLECTIONS)


def _props(event: Any) -> dict[str, Any]:
    properties = event.get("properties") if isinstance(event, dict) else None
    return properties if isinstance(properties, dict) else {}


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _time(event: Any) -> int | None:
    value = _props(event).get("time")
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
