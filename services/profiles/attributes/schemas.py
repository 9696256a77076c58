"""Attribute catalogue API shapes."""

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field


class AttributeOut(BaseModel):
    """A custom attribute (a trait) the workspace's users have."""

    name: str
    type: Literal["string", "number", "boolean", "date", "array", "object"] = Field(
        description="inferred from the newest value seen (a date is ISO 8601 text)"
    )
    first_seen: datetime = Field(description="the earliest event that set it or operated on it")
    last_seen: datetime = Field(description="the latest such event, to within HERALD's catalogue refresh (ten minutes)")
    examples: list[Any] = Field(description="up to three distinct values seen (long text cut, large arrays and objects left out)")


class AttributeList(BaseModel):
    attributes: list[AttributeOut]
    next_cursor: str | None = Field(default=None, description="pass as `cursor` for the next page; null on the last page")
