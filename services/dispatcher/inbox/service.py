"""Inbox use cases: render a send into its user's feed, find the user an app names, serve their feed, and record
what they did with a message (on the message and, through the outbox, as an event on their timeline)."""

from datetime import UTC, datetime
from typing import Any

import structlog
from nats.aio.client import Client as NATS
from sqlalchemy.ext.asyncio import AsyncSession

from kernel import bus
from kernel.contracts import PROFILE_LOOKUP_SUBJECT, Event, ProfileLookup, ProfileSnapshot, SendRequested
from kernel.errors import NotFound, Unavailable, Unprocessable
from kernel.outbox import Outbox
from services.dispatcher.inbox import domain, repository
from services.dispatcher.inbox.models import InboxMessage
from services.dispatcher.inbox.schemas import FeedChannel, InboxEventIn, InboxFeed, InboxMessageOut

log = structlog.get_logger(__name__)
LOOKUP_TIMEOUT_SECONDS = 2.0


def prepare(send: SendRequested, profile: ProfileSnapshot, now: datetime) -> dict[str, Any]:
    """The feed row of an in-app or content card send, rendered for the user (domain.Undeliverable if it cannot be)."""
    rendered = domain.render(send, profile, now)
    return {
        "send_id": send.send_id, "workspace_id": send.workspace_id, "profile_id": send.profile_id,
        "user_id": send.user_id, "campaign_id": send.campaign_id, "channel": send.channel,
        "variant": send.variant, "content": rendered.content, "pinned": rendered.pinned,
        "sent_at": rendered.sent_at, "expires_at": rendered.expires_at,
    }


async def store(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Put sent messages in their users' feeds, in the transaction that records their sends."""
    await repository.store(session, rows)


async def resolve(nc: NATS, workspace_id: str, user_id: str | None, anonymous_id: str | None) -> ProfileSnapshot | None:
    """The profile an app's user id is (else, or when no profile has that id yet, its anonymous id), asked of the
    profiles service; None when nobody is."""
    asked = [ProfileLookup(workspace_id=workspace_id, user_id=user_id)] if user_id else []
    if anonymous_id:
        asked.append(ProfileLookup(workspace_id=workspace_id, anonymous_id=anonymous_id))
    for lookup in asked:
        try:
            profile = await bus.request(nc, PROFILE_LOOKUP_SUBJECT, lookup, ProfileSnapshot, timeout=LOOKUP_TIMEOUT_SECONDS)
        except Exception as exc:
            log.warning("profile_lookup_failed", workspace_id=workspace_id, error=type(exc).__name__)
            raise Unavailable("the profiles service did not answer; retry shortly") from exc
        if profile.found:
            return profile
    return None


def describe(row: InboxMessage) -> InboxMessageOut:
    """A feed message as the app gets it."""
    return InboxMessageOut.model_validate({
        "id": row.send_id, "type": row.channel, "campaign_id": row.campaign_id, "variant": row.variant,
        "pinned": row.pinned, "sent_at": row.sent_at, "expires_at": row.expires_at,
        "viewed": row.viewed_at is not None, "clicked": row.clicked_at is not None, "content": row.content,
    })


async def feed(
    session: AsyncSession, workspace_id: str, profile_id: str | None, channel: FeedChannel | None, limit: int
) -> InboxFeed:
    """What the user is eligible for now: not expired, not dismissed (in-app messages not yet seen); pinned first."""
    if profile_id is None:
        return InboxFeed(messages=[])
    channels = (channel,) if channel else domain.INBOX_CHANNELS
    rows = await repository.feed(session, workspace_id, profile_id, datetime.now(UTC), channels, limit)
    return InboxFeed(messages=[describe(row) for row in rows])


async def report(
    session: AsyncSession, outbox: Outbox, workspace_id: str, profile: ProfileSnapshot | None, message_id: str,
    body: InboxEventIn,
) -> tuple[bool, list[int]]:
    """Record an impression, click or dismissal of one of the user's messages and stage its timeline event.

    Returns whether the message changed and the outbox ids to publish after commit. NotFound when the message is
    not this user's in this workspace; Unprocessable when the report does not fit it (a button it lacks).
    """
    row = await repository.lock_message(session, workspace_id, profile.profile_id, message_id) if profile else None
    if row is None:
        raise NotFound("no such message for this user")
    now = datetime.now(UTC)
    state = domain.MessageState(row.channel, row.content, row.viewed_at, row.clicked_at, row.dismissed_at)
    try:
        outcome = domain.engagement(state, body.type, body.button, now)
    except domain.BadEvent as exc:
        raise Unprocessable([{"loc": ["body", exc.field], "msg": str(exc), "type": "value_error"}]) from None
    for name, value in outcome.changes.items():
        setattr(row, name, value)
    await session.flush()
    properties: dict[str, Any] = {"campaign_id": row.campaign_id, "send_id": row.send_id, "channel": row.channel}
    if row.variant:
        properties["variant"] = row.variant
    # One identity, the one the message was found by: an app's other id on the event could merge two profiles.
    user_id = row.user_id or (profile.user_id if profile else None)
    event = Event(
        workspace_id=workspace_id, message_id=f"herald:{row.send_id}:{outcome.dedupe}", type="track",
        user_id=user_id, anonymous_id=None if user_id else body.anonymousId, event=outcome.event,
        properties={**properties, **outcome.properties}, context={"library": {"name": "herald-dispatcher"}},
        timestamp=now, received_at=now,
    )
    return bool(outcome.changes), await outbox.stage(session, [event])
