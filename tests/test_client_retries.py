"""MixpanelClient against the double over real HTTP: what is retried, how long it waits, what it raises.

Waits go through a recording `sleep`, so the backoff schedule is asserted exactly and nothing really sleeps
(except the stalled-upstream test, which needs a real read timeout). Each test uses its own route-less path:
the double records the request and the queued fault answers it; with no fault left the double says 404.
"""

from __future__ import annotations

import email.utils
import random
import threading
import time
import uuid

import anyio
import pytest

from mixpanel_mcp.client import (
    Api,
    AuthenticationError,
    BadRequestError,
    CallStats,
    Credential,
    MixpanelClient,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
    TransportError,
    UpstreamError,
    call_stats,
)
from mixpanel_mcp.client.http import parse_retry_after
from mixpanel_mcp.client.profiles import profile_update, send_updates
from mixpanel_mcp.config import load_settings
from mixpanel_mcp.double.app import free_port
from tests.conftest import PROJECT_ID, SA_SECRET, SA_USER, TOKEN, server_env

BASE = 1.0  # MIXPANEL_RETRY_BASE_DELAY for these tests: whole numbers make the schedule easy to read
CAP = 60.0


class Sleeps(list[float]):
    """A `sleep` that records the delay instead of waiting."""

    async def __call__(self, seconds: float) -> None:
        self.append(seconds)


def make_client(double_url: str, sleeps: Sleeps, **env: str | None) -> MixpanelClient:
    settings = load_settings(server_env(double_url, MIXPANEL_RETRY_BASE_DELAY=str(BASE), **env))
    return MixpanelClient(settings, sleep=sleeps)


def assert_backoff_schedule(sleeps: list[float]) -> None:
    """Retry n waits base*2^(n-1) (capped) plus 0.5-2.5x base of jitter."""
    for n, delay in enumerate(sleeps, start=1):
        floor = min(BASE * 2 ** (n - 1), CAP)
        assert floor + 0.5 * BASE <= delay <= floor + 2.5 * BASE, (n, delay, sleeps)


@pytest.fixture
def query_path() -> tuple[str, str]:
    """(path given to the client for Api.QUERY, path the double sees): unique per test."""
    name = f"/retry-probe/{uuid.uuid4().hex}"
    return name, f"/api/query{name}"


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


# -- 5xx: retried up to max_retries --------------------------------------------------------------


@pytest.mark.parametrize("max_retries", [0, 2, 4])
@pytest.mark.parametrize("status", [500, 502, 503, 504])
@pytest.mark.asyncio
async def test_server_errors_are_retried_then_raised(double, double_url, query_path, sleeps, status, max_retries):
    path, seen = query_path
    double.fail(seen, status, times=10)
    async with make_client(double_url, sleeps, MIXPANEL_MAX_RETRIES=str(max_retries)) as client:
        with pytest.raises(ServerError) as info:
            await client.request(Api.QUERY, "GET", path, params={"event": "Signed up"})
    exc = info.value
    assert (exc.status, exc.attempts, exc.endpoint, exc.api) == (status, 1 + max_retries, path, Api.QUERY)
    assert exc.detail == f"injected failure {status}"
    assert exc.credential is Credential.SERVICE_ACCOUNT
    requests = double.received(seen)
    assert len(requests) == 1 + max_retries
    # Every attempt is the same request: service account Basic auth, project_id added, caller's params kept.
    for request in requests:
        assert request.method == "GET"
        assert request.query == {"project_id": str(PROJECT_ID), "event": "Signed up"}
        assert request.basic_auth == (SA_USER, SA_SECRET)
    assert len(sleeps) == max_retries
    assert_backoff_schedule(sleeps)


@pytest.mark.parametrize("status", [500, 502, 503, 504])
@pytest.mark.asyncio
async def test_non_idempotent_request_is_not_retried_on_server_error(double, double_url, query_path, sleeps, status):
    path, seen = query_path
    double.fail(seen, status, times=10)
    async with make_client(double_url, sleeps) as client:
        with pytest.raises(ServerError) as info:
            await client.request(Api.QUERY, "POST", path, json={"a": 1}, idempotent=False)
    assert (info.value.status, info.value.attempts) == (status, 1)
    (request,) = double.received(seen)
    assert request.json() == {"a": 1}
    assert sleeps == []


