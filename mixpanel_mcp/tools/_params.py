"""Argument types shared by the tool groups: one definition, one description, one rule each."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Annotated, Any, Literal, Self

from pydantic import AfterValidator, BeforeValidator, Field, TypeAdapter, WithJsonSchema, model_validator
from pydantic_core import PydanticCustomError

from mixpanel_mcp.client.events import PLACEHOLDER_IDS
from mixpanel_mcp.tools._base import Args


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


def _segment(value: str) -> str:
    """An id that goes into a URL path must stay exactly one segment of it."""
    if value in (".", "..") or "/" in value or "\\" in value or any(ord(c) < 32 for c in value):
        raise PydanticCustomError(
            "path_segment", "must be one id as Mixpanel shows it: no '/', '\\', control characters, '.' or '..'",
            {"example": "3f1c2a9e-8d4b-4f8e-9a51-2b7c6d0e1f23"},
        )
    return value


def _local_path(value: str) -> str:
    """A path on this machine: the operating system takes no NUL byte, and control characters are never meant."""
    if any(ord(c) < 32 or c == "\x7f" for c in value):
        raise PydanticCustomError(
            "local_path", "must be a file path without NUL or other control characters", {"example": "/tmp/events.ndjson"}
        )
    return value


def positive(value: int) -> int:
    """A Mixpanel id of a number; checked here rather than advertised (every byte of the tool list costs)."""
    if value < 1:
        raise PydanticCustomError(
            "positive_id", "must be a positive id, not {value}", {"value": value, "example": "12"}
        )
    return value


def at_most(limit: int) -> Callable[[list[Any]], list[Any]]:
    """A cap on a list's length, checked but not advertised."""

    def check(value: list[Any]) -> list[Any]:
        if len(value) > limit:
            raise PydanticCustomError(
                "too_many", "at most {limit} items, not {count}", {"limit": limit, "count": len(value)}
            )
        return value

    return check


LocalPath = Annotated[str, Field(min_length=1, max_length=4096), AfterValidator(_local_path)]
PathId = Annotated[str, Field(min_length=1, max_length=255), AfterValidator(_segment)]


def decoded(opening: str) -> Callable[[Any], Any]:
    """Accept a JSON-encoded list ("[") or object ("{") where one is expected (some clients send strings)."""

    def decode(value: Any) -> Any:
        if isinstance(value, str) and value.strip().startswith(opening):
            try:
                return json.loads(value)
            except ValueError:
                return value
        return value

    return decode


json_list = decoded("[")


def listish(value: Any) -> Any:
    """Where a list is expected: a JSON-encoded list is decoded, a single string becomes a one-item list."""
    if isinstance(value, str) and not value.strip().startswith("["):
        return [value]
    return json_list(value)


Date = Annotated[str, BeforeValidator(_date)]
FromDate = Annotated[Date, Field(description="yyyy-mm-dd, inclusive.", examples=["2026-01-01"])]
ToDate = Annotated[Date, Field(description="yyyy-mm-dd, inclusive.", examples=["2026-01-31"])]
DistinctId = Annotated[
    str, Field(min_length=1, max_length=255, description="The user's distinct_id."), AfterValidator(_id)
]
UserId = Annotated[str, Field(min_length=1, max_length=255), AfterValidator(_id)]  # DistinctId, described by its name
EventName = Annotated[str, Field(min_length=1, max_length=255, description="Event name.")]
EventNames = Annotated[list[EventName], BeforeValidator(listish), Field(min_length=1, max_length=100)]
Where = Annotated[
    str,
    Field(
        min_length=1,
        max_length=10_000,
        description='Filter expression, e.g. properties["country"] == "US".',
    ),
]
On = Annotated[str, Field(min_length=1, max_length=10_000, description='Segment by expression, e.g. properties["country"].')]
StringList = Annotated[list[str], BeforeValidator(json_list)]


CountType = Annotated[
    Literal["general", "unique", "average"],
    Field(description="unique = users; average = events per user."),
]


def optional(kind: Any) -> Any:
    """`kind | None`: validated as nullable (one clear error), advertised as just `kind` (omitting it is the null)."""
    return Annotated[kind | None, WithJsonSchema(TypeAdapter(kind).json_schema())]


def top_limit() -> Any:
    """The optional `limit` of reports segmented with `on`."""
    return Field(None, ge=1, le=10_000, description="Top `on` values.")


def check_order(from_date: str | None, to_date: str | None) -> None:
    if from_date is not None and to_date is not None and from_date > to_date:
        raise PydanticCustomError(
            "date_order",
            "from_date {from_date} is after to_date {to_date}",
            {"from_date": from_date, "to_date": to_date, "example": "from_date=2026-01-01, to_date=2026-01-31"},
        )


class DateRange(Args):
    from_date: FromDate
    to_date: ToDate

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        check_order(self.from_date, self.to_date)
        return self
