"""Lookup Tables on the ingestion host: GET /lookup-tables and PUT /lookup-tables/{id} (text/csv).

state.lookup_tables maps id -> {id, name, header, rows}. Tables are created in Mixpanel's UI, never by the API:
a PUT to an unknown id is a 404. A replacement is validated as a whole (at most 10 refused rows reported) and
stored only when every row passes.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mixpanel_mcp.double.responses import JSONResponse
from mixpanel_mcp.double.state import DoubleState, RecordedRequest

MAX_BYTES = 100 * 1024 * 1024
MAX_FAILED = 10


def answer(status: int, text: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"code": status, "status": text, **extra}, status)


def unauthorized() -> JSONResponse:
    return answer(401, "Unauthorized", error="Invalid credentials")


def validate(text: str) -> tuple[list[str], list[list[str]], list[dict[str, Any]]]:
    """(header, rows, failed records) by the documented rules; line 0 is the header."""
    reader = csv.reader(io.StringIO(text), strict=True)
    failed: list[dict[str, Any]] = []
    try:
        lines = [row for row in reader]
    except csv.Error as exc:
        return [], [], [{"index": reader.line_num, "message": f"invalid CSV: {exc}"}]
    if not lines or not lines[0]:
        return [], [], [{"index": 0, "message": "a header row is required"}]
    header, rows = lines[0], [row for row in lines[1:] if row]
    if len(set(header)) != len(header):
        failed.append({"index": 0, "message": "invalid header: column names must be unique"})
    seen: dict[str, int] = {}
    for index, row in enumerate(rows, start=1):
        if len(row) != len(header):
            failed.append({"index": index, "message": "invalid row: wrong number of fields"})
        elif not row[0]:
            failed.append({"index": index, "message": "primary key is required and cannot be blank"})
        elif row[0] in seen:
            failed.append(
                {
                    "index": index,
                    "message": f"invalid row: row indexes {seen[row[0]]} and {index} have the same primary key",
                }
            )
        else:
            seen[row[0]] = index
    return header, rows, failed[:MAX_FAILED]


def routes(state: DoubleState) -> list[Route]:
    def authorized(recorded: RecordedRequest, *, secret_too: bool) -> Response | None:
        project = state.project
        auth = recorded.basic_auth
        if auth == (project.sa_username, project.sa_secret):
            if recorded.query.get("project_id") != str(project.project_id):
                return unauthorized()
            return None
        if secret_too and auth is not None and auth[0] == project.api_secret:
            return None
        return unauthorized()

    def guarded(
        handler: Callable[[RecordedRequest, str | None], Response], *, secret_too: bool
    ) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            recorded: RecordedRequest = request.state.recorded
            if (denied := authorized(recorded, secret_too=secret_too)) is not None:
                return denied
            return handler(recorded, request.path_params.get("table_id"))

        return endpoint

    def list_(recorded: RecordedRequest, _: str | None) -> Response:
        tables = [{"id": t["id"], "name": t["name"]} for t in state.lookup_tables.values()]
        return JSONResponse({"code": 200, "status": "OK", "results": tables})

    def replace(recorded: RecordedRequest, table_id: str | None) -> Response:
        table = state.lookup_tables.get(table_id or "")
        if table is None:
            return answer(404, "Not Found", error=f"Lookup table with id '{table_id}' was not found.")
        if len(recorded.body) > MAX_BYTES:
            return answer(413, "Request Entity Too Large", error=f"request exceeds max limit of {MAX_BYTES} bytes")
        if not recorded.headers.get("content-type", "").startswith("text/csv"):
            return answer(400, "Bad Request", error="Content-Type must be text/csv")
        try:
            text = recorded.body.decode("utf-8")
        except UnicodeDecodeError:
            return answer(400, "Bad Request", error="the table must be UTF-8 text")
        header, rows, failed = validate(text)
        if failed:
            return answer(
                400, "Bad Request", error="Some data points in the request failed validation.", failed_records=failed
            )
        table.update(header=header, rows=rows)
        return answer(200, "OK")

    return [
        Route("/lookup-tables", guarded(list_, secret_too=False), methods=["GET"]),
        Route("/lookup-tables/{table_id}", guarded(replace, secret_too=True), methods=["PUT"]),
    ]
