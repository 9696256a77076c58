"""Dispatcher API shapes."""

from datetime import datetime

from pydantic import BaseModel


class DeliveryOut(BaseModel):
    send_id: str
    campaign_id: str
    channel: str
    status: str
    reason: str | None
    attempts: int
    recipient: str | None
    subject: str | None
    sent_at: datetime | None
    created_at: datetime
    updated_at: datetime


class DeliveryList(BaseModel):
    messages: list[DeliveryOut]
