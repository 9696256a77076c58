"""Scheduler API shapes: action-based campaigns, checked when saved so that what is stored can be sent.

A campaign that passes these checks can be stored (PostgreSQL refuses NUL in text and jsonb; numbers
stay where every JSON reader agrees), fits on the bus (a message of at most `MAX_MESSAGE_BYTES`, far
below NATS's 1 MiB payload with the triggering event added) and can go out: its templates parse and
stay within the render limits where their literals already say (`services.templates`), its `from`
is one address, its webhook headers cannot break the request, and its webhook URL is not an address
Herald refuses to reach (literal IPs and `localhost`; names are judged at send time, by what they
resolve to). Each refusal is a 422 whose `loc` names the field.
"""

import math
import re
from collections.abc import Iterator
from datetime import datetime
from functools import lru_cache
from typing import Annotated, Any, Literal
from zoneinfo import available_timezones

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from kernel.contracts import (
    Channel,
    ContentCardContent,
    EmailContent,
    InAppContent,
    PropertyCondition,
    PushContent,
    SendStatus,
    SmsContent,
    WebhookContent,
)
from kernel.limits import MAX_DEPTH, MAX_SAFE_INTEGER
from kernel.settings import WebhookSettings
from services import templates
from services.dispatcher import domain as dispatch_rules
from services.scheduler.delivery import schemas as delivery_schemas
from services.scheduler.domain import CampaignStatus, EntryKind, Schedule, entry_kind, is_engagement_event
from services.scheduler.results.schemas import ConversionGoal, ExperimentIn

MAX_MESSAGE_BYTES = 128 * 1024  # the message as JSON: it travels in every SendRequested
MAX_EVENT_NAME = 512  # a trigger or exception event's name
MAX_CONDITIONS = 50
MAX_CANCEL_ON = 100
MAX_HEADERS = 100
_SURROGATE = re.compile("[\ud800-\udfff]")

Loc = tuple[str | int, ...]
Problem = tuple[Loc, str, str]  # where, error type, message
EventName = Annotated[str, Field(min_length=1, max_length=MAX_EVENT_NAME)]


@lru_cache(maxsize=1)
def webhook_policy() -> dispatch_rules.WebhookPolicy:
    """The operator's allow-list (`HERALD_WEBHOOK_ALLOWED_HOSTS`), read once, as the dispatcher reads it."""
    return dispatch_rules.WebhookPolicy.parse(WebhookSettings().webhook_allowed_hosts)


