"""The double's memory: one Mixpanel project, every request it received, and the faults it was told to inject."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import logging
import sqlite3
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

logger = logging.getLogger("mixpanel_mcp.sandbox")


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    @property
    def form(self) -> dict[str, str]:
        if "application/x-www-form-urlencoded" not in self.headers.get("content-type", ""):
            return {}
        return {k: v[-1] for k, v in parse_qs(self.body.decode(), keep_blank_values=True).items()}

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def basic_auth(self) -> tuple[str, str] | None:
        value = self.headers.get("authorization", "")
        if not value.startswith("Basic "):
            return None
        try:
            decoded = base64.b64decode(value[6:]).decode()
        except ValueError:
            # Mixpanel also accepts plain-text user:secret after "Basic ".
            decoded = value[6:]
        user, _, password = decoded.partition(":")
        return user, password


@dataclass
class Fault:
    """Answer the next `times` matching requests with `status` (and `body`), or stall for `delay` seconds.

    With `hold`, each matching request also waits until the test sets that event: a test that needs requests
    in flight waits on what happens, not on a stall sized for an idle machine.

    With `drop`, the request is processed as usual (its data is stored) and the connection is then cut
    before the answer's body: the client cannot tell whether it arrived.
    """

    path: str
    status: int = 500
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    times: int = 1
    delay: float = 0.0
    method: str | None = None
    drop: bool = False
    hold: threading.Event | None = None


@dataclass
class Project:
    """The credentials the double accepts (defaults are the test suite's)."""

    project_id: int = 1234
    token: str = "test-token"
    sa_username: str = "bot.abc123.mp-service-account"
    sa_secret: str = "test-sa-secret"
    api_secret: str = "test-api-secret"
    region: str = "us"  # the project's data residency: only that region's hosts serve it
    workspace_id: int = 5678
    # Set for a project created before 2023: Mixpanel stores its event times in this time zone, so export
    # gives local clock times as epoch numbers, and reads from_date/to_date as local days (export docs).
    legacy_timezone: str | None = None
    gdpr_token: str = "test-gdpr-token"


class DoubleState:
    """Thread-safe store shared by the ASGI app and the tests that inspect it.

    In the tests it lives in memory only. The sandbox gives it a `store` (double/store.py), which writes what
    each handled request changed to disk, keeps only the last `history` recorded requests, and sets `sandbox`
    (what Mixpanel offers and the local project cannot, e.g. JQL, is refused with a clear 400).
    """

    def __init__(
        self, project: Project | None = None, *, sandbox: bool = False, history: int | None = None, region: str | None = None
    ) -> None:
        self.project = project or Project()
        # The region whose hosts this double stands for. Another region's Query and Export hosts answer the
        # project with 400 "invalid project id for cluster"; its ingestion hosts accept data that never shows up.
        self.region = region or self.project.region
        self.sandbox = sandbox
        self.history = history
        self.store: Any = None  # a SqliteStore, for the sandbox
        self._lock = threading.Lock()
        self.violations: list[str] = []  # contract mode (double/contract.py): what broke Mixpanel's specs
        self.reset()

    @property
    def foreign(self) -> bool:
        """Whether the project lives in another region than the hosts this double stands for."""
        return self.region != self.project.region

    @property
    def lock(self) -> threading.Lock:
        return self._lock

    def reset(self) -> None:
        with self._lock:
            self.requests: list[RecordedRequest] = []
            self.faults: list[Fault] = []
            self.events: list[dict[str, Any]] = []
            self.profiles: dict[str, dict[str, Any]] = {}
            self.group_profiles: dict[tuple[str, str], dict[str, Any]] = {}
            self.schemas: dict[tuple[str, str], dict[str, Any]] = {}
            self.funnels: list[dict[str, Any]] = [{"funnel_id": 7509, "name": "Signup funnel", "steps": ["Viewed page", "Signed up"]}]
            self.cohorts: list[dict[str, Any]] = [
                {"id": 1000, "name": "Power users", "count": 150, "description": "", "created": "2026-01-01 10:00:00", "is_visible": 1, "project_id": self.project.project_id}
            ]
            self.bookmarks: dict[int, dict[str, Any]] = {}
            self.annotations: dict[int, dict[str, Any]] = {}  # id -> {id, date, description, user, tags: [tag id]}
            self.annotation_tags: dict[int, dict[str, Any]] = {}  # id -> {id, name, project_id}
            self.flags: dict[str, dict[str, Any]] = {}  # id (uuid) -> the flag as the management API answers it
            self.experiments: dict[str, dict[str, Any]] = {}  # id (uuid) -> the experiment, plus "archived"
            self.lookup_tables: dict[str, dict[str, Any]] = {}  # id (uuid) -> {id, name, header, rows}
            self.gdpr_jobs: dict[str, dict[str, Any]] = {}  # tracking id -> {kind, status, distinct_ids, ...}
            self.in_flight = 0
            self.max_in_flight = 0
            # Requests still running from before a reset (a test's held ones) leave without counting here.
            self.generation = getattr(self, "generation", 0) + 1

    # -- what tests use ------------------------------------------------------------------

    def fail(self, path: str, status: int = 500, *, times: int = 1, body: Any = None, headers: dict[str, str] | None = None,
             delay: float = 0.0, method: str | None = None, drop: bool = False,
             hold: threading.Event | None = None) -> None:
        with self._lock:
            self.faults.append(Fault(path, status, body, headers or {}, times, delay, method, drop, hold))

    def received(self, path: str | None = None) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if path is None or r.path == path]

    # -- what the app uses ---------------------------------------------------------------

    def record(self, request: RecordedRequest) -> Fault | None:
        with self._lock:
            self.requests.append(request)
            if self.history is not None and len(self.requests) > self.history:
                del self.requests[: len(self.requests) - self.history]
            for fault in self.faults:
                if request.path.startswith(fault.path) and fault.method in (None, request.method):
                    fault.times -= 1
                    if fault.times <= 0:
                        self.faults.remove(fault)
                    return fault
            return None

    def violated(self, text: str) -> None:
        with self._lock:
            self.violations.append(text)

    def enter(self) -> int:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            return self.generation

    def leave(self, generation: int) -> None:
        with self._lock:
            if generation == self.generation:
                self.in_flight -= 1

    def persist(self) -> None:
        """After a handled request: write what it changed to the store, if there is one."""
        if self.store is None:
            return
        with self._lock:
            try:
                self.store.save(self)
            except sqlite3.Error as exc:  # the answer was given: say it was not kept, and carry on
                logger.warning("sandbox: could not save a change to %s: %s", self.store.path, exc)


def group_key_id(key: str) -> str:
    """The numeric id Mixpanel gives a group key (e.g. company_id), stable for a name: /engage's
    data_group_id names a group key by this id, never by its name (query.openapi.yaml)."""
    digest = hashlib.sha256(key.encode()).digest()
    return str(int.from_bytes(digest[:8], "big", signed=True))


def decode_body(body: bytes, headers: dict[str, str]) -> bytes:
    if headers.get("content-encoding", "").lower() == "gzip":
        return gzip.decompress(body)
    return body
