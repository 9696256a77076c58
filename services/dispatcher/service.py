"""Dispatcher use cases: claim a send once, render it, deliver it, record the outcome, retry durably.

A send's whole life is its row in the delivery log. The bus message that brings it is acked once
the row exists and its first attempt is recorded; a transient failure (the provider, the network,
the profile lookup) is retried from the row at `next_attempt_at`, with backoff, for hours
(`<channel>_retry_hours`), without holding a JetStream message or a database lock meanwhile.
Only a permanent answer, or the end of that horizon, fails a send. An attempt that began and was
never recorded (its worker died) is judged `unknown`, never resent: the provider may have it.
"""

import asyncio
import hmac
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Literal

import structlog
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from prometheus_client import Counter
from pydantic import BaseModel, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from kernel import bus
from kernel.contracts import (
    CONTENT_BY_CHANNEL,
    DEFAULT_SNAPSHOT_PARTS,
    FINAL_DELIVERY_STATUSES,
    PROFILE_QUERY_SUBJECT,
    SNAPSHOT_PARTS,
    SUBSCRIPTION_CHANNELS,
    SUBSCRIPTION_SUBJECT,
    TOKEN_DEACTIVATION_SUBJECT,
    Event,
    ProfileQuery,
    ProfileSnapshot,
    SendRequested,
    SnapshotPart,
    SubscriptionChange,
    SubscriptionSet,
    TokenDeactivated,
    TokenDeactivation,
)
from kernel.db import unit_of_work
from kernel.errors import Conflict, NotFound, Unavailable, Unprocessable
from kernel.logging import bind_correlation_id
from kernel.outbox import Outbox
from services import templates
from services.dispatcher import credentials, domain, repository
from services.dispatcher.config import DispatcherSettings
from services.dispatcher.credentials import SecretBox
from services.dispatcher.domain import WebhookPolicy
from services.dispatcher.inbox import domain as inbox_rules
from services.dispatcher.inbox import service as inbox
from services.dispatcher.models import ChannelConfig, Delivery, Suppression
from services.dispatcher.providers import (
    ApnsCredentials,
    ApnsProvider,
    DeadToken,
    DeliveryError,
    FcmProvider,
    HardBounce,
    InvalidRecipient,
    SmtpProvider,
    SmtpServer,
    TwilioCredentials,
    TwilioProvider,
    WebhookProvider,
)
from services.dispatcher.schemas import (
    ApnsChannelIn,
    EmailChannelIn,
    EngagementIn,
    EngagementOut,
    FcmChannelIn,
    SmsChannelIn,
    SmsInbound,
    TestSendIn,
)

log = structlog.get_logger(__name__)

FINAL = FINAL_DELIVERY_STATUSES
OUTCOME_EVENTS = {
    "sent": "$message_sent",
    "delivered": "$message_delivered",
    "failed": "$message_failed",
    "bounced": "$message_bounced",
    "skipped": "$message_skipped",
    "unknown": "$message_unknown",
}
OUTCOMES = Counter(
    "herald_deliveries_total", "Sends that reached a final status, by channel, status and reason code",
    ["channel", "status", "reason"],
)
RETRIES = Counter(
    "herald_delivery_retries_total", "Attempts that failed transiently and were scheduled again", ["channel", "reason"]
)
RECORD_TRIES = 3  # a database blip while recording must not turn delivered sends into `unknown`


@dataclass
class Providers:
    email: SmtpProvider
    webhook: WebhookProvider
    apns: ApnsProvider | None = None
    fcm: FcmProvider | None = None
    sms: TwilioProvider | None = None


@dataclass
class DeviceResult:
    """What one device's part of a push attempt came to."""

    device_id: str
    platform: str | None
    service: str | None
    status: Literal["sent", "failed", "skipped", "retry"]
    code: str = "ok"
    reason: str | None = None
    response: str | None = None
    retry_after: float | None = None


@dataclass
class Result:
    """What one attempt came to; `code` is a short bounded label, `reason` the words for a person."""

    status: Literal["sent", "failed", "skipped", "retry"]
    code: str = "ok"
    reason: str | None = None
    recipient: str | None = None
    subject: str | None = None
    provider_response: str | None = None
    retry_after: float | None = None
    devices: list[DeviceResult] = field(default_factory=list)
    suppress: str | None = None  # an address the provider called undeliverable: later sends to it are skipped
    segments: domain.SmsSegments | None = None
    inbox: dict[str, Any] | None = None  # an in-app message or card: its feed row, stored when the send is recorded


@dataclass
class PushContext:
    """What push sends of one batch need, read once: devices (with tokens), credentials, and devices already done."""

    devices: dict[tuple[str, str], list[dict[str, Any]]]
    configs: dict[tuple[str, str, str], ChannelConfig]
    done: dict[str, dict[str, str]]  # send id -> device id -> final status


@dataclass
class AddressContext:
    """What email (and SMS) sends of one batch need, read once: the channel configurations of their workspaces
    and apps, and which of their addresses are suppressed (with why)."""

    configs: dict[tuple[str, str, str], ChannelConfig]
    suppressed: dict[tuple[str, str, str], Suppression]

    def config(self, workspace_id: str, app_id: str, kind: str) -> ChannelConfig | None:
        """The app's configuration of this kind, else the workspace's."""
        return self.configs.get((workspace_id, app_id, kind)) or self.configs.get((workspace_id, "", kind))


@dataclass(frozen=True)
class Claimed:
    """A send this worker holds for one attempt (its row is `sending` with this attempt number)."""

    send: SendRequested
    attempt: int
    correlation_id: str | None = None


@dataclass
class Dispatcher:
    """Everything delivering needs, opened by the lifespan."""

    sessions: async_sessionmaker[AsyncSession]
    nc: NATS
    js: JetStreamContext
    providers: Providers
    outbox: Outbox
    settings: DispatcherSettings
    # An attempt older than this was interrupted: at least the consumer's effective ack wait.
    interrupted_after_seconds: float = 30.0


def give_up_at(settings: DispatcherSettings, send: SendRequested, now: datetime) -> datetime:
    """When retrying this send stops."""
    return now + timedelta(hours=settings.retry_hours(send.channel))


async def claim(
    session: AsyncSession, sends: list[tuple[SendRequested, str | None]], settings: DispatcherSettings
) -> list[Claimed]:
    """Record each send (once, by its id) and claim the new ones for their first attempt.

    A send already known (being attempted, waiting for a retry, or decided) is left to whoever holds
    it: its row is durable, so this bus message has nothing more to do.
    """
    now = datetime.now(UTC)
    rows = await repository.lock_deliveries(
        session, [s for s, _ in sends], {s.send_id: give_up_at(settings, s, now) for s, _ in sends}
    )
    claimed: list[Claimed] = []
    for send, correlation_id in sends:
        delivery = rows[send.send_id]
        if delivery.status != "new" or any(c.send.send_id == send.send_id for c in claimed):
            continue
        delivery.status = "sending"
        delivery.attempts += 1
        delivery.updated_at = now
        claimed.append(Claimed(send, delivery.attempts, correlation_id))
    await session.flush()
    return claimed


