"""Dispatcher API shapes."""

import re
from datetime import datetime
from typing import Annotated, Any, Literal

import orjson
import phonenumbers
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from kernel.contracts import DeliveryStatus
from services.dispatcher import credentials
from services.dispatcher import domain as dispatch_rules


class PushAttemptOut(BaseModel):
    """One device's part of a push send."""

    model_config = ConfigDict(from_attributes=True)

    device_id: str
    platform: str | None
    service: str | None = Field(description="apns or fcm")
    status: Literal["sent", "failed", "skipped", "retrying"]
    reason_code: str | None
    reason: str | None
    attempts: int
    sent_at: datetime | None


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
    segments: int | None = Field(None, description="an SMS: the segments (billed messages) it took")
    encoding: str | None = Field(None, description="an SMS: GSM-7 or UCS-2")
    sent_at: datetime | None
    created_at: datetime
    updated_at: datetime
    devices: list[PushAttemptOut] | None = Field(None, description="a push send's devices, each attempted on its own")


class DeliveryList(BaseModel):
    messages: list[DeliveryOut]


class DeliveryLookup(BaseModel):
    """The sends whose deliveries the gateway wants: one page of a user's sends."""

    send_ids: list[str] = Field(max_length=500)


# --- channel credentials ------------------------------------------------------------------

AppId = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,64}$"),
    Field(description="the app these credentials are for (a campaign's `app_id`); omitted: every app of the workspace"),
]
DeviceApp = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=256),
    Field(description="only devices whose SDK reports this app name (`context.app.name`) are pushed with these "
          "credentials; omitted: every device of the platform"),
]


class ApnsChannelIn(BaseModel):
    """APNs token authentication: the team's `.p8` signing key, its key id, the team id and the app's bundle id."""

    model_config = ConfigDict(extra="forbid")

    app_id: AppId | None = None
    device_app: DeviceApp | None = None
    team_id: str = Field(description="the 10-character Apple Developer team id")
    key_id: str = Field(description="the 10-character id of the APNs authentication key")
    private_key: str = Field(
        max_length=10_000, description="the `.p8` file's contents (PEM); write-only, never returned"
    )
    topic: str = Field(max_length=255, description="the app's bundle id, e.g. com.example.shop")
    environment: Literal["production", "sandbox"] = Field(
        "production", description="`sandbox` for development builds (Xcode), `production` for TestFlight and the App Store"
    )

    @field_validator("team_id", "key_id")
    @classmethod
    def _apple_id(cls, value: str) -> str:
        if not credentials.APPLE_ID.fullmatch(value):
            raise ValueError("must be Apple's 10-character id: upper-case letters and digits")
        return value

    @field_validator("topic")
    @classmethod
    def _bundle_id(cls, value: str) -> str:
        if not credentials.BUNDLE_ID.fullmatch(value):
            raise ValueError("must be a bundle id such as com.example.shop")
        return value

    @field_validator("private_key")
    @classmethod
    def _signing_key(cls, value: str) -> str:
        if problem := credentials.apns_key_problem(value):
            raise ValueError(problem)
        return value.strip() + "\n"