class Trigger(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event: EventName = Field(description="the event that starts the campaign for a user")
    where: list[PropertyCondition] = Field(
        default_factory=list, max_length=MAX_CONDITIONS,
        description="conditions on the event's properties, in the segments' grammar (docs/segments.md)",
    )
    allow_engagement_events: bool = Field(
        default=False,
        description="needed to trigger on Herald's own engagement events ($message_opened, …); a campaign is never "
        "triggered by its own sends' events",
    )

    @model_validator(mode="after")
    def _engagement_only_when_asked(self) -> "Trigger":
        if is_engagement_event(self.event) and not self.allow_engagement_events:
            raise PydanticCustomError(
                "engagement_event",
                "{event} is one of Herald's own engagement events: set allow_engagement_events to trigger on it",
                {"event": self.event},
            )
        return self


class ExceptionEvent(BaseModel):
    """An exception event: a name (`"Order Completed"`: any such event cancels a pending send), or
    `{"event": "Order Completed", "where": [...]}` (only one whose properties satisfy every condition)."""

    model_config = ConfigDict(extra="forbid")

    event: EventName
    where: list[PropertyCondition] = Field(default_factory=list, max_length=MAX_CONDITIONS)

    @model_validator(mode="before")
    @classmethod
    def _a_name_or_conditions(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"event": data}
        if not isinstance(data, dict):
            raise ValueError('an exception event is a name or {"event": name, "where": [conditions]}')
        return data

    def stored(self) -> str | dict[str, Any]:
        """As the campaign keeps it: the plain name when it has no conditions (the shape campaigns always had)."""
        return self.model_dump(mode="json") if self.where else self.event


SegmentId = Annotated[str, Field(min_length=1, max_length=64)]
MAX_AUDIENCE_SEGMENTS = 20


class Audience(BaseModel):
    """Who a campaign may reach: members of any of `segment_ids` (and `segment_id`, the first shape), none of
    `exclude_segment_ids`. A scheduled or API-triggered campaign without an audience reaches every user."""

    model_config = ConfigDict(extra="forbid")

    segment_id: str | None = Field(default=None, max_length=64)
    segment_ids: list[SegmentId] = Field(default_factory=list, max_length=MAX_AUDIENCE_SEGMENTS)
    exclude_segment_ids: list[SegmentId] = Field(default_factory=list, max_length=MAX_AUDIENCE_SEGMENTS)

    def included(self) -> list[str]:
        """Every segment a user must be in one of (none: anyone)."""
        return list(dict.fromkeys([*([self.segment_id] if self.segment_id else []), *self.segment_ids]))

    @model_validator(mode="after")
    def _not_both(self) -> "Audience":
        if both := set(self.included()) & set(self.exclude_segment_ids):
            raise PydanticCustomError(
                "segment_both_ways", "{segments} both included and excluded", {"segments": ", ".join(sorted(both))}
            )
        return self


Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


class Repeat(BaseModel):
    """How a schedule repeats: every day, every week on `days`, or every month on the start's day of the month."""

    model_config = ConfigDict(extra="forbid")

    every: Literal["day", "week", "month"]
    days: list[Weekday] | None = Field(
        default=None, min_length=1, max_length=7, description="week only: the days it sends on (default: the start's)"
    )

    @model_validator(mode="after")
    def _days_only_weekly(self) -> "Repeat":
        if self.days is not None and self.every != "week":
            raise PydanticCustomError("days_not_weekly", "days are for `every: week` only", {})
        if self.days is not None and len(set(self.days)) != len(self.days):
            raise PydanticCustomError("days_repeated", "each day at most once", {})
        return self


class ScheduleIn(BaseModel):
    """When a scheduled campaign sends: `at` a wall-clock time (no offset), in each user's own time zone when
    `local_time`, else in `time_zone` (default UTC); once, or repeating."""

    model_config = ConfigDict(extra="forbid")

    at: datetime = Field(description="the (first) wall-clock time, e.g. 2026-12-01T09:00:00")
    local_time: bool = Field(default=False, description="at that time in each user's time zone (workspace default without one)")
    time_zone: str | None = Field(default=None, max_length=64, description="an IANA time zone for `at` (not with local_time)")
    repeat: Repeat | None = None

    @field_validator("at")
    @classmethod
    def _wall_clock(cls, value: datetime) -> datetime:
        if value.tzinfo is not None:
            raise ValueError("give a wall-clock time without an offset (e.g. 2026-12-01T09:00:00) and, if needed, time_zone")
        return value.replace(second=0, microsecond=0) if value.second == 0 and value.microsecond == 0 else value

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is not None and value not in available_timezones():
            raise ValueError(f"unknown time zone {value!r}: an IANA name such as Europe/Berlin")
        return value

    @model_validator(mode="after")
    def _one_zone(self) -> "ScheduleIn":
        if self.local_time and self.time_zone is not None:
            raise PydanticCustomError(
                "zone_with_local_time", "local_time sends in each user's time zone: leave time_zone out", {}
            )
        return self

    def rules(self) -> Schedule:
        """The schedule as the domain computes occurrences with."""
        return Schedule.stored(self.model_dump(mode="json"))


class SegmentEntry(BaseModel):
    """Send when a user enters this segment."""

    model_config = ConfigDict(extra="forbid")

    segment_id: SegmentId


class EmailMessage(EmailContent):
    """The contract's email content; `CampaignIn` checks its templates and sender."""


class WebhookMessage(WebhookContent):
    """The contract's webhook request; `CampaignIn` checks its URL, headers and body templates."""


class PushMessage(PushContent):
    """The contract's push; `CampaignIn` checks every template in it."""


class SmsMessage(SmsContent):
    """The contract's text; `CampaignIn` checks its template."""


class InAppMessage(InAppContent):
    """The contract's in-app message; `CampaignIn` checks every template in it."""


class ContentCardMessage(ContentCardContent):
    """The contract's content card; `CampaignIn` checks every template in it."""


ChannelMessage = EmailMessage | WebhookMessage | PushMessage | SmsMessage | InAppMessage | ContentCardMessage
SHAPES: dict[str, type[ChannelMessage]] = {
    "email": EmailMessage, "webhook": WebhookMessage, "push": PushMessage, "sms": SmsMessage,
    "in_app": InAppMessage, "content_card": ContentCardMessage,
}
INBOX_SETTINGS = {"layout", "pinned", "expires_at", "ttl_hours"}  # the in-app and card fields that are not templates


APP_CHANNELS = ("push", "email", "sms")  # channels whose credentials (and, for push, devices) may be an app's own


SUBSCRIPTION_GROUP_ID = r"^sg_[A-Za-z0-9_-]{1,61}$"  # the profiles service's subscription group ids


class CampaignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a typo (`"delay"`) is a 422 naming it, never a default kept

    name: str = Field(min_length=1, max_length=200)
    channel: Channel
    trigger: Trigger | None = Field(default=None, description="action-based: the event that enters a user")
    schedule: ScheduleIn | None = Field(default=None, description="scheduled: when it sends to its audience")
    segment_entry: SegmentEntry | None = Field(default=None, description="enters a user when they enter this segment")
    reeligible_after_days: int | None = Field(
        default=None, ge=0, le=3650,
        description="a user enters again only this many days after their last entry (default: every entry sends)",
    )
    max_sends_per_user: int | None = Field(
        default=None, ge=1, le=10_000, description="at most this many entries send per user (1: once per user; default: no cap)"
    )
    audience: Audience | None = None
    delay_seconds: int = Field(default=0, ge=0, le=90 * 24 * 3600)
    cancel_on: list[ExceptionEvent] = Field(
        default_factory=list, max_length=MAX_CANCEL_ON,
        description="exception events that cancel a pending send: a name, or {event, where} to cancel only on some",
    )
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    app_id: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="push, email and sms: the app whose channel credentials (and, for push, devices) it uses (kept in "
        "the message as `app_id`)",
    )
    message: dict[str, Any]
    conversion: ConversionGoal | None = Field(
        default=None, description="the conversion goal: an event (with conditions) within hours after a send or holdout"
    )
    experiment: ExperimentIn | None = Field(default=None, description="pick the winning variant automatically after some hours")

    @model_validator(mode="after")
    def _results_consistent(self) -> "CampaignIn":
        if self.experiment is not None:
            if self.experiment.metric == "converted" and self.conversion is None:
                raise invalid([(("experiment", "metric"), "no_goal", "metric converted needs the campaign's conversion goal")])
            if len(getattr(self, "variants", None) or []) < 2:
                raise invalid([(("experiment",), "no_variants", "an experiment picks between variants: give at least two")])
        return self

    subscription_group_id: str | None = Field(
        default=None, pattern=SUBSCRIPTION_GROUP_ID,
        description="send only to users subscribed to this subscription group of the campaign's channel (a transactional "
        "campaign: to everyone who has not left it); docs/subscriptions.md",
    )
    # The delivery policy's fields (services/scheduler/delivery, docs/delivery.md).
    transactional: bool = Field(
        default=False, description="exempt from frequency caps, the global control group and quiet hours (not from its window)"
    )
    delivery: delivery_schemas.DeliveryIn | None = Field(default=None, description="a delivery window in each user's time zone; a rate per minute")
    variants: list[delivery_schemas.VariantIn] | None = Field(
        default=None, min_length=1, max_length=delivery_schemas.MAX_VARIANTS,
        description="experiment arms: their weights and control_percent add up to 100 (each user's arm is stable)",
    )
    control_percent: int = Field(default=0, ge=0, le=99, description="percent of the campaign's users held out (sent nothing)")
    locales: dict[delivery_schemas.LocaleKey, dict[str, Any]] | None = Field(
        default=None, max_length=delivery_schemas.MAX_LOCALES,
        description="the message per language (e.g. pt-BR, pt), chosen from the user's locale: pt-BR → pt → message",
    )

    @model_validator(mode="after")
    def _variants_and_locales(self) -> "CampaignIn":
        """Weights and control add up to 100; every variant's and locale's message is its channel's content."""
        problems = delivery_schemas.experiment_problems(self.variants, self.control_percent)
        for index, variant in enumerate(self.variants or []):
            variant.message = channel_content(self.channel, self.app_id, variant.message, ("variants", index, "message"), problems)
            for key, message in (variant.locales or {}).items():
                variant.locales[key] = channel_content(  # type: ignore[index]
                    self.channel, self.app_id, message, ("variants", index, "locales", key), problems
                )
        for key, message in (self.locales or {}).items():
            self.locales[key] = channel_content(self.channel, self.app_id, message, ("locales", key), problems)  # type: ignore[index]
        if problems:
            raise invalid(problems)
        return self

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
        entries = [name for name in ("trigger", "schedule", "segment_entry") if getattr(self, name) is not None]
        if len(entries) > 1:
            raise invalid([((entries[1],), "one_entry", f"a campaign enters users one way: give {' or '.join(entries)}, not both")])
        if self.schedule is not None and self.delay_seconds:
            raise invalid([(("delay_seconds",), "delay_with_schedule", "a scheduled campaign sends at its schedule: no delay")])
        return self

    @property
    def entry(self) -> EntryKind:
        """How this campaign enters users."""
        return entry_kind(self.trigger, self.schedule, self.segment_entry)

    @model_validator(mode="wrap")
    @classmethod
    def _storable_and_sendable(cls, data: Any, handler: ModelWrapValidatorHandler["CampaignIn"]) -> "CampaignIn":
        """Refuse what cannot be stored, then shape the message as its channel's content and refuse what cannot be sent."""
        if isinstance(data, dict) and (problems := list(storable_problems(data))):
            raise invalid(problems)
        campaign = handler(data)
        shape = SHAPES[campaign.channel]
        message = campaign.message
        if campaign.channel in APP_CHANNELS and campaign.app_id and isinstance(message, dict):
            message = {**message, "app_id": message.get("app_id") or campaign.app_id}
        try:
            content = shape.model_validate(message)
        except ValidationError as exc:
            raise nested("message", exc) from None
        if problems := message_problems(content):
            raise invalid(problems)
        campaign.message = content.model_dump(mode="json", by_alias=True, exclude_none=True)
        if len(orjson.dumps(campaign.message)) > MAX_MESSAGE_BYTES:
            raise invalid([(("message",), "message_too_large", f"the message is at most {MAX_MESSAGE_BYTES} bytes as JSON")])
        return campaign