async def deliver(d: Dispatcher, claimed: list[Claimed]) -> list[Delivery]:
    """Attempt each claimed send concurrently, each on its own, then record every outcome at once."""
    if not claimed:
        return []
    profiles = await _profiles(d.nc, _profile_parts([c.send for c in claimed]))
    pushes = [c.send for c in claimed if c.send.channel == "push"]
    push_context = await _push_context(d, pushes) if pushes else None
    addressed = [c.send for c in claimed if c.send.channel in ADDRESSED_CHANNELS]
    address_context = await _address_context(d, addressed, profiles) if addressed else None
    results = await asyncio.gather(*(_attempt_safely(d, c, profiles, push_context, address_context) for c in claimed))
    for tries in range(1, RECORD_TRIES + 1):
        try:
            async with unit_of_work(d.sessions) as session:
                recorded, staged = await record(session, d.outbox, list(zip(claimed, results, strict=True)), d.settings)
            break
        except Exception as exc:
            if tries == RECORD_TRIES:
                raise  # the attempts stay `sending` and are judged `unknown` once stale
            log.warning("delivery_record_retry", sends=len(claimed), error=repr(exc))
            await asyncio.sleep(tries)
    _report(recorded)
    await d.outbox.publish_after_commit(d.sessions, d.js, staged)
    return recorded


# What every snapshot holds: the traits (addresses: email, phone) and the subscriptions (the send policy).
ALWAYS_ASKED: frozenset[SnapshotPart] = frozenset(DEFAULT_SNAPSHOT_PARTS)


def _texts(value: Any) -> Iterator[str]:
    """Every text of a message (its templates), however deep in the content it is."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, BaseModel):
        for item in value.__dict__.values():
            yield from _texts(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _texts(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _texts(item)


def _profile_parts(sends: list[SendRequested]) -> dict[tuple[str, str], frozenset[SnapshotPart]]:
    """The parts of each profile's snapshot these sends render with: what is always needed, and what their
    templates read of `user` (analysed once per distinct message, templates.user_parts)."""
    wanted: dict[tuple[str, str], frozenset[SnapshotPart]] = {}
    for send in sends:
        read = templates.user_parts(tuple(_texts(send.message)))
        parts = ALWAYS_ASKED.union(p for p in SNAPSHOT_PARTS if p in read)
        key = (send.workspace_id, send.profile_id)
        wanted[key] = wanted[key] | parts if key in wanted else parts
    return wanted


async def _profiles(
    nc: NATS, wanted: dict[tuple[str, str], frozenset[SnapshotPart]]
) -> dict[tuple[str, str], ProfileSnapshot | Exception]:
    """Each profile's snapshot from the profiles service, with the parts asked, concurrently, or why it could not be had.

    Devices and computed values cost the profiles service reads that traits do not, so only what a
    message's templates read is asked for (every part, it cut dispatch by a fifth)."""

    async def one(workspace_id: str, profile_id: str) -> ProfileSnapshot | Exception:
        query = ProfileQuery(workspace_id=workspace_id, profile_id=profile_id,
                             parts=sorted(wanted[(workspace_id, profile_id)]))
        try:
            return await bus.request(nc, PROFILE_QUERY_SUBJECT, query, ProfileSnapshot)
        except Exception as exc:
            return exc

    ordered = sorted(wanted)
    return dict(zip(ordered, await asyncio.gather(*(one(*key) for key in ordered)), strict=True))


async def _push_context(d: Dispatcher, sends: list[SendRequested]) -> PushContext | Exception:
    """The devices, credentials and earlier device outcomes these push sends need, or why they could not be read."""
    try:
        async with unit_of_work(d.sessions) as session:
            devices = await repository.push_devices(session, {(s.workspace_id, s.profile_id) for s in sends})
            configs = await repository.channels_for(
                session, {(s.workspace_id, getattr(s.message, "app_id", None) or "") for s in sends}
            )
            earlier = await repository.push_attempts(session, [s.send_id for s in sends])
    except Exception as exc:
        log.warning("push_context_unavailable", sends=len(sends), error=repr(exc))
        return exc
    return PushContext(
        devices=devices,
        configs={(c.workspace_id, c.app_id, c.kind): c for c in configs},
        done={send_id: {a.device_id: a.status for a in rows if a.status in ("sent", "failed", "skipped")}
              for send_id, rows in earlier.items()},
    )


ADDRESSED_CHANNELS = ("email", "sms")  # channels that send to an address the profile holds, which may be suppressed


def address_of(send: SendRequested, profile: ProfileSnapshot | Exception) -> str | None:
    """Where a send of an addressed channel goes, as suppressions key it (None when it has no usable address)."""
    if isinstance(profile, Exception) or not profile.found:
        return None
    try:
        address = domain.phone_number(profile) if send.channel == "sms" else domain.email_address(profile)
    except domain.Undeliverable:
        return None
    return address.lower() if address else None


async def _address_context(
    d: Dispatcher, sends: list[SendRequested], profiles: dict[tuple[str, str], ProfileSnapshot | Exception]
) -> AddressContext | Exception:
    """The channel configurations and suppressions these sends need, or why they could not be read."""
    keys: set[tuple[str, str, str]] = {
        (s.workspace_id, s.channel, a) for s in sends if (a := address_of(s, profiles[(s.workspace_id, s.profile_id)]))
    }
    try:
        async with unit_of_work(d.sessions) as session:
            configs = await repository.channels_for(
                session, {(s.workspace_id, getattr(s.message, "app_id", None) or "") for s in sends}
            )
            suppressed = await repository.suppressions(session, keys)
    except Exception as exc:
        log.warning("address_context_unavailable", sends=len(sends), error=repr(exc))
        return exc
    return AddressContext(
        configs={(c.workspace_id, c.app_id, c.kind): c for c in configs},
        suppressed={(r.workspace_id, r.channel, r.address): r for r in suppressed},
    )


def subscription_check(send: SendRequested, profile: ProfileSnapshot) -> Result | None:
    """The send policy's first rule, before anything is rendered: skipped, with why, when the user's subscription
    states refuse it (domain.subscription_refusal); None when it may go on."""
    refusal = domain.subscription_refusal(
        send.channel, profile.subscriptions, send.transactional, send.subscription_group_id
    )
    return Result("skipped", *refusal) if refusal is not None else None


