"""Lookup tables: list them, and replace one's whole content with a CSV (rows given inline, or a local file)."""

from __future__ import annotations

import csv
import io
import json
import uuid
from typing import Annotated, Any, Self

from pydantic import AfterValidator, BeforeValidator, Field, model_validator
from pydantic_core import PydanticCustomError

from mixpanel_mcp.client.app import results
from mixpanel_mcp.client.lookup_tables import list_tables, replace_table
from mixpanel_mcp.tools._base import Access, Args, Needs, Result, Run, ToolGroup
from mixpanel_mcp.tools._params import LocalPath, at_most, json_list, optional
from mixpanel_mcp.ingest_files import FileProblem, open_regular

group = ToolGroup(
    name="lookup_tables",
    title="Lookup tables",
    description="Lookup tables (e.g. SKU -> product): list or replace.",
)

MAX_BYTES = 100 * 1024 * 1024  # Mixpanel refuses a table over 100 MB uncompressed
MAX_ROWS_INLINE = 10_000
FAILED_SHOWN = 10  # Mixpanel itself reports at most the first 10 refused rows
ROWS_EXAMPLE = '[{"sku": "A1", "name": "Board Pro", "price": 29}]'


class NoArgs(Args):
    pass


@group.operation("list", NoArgs, access=Access.READ, needs=Needs.APP, summary="")
async def list_(run: Run, args: NoArgs) -> Result:
    tables = results(await list_tables(run.client), list)
    names = ", ".join(f"{t.get('name')} ({t.get('id')})" for t in tables[:20] if isinstance(t, dict))
    return Result(
        f"{len(tables)} lookup table(s)" + (f": {names}." if names else "."), {"count": len(tables), "tables": tables}
    )


def _cell(value: Any) -> str:
    """Mixpanel's CSV types: true/false, numbers, a list as ["a","b"], empty for none."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return json.dumps([str(v) for v in value], ensure_ascii=False)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def to_csv(rows: list[dict[str, Any]]) -> bytes:
    """The header is every column in order of first appearance; the first column is the row id."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(column)) for column in columns])
    return out.getvalue().encode()


def problems(text: str) -> tuple[int, int, list[dict[str, Any]]]:
    """(rows, columns, refused rows) by Mixpanel's rules: unique header, an id in the first column, unique ids,
    the same number of fields in every row. Indexes count CSV lines from 0 (the header)."""
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    failed: list[dict[str, Any]] = []
    if not header or not any(h.strip() for h in header):
        return 0, 0, [{"index": 0, "message": "the first row must be a header naming the columns"}]
    if len(set(header)) != len(header):
        failed.append({"index": 0, "message": "the header's column names must be unique"})
    seen: dict[str, int] = {}
    count = 0
    for index, row in enumerate(reader, start=1):
        if not row:
            continue
        count += 1
        if len(row) != len(header):
            failed.append({"index": index, "message": "invalid row: wrong number of fields"})
        elif not row[0].strip():
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
    return count, len(header), failed


def _uuid(value: str) -> str:
    """Mixpanel's lookup table ids are UUIDs (shown in Lexicon, and by list)."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise PydanticCustomError(
            "table_id",
            "must be the table's id, a UUID from lookup_tables list",
            {"example": "3f1c2a9e-8d4b-4f8e-9a51-2b7c6d0e1f23"},
        ) from None


TableId = Annotated[str, AfterValidator(_uuid)]


class ReplaceTable(Args):
    table_id: TableId
    rows: optional(
        Annotated[
            list[dict[str, Any]],
            BeforeValidator(json_list),
            Field(min_length=1),
            AfterValidator(at_most(MAX_ROWS_INLINE)),
        ]
    ) = Field(None, description="Objects; first key = row id.")
    file: optional(LocalPath) = Field(
        None, description="Local .csv (stdio only)."
    )

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.rows is None) == (self.file is None):
            raise PydanticCustomError("one_source", "give rows or file, not both", {"example": f"rows={ROWS_EXAMPLE}"})
        return self


def _not_sent(table_id: str, reason: str, **data: Any) -> Result:
    return Result(
        f"Nothing was sent to Mixpanel: {reason}", {"table_id": table_id, "replaced": False, **data}, refused=True
    )


@group.operation(
    "replace",
    ReplaceTable,
    access=Access.DESTRUCTIVE,
    needs=Needs.QUERY,
    idempotent=True,
    summary="",
)
async def replace(run: Run, args: ReplaceTable) -> Result:
    if args.file is not None:
        if not run.settings.local_files:
            return _not_sent(
                args.table_id,
                "this server is reached over HTTP, so it does not read files on its machine; pass rows instead.",
            )
        try:
            with open_regular(args.file, MAX_BYTES) as handle:  # Mixpanel's 100 MB limit for a lookup table
                body = handle.read().decode("utf-8-sig").encode()
        except FileProblem as exc:
            return _not_sent(args.table_id, f"could not read {args.file}: {exc}.")
        except (OSError, UnicodeDecodeError) as exc:
            return _not_sent(args.table_id, f"could not read {args.file}: {getattr(exc, 'strerror', None) or exc}.")
    else:
        body = to_csv(args.rows or [])
    count, columns, failed = problems(body.decode())
    if failed:
        return _not_sent(
            args.table_id,
            f"{len(failed)} row(s) break Mixpanel's lookup table rules "
            "(failed_records: index, message; 0 is the header).",
            failed_records=failed[:FAILED_SHOWN],
            rows=count,
        )
    status, answer = await replace_table(run.client, args.table_id, body)
    if status == 400:
        failed = answer.get("failed_records") if isinstance(answer, dict) else None
        error = answer.get("error") if isinstance(answer, dict) else None
        return Result(
            f"Mixpanel refused the table and kept the old one: {error or 'invalid CSV'} "
            "(failed_records: index, message).",
            {"table_id": args.table_id, "replaced": False, "failed_records": failed or [], "rows": count},
            refused=True,
        )
    return Result(
        f"Replaced lookup table {args.table_id}: {count:,} row(s), {columns} column(s).",
        {"table_id": args.table_id, "replaced": True, "rows": count, "columns": columns},
    )
