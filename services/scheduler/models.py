"""Scheduler tables: campaigns and the durable send decisions (timers are rows with due_at)."""

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, DateTime, Index, Integer, String, false, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from kernel.db import Base

SCHEMA = "scheduler"


class Campaign(Base):
    __tablename__ = "campaigns"
    __table_args__ = (
        Index("campaigns_active", "workspace_id", "status"),
        Index("campaigns_listing", "workspace_id", "created_at", "id"),
        {"schema": SCHEMA},
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default="draft")  # domain.CampaignStatus
    channel: Mapped[str] = mapped_column(String(16))
    trigger: Mapped[dict[str, Any] | None] = mapped_column(JSONB, nullable=True)  # None: not action-based
    # Entries besides a trigger (schemas.ScheduleIn, schemas.SegmentEntry) and re-eligibility (domain.reentry_refusal).
    schedule: Mapped[dict[str, Any] | None] = mapped_column(JSONB, nullable=True)
    segment_entry: Mapped[dict[str, Any] | None] = mapped_column(JSONB, nullable=True)
    reeligible_after_days: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_sends_per_user: Mapped[int | None] = mapped_column(Integer, nullable=True)
    audience: Mapped[dict[str, Any] | None] = mapped_column(JSONB, nullable=True)
    delay_seconds: Mapped[int] = mapped_column(Integer, default=0)
    # Exception events: names, or {"event", "where"} (schemas.ExceptionEvent).
    cancel_on: Mapped[list[str | dict[str, Any]]] = mapped_column(JSONB, default=list)
    starts_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ends_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    message: Mapped[dict[str, Any]] = mapped_column(JSONB)
    # Delivery policy (services/scheduler/delivery): exempt from caps, holdout and quiet hours when transactional.
    transactional: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # A subscription group of the profiles service (docs/subscriptions.md): the dispatcher checks membership.
    subscription_group_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    delivery: Mapped[dict[str, Any] | None] = mapped_column(JSONB, nullable=True)  # {"window", "rate_per_minute"}
    variants: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONB, nullable=True)
    control_percent: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    locales: Mapped[dict[str, dict[str, Any]] | None] = mapped_column(JSONB, nullable=True)
    # Results (services/scheduler/results): results.schemas.ConversionGoal and ExperimentIn.
    conversion: Mapped[dict[str, Any] | None] = mapped_column(JSONB(none_as_null=True), nullable=True)
    experiment: Mapped[dict[str, Any] | None] = mapped_column(JSONB(none_as_null=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ScheduledSend(Base):
    """One decision to message one profile; `status` moves scheduled → requested | cancelled | …"""

    __tablename__ = "sends"
    __table_args__ = (
        Index("sends_due", "due_at", postgresql_where="status = 'scheduled'"),
        Index("sends_profile", "workspace_id", "campaign_id", "profile_id", "status"),
        Index("sends_user", "workspace_id", "user_id"),
        {"schema": SCHEMA},
    )

    send_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(String(64))
    campaign_id: Mapped[str] = mapped_column(String(64))
    profile_id: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[str | None] = mapped_column(String(512))
    channel: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(24))
    reason: Mapped[str | None] = mapped_column(String(500))
    trigger: Mapped[dict[str, Any]] = mapped_column(JSONB)
    triggered_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    due_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # The experiment arm (a variant's name, "control", "global_control") and the policy rule that stopped or held it.
    variant: Mapped[str | None] = mapped_column(String(64), nullable=True)
    rule: Mapped[str | None] = mapped_column(String(32), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Occurrence(Base):
    """One occurrence of a scheduled campaign: a durable timer, claimed when `due_at` comes (FOR UPDATE SKIP LOCKED),
    that decides every send of that occurrence at once and schedules the next (domain.Schedule)."""

    __tablename__ = "occurrences"
    __table_args__ = (
        Index("occurrences_due", "due_at", postgresql_where="status = 'pending'"),
        Index("occurrences_campaign", "campaign_id", "status"),
        {"schema": SCHEMA},
    )

    id: Mapped[str] = mapped_column(String(128), primary_key=True)  # "<campaign id>@<wall-clock time>"
    workspace_id: Mapped[str] = mapped_column(String(64))
    campaign_id: Mapped[str] = mapped_column(String(64))
    wall_at: Mapped[datetime] = mapped_column(DateTime(timezone=False))  # the wall-clock time it sends at
    due_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))  # when it is decided
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending → done | cancelled
    entered: Mapped[int | None] = mapped_column(Integer, nullable=True)
    suppressed: Mapped[int | None] = mapped_column(Integer, nullable=True)
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
