"""The inbox table: one rendered in-app message or content card per send, in its user's feed until it expires
or is dismissed (an in-app message also leaves once seen)."""

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, DateTime, Index, String
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from kernel.db import Base
from services.dispatcher.models import SCHEMA


class InboxMessage(Base):
    """A message in a user's feed: `send_id` is its id (so a redelivered send stores it once), `content` is what
    the app shows, rendered for the user when it was sent."""

    __tablename__ = "inbox_messages"
    __table_args__ = (
        Index("inbox_messages_feed", "workspace_id", "profile_id", "sent_at"),
        {"schema": SCHEMA},
    )

    send_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(String(64))
    profile_id: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[str | None] = mapped_column(String(512))
    campaign_id: Mapped[str] = mapped_column(String(64))
    channel: Mapped[str] = mapped_column(String(16))  # in_app | content_card
    variant: Mapped[str | None] = mapped_column(String(64))
    content: Mapped[dict[str, Any]] = mapped_column(JSONB)
    pinned: Mapped[bool] = mapped_column(Boolean, default=False)
    sent_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    viewed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    clicked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    dismissed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
