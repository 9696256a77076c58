"""Segmenter API shapes."""

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from kernel.limits import refuse_nul

# The `segments.name` column is varchar(200); PostgreSQL text cannot hold NUL.
MAX_NAME_LENGTH = 200


class SegmentIn(BaseModel):
    name: str = Field(min_length=1, max_length=MAX_NAME_LENGTH)
    filter: dict[str, Any] = Field(description="a tree of all / any / not over trait and event conditions")

    @field_validator("name")
    @classmethod
    def _name_storable(cls, name: str) -> str:
        """Refuse what PostgreSQL cannot store, as a 422 instead of a database error."""
        return refuse_nul(name, "a segment name")


class SegmentOut(BaseModel):
    id: str
    name: str
    filter: dict[str, Any]
    size: int
    status: Literal["computing", "ready"] = Field(
        description="`computing` while a new segment's members are stored in the background; entered / exited events begin when `ready`"
    )
    created_at: datetime


class SegmentList(BaseModel):
    segments: list[SegmentOut]
