"""A local stand-in for Mixpanel's HTTP APIs, served over real HTTP.

Every request is recorded (with its body un-gzipped) before anything else, then answered by the endpoint
modules; a test can queue faults (a status, a body, a stall) for the next requests to a path. When the state
has a store (the sandbox), what a handled request changed is written to it once the answer is given.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl

import anyio
import uvicorn
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from mixpanel_mcp.double import (
    annotations,
    events,
    experiments,
    export,
    flags,
    funnels,
    gdpr,
    lexicon,
    lookup_tables,
    profiles,
    reports,
)
from mixpanel_mcp.double.contract import Contract, Exchange, contract_from_env, report
from mixpanel_mcp.double.state import DoubleState, RecordedRequest, decode_body


async def read_body(receive: Receive) -> bytes:
    """The whole body of an ASGI request."""
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


class Recorder:
    """ASGI wrapper: record the request, inject a queued fault, else hand over to the routes."""

    def __init__(self, app: ASGIApp, state: DoubleState, contract: Contract | None = None) -> None:
        self.app = app
        self.state = state
        self.contract = contract or contract_from_env()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw = await read_body(receive)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        recorded = RecordedRequest(
            method=scope["method"],
            path=scope["path"],
            query=dict(parse_qsl(scope["query_string"].decode(), keep_blank_values=True)),
            headers=headers,
            body=decode_body(raw, headers),
        )
        fault = self.state.record(recorded)
        generation = self.state.enter()
        try:
            if fault is not None:
                while fault.hold is not None and not fault.hold.is_set():
                    await anyio.sleep(0.02)
                if fault.delay:
                    await anyio.sleep(fault.delay)
                if fault.drop:
                    send = _dropping(send)
                elif fault.status:
                    await _respond(send, fault.status, fault.body, fault.headers)
                    return
            checked = None
            if self.contract is not None:
                checked = _Checked(self.contract, self.state, recorded, scope["query_string"].decode())
                send = checked.wrap(send)
            scope.setdefault("state", {})["recorded"] = recorded
            sent = False

            async def replay() -> dict[str, Any]:
                nonlocal sent
                if sent:
                    return await receive()
                sent = True
                return {"type": "http.request", "body": raw, "more_body": False}

            try:
                await self.app(scope, replay, send)
            except Exception:
                if checked is not None:  # an answer cut off on purpose (a test's fault) goes out as it was
                    await checked.flush()
                raise
            finally:
                self.state.persist()  # the sandbox's store keeps what the request changed
        finally:
            self.state.leave(generation)


class _Checked:
    """Holds the double's answer back until the contract has checked it (contract mode only).

    A streamed text answer (export's NDJSON) is checked on its first chunk, then passed through as it comes:
    its schema is "a string", and holding a whole export back would change how it streams."""

    def __init__(self, contract: Contract, state: DoubleState, recorded: RecordedRequest, query: str) -> None:
        self.contract = contract
        self.state = state
        self.exchange = Exchange(
            method=recorded.method,
            path=recorded.path,
            query=parse_qsl(query, keep_blank_values=True),
            headers=recorded.headers,
            body=recorded.body,
        )
        self.held: list[dict[str, Any]] = []
        self.decided = False  # the answer is checked: what follows passes through (or is dropped, after a 500)
        self.passed = False
        self.send: Send | None = None

    def wrap(self, send: Send) -> Send:
        self.send = send

        async def checked(message: dict[str, Any]) -> None:
            if self.decided:
                if self.passed:
                    await send(message)
                return
            if message["type"] == "http.response.start":
                self.exchange.status = message["status"]
                self.exchange.response_headers = {
                    k.decode("latin-1").lower(): v.decode("latin-1") for k, v in message.get("headers", [])
                }
            elif message["type"] == "http.response.body":
                self.exchange.response_body += message.get("body", b"")
            self.held.append(message)
            streamed = message.get("more_body") and self.exchange.response_headers.get("content-type", "").startswith("text/plain")
            if message["type"] == "http.response.body" and (streamed or not message.get("more_body")):
                await self.decide(send)

        return checked

    async def flush(self) -> None:
        if not self.decided and self.send is not None:
            self.decided = self.passed = True
            for message in self.held:
                await self.send(message)

    async def decide(self, send: Send) -> None:
        self.decided = True
        violation = self.contract.check(self.exchange)
        if violation is None:
            self.passed = True
            for message in self.held:
                await send(message)
            return
        self.state.violated(violation.text())
        report(violation)
        await _respond(send, 500, {"error": violation.text()}, {})


def _dropping(send: Send) -> Send:
    """Pass the answer's head through, then fail instead of sending its body: uvicorn closes the
    connection, and the client sees it cut off after the request was fully processed."""

    async def dropped(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            raise ConnectionAbortedError("injected fault: connection dropped after the request was processed")
        await send(message)

    return dropped


async def _respond(send: Send, status: int, body: Any, headers: dict[str, str]) -> None:
    if body is None:
        body = {"error": f"injected failure {status}"}
    if isinstance(body, (dict, list)):
        payload, content_type = json.dumps(body).encode(), "application/json"
    else:
        payload, content_type = str(body).encode(), "text/plain; charset=utf-8"
    raw_headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(payload)).encode())]
    raw_headers += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": payload})


def build_app(state: DoubleState, contract: Contract | None = None) -> ASGIApp:
    """The double; held to Mixpanel's specs when `contract` is given or MIXPANEL_OPENAPI_DIR is set."""
    routes: list[Route] = []
    for module in (profiles, events, reports, funnels, export, lexicon, annotations, flags, experiments, lookup_tables, gdpr):
        routes.extend(module.routes(state))
    return Recorder(Starlette(routes=routes), state, contract)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running(state: DoubleState, port: int | None = None, contract: Contract | None = None) -> Iterator[str]:
    """Serve the double on 127.0.0.1 in a background thread; yields its base URL."""
    port = port or free_port()
    config = uvicorn.Config(build_app(state, contract), host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the Mixpanel double did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