async def _attempt_safely(
    d: Dispatcher,
    claimed: Claimed,
    profiles: dict[tuple[str, str], ProfileSnapshot | Exception],
    push_context: PushContext | Exception | None = None,
    address_context: AddressContext | Exception | None = None,
) -> Result:
    """One attempt, bounded in time; whatever goes wrong is this send's outcome and no other's."""
    bind_correlation_id(claimed.correlation_id)  # its own task: the binding stays with this send
    send = claimed.send
    profile = profiles[(send.workspace_id, send.profile_id)]
    if isinstance(profile, Exception):
        return Result("retry", "profile_unavailable", f"profile lookup failed: {type(profile).__name__}")
    if (refused := subscription_check(send, profile)) is not None:
        return refused
    try:
        async with asyncio.timeout(d.settings.attempt_timeout_seconds):
            if send.channel == "push":
                if isinstance(push_context, Exception) or push_context is None:
                    return Result("retry", "devices_unavailable", "the user's devices or the channel credentials could not be read")
                return await attempt_push(d, send, profile, push_context)
            if send.channel == "email":
                if isinstance(address_context, Exception) or address_context is None:
                    return Result("retry", "channel_unavailable", "the email channel's settings or suppressions could not be read")
                return await attempt_email(d, send, profile, address_context)
            if send.channel == "sms":
                if isinstance(address_context, Exception) or address_context is None:
                    return Result("retry", "channel_unavailable", "the SMS channel's settings or suppressions could not be read")
                return await attempt_sms(d, send, profile, address_context)
            if send.channel in inbox_rules.INBOX_CHANNELS:
                return attempt_inbox(send, profile)
            return await attempt(send, profile, d.providers)
    except TimeoutError:
        return Result("retry", "attempt_timeout", f"the attempt took longer than {d.settings.attempt_timeout_seconds:g}s")
    except Exception as exc:  # a defect, not the user's data: fail this send, loudly, and keep the others
        log.exception("attempt_crashed", send_id=send.send_id, campaign_id=send.campaign_id)
        return Result("failed", "internal_error", f"internal error: {type(exc).__name__}")


async def attempt_email(d: Dispatcher, send: SendRequested, profile: ProfileSnapshot, context: AddressContext) -> Result:
    """Render and send one email over the workspace's SMTP server (or the process-wide relay), unless its address
    is suppressed; a hard bounce fails it and suppresses the address. No database work here."""
    if not profile.found:
        return Result("skipped", "profile_gone", "the user's profile no longer exists")
    try:
        to = domain.email_address(profile)
        if to is None:
            return Result("skipped", "no_address", "the user has no email address (trait `email`)")
        suppressed = context.suppressed.get((send.workspace_id, "email", to.lower()))
        if suppressed is not None:
            return Result("skipped", "suppressed", f"the address is undeliverable: {suppressed.reason}", to)
        config = context.config(send.workspace_id, getattr(send.message, "app_id", None) or "", "email")
        server, defaults = _smtp_server(d.settings, config)
        links = d.settings.links(send.workspace_id, send.send_id, send.user_id, "email", send.subscription_group_id)
        email = domain.render_email(send, profile, to, defaults.get("from"), defaults.get("reply_to"), links)
        response = await d.providers.email.send(email, send.send_id, server)
        return Result("sent", "ok", None, to, email.subject, response)
    except domain.Undeliverable as exc:
        return Result("skipped", exc.code, str(exc))
    except HardBounce as exc:
        return Result("failed", exc.code, str(exc), exc.address, suppress=exc.address.lower())
    except DeliveryError as exc:
        return Result("retry" if exc.transient else "failed", exc.code, str(exc), retry_after=exc.retry_after)


async def attempt_sms(d: Dispatcher, send: SendRequested, profile: ProfileSnapshot, context: AddressContext) -> Result:
    """Render and send one text to the user's number (E.164) over the workspace's Twilio account, unless the number
    opted out; an invalid number fails the send with why. No database work here."""
    if not profile.found:
        return Result("skipped", "profile_gone", "the user's profile no longer exists")
    try:
        to = domain.phone_number(profile)
    except domain.InvalidNumber as exc:
        return Result("failed", exc.code, str(exc))
    if to is None:
        return Result("skipped", "no_address", "the user has no phone number (trait `phone`)")
    suppressed = context.suppressed.get((send.workspace_id, "sms", to.lower()))
    if suppressed is not None:
        return Result("skipped", "suppressed", f"the number opted out: {suppressed.reason}", to)
    config = context.config(send.workspace_id, getattr(send.message, "app_id", None) or "", "sms")
    box = d.settings.secret_box()
    if config is None or box is None or d.providers.sms is None:
        return Result("skipped", "no_credentials", "no SMS credentials for this workspace (PUT /api/v1/channels/sms)", to)
    try:
        token = box.open(config.secret)["auth_token"]
    except credentials.SecretUnreadable:
        return Result("failed", "credentials_unreadable", "the stored SMS auth token is sealed under a key HERALD_SECRETS_KEY no longer holds")
    shown = config.settings
    account = TwilioCredentials(shown["account_sid"], token, shown.get("from_number"), shown.get("messaging_service_sid"))
    segments = None
    try:
        sms = domain.render_sms(send, profile, to)
        segments = sms.segments
        response = await d.providers.sms.send(account, to, sms.body)
        return Result("sent", "ok", None, to, provider_response=response, segments=segments)
    except domain.Undeliverable as exc:
        return Result("skipped", exc.code, str(exc), to)
    except InvalidRecipient as exc:
        return Result("failed", exc.code, str(exc), to, suppress=to.lower() if exc.opted_out else None, segments=segments)
    except DeliveryError as exc:
        return Result("retry" if exc.transient else "failed", exc.code, str(exc), to, retry_after=exc.retry_after,
                      segments=segments)


def _smtp_server(settings: DispatcherSettings, config: ChannelConfig | None) -> tuple[SmtpServer | None, dict[str, Any]]:
    """The SMTP server and default sender of a configuration; (None, {}) for the process-wide relay and sender."""
    if config is None:
        return None, {}
    shown = config.settings
    password = None
    if config.secret:
        box = settings.secret_box()
        if box is None:
            raise DeliveryError("the stored SMTP password needs HERALD_SECRETS_KEY, which this dispatcher is not given",
                                transient=False, code="credentials_unreadable")
        try:
            password = box.open(config.secret).get("password")
        except credentials.SecretUnreadable:
            raise DeliveryError("the stored SMTP password is sealed under a key HERALD_SECRETS_KEY no longer holds",
                                transient=False, code="credentials_unreadable") from None
    server = SmtpServer(shown["host"], shown["port"], shown.get("username"), password, shown["tls"])
    return server, {"from": shown.get("from"), "reply_to": shown.get("reply_to")}


