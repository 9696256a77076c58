"""Segmenter API shapes."""

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class SegmentIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    filter: dict[str, Any] = Field(description="a tree of all / any / not over trait and event conditions")


class SegmentOut(BaseModel):
    id: str
    name: str
    filter: dict[str, Any]
    size: int
    created_at: datetime


class SegmentList(BaseModel):
    segments: list[SegmentOut]
