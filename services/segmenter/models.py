"""Segmenter tables: segment definitions, stored memberships, and the outbox of membership changes."""

from datetime import datetime
from typing import Any, Literal

from sqlalchemy import DateTime, Index, String, Text, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from kernel.db import Base
from kernel.outbox import outbox_table

SCHEMA = "segmenter"


class Segment(Base):
    __tablename__ = "segments"
    __table_args__ = (Index("segments_listing", "workspace_id", "created_at", "id"), {"schema": SCHEMA})

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(200))
    filter: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # When it was archived (None: live). An archived segment is out of lists unless asked for, is not
    # evaluated (it matches nobody: no member, no entered / exited) and keeps no stored members.
    archived_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # When today's members were all stored; until then the segment is `computing`: its members are
    # being stored in chunks, in profile id order, and `backfilled_through` is the last id done.
    ready_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    backfilled_through: Mapped[str | None] = mapped_column(Text)
    # A segment whose filter reads the clock ("within 7 days", "more than 30 days ago") is swept: every
    # profile re-evaluated, from time to time, so that members leave and enter as time passes.
    # `sweep_due_at` is when the next sweep is due (NULL: never), `swept_through` the last profile id
    # of the sweep in progress.
    sweep_due_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    swept_through: Mapped[str | None] = mapped_column(Text)

    @property
    def status(self) -> Literal["computing", "ready"]:
        return "ready" if self.ready_at is not None else "computing"


class Membership(Base):
    __tablename__ = "memberships"
    __table_args__ = (
        Index("memberships_profile", "workspace_id", "profile_id"),
        {"schema": SCHEMA},
    )

    workspace_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    segment_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    profile_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str | None] = mapped_column(String(512))
    entered_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


outbox = outbox_table(SCHEMA)