def attempt_inbox(send: SendRequested, profile: ProfileSnapshot) -> Result:
    """Render an in-app message or content card for the user; recording the send puts it in their feed."""
    if not profile.found:
        return Result("skipped", "profile_gone", "the user's profile no longer exists")
    try:
        row = inbox.prepare(send, profile, datetime.now(UTC))
    except domain.Undeliverable as exc:
        return Result("skipped", exc.code, str(exc))
    return Result("sent", "ok", None, "in-app feed", inbox=row)


async def attempt(send: SendRequested, profile: ProfileSnapshot, providers: Providers) -> Result:
    """Render and deliver a webhook once; no database work here."""
    if not profile.found:
        return Result("skipped", "profile_gone", "the user's profile no longer exists")
    try:
        hook = domain.render_webhook(send, profile)
        response = await providers.webhook.send(hook, send.send_id)
        return Result("sent", "ok", None, hook.url, None, response)
    except domain.Undeliverable as exc:
        return Result("skipped", exc.code, str(exc))
    except DeliveryError as exc:
        return Result("retry" if exc.transient else "failed", exc.code, str(exc), retry_after=exc.retry_after)


PUSH_SERVICE_NAMES = {"apns": "APNs", "fcm": "FCM"}


async def attempt_push(d: Dispatcher, send: SendRequested, profile: ProfileSnapshot, context: PushContext) -> Result:
    """Push to each of the user's push-enabled devices for the campaign's app, each on its own; devices an
    earlier attempt finished are left alone. The send is sent when any device took it."""
    if not profile.found:
        return Result("skipped", "profile_gone", "the user's profile no longer exists")
    app_id = getattr(send.message, "app_id", None) or ""
    done = context.done.get(send.send_id, {})
    targets: list[tuple[dict[str, Any], str, ChannelConfig | None]] = []
    for device in context.devices.get((send.workspace_id, send.profile_id), []):
        kind = domain.push_service_of(device["push_token"])
        config = context.configs.get((send.workspace_id, app_id, kind)) or context.configs.get((send.workspace_id, "", kind))
        wanted_app = config.settings.get("device_app") if config is not None else None
        if wanted_app and device["app"] != wanted_app:
            continue  # a device of another app of the workspace
        if device["device_id"] not in done:
            targets.append((device, kind, config))
    if not targets and not done:
        return Result("skipped", "no_device", "the user has no push-enabled device for this app")
    results = list(await asyncio.gather(*(_push_one(d, send, profile, device, kind, config) for device, kind, config in targets)))
    return push_outcome(results, done)


async def _push_one(
    d: Dispatcher, send: SendRequested, profile: ProfileSnapshot, device: dict[str, Any], kind: str, config: ChannelConfig | None
) -> DeviceResult:
    """One device's push; whatever happens is this device's outcome."""
    platform = device["platform"] or ("ios" if kind == "apns" else "android")
    result = partial(DeviceResult, device["device_id"], platform, kind)
    name = PUSH_SERVICE_NAMES[kind]
    box = d.settings.secret_box()
    provider = d.providers.apns if kind == "apns" else d.providers.fcm
    if config is None or box is None or provider is None:
        return result("skipped", "no_credentials", f"no {name} credentials for this app (PUT /api/v1/channels/{kind})")
    try:
        secret = box.open(config.secret)
    except credentials.SecretUnreadable:
        return result("failed", "credentials_unreadable", f"the stored {name} credentials are sealed under a key HERALD_SECRETS_KEY no longer holds")
    now = datetime.now(UTC)
    token = device["push_token"]
    try:
        push = domain.render_push(send, profile, platform)
        if isinstance(provider, ApnsProvider):
            shown = config.settings
            apns = ApnsCredentials(shown["team_id"], shown["key_id"], secret["private_key"], shown["topic"], shown["environment"])
            apns_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"herald:{send.send_id}:{device['device_id']}"))
            response = await provider.send(apns, token, domain.apns_request(push, apns.topic, apns_id, now))
        else:
            response = await provider.send(secret["service_account"], domain.fcm_message(push, token, now))
        return result("sent", "ok", None, response)
    except domain.Undeliverable as exc:
        return result("skipped", exc.code, str(exc))
    except DeadToken as exc:
        return result("failed", exc.code, f"{exc}; {await _deactivate(d, send.workspace_id, token, exc.code)}")
    except DeliveryError as exc:
        return result("retry" if exc.transient else "failed", exc.code, str(exc), retry_after=exc.retry_after)


async def _deactivate(d: Dispatcher, workspace_id: str, token: str, code: str) -> str:
    """Ask the profiles service to stop pushing to a dead token; says how that went, for the device's record.

    Over request/reply, the one way services ask each other directly (DESIGN.md): the profiles HTTP route
    takes only what the gateway signed, and the dispatcher holds no key to sign with. If profiles does not
    answer, the next push to that token is refused again and asks again.
    """
    try:
        answer = await bus.request(
            d.nc, TOKEN_DEACTIVATION_SUBJECT, TokenDeactivation(workspace_id=workspace_id, token=token, reason=code),
            TokenDeactivated, timeout=2.0,
        )
    except Exception as exc:
        log.warning("token_deactivation_failed", workspace_id=workspace_id, reason_code=code, error=type(exc).__name__)
        return "the token could not be deactivated now (the profiles service did not answer); the next push asks again"
    return "the device's token is deactivated" if answer.deactivated else "no device holds the token any more"


def push_outcome(results: list[DeviceResult], done: dict[str, str]) -> Result:
    """A push send's outcome from its devices' (those done before included): any device retrying retries the
    send; else any device sent makes it sent; else the first failure fails it; else it is skipped."""
    statuses = [*done.values(), *(r.status for r in results)]
    counts = ", ".join(f"{statuses.count(s)} {s}" for s in ("sent", "retry", "failed", "skipped") if s in statuses)
    recipient = f"{len(statuses)} device{'s' if len(statuses) != 1 else ''}"
    retrying = [r for r in results if r.status == "retry"]
    if retrying:
        after = [r.retry_after for r in retrying if r.retry_after is not None]
        return Result("retry", retrying[0].code, f"{counts}; {retrying[0].reason}", recipient,
                      provider_response=counts, retry_after=max(after) if after else None, devices=results)
    if "sent" in statuses:
        problems = [r for r in results if r.status != "sent"]
        reason = f"{counts}; {problems[0].reason}" if problems else None
        return Result("sent", "ok", reason, recipient, provider_response=counts, devices=results)
    worst = next((r for r in results if r.status == "failed"), None) or (results[0] if results else None)
    if worst is None:  # every device was done before (an outcome recorded, its send interrupted): nothing to add
        return Result("failed" if "failed" in statuses else "skipped", "no_device", counts, recipient, provider_response=counts)
    return Result("failed" if worst.status == "failed" else "skipped", worst.code, f"{counts}; {worst.reason}", recipient,
                  provider_response=counts, devices=results)


