"""Erasure jobs and tombstones: what is left of an erased person is a hash of each name they went by."""

from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, String, func
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from kernel.db import Base
from services.profiles.models import SCHEMA


class Erasure(Base):
    """One erasure and how far each service got with it (privacy/domain.py: `status`)."""

    __tablename__ = "erasures"
    __table_args__ = {"schema": SCHEMA}

    workspace_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    erasure_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    # Random ids with nothing of the person in them, kept so that the job can be followed and re-sent.
    profile_ids: Mapped[list[str]] = mapped_column(ARRAY(String(64)))
    # service -> {"at": ..., "erased": {kind: count}}, as each service reports its part done.
    progress: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    requested_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    done_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Tombstone(Base):
    """An erased person's user id, alias or anonymous id, hashed: a late or replayed event naming it is dropped."""

    __tablename__ = "tombstones"
    __table_args__ = {"schema": SCHEMA}

    workspace_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    digest: Mapped[str] = mapped_column(String(64), primary_key=True)  # privacy/domain.py: `digest`
    erased_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    erasure_id: Mapped[str] = mapped_column(String(64))
