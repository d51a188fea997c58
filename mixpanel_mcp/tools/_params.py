"""Argument types shared by the tool groups: one definition, one description, one rule each."""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated, Any, Self

from pydantic import AfterValidator, BeforeValidator, Field, model_validator
from pydantic_core import PydanticCustomError

from mixpanel_mcp.tools._base import Args

# Mixpanel refuses these as distinct_id or $insert_id: they are what broken clients send.
PLACEHOLDER_IDS = frozenset(
    {
        "00000000-0000-0000-0000-000000000000",
        "anon",
        "anonymous",
        "nil",
        "none",
        "null",
        "n/a",
        "na",
        "undefined",
        "unknown",
        "<nil>",
        "0",
        "-1",
        "true",
        "false",
        "[]",
        "{}",
    }
)

MAX_BATCH = 2000


def _date(value: Any) -> str:
    if isinstance(value, dt.date):
        return value.isoformat()
    text = str(value).strip()
    try:
        return dt.date.fromisoformat(text).isoformat() if len(text) == 10 else _bad_date(text)
    except ValueError:
        return _bad_date(text)


def _bad_date(text: str) -> str:
    raise PydanticCustomError("date_format", "must be a date as yyyy-mm-dd, not '{value}'", {"value": text, "example": "2026-01-31"})


def _id(value: str) -> str:
    if value.strip().lower() in PLACEHOLDER_IDS:
        raise PydanticCustomError(
            "placeholder_id",
            "'{value}' is a placeholder Mixpanel refuses as an id; use the real user or device id",
            {"value": value, "example": "user-42"},
        )
    return value


def _json_list(value: Any) -> Any:
    """Accept a JSON-encoded list where a list is expected (some clients send strings)."""
    if isinstance(value, str) and value.strip().startswith("["):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


Date = Annotated[str, BeforeValidator(_date)]
FromDate = Annotated[Date, Field(description="Start date, yyyy-mm-dd, inclusive.", examples=["2026-01-01"])]
ToDate = Annotated[Date, Field(description="End date, yyyy-mm-dd, inclusive.", examples=["2026-01-31"])]
DistinctId = Annotated[
    str, Field(min_length=1, max_length=255, description="The user's distinct_id."), AfterValidator(_id)
]
EventName = Annotated[str, Field(min_length=1, max_length=255, description="Event name.")]
EventNames = Annotated[list[EventName], BeforeValidator(_json_list), Field(min_length=1, max_length=100)]
Where = Annotated[
    str,
    Field(
        min_length=1,
        max_length=10_000,
        description='Filter expression, e.g. properties["country"] == "US".',
    ),
]
On = Annotated[str, Field(min_length=1, max_length=10_000, description='Segment by expression, e.g. properties["country"].')]
StringList = Annotated[list[str], BeforeValidator(_json_list)]


class DateRange(Args):
    from_date: FromDate
    to_date: ToDate

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.from_date > self.to_date:
            raise PydanticCustomError(
                "date_order",
                "from_date {from_date} is after to_date {to_date}",
                {"from_date": self.from_date, "to_date": self.to_date, "example": "from_date=2026-01-01, to_date=2026-01-31"},
            )
        return self
