"""Delivery-policy tables: the workspace's rules, the frequency-cap ledger, per-campaign rate slots."""

from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, Index, Integer, String, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from kernel.db import Base
from services.scheduler.models import SCHEMA


class DeliverySettings(Base):
    """A workspace's delivery rules; a workspace without a row has none (no caps, no holdout, UTC)."""

    __tablename__ = "delivery_settings"
    __table_args__ = {"schema": SCHEMA}

    workspace_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    frequency_caps: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)
    global_control_percent: Mapped[int] = mapped_column(Integer)
    default_time_zone: Mapped[str] = mapped_column(String(64))
    quiet_hours_attribute: Mapped[str | None] = mapped_column(String(200), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class CapLedger(Base):
    """One send that went out and counts toward the workspace's caps (transactional sends are not counted)."""

    __tablename__ = "cap_ledger"
    __table_args__ = (Index("cap_ledger_profile", "workspace_id", "profile_id", "sent_at"), {"schema": SCHEMA})

    send_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(String(64))
    profile_id: Mapped[str] = mapped_column(String(64))
    campaign_id: Mapped[str] = mapped_column(String(64))
    channel: Mapped[str] = mapped_column(String(16))
    sent_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class RateSlot(Base):
    """How many of a rate-limited campaign's sends one minute has released (or reserved)."""

    __tablename__ = "rate_slots"
    __table_args__ = {"schema": SCHEMA}

    campaign_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    minute: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    used: Mapped[int] = mapped_column(Integer)
