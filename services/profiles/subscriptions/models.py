"""Subscription tables: each profile's state per channel and group, the workspace's groups, consent records, and
the profiles outbox (what a change announces, as durable as the change; kernel/outbox.py).

`segment_subscriptions` is the read-only view other services' SQL reads states through (views.py).
"""

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, Identity, Index, String, UniqueConstraint, func
from sqlalchemy.orm import Mapped, mapped_column

from kernel.db import Base
from kernel.outbox import outbox_table
from services.profiles.models import SCHEMA


class Subscription(Base):
    """A profile's state on a channel (`key` email, push or sms) or in a subscription group (`key` its id)."""

    __tablename__ = "subscriptions"
    __table_args__ = (Index("subscriptions_key", "workspace_id", "key", "state"), {"schema": SCHEMA})

    workspace_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    profile_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    source: Mapped[str] = mapped_column(String(64))


class SubscriptionGroup(Base):
    """A named list of a workspace on one channel (e.g. "Weekly digest"); archived rather than deleted once it
    has had members."""

    __tablename__ = "subscription_groups"
    __table_args__ = (Index("subscription_groups_listing", "workspace_id", "created_at", "group_id"), {"schema": SCHEMA})

    workspace_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    group_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    channel: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(256))
    description: Mapped[str | None] = mapped_column(String(2048))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    archived_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Consent(Base):
    """One consent record (the history is kept; the newest per purpose is in force: domain.consents_in_force).

    The same record given twice (purpose, status, policy version, source and time) is stored once."""

    __tablename__ = "consents"
    __table_args__ = (
        UniqueConstraint("workspace_id", "profile_id", "purpose", "status", "policy_version", "source", "at",
                         name="consents_record"),
        Index("consents_profile", "workspace_id", "profile_id", "purpose", "at"),
        {"schema": SCHEMA},
    )

    seq: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    consent_id: Mapped[str] = mapped_column(String(64), unique=True)
    workspace_id: Mapped[str] = mapped_column(String(64))
    profile_id: Mapped[str] = mapped_column(String(64))
    purpose: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16))
    policy_version: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


outbox = outbox_table(SCHEMA)