def _device_row(delivery: Delivery, device: DeviceResult, now: datetime) -> dict[str, Any]:
    """A device's attempt as stored: retrying while its send is, failed if its send gave up."""
    status: str = device.status
    if status == "retry":
        status = "retrying" if delivery.status == "retrying" else "failed"
    return {
        "send_id": delivery.send_id, "device_id": device.device_id, "service": device.service, "platform": device.platform,
        "status": status, "reason_code": device.code, "reason": _fit("reason", device.reason), "attempts": 1,
        "provider_response": _fit("provider_response", device.response), "updated_at": now,
        "sent_at": now if status == "sent" else None,
    }


async def record(
    session: AsyncSession, outbox: Outbox, results: list[tuple[Claimed, Result]], settings: DispatcherSettings
) -> tuple[list[Delivery], list[int]]:
    """Store each attempt's result on its row, schedule retries, and stage the outcome events.

    Returns the rows recorded and the outbox ids to publish once this transaction has committed.
    A row that is no longer this attempt's (judged `unknown` meanwhile) is left as it is.
    """
    rows = await repository.get_deliveries(session, sorted({c.send.send_id for c, _ in results}))
    now = datetime.now(UTC)
    recorded: list[Delivery] = []
    device_rows: list[dict[str, Any]] = []
    suppressions: list[dict[str, Any]] = []
    feed_rows: list[dict[str, Any]] = []
    for claimed, result in results:
        delivery = rows[claimed.send.send_id]
        if delivery.status != "sending" or delivery.attempts != claimed.attempt:
            log.warning("attempt_outcome_superseded", send_id=delivery.send_id, status=delivery.status)
            continue
        _apply(delivery, claimed.send, result, now, settings)
        recorded.append(delivery)
        device_rows += [_device_row(delivery, device, now) for device in result.devices]
        if result.inbox is not None and delivery.status == "sent":
            feed_rows.append(result.inbox)
        if result.suppress:
            suppressions.append({
                "workspace_id": delivery.workspace_id, "channel": delivery.channel, "address": result.suppress[:320],
                "reason_code": result.code, "reason": _fit("reason", result.reason), "send_id": delivery.send_id,
                "created_at": now,
            })
    await session.flush()
    await repository.save_push_attempts(session, device_rows)
    await repository.suppress(session, suppressions)
    await inbox.store(session, feed_rows)
    return recorded, await _stage_outcomes(session, outbox, recorded)


async def _stage_outcomes(session: AsyncSession, outbox: Outbox, deliveries: list[Delivery]) -> list[int]:
    """Stage the outcome events of the final ones among these rows, in the caller's transaction."""
    events = [(e, _correlation(d)) for d in deliveries for e in outcome_events(d)]
    return await outbox.stage(session, [e for e, _ in events], [c for _, c in events])


def _apply(delivery: Delivery, send: SendRequested, result: Result, now: datetime, settings: DispatcherSettings) -> None:
    """One result onto its row: final, or a retry at its time, or failed once the horizon has passed."""
    delivery.updated_at = now
    delivery.reason, delivery.reason_code = _fit("reason", result.reason), result.code
    delivery.recipient = _fit("recipient", result.recipient) or delivery.recipient
    delivery.subject = _fit("subject", result.subject) or delivery.subject
    delivery.provider_response = _fit("provider_response", result.provider_response)
    if result.segments is not None:
        delivery.segments, delivery.encoding = result.segments.segments, result.segments.encoding
    if result.status != "retry":
        delivery.status, delivery.next_attempt_at = result.status, None
        if result.status == "sent":
            delivery.sent_at = now
        return
    next_at = domain.retry_at(
        now, delivery.attempts, settings.retry_base_seconds, settings.retry_max_interval_seconds, result.retry_after
    )
    deadline = delivery.give_up_at or give_up_at(settings, send, delivery.created_at or now)
    if next_at > deadline:
        delivery.status, delivery.next_attempt_at, delivery.reason_code = "failed", None, "retries_exhausted"
        delivery.reason = _fit(
            "reason", f"gave up after {delivery.attempts} attempts (retried until {deadline:%Y-%m-%d %H:%M} UTC): {result.reason}"
        )
        return
    delivery.status, delivery.next_attempt_at = "retrying", next_at
    RETRIES.labels(delivery.channel, result.code).inc()


def _fit(column: str, text: str | None) -> str | None:
    """A text cut to its delivery-log column: one send's long subject or reason must not fail the whole batch's record."""
    length: int | None = getattr(Delivery.__table__.c[column].type, "length", None)
    if text is None or length is None or len(text) <= length:
        return text
    return text[: length - 1] + "…"


def _report(recorded: list[Delivery]) -> None:
    """Count and log each final outcome (failed and skipped at warning, unknown at error)."""
    for delivery in recorded:
        fields: dict[str, Any] = {
            "send_id": delivery.send_id, "campaign_id": delivery.campaign_id, "channel": delivery.channel,
            "status": delivery.status, "reason_code": delivery.reason_code, "reason": delivery.reason,
            "attempts": delivery.attempts,
        }
        with structlog.contextvars.bound_contextvars(correlation_id=_correlation(delivery)):
            if delivery.status not in FINAL:
                log.info("send_retry_scheduled", next_attempt_at=delivery.next_attempt_at, **fields)
                continue
            OUTCOMES.labels(delivery.channel, delivery.status, delivery.reason_code or "ok").inc()
            if delivery.status == "unknown":
                log.error("send_outcome", **fields)
            elif delivery.status in ("failed", "skipped"):
                log.warning("send_outcome", **fields)
            else:
                log.info("send_outcome", **fields)


def _correlation(delivery: Delivery) -> str | None:
    trigger = (delivery.request or {}).get("trigger") or {}
    value = trigger.get("correlation_id")
    return str(value) if value else None


async def judge_interrupted(d: Dispatcher, limit: int) -> int:
    """Mark attempts that began and were never recorded as `unknown` (never resent); returns how many."""
    started_before = datetime.now(UTC) - timedelta(seconds=d.interrupted_after_seconds)
    async with unit_of_work(d.sessions) as session:
        rows = await repository.claim_interrupted(session, started_before, limit)
        for delivery in rows:
            delivery.status, delivery.reason_code, delivery.next_attempt_at = "unknown", "interrupted", None
            delivery.reason = (
                f"attempt {delivery.attempts} began at {delivery.updated_at:%Y-%m-%d %H:%M:%S} UTC and was never "
                "recorded (the worker stopped mid-attempt); the provider may or may not have it, so it is not resent"
            )
            delivery.updated_at = datetime.now(UTC)
        await session.flush()
        staged = await _stage_outcomes(session, d.outbox, rows)
    _report(rows)
    await d.outbox.publish_after_commit(d.sessions, d.js, staged)
    return len(rows)


