"""Dispatcher tables: the delivery log (one row per send_id, so nothing is sent twice), each push device's
attempts, channel credentials, suppressed addresses, and the outbox."""

from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, Index, Integer, String, Text, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from kernel.db import Base
from kernel.outbox import outbox_table

SCHEMA = "dispatcher"


class Delivery(Base):
    """One send's delivery: its request, where it stands, and (while it is retried) when to try next.

    Status: new → sending → sent | failed | skipped | unknown, or sending → retrying → sending
    again at `next_attempt_at`, until a final answer or `give_up_at`.
    """

    __tablename__ = "deliveries"
    __table_args__ = (
        Index("deliveries_user", "workspace_id", "user_id"),
        Index("deliveries_retry_due", "next_attempt_at", postgresql_where=text("status = 'retrying'")),
        Index("deliveries_in_attempt", "updated_at", postgresql_where=text("status = 'sending'")),
        {"schema": SCHEMA},
    )

    send_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(String(64))
    campaign_id: Mapped[str] = mapped_column(String(64))
    profile_id: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[str | None] = mapped_column(String(512))
    channel: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(1000))
    reason_code: Mapped[str | None] = mapped_column(String(32))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    recipient: Mapped[str | None] = mapped_column(String(2000))
    subject: Mapped[str | None] = mapped_column(String(1000))
    provider_response: Mapped[str | None] = mapped_column(String(1000))
    segments: Mapped[int | None] = mapped_column(Integer)  # an SMS: how many segments it took
    encoding: Mapped[str | None] = mapped_column(String(8))  # an SMS: GSM-7 or UCS-2
    # The SendRequested as received, so a retry needs no bus message (None on rows from before retries were durable).
    request: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    give_up_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class PushAttempt(Base):
    """One device's part of a push send: it is attempted with its send and, once final, never again.

    Status: sent | failed | skipped (final), or retrying while its send is retried.
    """

    __tablename__ = "push_attempts"
    __table_args__ = {"schema": SCHEMA}

    send_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    device_id: Mapped[str] = mapped_column(String(512), primary_key=True)
    service: Mapped[str | None] = mapped_column(String(8))  # apns | fcm
    platform: Mapped[str | None] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    reason_code: Mapped[str | None] = mapped_column(String(32))
    reason: Mapped[str | None] = mapped_column(String(1000))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    provider_response: Mapped[str | None] = mapped_column(String(1000))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ChannelConfig(Base):
    """A workspace's credentials for one channel provider (`apns`, `fcm`), for one app or (`app_id` "") all.

    `settings` holds what may be shown; `secret` the sealed secret part (credentials.SecretBox), never shown.
    """

    __tablename__ = "channels"
    __table_args__ = {"schema": SCHEMA}

    workspace_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    app_id: Mapped[str] = mapped_column(String(64), primary_key=True, default="")
    settings: Mapped[dict[str, Any]] = mapped_column(JSONB)
    secret: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Suppression(Base):
    """An address a channel must not send to: an email address that hard-bounced, a phone number that texted STOP.

    A send to it is skipped with this reason; `address` is as the channel sends to it (a lower-cased email
    address, an E.164 number).
    """

    __tablename__ = "suppressions"
    __table_args__ = {"schema": SCHEMA}

    workspace_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    channel: Mapped[str] = mapped_column(String(16), primary_key=True)
    address: Mapped[str] = mapped_column(String(320), primary_key=True)
    reason_code: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str | None] = mapped_column(String(1000))
    send_id: Mapped[str | None] = mapped_column(String(64))  # the send whose answer suppressed it, if any
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


outbox = outbox_table(SCHEMA)

