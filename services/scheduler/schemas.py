"""Scheduler API shapes: action-based campaigns."""

from datetime import datetime
from typing import Any, Literal

from liquid import Environment
from liquid.exceptions import LiquidError
from pydantic import BaseModel, Field, field_validator, model_validator

from kernel.contracts import Channel, EmailContent, PropertyCondition, SendStatus, WebhookContent

_templates = Environment()


def _check_template(source: str, where: str) -> None:
    try:
        _templates.parse(source)
    except LiquidError as exc:
        raise ValueError(f"{where} is not a valid Liquid template: {exc}") from exc


class Trigger(BaseModel):
    event: str = Field(min_length=1, description="the event that starts the campaign for a user")
    where: list[PropertyCondition] = Field(default_factory=list)


class Audience(BaseModel):
    segment_id: str | None = None


class EmailMessage(EmailContent):
    """The contract's email content, with its templates checked when the campaign is saved."""

    @model_validator(mode="after")
    def _templates_parse(self) -> "EmailMessage":
        _check_template(self.subject, "message.subject")
        _check_template(self.body, "message.body")
        return self


class WebhookMessage(WebhookContent):
    """The contract's webhook request, with a string body's template checked when the campaign is saved."""

    @model_validator(mode="after")
    def _templates_parse(self) -> "WebhookMessage":
        if isinstance(self.body, str):
            _check_template(self.body, "message.body")
        return self


class CampaignIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    channel: Channel
    trigger: Trigger
    audience: Audience | None = None
    delay_seconds: int = Field(default=0, ge=0, le=90 * 24 * 3600)
    cancel_on: list[str] = Field(default_factory=list, description="exception events that cancel a pending send")
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    message: dict[str, Any]

    @field_validator("starts_at", "ends_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("give a time zone, e.g. 2026-12-01T09:00:00Z")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "CampaignIn":
        if self.starts_at and self.ends_at and self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be after starts_at")
        shape = EmailMessage if self.channel == "email" else WebhookMessage
        self.message = shape.model_validate(self.message).model_dump(mode="json", by_alias=True, exclude_none=True)
        return self


class CampaignOut(BaseModel):
    id: str
    name: str
    status: Literal["draft", "active", "paused"]
    channel: str
    trigger: dict[str, Any]
    audience: dict[str, Any] | None
    delay_seconds: int
    cancel_on: list[str]
    starts_at: datetime | None
    ends_at: datetime | None
    message: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class CampaignStats(BaseModel):
    campaign_id: str
    triggered: int
    by_status: dict[str, int]


class SendOut(BaseModel):
    send_id: str
    campaign_id: str
    campaign_name: str | None
    channel: str
    status: SendStatus
    reason: str | None
    triggered_at: datetime
    due_at: datetime
    created_at: datetime


class SendList(BaseModel):
    messages: list[SendOut]