async def retry_due(d: Dispatcher, limit: int) -> int:
    """Claim the retries whose time has come (committed as `sending`), then attempt them; returns how many."""
    async with unit_of_work(d.sessions) as session:
        rows = await repository.claim_due_retries(session, datetime.now(UTC), limit)
        claimed: list[Claimed] = []
        for delivery in rows:
            delivery.status, delivery.next_attempt_at = "sending", None
            delivery.attempts += 1
            delivery.updated_at = datetime.now(UTC)
            send = SendRequested.model_validate(delivery.request)
            claimed.append(Claimed(send, delivery.attempts, send.trigger.correlation_id if send.trigger else None))
        await session.flush()
    await deliver(d, claimed)
    return len(claimed)


async def run_retries(d: Dispatcher, stop: asyncio.Event) -> None:
    """Until stopped: judge interrupted attempts and retry due sends; no state lives here, so a restart loses nothing."""
    batch, failing = d.settings.retry_batch, False
    while not stop.is_set():
        try:
            busy = await judge_interrupted(d, batch) + await retry_due(d, batch) >= batch
            failing = False
        except Exception as exc:
            if not failing:  # once per outage, not once per look
                log.warning("retry_loop_failed", error=repr(exc))
            failing, busy = True, False
        if not busy:
            try:
                await asyncio.wait_for(stop.wait(), timeout=d.settings.retry_poll_seconds)
            except TimeoutError:
                pass


def outcome_events(delivery: Delivery) -> list[Event]:
    """The engagement events of a final outcome, for the user's timeline (known users only): `$message_sent` and
    `$message_delivered` when the provider took it (SMTP accepted, APNs/FCM accepted, Twilio accepted, a webhook's
    2xx), `$message_bounced` when the address or token is dead, else `$message_failed`, `$message_skipped` or
    `$message_unknown`. Each id is the send's and the outcome's, so a replay is the same event."""
    if delivery.status not in FINAL or not delivery.user_id:
        return []
    properties: dict[str, Any] = _engagement_properties(delivery)
    if delivery.reason:
        properties["reason"] = delivery.reason
    if delivery.reason_code and delivery.reason_code != "ok":
        properties["reason_code"] = delivery.reason_code
    if delivery.segments is not None:
        properties["segments"], properties["encoding"] = delivery.segments, delivery.encoding
    outcomes: list[str] = [delivery.status]
    if delivery.status == "sent":
        outcomes.append("delivered")
    elif delivery.status == "failed" and delivery.reason_code in domain.BOUNCE_CODES:
        outcomes = ["bounced"]
    at = delivery.sent_at or delivery.updated_at or datetime.now(UTC)
    return [_herald_event(delivery, OUTCOME_EVENTS[outcome], f"herald:{delivery.send_id}:{outcome}", properties, at)
            for outcome in outcomes]


def _engagement_properties(delivery: Delivery) -> dict[str, Any]:
    """What every engagement event of a send says: its send, campaign, channel and (when known) variant."""
    properties: dict[str, Any] = {
        "send_id": delivery.send_id,
        "campaign_id": delivery.campaign_id,
        "channel": delivery.channel,
    }
    variant = (delivery.request or {}).get("variant")
    if variant:
        properties["variant"] = variant
    return properties


def _herald_event(delivery: Delivery, name: str, message_id: str, properties: dict[str, Any], at: datetime) -> Event:
    """An event Herald puts on the send's user's timeline."""
    return Event(
        workspace_id=delivery.workspace_id,
        message_id=message_id,
        type="track",
        user_id=delivery.user_id,
        event=name,
        properties=properties,
        context={"library": {"name": "herald-dispatcher"}},
        timestamp=at,
        received_at=datetime.now(UTC),
    )


def describe(delivery: Delivery) -> dict[str, object]:
    return {
        "send_id": delivery.send_id,
        "campaign_id": delivery.campaign_id,
        "channel": delivery.channel,
        "status": delivery.status,
        "reason": delivery.reason,
        "reason_code": delivery.reason_code,
        "attempts": delivery.attempts,
        "next_attempt_at": delivery.next_attempt_at,
        "recipient": delivery.recipient,
        "subject": delivery.subject,
        "segments": delivery.segments,
        "encoding": delivery.encoding,
        "sent_at": delivery.sent_at,
        "created_at": delivery.created_at,
        "updated_at": delivery.updated_at,
    }


# --- channel credentials ------------------------------------------------------------------

ChannelKind = Literal["apns", "fcm", "email", "sms"]
APNS_SHOWN = ("device_app", "team_id", "key_id", "topic", "environment")
FCM_SHOWN = ("device_app", "project_id", "client_email", "private_key_id", "token_uri")


def _box(settings: DispatcherSettings) -> SecretBox:
    box = settings.secret_box()
    if box is None:
        raise Conflict(
            "channel credentials are encrypted at rest with HERALD_SECRETS_KEY, which this dispatcher is not given",
            error="secrets_key_missing",
        )
    return box


async def save_apns(session: AsyncSession, settings: DispatcherSettings, workspace_id: str, body: ApnsChannelIn) -> ChannelConfig:
    """Store (or replace) a workspace's APNs key for one app or all, the key sealed."""
    shown = body.model_dump(include=set(APNS_SHOWN))
    sealed = _box(settings).seal({"private_key": body.private_key})
    return await repository.save_channel(session, workspace_id, "apns", body.app_id or "", shown, sealed)


async def save_fcm(session: AsyncSession, settings: DispatcherSettings, workspace_id: str, body: FcmChannelIn) -> ChannelConfig:
    """Store (or replace) a workspace's FCM service account for one app or all, the account sealed."""
    account = body.service_account
    if credentials.origin_of(account["token_uri"]) not in settings.token_origins():
        raise Unprocessable([{
            "loc": ["body", "service_account", "token_uri"],
            "msg": f"Herald sends service-account assertions only to {', '.join(sorted(settings.token_origins()))} "
            "(HERALD_FCM_TOKEN_ORIGINS)",
            "type": "value_error",
        }])
    shown = {"device_app": body.device_app, **{k: account.get(k) for k in FCM_SHOWN if k != "device_app"}}
    sealed = _box(settings).seal({"service_account": account})
    return await repository.save_channel(session, workspace_id, "fcm", body.app_id or "", shown, sealed)


EMAIL_SHOWN = ("host", "port", "username", "tls", "from", "reply_to")