def channel_content(channel: str, app_id: str | None, message: dict[str, Any], loc: Loc, problems: list[Problem]) -> dict[str, Any]:
    """A variant's or locale's message shaped as its channel's content (as `message` is), its problems added to `problems`."""
    if channel in APP_CHANNELS and app_id:
        message = {**message, "app_id": message.get("app_id") or app_id}
    try:
        content = SHAPES[channel].model_validate(message)
    except ValidationError as exc:
        problems += [((*loc, *e["loc"]), e["type"], e["msg"]) for e in exc.errors(include_url=False)]
        return message
    found = message_problems(content)
    problems += [((*loc, *where[1:]), kind, text) for where, kind, text in found]
    shaped = content.model_dump(mode="json", by_alias=True, exclude_none=True)
    if len(orjson.dumps(shaped)) > MAX_MESSAGE_BYTES:
        problems.append((loc, "message_too_large", f"a message is at most {MAX_MESSAGE_BYTES} bytes as JSON"))
    return shaped


def storable_problems(value: Any, loc: Loc = (), depth: int = 0) -> Iterator[Problem]:
    """What PostgreSQL or a JSON reader could not keep, wherever it is: NUL, lone surrogates, unbounded numbers, deep nesting."""
    if isinstance(value, str):
        if "\x00" in value:
            yield loc, "nul_character", "text cannot hold NUL (\\u0000): PostgreSQL cannot store it"
        elif _SURROGATE.search(value):
            yield loc, "invalid_text", "text holds a lone UTF-16 surrogate, which is not Unicode"
    elif isinstance(value, bool) or value is None:
        return
    elif isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            yield loc, "number_not_finite", "a number must be finite (not NaN or Infinity)"
        elif abs(value) > MAX_SAFE_INTEGER:
            yield loc, "number_too_large", f"a number must be between -{MAX_SAFE_INTEGER} and {MAX_SAFE_INTEGER}"
    elif isinstance(value, (dict, list)):
        if depth >= MAX_DEPTH:
            yield loc, "too_deep", f"arrays and objects nest at most {MAX_DEPTH} levels"
            return
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            if isinstance(key, str):
                yield from storable_problems(key, (*loc, key), depth + 1)
            yield from storable_problems(item, (*loc, key), depth + 1)