# -- 4xx: never retried except 429 -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, BadRequestError),
        (401, AuthenticationError),
        (403, PermissionDeniedError),
        (404, NotFoundError),
        (413, PayloadTooLargeError),
        (422, BadRequestError),
    ],
)
@pytest.mark.asyncio
async def test_client_errors_are_not_retried(double, double_url, query_path, sleeps, status, error):
    path, seen = query_path
    double.fail(seen, status, times=10, body={"error": f"nope {status}"})
    async with make_client(double_url, sleeps) as client:
        with pytest.raises(UpstreamError) as info:
            await client.request(Api.QUERY, "GET", path)
    assert type(info.value) is error
    assert (info.value.status, info.value.attempts, info.value.detail) == (status, 1, f"nope {status}")
    assert len(double.received(seen)) == 1
    assert sleeps == []


@pytest.mark.parametrize("idempotent", [True, False])
@pytest.mark.asyncio
async def test_429_without_retry_after_is_retried_with_backoff(double, double_url, query_path, sleeps, idempotent):
    """A 429 means Mixpanel did not process the request: safe to resend even a non-idempotent one."""
    path, seen = query_path
    double.fail(seen, 429, times=10, body={"error": "rate limited"})
    async with make_client(double_url, sleeps, MIXPANEL_MAX_RETRIES="3") as client:
        with pytest.raises(RateLimitError) as info:
            await client.request(Api.QUERY, "POST", path, data={"x": "1"}, idempotent=idempotent)
    assert (info.value.attempts, info.value.retry_after, info.value.detail) == (4, None, "rate limited")
    assert len(double.received(seen)) == 4
    assert len(sleeps) == 3
    assert_backoff_schedule(sleeps)


# -- Retry-After ---------------------------------------------------------------------------------


def http_date(seconds_from_now: float) -> str:
    return email.utils.formatdate(time.time() + seconds_from_now, usegmt=True)


@pytest.mark.parametrize(
    ("status", "header", "expected"),
    [
        (429, "5", 5.0),
        (429, "0", 0.0),
        (429, "60", 60.0),  # exactly the cap: still slept through
        (503, "5", 5.0),
        (429, "date+30", 30.0),
    ],
)
@pytest.mark.asyncio
async def test_retry_after_is_slept_through(double, double_url, query_path, sleeps, status, header, expected):
    path, seen = query_path
    value = http_date(30) if header == "date+30" else header
    double.fail(seen, status, times=3, headers={"Retry-After": value})
    async with make_client(double_url, sleeps, MIXPANEL_MAX_RETRIES="2") as client:
        with pytest.raises(UpstreamError) as info:
            await client.request(Api.QUERY, "GET", path)
    assert info.value.status == status and info.value.attempts == 3
    assert len(double.received(seen)) == 3
    assert len(sleeps) == 2
    for delay in sleeps:
        assert delay == pytest.approx(expected, abs=1.5 if header.startswith("date") else 1e-9)


@pytest.mark.parametrize(
    ("status", "header", "expected", "error"),
    [
        (429, "3600", 3600.0, RateLimitError),
        (429, "61", 61.0, RateLimitError),
        (429, "date+3600", 3600.0, RateLimitError),
        (503, "3600", 3600.0, ServerError),
    ],
)
@pytest.mark.asyncio
async def test_retry_after_too_long_raises_at_once(double, double_url, query_path, sleeps, status, header, expected, error):
    path, seen = query_path
    value = http_date(3600) if header.startswith("date") else header
    double.fail(seen, status, times=3, headers={"Retry-After": value})
    async with make_client(double_url, sleeps) as client:
        with pytest.raises(error) as info:
            await client.request(Api.QUERY, "GET", path)
    assert info.value.attempts == 1
    assert info.value.retry_after == pytest.approx(expected, abs=2)
    assert len(double.received(seen)) == 1
    assert sleeps == []


GARBAGE_RETRY_AFTER = [
    "inf",
    "nan",
    "-10",
    "soon",
    "",
    "1e400",
    "Fri, 99 Foo 2026 25:61:00 GMT",
]


@pytest.mark.parametrize("header", GARBAGE_RETRY_AFTER)
@pytest.mark.asyncio
async def test_garbage_retry_after_falls_back_to_backoff(double, double_url, query_path, sleeps, header):
    path, seen = query_path
    double.fail(seen, 429, times=10, headers={"Retry-After": header})
    async with make_client(double_url, sleeps, MIXPANEL_MAX_RETRIES="3") as client:
        with pytest.raises(RateLimitError) as info:
            await client.request(Api.QUERY, "GET", path)
    assert info.value.attempts == 4
    assert info.value.retry_after is None
    assert len(double.received(seen)) == 4
    assert len(sleeps) == 3
    assert_backoff_schedule(sleeps)


