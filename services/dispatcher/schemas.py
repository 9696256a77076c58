"""Dispatcher API shapes."""

from datetime import datetime

from pydantic import BaseModel, Field

from kernel.contracts import DeliveryStatus


class DeliveryOut(BaseModel):
    send_id: str
    campaign_id: str
    channel: str
    status: DeliveryStatus
    reason: str | None
    reason_code: str | None = None
    attempts: int
    next_attempt_at: datetime | None = None
    recipient: str | None
    subject: str | None
    sent_at: datetime | None
    created_at: datetime
    updated_at: datetime


class DeliveryList(BaseModel):
    messages: list[DeliveryOut]


class DeliveryLookup(BaseModel):
    """The sends whose deliveries the gateway wants: one page of a user's sends."""

    send_ids: list[str] = Field(max_length=500)
