"""Dispatcher use cases: claim a send once, render it, deliver it, record the outcome."""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from kernel.contracts import Event, ProfileSnapshot, SendRequested
from kernel.errors import TransientError
from services.dispatcher import domain, repository
from services.dispatcher.models import Delivery
from services.dispatcher.providers import DeliveryError, SmtpProvider, WebhookProvider

FINAL = ("sent", "failed", "skipped")
OUTCOME_EVENTS = {"sent": "$message_sent", "failed": "$message_failed", "skipped": "$message_skipped"}


@dataclass
class Providers:
    email: SmtpProvider
    webhook: WebhookProvider


@dataclass
class Result:
    status: str  # sent | failed | skipped | retry
    reason: str | None = None
    recipient: str | None = None
    subject: str | None = None
    provider_response: str | None = None


async def begin_many(
    session: AsyncSession, sends: list[SendRequested], in_flight_seconds: float
) -> list[Delivery | TransientError]:
    """Claim each send for one attempt, in one statement pair; a final row is returned as it is.

    A row left `sending` for less than `in_flight_seconds` belongs to a worker that is still
    delivering it (a redelivery raced it): that send gets a TransientError, to be retried later.
    """
    rows = await repository.lock_deliveries(session, sends)
    now = datetime.now(UTC)
    claims: list[Delivery | TransientError] = []
    for send in sends:
        delivery = rows[send.send_id]
        if delivery.status in FINAL:
            claims.append(delivery)
            continue
        if delivery.status == "sending" and delivery.updated_at > now - timedelta(seconds=in_flight_seconds):
            claims.append(TransientError("another worker is delivering this send right now"))
            continue
        if delivery.status == "sending":
            # A worker died mid-attempt: the provider may or may not have delivered. Resending
            # could duplicate the message, so the send is failed with the reason on record.
            delivery.status = "failed"
            delivery.reason = "delivery interrupted mid-attempt; not resent to avoid a duplicate"
        else:
            delivery.status = "sending"
            delivery.attempts += 1
        delivery.updated_at = now
        claims.append(delivery)
    await session.flush()
    return claims


async def attempt(send: SendRequested, profile: ProfileSnapshot, providers: Providers) -> Result:
    """Render and deliver once; no database work here."""
    if not profile.found:
        return Result("skipped", "the user's profile no longer exists")
    try:
        if send.channel == "email":
            to = domain.email_address(profile)
            if to is None:
                return Result("skipped", "the user has no email address (trait `email`)")
            email = domain.render_email(send, profile, to)
            response = await providers.email.send(email, send.send_id)
            return Result("sent", None, to, email.subject, response)
        hook = domain.render_webhook(send, profile)
        response = await providers.webhook.send(hook, send.send_id)
        return Result("sent", None, hook.url, None, response)
    except domain.RenderError as exc:
        return Result("failed", f"template error: {exc}")
    except DeliveryError as exc:
        return Result("retry" if exc.transient else "failed", str(exc))


async def record_many(session: AsyncSession, results: dict[str, Result]) -> list[Delivery]:
    """Store each attempt's result (keyed by send id) on its delivery row."""
    rows = await repository.get_deliveries(session, list(results))
    now = datetime.now(UTC)
    for send_id, result in results.items():
        delivery = rows[send_id]
        delivery.status = "retrying" if result.status == "retry" else result.status
        delivery.reason = result.reason
        delivery.recipient = result.recipient or delivery.recipient
        delivery.subject = result.subject or delivery.subject
        delivery.provider_response = result.provider_response
        delivery.updated_at = now
        if result.status == "sent":
            delivery.sent_at = now
    await session.flush()
    return [rows[send_id] for send_id in results]


def outcome_event(delivery: Delivery) -> Event | None:
    """The engagement event for a final outcome, for the user's timeline (known users only)."""
    if delivery.status not in FINAL or not delivery.user_id:
        return None
    now = datetime.now(UTC)
    properties = {
        "send_id": delivery.send_id,
        "campaign_id": delivery.campaign_id,
        "channel": delivery.channel,
    }
    if delivery.reason:
        properties["reason"] = delivery.reason
    return Event(
        workspace_id=delivery.workspace_id,
        message_id=f"herald:{delivery.send_id}:{delivery.status}",
        type="track",
        user_id=delivery.user_id,
        event=OUTCOME_EVENTS[delivery.status],
        properties=properties,
        context={"library": {"name": "herald-dispatcher"}},
        timestamp=delivery.sent_at or now,
        received_at=now,
    )


def describe(delivery: Delivery) -> dict[str, object]:
    return {
        "send_id": delivery.send_id,
        "campaign_id": delivery.campaign_id,
        "channel": delivery.channel,
        "status": delivery.status,
        "reason": delivery.reason,
        "attempts": delivery.attempts,
        "recipient": delivery.recipient,
        "subject": delivery.subject,
        "sent_at": delivery.sent_at,
        "created_at": delivery.created_at,
        "updated_at": delivery.updated_at,
    }
