"""Results tables: engagement per send and outcome, conversions per campaign and user, experiments' timers."""

from datetime import datetime

from sqlalchemy import DateTime, Float, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from kernel.db import Base
from services.scheduler.models import SCHEMA


class Engagement(Base):
    """One outcome of one send (`$message_<outcome>`), counted once however often its event arrives."""

    __tablename__ = "engagement"
    __table_args__ = (Index("engagement_campaign", "workspace_id", "campaign_id"), {"schema": SCHEMA})

    send_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    outcome: Mapped[str] = mapped_column(String(16), primary_key=True)  # domain.Outcome
    workspace_id: Mapped[str] = mapped_column(String(64))
    campaign_id: Mapped[str] = mapped_column(String(64))
    variant: Mapped[str | None] = mapped_column(String(64))
    channel: Mapped[str | None] = mapped_column(String(16))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Conversion(Base):
    """A user who performed the campaign's goal within its window after a send (or being held out): once per campaign."""

    __tablename__ = "conversions"
    __table_args__ = (Index("conversions_campaign", "workspace_id", "campaign_id"), {"schema": SCHEMA})

    campaign_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    profile_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[str | None] = mapped_column(String(512))
    variant: Mapped[str | None] = mapped_column(String(64))
    send_id: Mapped[str] = mapped_column(String(64))  # the send (or held-out decision) whose window it fell in
    message_id: Mapped[str] = mapped_column(String(512))  # the goal event
    opened_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    converted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Experiment(Base):
    """A campaign's automatic winner: a durable timer (claimed FOR UPDATE SKIP LOCKED when due) and its decision."""

    __tablename__ = "experiments"
    __table_args__ = (Index("experiments_due", "due_at", postgresql_where="status = 'pending'"), {"schema": SCHEMA})

    campaign_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(String(64))
    metric: Mapped[str] = mapped_column(String(16))  # domain.Metric
    due_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending → decided
    winner: Mapped[str | None] = mapped_column(String(64))
    p_value: Mapped[float | None] = mapped_column(Float)
    reason: Mapped[str | None] = mapped_column(String(500))
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
