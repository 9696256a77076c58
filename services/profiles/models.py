"""Profiles tables: profiles, identities, the event store, per-day event counts and devices.

The views in the `profiles` schema (`segment_profiles`, `segment_events`, `segment_event_counts`)
are the read-only contract the segmenter compiles its SQL against; see the migration.
"""

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Boolean, Date, DateTime, Index, Integer, Numeric, String, UniqueConstraint, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from kernel.db import Base

SCHEMA = "profiles"


class Profile(Base):
    __tablename__ = "profiles"
    __table_args__ = (
        Index(
            "profiles_user_id_key",
            "workspace_id",
            "user_id",
            unique=True,
            postgresql_where="user_id IS NOT NULL",
        ),
        {"schema": SCHEMA},
    )

    workspace_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    profile_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str | None] = mapped_column(String(512))
    traits: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    trait_times: Mapped[dict[str, str]] = mapped_column(JSONB, default=dict)
    # Traits with operations ({"inc"}, {"add"}, {"remove"}) since their last set: that set's value and the
    # operations (services/profiles/attributes/domain.py).
    trait_ops: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    first_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # Standard attributes (language, time_zone, country, ...) and when each was written (context.stamp).
    attributes: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    attribute_times: Mapped[dict[str, str]] = mapped_column(JSONB, default=dict)
    # Sessions (activity.py): how many, when the first and the newest began, starts by hour of the week,
    # and the recent intervals that keep them order-independent.
    session_count: Mapped[int] = mapped_column(Integer, default=0)
    first_session: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_session: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    session_hours: Mapped[list[int] | None] = mapped_column(JSONB(none_as_null=True))
    session_state: Mapped[dict[str, Any] | None] = mapped_column(JSONB(none_as_null=True))
    # Purchases (activity.py): Order Completed events, the revenue in the workspace currency.
    purchase_count: Mapped[int] = mapped_column(Integer, default=0)
    revenue: Mapped[Decimal] = mapped_column(Numeric(20, 4), default=Decimal(0))
    first_purchase: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_purchase: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    user_seen: Mapped[bool] = mapped_column(Boolean, default=True)  # domain.see
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Identity(Base):
    """A user id, alias or anonymous id, and the profile it belongs to."""

    __tablename__ = "identities"
    __table_args__ = (Index("identities_profile", "workspace_id", "profile_id"), {"schema": SCHEMA})

    workspace_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    value: Mapped[str] = mapped_column(String(512), primary_key=True)
    profile_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class StoredEvent(Base):
    """Every event once (the primary key de-duplicates redeliveries and SDK retries)."""

    __tablename__ = "events"
    __table_args__ = (
        Index("events_profile_name_time", "workspace_id", "profile_id", "name", "timestamp"),
        Index("events_anonymous", "workspace_id", "anonymous_id"),
        {"schema": SCHEMA},
    )

    workspace_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    message_id: Mapped[str] = mapped_column(String(256), primary_key=True)
    profile_id: Mapped[str] = mapped_column(String(64))
    type: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(600))
    user_id: Mapped[str | None] = mapped_column(String(512))
    anonymous_id: Mapped[str | None] = mapped_column(String(512))
    properties: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    traits: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    context: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    timestamp: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # Profiles this event merged into its own (None for almost every event): a redelivery re-announces them.
    merged_profile_ids: Mapped[list[str] | None] = mapped_column(JSONB(none_as_null=True), nullable=True)


class EventCount(Base):
    __tablename__ = "event_counts"
    __table_args__ = {"schema": SCHEMA}

    workspace_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    profile_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(600), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)


class Device(Base):
    """A phone, tablet or browser install an SDK reported by its device id, and the profile it is with now.

    A push token is on one device at most (deferred, so a batch may move it from one row to another).
    """

    __tablename__ = "devices"
    __table_args__ = (
        Index("devices_profile", "workspace_id", "profile_id"),
        UniqueConstraint("workspace_id", "push_token", name="devices_push_token_key", deferrable=True,
                         initially="DEFERRED"),
        {"schema": SCHEMA},
    )

    workspace_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    device_id: Mapped[str] = mapped_column(String(512), primary_key=True)
    profile_id: Mapped[str] = mapped_column(String(64))
    platform: Mapped[str | None] = mapped_column(String(16))
    app: Mapped[str | None] = mapped_column(String(256))
    app_version: Mapped[str | None] = mapped_column(String(256))
    os_version: Mapped[str | None] = mapped_column(String(256))
    model: Mapped[str | None] = mapped_column(String(256))
    locale: Mapped[str | None] = mapped_column(String(256))
    time_zone: Mapped[str | None] = mapped_column(String(256))
    push_token: Mapped[str | None] = mapped_column(String(4096))
    dead_token: Mapped[str | None] = mapped_column(String(4096))
    push_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    last_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    times: Mapped[dict[str, str]] = mapped_column(JSONB, default=dict)


class CatalogueEntry(Base):
    """A custom attribute (a trait) of a workspace's users: its inferred type, when seen, a few examples."""

    __tablename__ = "attribute_catalogue"
    __table_args__ = {"schema": SCHEMA}

    workspace_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(512), primary_key=True)
    type: Mapped[str] = mapped_column(String(16))
    first_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    examples: Mapped[list[Any]] = mapped_column(JSONB, default=list)