async def save_email(
    session: AsyncSession, settings: DispatcherSettings, workspace_id: str, body: EmailChannelIn
) -> ChannelConfig:
    """Store (or replace) a workspace's SMTP server and default sender for one app or all, the password sealed."""
    host = body.host.strip("[]").rstrip(".")
    if WebhookPolicy.parse(settings.webhook_allowed_hosts).refuses_literal(host):
        raise Unprocessable([{
            "loc": ["body", "host"],
            "msg": f"email may not go to {host}: a loopback, private, link-local or reserved address, unless the "
            "operator allows it (HERALD_WEBHOOK_ALLOWED_HOSTS)",
            "type": "value_error",
        }])
    shown = {**body.model_dump(include={"host", "port", "username", "tls", "reply_to"}), "from": body.from_address,
             "password_set": body.password is not None}
    sealed = _box(settings).seal({"password": body.password}) if body.password is not None else ""
    return await repository.save_channel(session, workspace_id, "email", body.app_id or "", shown, sealed)


async def save_sms(session: AsyncSession, settings: DispatcherSettings, workspace_id: str, body: SmsChannelIn) -> ChannelConfig:
    """Store (or replace) a workspace's Twilio account for one app or all, the auth token sealed."""
    shown = body.model_dump(include={"account_sid", "from_number", "messaging_service_sid"})
    sealed = _box(settings).seal({"auth_token": body.auth_token})
    return await repository.save_channel(session, workspace_id, "sms", body.app_id or "", shown, sealed)


def inbound_path(workspace_id: str) -> str:
    """The gateway's path for a workspace's incoming texts (Twilio's incoming-message webhook)."""
    return f"/v1/sms/inbound/{workspace_id}"


def describe_channel(row: ChannelConfig, public_url: str | None = None) -> dict[str, Any]:
    """A configuration as the API shows it: what was set, never the secret."""
    shown = {"kind": row.kind, "app_id": row.app_id or None, **row.settings, "updated_at": row.updated_at}
    if row.kind == "sms":
        shown["inbound_url"] = f"{public_url or ''}{inbound_path(row.workspace_id)}"
    return shown


class InboundRefused(Exception):
    """An incoming text this workspace's Twilio account did not sign (or no account of the workspace matches it)."""


@dataclass(frozen=True)
class InboundAnswer:
    """What an incoming text came to: its keyword kind (stop, start, help, or None) and the reply to text back."""

    kind: str | None
    reply: str | None
    user_id: str | None


async def _sms_subscription(
    nc: NATS, workspace_id: str, user_id: str, subscribed: bool, word: str, number: str, now: datetime
) -> bool:
    """Set the user's sms subscription for a STOP or START texted back; False when the profiles service could not."""
    change = SubscriptionChange(
        workspace_id=workspace_id, user_id=user_id, channel="sms", state="subscribed" if subscribed else "unsubscribed",
        source="sms", at=now, details={"keyword": word, "phone": number},
    )
    try:
        answer = await bus.request(nc, SUBSCRIPTION_SUBJECT, change, SubscriptionSet, timeout=3.0)
    except Exception as exc:
        log.warning("sms_subscription_unavailable", workspace_id=workspace_id, error=type(exc).__name__)
        return False
    if answer.current is None:
        log.warning("sms_subscription_not_set", workspace_id=workspace_id, error=answer.error)
    return answer.current is not None


HELP_REPLY = "Reply STOP to stop receiving texts, START to receive them again. Msg&data rates may apply."


async def receive_sms(
    session: AsyncSession, outbox: Outbox, settings: DispatcherSettings, workspace_id: str, inbound: SmsInbound,
    nc: NATS | None = None,
) -> tuple[InboundAnswer, list[int]]:
    """An incoming text, checked against the signature of the workspace's Twilio account that it names: STOP
    suppresses the number, START lifts that, and either sets the sms subscription of the user last texted at that
    number through the profiles service (rpc.profiles.set_subscription, source "sms"), which puts the
    `$subscription_changed` event on the timeline; if it cannot be reached the event is put there from here, and
    the number's suppression still holds. HELP is a `$sms_help` event and gets the help reply.

    Returns the answer and the outbox ids to publish after commit. InboundRefused when the signature is not the
    account's.
    """
    params = dict(inbound.params)
    box = settings.secret_box()
    configs = [c for c in await repository.channels_of(session, workspace_id)
               if c.kind == "sms" and c.settings.get("account_sid") == params.get("AccountSid")]
    if box is None or not configs or not inbound.signature:
        raise InboundRefused("no SMS account of this workspace matches, or the request is unsigned")
    for config in configs:
        try:
            token = box.open(config.secret)["auth_token"]
        except credentials.SecretUnreadable:
            continue
        if hmac.compare_digest(domain.twilio_signature(token, inbound.url, inbound.params), inbound.signature):
            break
    else:
        raise InboundRefused("the X-Twilio-Signature is not the account's")
    keyword = domain.sms_keyword(params.get("Body", ""))
    try:
        number = domain.phone_number(ProfileSnapshot(profile_id="", traits={"phone": params.get("From", "")}))
    except domain.InvalidNumber:
        number = None
    if keyword is None or number is None:
        return InboundAnswer(None, None, None), []
    kind, word = keyword
    now = datetime.now(UTC)
    if kind == "stop":
        await repository.suppress(session, [{
            "workspace_id": workspace_id, "channel": "sms", "address": number.lower(), "reason_code": "opted_out",
            "reason": f"texted {word} on {now:%Y-%m-%d %H:%M} UTC", "send_id": None, "created_at": now,
        }])
    elif kind == "start":
        await repository.unsuppress(session, workspace_id, "sms", number.lower())
    user_id = await repository.last_user_texted(session, workspace_id, number)
    staged: list[int] = []
    if user_id is not None and kind != "help" and nc is not None:
        if await _sms_subscription(nc, workspace_id, user_id, kind == "start", word, number, now):
            return InboundAnswer(kind, None, user_id), []
    if user_id is not None:
        properties: dict[str, Any] = {"channel": "sms", "keyword": word, "phone": number}
        if kind != "help":
            properties["subscribed"] = kind == "start"
        event = Event(
            workspace_id=workspace_id,
            message_id=f"herald:sms-inbound:{params.get('MessageSid') or params.get('SmsSid') or uuid.uuid4()}",
            type="track", user_id=user_id, event="$sms_help" if kind == "help" else "$subscription_changed",
            properties=properties, context={"library": {"name": "herald-dispatcher"}}, timestamp=now, received_at=now,
        )
        staged = await outbox.stage(session, [event], [None])
    return InboundAnswer(kind, HELP_REPLY if kind == "help" else None, user_id), staged


