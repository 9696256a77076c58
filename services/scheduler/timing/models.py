"""Send-time optimization's table: each workspace's hour-of-week session histogram, cached."""

from datetime import datetime

from sqlalchemy import DateTime, Integer, String
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from kernel.db import Base
from services.scheduler.models import SCHEMA


class WorkspaceHours(Base):
    """A workspace's hour-of-week scores (domain.workspace_scores over a sample of its users), recomputed when stale."""

    __tablename__ = "workspace_hours"
    __table_args__ = {"schema": SCHEMA}

    workspace_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    hours: Mapped[list[int]] = mapped_column(ARRAY(Integer))
    computed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