def message_problems(content: ChannelMessage) -> list[Problem]:
    """What would keep this message from going out, found before any user's data meets it."""
    found: list[Problem] = []
    if isinstance(content, InAppMessage | ContentCardMessage):  # every text and link is a template
        return body_template_problems(content.model_dump(exclude=INBOX_SETTINGS, exclude_none=True), ("message",))
    if isinstance(content, SmsMessage):
        return template_problems(content.body, ("message", "body"))
    if isinstance(content, PushMessage):
        return push_template_problems(content.model_dump(exclude={"app_id", "ttl", "priority"}, exclude_none=True), ("message",))
    if isinstance(content, EmailMessage):
        found += template_problems(content.subject, ("message", "subject"))
        for name in ("body", "html"):
            if (source := getattr(content, name)) is not None:
                found += template_problems(source, ("message", name))
        for name, value in (("from", content.from_address), ("reply_to", content.reply_to)):
            if value is not None and (problem := dispatch_rules.sender_problem(value)):
                found.append((("message", name), "invalid_sender", f"`{name}` {problem}"))
        return found
    host = content.url.host or ""
    if webhook_policy().refuses_literal(host):
        found.append((
            ("message", "url"),
            "blocked_address",
            f"webhooks may not reach {host}: a loopback, private, link-local, multicast, reserved or unspecified "
            "address, unless the operator allows it (HERALD_WEBHOOK_ALLOWED_HOSTS)",
        ))
    if len(content.headers) > MAX_HEADERS:
        found.append((("message", "headers"), "too_many_headers", f"at most {MAX_HEADERS} headers"))
    for name, value in content.headers.items():
        if problem := dispatch_rules.header_problem(name, value):
            found.append((("message", "headers", name), "invalid_header", problem))
    found += body_template_problems(content.body, ("message", "body"))
    return found


