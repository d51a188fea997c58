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

    def __init__(self, app: ASGIApp, state: DoubleState) -> None:
        self.app = app
        self.state = state

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
        self.state.enter()
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
            finally:
                self.state.persist()  # the sandbox's store keeps what the request changed
        finally:
            self.state.leave()


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


def build_app(state: DoubleState) -> ASGIApp:
    routes: list[Route] = []
    for module in (profiles, events, reports, funnels, export, lexicon, annotations, flags, experiments, lookup_tables, gdpr):
        routes.extend(module.routes(state))
    return Recorder(Starlette(routes=routes), state)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running(state: DoubleState, port: int | None = None) -> Iterator[str]:
    """Serve the double on 127.0.0.1 in a background thread; yields its base URL."""
    port = port or free_port()
    config = uvicorn.Config(build_app(state), host="127.0.0.1", port=port, log_level="warning", lifespan="off")
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
