"""Dispatcher API shapes."""

from datetime import datetime
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from kernel.contracts import DeliveryStatus
from services.dispatcher import credentials


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


class ChannelList(BaseModel):
    channels: list[ApnsChannelOut | FcmChannelOut]