def body_template_problems(body: Any, loc: Loc) -> list[Problem]:
    """A webhook body's templates: the string body, or every string in an object body."""
    if isinstance(body, str):
        return template_problems(body, loc)
    items = body.items() if isinstance(body, dict) else enumerate(body) if isinstance(body, list) else ()
    return [problem for key, item in items for problem in body_template_problems(item, (*loc, key))]


def push_template_problems(value: Any, loc: Loc) -> list[Problem]:
    """Every text of a push is a template (title, body, links, data values, the ios and android overrides)."""
    if isinstance(value, str):
        return template_problems(value, loc)
    if isinstance(value, dict):
        return [problem for key, item in value.items() for problem in push_template_problems(item, (*loc, key))]
    return []


def template_problems(source: str, loc: Loc) -> list[Problem]:
    """One problem per thing wrong with this template (see services.templates.problems)."""
    return [(loc, "invalid_template", problem) for problem in templates.problems(source)]


def invalid(problems: list[Problem]) -> ValidationError:
    """A validation error with each problem at its own location, as FastAPI renders it (a 422)."""
    details: list[InitErrorDetails] = [
        {"type": PydanticCustomError(kind, message), "loc": loc, "input": None} for loc, kind, message in problems
    ]
    return ValidationError.from_exception_data(CampaignIn.__name__, details)


def nested(prefix: str, exc: ValidationError) -> ValidationError:
    """A nested model's validation error, located under `prefix`."""
    details: list[InitErrorDetails] = []
    for error in exc.errors():
        detail: InitErrorDetails = {"type": error["type"], "loc": (prefix, *error["loc"]), "input": error["input"]}
        if "ctx" in error:
            detail["ctx"] = error["ctx"]
        details.append(detail)
    return ValidationError.from_exception_data(CampaignIn.__name__, details)


class CampaignOut(BaseModel):
    id: str
    name: str
    status: CampaignStatus
    channel: str
    entry: EntryKind = Field(description="action (trigger), scheduled, segment_entry, or api (only when called)")
    trigger: dict[str, Any] | None
    schedule: dict[str, Any] | None = None
    segment_entry: dict[str, Any] | None = None
    reeligible_after_days: int | None = None
    max_sends_per_user: int | None = None
    audience: dict[str, Any] | None
    delay_seconds: int
    cancel_on: list[str | dict[str, Any]]
    starts_at: datetime | None
    ends_at: datetime | None
    message: dict[str, Any]
    subscription_group_id: str | None = None
    transactional: bool = False
    delivery: dict[str, Any] | None = None
    variants: list[dict[str, Any]] | None = None
    control_percent: int = 0
    locales: dict[str, dict[str, Any]] | None = None
    conversion: dict[str, Any] | None = None
    experiment: dict[str, Any] | None = None
    created_at: datetime
    updated_at: datetime