class FcmChannelIn(BaseModel):
    """FCM HTTP v1: a Google Cloud service account's key file (JSON) for the Firebase project."""

    model_config = ConfigDict(extra="forbid")

    app_id: AppId | None = None
    device_app: DeviceApp | None = None
    service_account: dict[str, Any] = Field(
        description="the service account's key file, as its JSON object (or that JSON as a string); write-only"
    )

    @field_validator("service_account", mode="before")
    @classmethod
    def _json_text(cls, value: Any) -> Any:
        if isinstance(value, str):
            if len(value) > 20_000:
                raise ValueError("is longer than a service account key file")
            try:
                value = orjson.loads(value)
            except orjson.JSONDecodeError:
                raise ValueError("is not JSON: give the key file's object, or its text") from None
        return value

    @field_validator("service_account")
    @classmethod
    def _usable(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            written = orjson.dumps(value)
        except orjson.JSONEncodeError:  # a number past 64 bits, a lone surrogate: no key file holds those
            raise ValueError("is not a service account key file (it holds values JSON cannot store)") from None
        if len(written) > 20_000:
            raise ValueError("is longer than a service account key file")
        if problems := credentials.service_account_problems(value):
            raise ValueError("; ".join(f"`{name}` {problem}" for name, problem in problems))
        return value


class ApnsChannelOut(BaseModel):
    """An APNs configuration as stored; the private key is never shown."""

    kind: Literal["apns"] = "apns"
    app_id: str | None
    device_app: str | None = None
    team_id: str
    key_id: str
    topic: str
    environment: Literal["production", "sandbox"]
    private_key_set: bool = Field(True, description="the signing key is stored (write-only)")
    updated_at: datetime


class FcmChannelOut(BaseModel):
    """An FCM configuration as stored; the service account's private key is never shown."""

    kind: Literal["fcm"] = "fcm"
    app_id: str | None
    device_app: str | None = None
    project_id: str
    client_email: str
    private_key_id: str | None = None
    token_uri: str
    private_key_set: bool = Field(True, description="the service account key is stored (write-only)")
    updated_at: datetime


_HOST = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$|^\[?[0-9A-Fa-f:.]+\]?$")


def _sender(value: str | None) -> str | None:
    if value is not None and (problem := dispatch_rules.sender_problem(value)):
        raise ValueError(problem)
    return value


class EmailChannelIn(BaseModel):
    """A workspace's (or an app's) SMTP server and default sender; the password is write-only."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    app_id: AppId | None = None
    host: str = Field(max_length=253, description="the SMTP server's host name, e.g. smtp.sendgrid.net")
    port: int = Field(587, ge=1, le=65535, description="587 for STARTTLS submission, 465 for implicit TLS")
    username: str | None = Field(None, max_length=320, description="the SMTP login (none: no login)")
    password: str | None = Field(None, max_length=4096, description="the SMTP password or API key; write-only, never returned")
    tls: Literal["starttls", "tls", "none"] = Field(
        "starttls", description="`starttls` (upgrade on connect, port 587), `tls` (implicit TLS, port 465) or `none` (a local relay)"
    )
    from_address: str = Field(
        alias="from", max_length=998, description="the From: of every email whose campaign names none, e.g. `Shop <hi@shop.example>`"
    )
    reply_to: str | None = Field(None, max_length=998, description="the Reply-To: of every email whose campaign names none")

    @field_validator("host")
    @classmethod
    def _a_host(cls, value: str) -> str:
        if not _HOST.fullmatch(value):
            raise ValueError("must be a host name or an IP address, nothing else (no scheme, port or path)")
        return value

    @field_validator("username", "password")
    @classmethod
    def _one_line(cls, value: str | None) -> str | None:
        if value is not None and (any(c in value for c in "\r\n\x00") or not value):
            raise ValueError("must be non-empty text on one line")
        return value

    @field_validator("from_address", "reply_to")
    @classmethod
    def _an_address(cls, value: str | None) -> str | None:
        return _sender(value)

    @model_validator(mode="after")
    def _login_whole(self) -> "EmailChannelIn":
        if (self.username is None) != (self.password is None):
            raise ValueError("give both `username` and `password` for an SMTP login, or neither")
        return self


class EmailChannelOut(BaseModel):
    """An SMTP configuration as stored; the password is never shown."""

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    kind: Literal["email"] = "email"
    app_id: str | None
    host: str
    port: int
    username: str | None = None
    tls: Literal["starttls", "tls", "none"]
    from_address: str = Field(alias="from")
    reply_to: str | None = None
    password_set: bool = Field(description="an SMTP password is stored (write-only)")
    updated_at: datetime


ACCOUNT_SID = re.compile(r"AC[0-9a-f]{32}")
MESSAGING_SERVICE_SID = re.compile(r"MG[0-9a-f]{32}")


class SmsChannelIn(BaseModel):
    """A Twilio (or Twilio-compatible) account: its SID, its auth token (write-only), and the sender: a number or a
    messaging service."""

    model_config = ConfigDict(extra="forbid")

    app_id: AppId | None = None
    account_sid: str = Field(description="the account SID, AC followed by 32 hex digits")
    auth_token: str = Field(max_length=128, description="the account's auth token; write-only, never returned")
    from_number: str | None = Field(None, max_length=32, description="the sending number (E.164), or")
    messaging_service_sid: str | None = Field(None, description="a messaging service (MG followed by 32 hex digits) that picks the number")

    @field_validator("account_sid")
    @classmethod
    def _account(cls, value: str) -> str:
        if not ACCOUNT_SID.fullmatch(value):
            raise ValueError("must be a Twilio account SID: AC followed by 32 lower-case hex digits")
        return value

    @field_validator("auth_token")
    @classmethod
    def _token(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9]{16,128}", value):
            raise ValueError("must be the account's auth token (letters and digits)")
        return value

    @field_validator("messaging_service_sid")
    @classmethod
    def _service(cls, value: str | None) -> str | None:
        if value is not None and not MESSAGING_SERVICE_SID.fullmatch(value):
            raise ValueError("must be a messaging service SID: MG followed by 32 lower-case hex digits")
        return value

    @field_validator("from_number")
    @classmethod
    def _number(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            parsed = phonenumbers.parse(value, None)
        except phonenumbers.NumberParseException:
            raise ValueError("must be a phone number in E.164, e.g. +14155550123") from None
        if not phonenumbers.is_valid_number(parsed):
            raise ValueError("is not a valid phone number")
        return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)

    @model_validator(mode="after")
    def _one_sender(self) -> "SmsChannelIn":
        if (self.from_number is None) == (self.messaging_service_sid is None):
            raise ValueError("give exactly one of `from_number` and `messaging_service_sid`")
        return self


class SmsChannelOut(BaseModel):
    """An SMS configuration as stored; the auth token is never shown."""

    kind: Literal["sms"] = "sms"
    app_id: str | None
    account_sid: str
    from_number: str | None = None
    messaging_service_sid: str | None = None
    auth_token_set: bool = Field(True, description="the auth token is stored (write-only)")
    inbound_url: str = Field(description="where to point the number's (or messaging service's) incoming-message "
                             "webhook, under the gateway's public URL, for STOP, START and HELP")
    updated_at: datetime


class SmsInbound(BaseModel):
    """An incoming text as the gateway relays it: the URL Twilio called, its form parameters and its signature."""

    url: str = Field(max_length=4096)
    params: list[tuple[str, str]] = Field(max_length=200)
    signature: str | None = Field(None, max_length=200)


class SmsInboundAnswer(BaseModel):
    keyword: str | None = Field(description="stop, start or help; none for any other text")
    reply: str | None = Field(description="the text to answer with, if any")
    user_id: str | None = Field(description="whose timeline the keyword went on (the user last texted at the number)")


class ChannelList(BaseModel):
    channels: list[ApnsChannelOut | FcmChannelOut | EmailChannelOut | SmsChannelOut]


# --- engagement from public links, and test sends ---------------------------------------------


class EngagementIn(BaseModel):
    """What a public link the gateway verified says happened: an open, a click (with the link's address), or an
    unsubscribe, of one send."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["open", "click", "unsubscribe"]
    send_id: Annotated[str, Field(min_length=1, max_length=128)]
    user_id: str | None = None
    channel: Annotated[str, Field(max_length=16)]
    url: Annotated[str, Field(max_length=4096)] | None = None
    link: Annotated[int, Field(ge=0, le=10_000)] | None = None
    group_id: Annotated[str, Field(max_length=128)] | None = None


class EngagementOut(BaseModel):
    """What the dispatcher recorded: the event's name (None for a send it does not know) and, for an unsubscribe,
    the subscription state the profiles service now holds."""

    recorded: str | None
    state: str | None = None


class TestSendIn(BaseModel):
    """A message sent once, now, through the channel's real provider, to one user (`user_id`) or one address:
    an email address, a phone number, or a device's push token. Nothing is counted or put on a timeline."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    channel: Literal["email", "push", "sms", "webhook"]
    message: dict[str, Any] = Field(description="the message as a campaign of this channel gives it (Liquid included)")
    user_id: Annotated[str, Field(min_length=1, max_length=512)] | None = None
    address: Annotated[str, Field(min_length=1, max_length=320)] | None = Field(
        None, description="email: an address; sms: a phone number; push: a device token (APNs hex or FCM)"
    )
    platform: Literal["ios", "android", "web"] | None = Field(None, description="push to `address`: the device's platform")

    @model_validator(mode="after")
    def _one_recipient(self) -> "TestSendIn":
        if self.channel == "webhook":
            if self.address is not None:
                raise ValueError("a webhook goes to the message's url: give `user_id` (whose data it renders), not `address`")
        elif (self.user_id is None) == (self.address is None):
            raise ValueError("give exactly one of `user_id` and `address`")
        return self


class TestDeviceOut(BaseModel):
    device_id: str
    platform: str | None
    service: str | None
    status: str
    reason_code: str | None
    reason: str | None
    provider_response: str | None


class TestSendOut(BaseModel):
    """How the test send went: the provider's answer, or why it was not sent."""

    status: Literal["sent", "failed", "skipped", "retry"] = Field(description="retry: a transient failure (try again)")
    reason_code: str
    reason: str | None
    recipient: str | None
    provider_response: str | None
    devices: list[TestDeviceOut] = Field(default_factory=list)