# -- retried, then a success (the real /engage endpoint of the double) -------------------------------


@pytest.mark.asyncio
async def test_server_errors_then_success_returns_the_answer(double, double_url, sleeps):
    double.fail("/engage", 503, times=2)
    stats = CallStats()
    token = call_stats.set(stats)
    try:
        async with make_client(double_url, sleeps) as client:
            answer = await send_updates(client, "engage", [profile_update("$set", {"plan": "pro"}, distinct_id="u1")])
    finally:
        call_stats.reset(token)
    assert answer == {"status": 1, "error": None}
    requests = double.received("/engage")
    assert len(requests) == 3
    assert all(r.json() == [{"$token": TOKEN, "$distinct_id": "u1", "$set": {"plan": "pro"}, "$ip": "0"}] for r in requests)
    assert all("authorization" not in r.headers for r in requests)
    # Sent without $ignore_time, so Mixpanel also moves the profile's $last_seen.
    assert double.profiles["u1"]["plan"] == "pro" and "$last_seen" in double.profiles["u1"]
    assert (stats.requests, stats.retries) == (3, 2)
    assert len(sleeps) == 2
    assert_backoff_schedule(sleeps)


@pytest.mark.asyncio
async def test_non_idempotent_update_is_not_resent_after_a_server_error(double, double_url, sleeps):
    """$add applied twice would add twice: a 503 may have been applied, so it is not resent."""
    double.fail("/engage", 503, times=1)
    async with make_client(double_url, sleeps) as client:
        with pytest.raises(ServerError) as info:
            await send_updates(client, "engage", [profile_update("$add", {"credits": 5}, distinct_id="u2")])
    assert info.value.attempts == 1
    assert len(double.received("/engage")) == 1
    assert double.profiles == {}
    assert sleeps == []


@pytest.mark.asyncio
async def test_non_idempotent_update_is_resent_after_a_429(double, double_url, sleeps):
    double.fail("/engage", 429, times=1, headers={"Retry-After": "2"})
    async with make_client(double_url, sleeps) as client:
        answer = await send_updates(client, "engage", [profile_update("$add", {"credits": 5}, distinct_id="u3")])
    assert answer == {"status": 1, "error": None}
    assert len(double.received("/engage")) == 2
    assert double.profiles["u3"]["credits"] == 5  # applied exactly once
    assert sleeps == [2.0]


@pytest.mark.asyncio
async def test_stream_retries_then_raises_the_final_status(double, double_url, query_path, sleeps):
    path, seen = query_path
    double.fail(seen, 502, times=1)
    async with make_client(double_url, sleeps) as client:
        with pytest.raises(NotFoundError) as info:
            async with client.stream(Api.QUERY, "GET", path):
                pytest.fail("a 404 must not be handed to the caller")
    assert info.value.attempts == 2
    assert len(double.received(seen)) == 2
    assert len(sleeps) == 1


# -- no usable answer ----------------------------------------------------------------------------


# A timed-out query is tried again once at most (MIXPANEL_MAX_RETRIES is 2 here): each attempt costs one of
# the hour's queries and a slot for up to MIXPANEL_TIMEOUT.
@pytest.mark.parametrize(("idempotent", "attempts"), [(True, 2), (False, 1)])
@pytest.mark.asyncio
async def test_stalled_upstream_times_out(double, double_url, query_path, sleeps, idempotent, attempts):
    path, seen = query_path
    release = threading.Event()
    double.fail(seen, status=0, times=attempts, hold=release)  # the double answers only when the test says
    try:
        async with make_client(double_url, sleeps, MIXPANEL_TIMEOUT="0.2", MIXPANEL_MAX_RETRIES="2") as client:
            with pytest.raises(TransportError) as info:
                await client.request(Api.QUERY, "POST", path, json={}, idempotent=idempotent)
        # Every attempt was given up on while the double was still holding it, unanswered.
        assert double.in_flight == attempts
    finally:
        release.set()
    exc = info.value
    assert (exc.timed_out, exc.attempts, exc.reason, exc.endpoint) == (True, attempts, "no answer in time", path)
    assert len(double.received(seen)) == attempts
    assert len(sleeps) == attempts - 1
    # Let the double's held handlers finish so they do not straddle the next test's reset.
    deadline = time.monotonic() + 60
    while double.in_flight and time.monotonic() < deadline:
        await anyio.sleep(0.02)
    assert double.in_flight == 0