class SendOut(BaseModel):
    send_id: str
    campaign_id: str
    campaign_name: str | None
    channel: str
    status: SendStatus
    reason: str | None
    rule: str | None = Field(default=None, description="the delivery-policy rule that stopped (suppressed) or holds the send")
    variant: str | None = Field(default=None, description="the experiment arm: a variant's name, control or global_control")
    triggered_at: datetime
    due_at: datetime
    created_at: datetime


class SendList(BaseModel):
    messages: list[SendOut]


class CampaignPatch(BaseModel):
    """The fields to change: each given replaces the stored one whole (`message` too); null clears an optional one.
    The result is checked as a new campaign is."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    channel: Channel | None = None
    trigger: Trigger | None = None
    schedule: ScheduleIn | None = None
    segment_entry: SegmentEntry | None = None
    reeligible_after_days: int | None = Field(default=None, ge=0, le=3650)
    max_sends_per_user: int | None = Field(default=None, ge=1, le=10_000)
    audience: Audience | None = None
    delay_seconds: int | None = Field(default=None, ge=0, le=90 * 24 * 3600)
    cancel_on: list[ExceptionEvent] | None = Field(default=None, max_length=100)
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    app_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    message: dict[str, Any] | None = None
    subscription_group_id: str | None = Field(default=None, pattern=SUBSCRIPTION_GROUP_ID)
    transactional: bool | None = None
    delivery: delivery_schemas.DeliveryIn | None = None
    variants: list[delivery_schemas.VariantIn] | None = Field(default=None, min_length=1, max_length=delivery_schemas.MAX_VARIANTS)
    control_percent: int | None = Field(default=None, ge=0, le=99)
    locales: dict[delivery_schemas.LocaleKey, dict[str, Any]] | None = Field(default=None, max_length=delivery_schemas.MAX_LOCALES)
    conversion: ConversionGoal | None = None
    experiment: ExperimentIn | None = None


class CampaignDuplicate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200, description="the copy's name (default: \"<name> (copy)\")")


class CampaignList(BaseModel):
    campaigns: list[CampaignOut]
    next_cursor: str | None = Field(default=None, description="pass as `cursor` for the next page; null on the last page")


MAX_RECIPIENTS = 100


class Recipient(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: str = Field(min_length=1, max_length=512)
    properties: dict[str, Any] = Field(default_factory=dict, description="this recipient's `event.properties` (over the call's)")


class TriggerIn(BaseModel):
    """Enter users into an API-triggered campaign now: listed `recipients`, or its whole `audience`."""

    model_config = ConfigDict(extra="forbid")

    recipients: list[Recipient] | None = Field(default=None, min_length=1, max_length=MAX_RECIPIENTS)
    audience: bool = Field(default=False, description="true: everyone in the campaign's audience")
    properties: dict[str, Any] = Field(default_factory=dict, description="`event.properties` for every recipient")
    trigger_id: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9_.:-]{1,64}$",
        description="makes the call idempotent: the same id enters each user once, however often it is sent",
    )

    @model_validator(mode="wrap")
    @classmethod
    def _checked(cls, data: Any, handler: ModelWrapValidatorHandler["TriggerIn"]) -> "TriggerIn":
        if isinstance(data, dict) and (problems := list(storable_problems(data))):
            raise invalid(problems)
        body = handler(data)
        if (body.recipients is None) == (not body.audience):
            raise invalid([(("recipients",), "recipients_or_audience", "give recipients, or audience: true (one of the two)")])
        return body


class RecipientError(BaseModel):
    index: int
    user_id: str
    error: str


class TriggerOut(BaseModel):
    trigger_id: str
    entered: int = Field(description="users who entered by this call (sends scheduled)")
    suppressed: int = Field(description="users this call found not eligible again (recorded with the reason)")
    already: int = Field(description="users this trigger_id had already entered (a repeated call)")
    errors: list[RecipientError] = Field(default_factory=list, description="recipients that did not enter, and why")
