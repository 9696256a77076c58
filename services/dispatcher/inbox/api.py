"""Inbox routes the gateway calls for apps (`GET /v1/messages`, `POST /v1/messages/{id}/events`, write key
checked there): a user's feed and their reports. Not in the management API: an API key never reaches them."""

from typing import Annotated

from fastapi import APIRouter, Query, Request

from kernel.db import unit_of_work
from kernel.errors import Unprocessable
from kernel.outbox import Outbox
from kernel.web import Res, Session, WorkspaceId
from services.dispatcher import models
from services.dispatcher.inbox import service
from services.dispatcher.inbox.schemas import (
    FEED_LIMIT_DEFAULT,
    FeedChannel,
    FeedLimit,
    Identity,
    InboxEventIn,
    InboxEventOut,
    InboxFeed,
    identity_problem,
)

router = APIRouter(prefix="/api/v1/inbox", tags=["inbox"])


@router.get("/messages", include_in_schema=False)
async def get_feed(
    workspace_id: WorkspaceId,
    res: Res,
    user_id: Annotated[Identity | None, Query(alias="userId")] = None,
    anonymous_id: Annotated[Identity | None, Query(alias="anonymousId")] = None,
    channel: Annotated[FeedChannel | None, Query()] = None,
    limit: Annotated[FeedLimit, Query()] = FEED_LIMIT_DEFAULT,
) -> InboxFeed:
    """The in-app messages and content cards a user (by user id, else anonymous id) is eligible for, rendered."""
    _identified(user_id, anonymous_id)
    profile = await service.resolve(res.nats, workspace_id, user_id, anonymous_id)
    async with unit_of_work(res.db) as session:  # opened after the lookup: no connection held while profiles answers
        return await service.feed(session, workspace_id, profile.profile_id if profile else None, channel, limit)


@router.post("/messages/{message_id}/events", include_in_schema=False)
async def post_event(
    message_id: str, body: InboxEventIn, request: Request, workspace_id: WorkspaceId, session: Session, res: Res
) -> InboxEventOut:
    """Record that the user saw, clicked or dismissed one of their messages; 404 if it is not theirs."""
    profile = await service.resolve(res.nats, workspace_id, body.userId, body.anonymousId)
    dispatcher = getattr(request.app.state, "dispatcher", None)
    outbox = dispatcher.outbox if dispatcher is not None else Outbox(models.outbox)
    recorded, staged = await service.report(session, outbox, workspace_id, profile, message_id, body)
    await session.commit()
    if staged and dispatcher is not None:  # else the outbox drain publishes them
        await outbox.publish_after_commit(dispatcher.sessions, dispatcher.js, staged)
    return InboxEventOut(recorded=recorded)


def _identified(user_id: str | None, anonymous_id: str | None) -> None:
    """422 unless the request names a user that could exist."""
    if user_id is None and anonymous_id is None:
        raise Unprocessable([{"loc": ["query", "userId"], "msg": "give the user: `userId` or `anonymousId`",
                              "type": "missing"}])
    for name, value in (("userId", user_id), ("anonymousId", anonymous_id)):
        if (problem := identity_problem(value)) is not None:
            raise Unprocessable([{"loc": ["query", name], "msg": f"an id that {problem} names no user",
                                  "type": "value_error"}])