@pytest.mark.parametrize("idempotent", [True, False])
@pytest.mark.asyncio
async def test_connection_refused_is_retried_then_raised(double_url, sleeps, idempotent):
    """Nothing was sent when the connection never opened, so even a non-idempotent request is retried."""
    closed = f"http://127.0.0.1:{free_port()}"
    async with make_client(double_url, sleeps, MIXPANEL_QUERY_URL=f"{closed}/api", MIXPANEL_MAX_RETRIES="2") as client:
        with pytest.raises(TransportError) as info:
            await client.request(Api.QUERY, "POST", "/segmentation", json={}, idempotent=idempotent)
    exc = info.value
    assert (exc.timed_out, exc.attempts, exc.reason, exc.api) == (False, 3, "could not connect", Api.QUERY)
    assert len(sleeps) == 2
    assert_backoff_schedule(sleeps)


# -- secrets stay out of exceptions ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"error": f"bad secret {SA_SECRET}"}, "bad secret ***"),
        ({"error": f"token {TOKEN} and {SA_SECRET}"}, "token *** and ***"),
        (f"denied for {SA_USER}:{SA_SECRET}", f"denied for {SA_USER}:***"),
    ],
)
@pytest.mark.asyncio
async def test_secrets_echoed_by_mixpanel_are_masked(double, double_url, query_path, sleeps, body, expected):
    path, seen = query_path
    double.fail(seen, 401, body=body)
    async with make_client(double_url, sleeps) as client:
        with pytest.raises(AuthenticationError) as info:
            await client.request(Api.QUERY, "GET", path)
    exc = info.value
    assert exc.detail == expected
    for text in (str(exc), repr(exc), repr(exc.args), exc.detail):
        assert SA_SECRET not in text and TOKEN not in text
    assert exc.credential is Credential.SERVICE_ACCOUNT


@pytest.mark.asyncio
async def test_a_secret_cut_by_truncation_is_still_masked(double, double_url, query_path, sleeps):
    path, seen = query_path
    double.fail(seen, 401, body="x" * 295 + SA_SECRET)
    async with make_client(double_url, sleeps) as client:
        with pytest.raises(AuthenticationError) as info:
            await client.request(Api.QUERY, "GET", path)
    assert SA_SECRET[:5] not in (info.value.detail or "")


# -- pure functions --------------------------------------------------------------------------------

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("5", 5.0),
        (" 7 ", 7.0),
        ("0", 0.0),
        ("2.5", 2.5),
        (email.utils.formatdate(NOW + 30, usegmt=True), 30.0),
        (email.utils.formatdate(NOW - 30, usegmt=True), 0.0),  # a date in the past: retry now
        (None, None),
        ("", None),
        ("inf", None),
        ("-inf", None),
        ("nan", None),
        ("1e400", None),
        ("soon", None),
        ("5 seconds", None),
        ("-10", None),
    ],
)
def test_parse_retry_after(value, expected):
    assert parse_retry_after(value, now=NOW) == expected


@pytest.mark.parametrize(
    ("base", "cap", "attempt", "floor"),
    [
        (2.0, 60.0, 1, 2.0),
        (2.0, 60.0, 2, 4.0),
        (2.0, 60.0, 3, 8.0),
        (2.0, 60.0, 5, 32.0),
        (2.0, 60.0, 6, 60.0),  # 64 capped
        (2.0, 60.0, 10, 60.0),
        (0.01, 60.0, 4, 0.08),
        (0.0, 60.0, 3, 0.0),
    ],
)
def test_backoff_bounds(monkeypatch, base, cap, attempt, floor):
    settings = load_settings({"MIXPANEL_PROJECT_TOKEN": TOKEN, "MIXPANEL_RETRY_BASE_DELAY": str(base)})
    assert settings.retry.max_delay == cap
    client = MixpanelClient(settings)
    monkeypatch.setattr(random, "random", lambda: 0.0)
    assert client.backoff(attempt) == pytest.approx(floor + 0.5 * base)
    monkeypatch.setattr(random, "random", lambda: 1.0)
    assert client.backoff(attempt) == pytest.approx(floor + 2.5 * base)
    monkeypatch.undo()
    samples = [client.backoff(attempt) for _ in range(500)]
    assert all(floor + 0.5 * base <= s <= floor + 2.5 * base for s in samples)
    if base:
        assert max(samples) - min(samples) > base  # the jitter really varies