async def rotate_secrets(sessions: async_sessionmaker[AsyncSession], box: SecretBox, page: int = 100) -> dict[str, int]:
    """Re-encrypt every stored channel secret under the first key: how many were rotated, already
    current, and unreadable (sealed under a key no longer given; left as they are, and logged)."""
    counts = {"rotated": 0, "current": 0, "unreadable": 0}
    after: tuple[str, str, str] | None = None
    while True:
        async with unit_of_work(sessions) as session:
            rows = await repository.lock_channels(session, page, after)
            for row in rows:
                if box.is_current(row.secret):
                    counts["current"] += 1
                    continue
                try:
                    row.secret = box.rotate(row.secret)
                    counts["rotated"] += 1
                except credentials.SecretUnreadable:
                    counts["unreadable"] += 1
                    log.warning("channel_secret_unreadable", workspace_id=row.workspace_id, kind=row.kind, app_id=row.app_id)
            await session.flush()
        if len(rows) < page:
            return counts
        after = (rows[-1].workspace_id, rows[-1].kind, rows[-1].app_id)


# --- engagement from public links ---------------------------------------------------------------

ENGAGEMENT_EVENTS = {"open": "$message_opened", "click": "$message_clicked", "unsubscribe": "$message_unsubscribed"}


async def record_engagement(
    session: AsyncSession, outbox: Outbox, nc: NATS, workspace_id: str, body: EngagementIn, now: datetime | None = None
) -> tuple[EngagementOut, list[int]]:
    """An open, click or unsubscribe of one send, from a public link the gateway verified: its event on the user's
    timeline (a click implies the open, which images turned off would hide), each id the send's, so repeats are
    one event; an unsubscribe first changes the subscription in the profiles service (the campaign's subscription
    group, else the channel), and is Unavailable when that cannot be done now.

    Returns what was recorded and the outbox ids to publish after commit.
    """
    now = now or datetime.now(UTC)
    rows = await repository.deliveries_of_sends(session, workspace_id, [body.send_id])
    row = rows[0] if rows else None
    state = await _unsubscribe(nc, workspace_id, row, body, now) if body.kind == "unsubscribe" else None
    if row is None or not row.user_id:
        return EngagementOut(recorded=None, state=state), []
    properties = _engagement_properties(row)
    opened = _herald_event(row, ENGAGEMENT_EVENTS["open"], f"herald:{row.send_id}:opened", properties, now)
    if body.kind == "open":
        events = [opened]
    elif body.kind == "click":
        clicked = {**properties, "url": body.url, "link": body.link}
        events = [opened, _herald_event(row, ENGAGEMENT_EVENTS["click"], f"herald:{row.send_id}:clicked:{body.link}", clicked, now)]
    else:
        left = {**properties, **({"group_id": body.group_id} if body.group_id else {}), "source": "link"}
        events = [_herald_event(row, ENGAGEMENT_EVENTS["unsubscribe"], f"herald:{row.send_id}:unsubscribed", left, now)]
    staged = await outbox.stage(session, events, [_correlation(row)] * len(events))
    return EngagementOut(recorded=events[-1].event, state=state), staged


async def _unsubscribe(nc: NATS, workspace_id: str, row: Delivery | None, body: EngagementIn, now: datetime) -> str | None:
    """Leave the campaign's subscription group (else the channel) through the profiles service; the state it now
    holds, or None when there is nobody or nothing to leave."""
    target: dict[str, str] = {"profile_id": row.profile_id} if row is not None else (
        {"user_id": body.user_id} if body.user_id else {}
    )
    what: dict[str, str] = {"group_id": body.group_id} if body.group_id else (
        {"channel": body.channel} if body.channel in SUBSCRIPTION_CHANNELS else {}
    )
    if not target or not what:
        return None
    change = SubscriptionChange(workspace_id=workspace_id, state="unsubscribed", source="link", at=now, **target, **what)  # type: ignore[arg-type]
    try:
        answer = await bus.request(nc, SUBSCRIPTION_SUBJECT, change, SubscriptionSet, timeout=3.0)
    except Exception as exc:
        log.warning("unsubscribe_unavailable", workspace_id=workspace_id, send_id=body.send_id, error=type(exc).__name__)
        raise Unavailable("the unsubscribe could not be recorded now (the profiles service did not answer); try again") from None
    if answer.current is not None:
        return answer.current.state
    return answer.error or ("no_user" if not answer.found else None)


# --- test sends ---------------------------------------------------------------------------------

TEST_PROFILE = "test"


async def test_send(d: Dispatcher, workspace_id: str, body: TestSendIn) -> Result:
    """Send one message now through the channel's real provider, to one user (rendered with their data) or one
    address, and say how it went. Nothing is written to the delivery log or put on a timeline."""
    try:
        content = CONTENT_BY_CHANNEL[body.channel].model_validate(body.message)
    except ValidationError as exc:
        raise Unprocessable([
            {"loc": ["body", "message", *e["loc"]], "msg": e["msg"], "type": e["type"]} for e in exc.errors(include_url=False)
        ]) from None
    profile_id = TEST_PROFILE
    if body.user_id is not None:
        async with unit_of_work(d.sessions) as session:
            found = await repository.profile_of_user(session, workspace_id, body.user_id)
        if found is None:
            raise NotFound(f"no user {body.user_id!r} in this workspace")
        profile_id = found
    now = datetime.now(UTC)
    send = SendRequested(
        send_id=f"test_{uuid.uuid4().hex}", workspace_id=workspace_id, campaign_id="test", channel=body.channel,
        profile_id=profile_id, user_id=body.user_id, message=content, requested_at=now,
    )
    if body.user_id is not None:
        profiles = await _profiles(d.nc, _profile_parts([send]))
    else:
        trait = {"email": "email", "sms": "phone"}.get(body.channel)
        profiles = {(workspace_id, profile_id): ProfileSnapshot(profile_id=profile_id, traits={trait: body.address} if trait else {})}
    push_context = await _push_context(d, [send]) if body.channel == "push" else None
    if isinstance(push_context, PushContext) and body.address is not None:
        kind = domain.push_service_of(body.address)
        config = push_context.configs.get((workspace_id, getattr(content, "app_id", None) or "", kind)) or \
            push_context.configs.get((workspace_id, "", kind))
        push_context.devices[(workspace_id, profile_id)] = [{
            "device_id": "test-device", "platform": body.platform, "push_token": body.address,
            "app": config.settings.get("device_app") if config is not None else None,
        }]
    address_context = await _address_context(d, [send], profiles) if body.channel in ADDRESSED_CHANNELS else None
    return await _attempt_safely(d, Claimed(send, 1), profiles, push_context, address_context)


def describe_test(result: Result) -> dict[str, Any]:
    """A test send's result as the API shows it."""
    return {
        "status": result.status, "reason_code": result.code, "reason": result.reason, "recipient": result.recipient,
        "provider_response": result.provider_response,
        "devices": [{"device_id": r.device_id, "platform": r.platform, "service": r.service, "status": r.status,
                     "reason_code": r.code, "reason": r.reason, "provider_response": r.response} for r in result.devices],
    }
