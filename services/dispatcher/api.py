"""Dispatcher routes: the delivery log, looked up by send for the gateway's list of a user's messages, and
each workspace's channel credentials (write-only secrets)."""

from typing import Annotated

from fastapi import APIRouter, Query, Request

from kernel.errors import Forbidden, NotFound
from kernel.outbox import Outbox
from kernel.web import Session, WorkspaceId
from services.dispatcher import models, repository, service
from services.dispatcher.config import get_settings
from services.dispatcher.schemas import (
    ApnsChannelIn,
    ApnsChannelOut,
    AppId,
    ChannelList,
    DeliveryList,
    DeliveryLookup,
    DeliveryOut,
    EmailChannelIn,
    EmailChannelOut,
    EngagementIn,
    EngagementOut,
    FcmChannelIn,
    FcmChannelOut,
    SmsChannelIn,
    SmsChannelOut,
    SmsInbound,
    SmsInboundAnswer,
    TestSendIn,
    TestSendOut,
)

router = APIRouter(prefix="/api/v1", tags=["messages"])
channels_router = APIRouter(prefix="/api/v1/channels", tags=["channels"])
AppQuery = Annotated[AppId | None, Query()]


@router.post("/deliveries/lookup")
async def lookup_deliveries(body: DeliveryLookup, workspace_id: WorkspaceId, session: Session) -> DeliveryList:
    """The deliveries of these sends (those the dispatcher has seen), for joining with the scheduler's page."""
    rows = await repository.deliveries_of_sends(session, workspace_id, body.send_ids)
    devices = await repository.push_attempts(session, [d.send_id for d in rows if d.channel == "push"])
    return DeliveryList(messages=[
        DeliveryOut.model_validate({**service.describe(d), "devices": devices.get(d.send_id)}) for d in rows
    ])


@channels_router.get("")
async def list_channels(workspace_id: WorkspaceId, session: Session) -> ChannelList:
    """The workspace's channel configurations, per app; secrets are never shown."""
    rows = await repository.channels_of(session, workspace_id)
    public_url = get_settings().public_url
    return ChannelList.model_validate({"channels": [service.describe_channel(row, public_url) for row in rows]})


@channels_router.put("/apns")
async def put_apns(body: ApnsChannelIn, workspace_id: WorkspaceId, session: Session) -> ApnsChannelOut:
    """Set the APNs key (token authentication) for an app, or for every app without one of its own."""
    row = await service.save_apns(session, get_settings(), workspace_id, body)
    return ApnsChannelOut.model_validate(service.describe_channel(row))


@channels_router.get("/apns")
async def get_apns(workspace_id: WorkspaceId, session: Session, app_id: AppQuery = None) -> ApnsChannelOut:
    """The APNs configuration of an app (or the workspace's default), without its key."""
    row = await repository.channel(session, workspace_id, "apns", app_id or "")
    if row is None:
        raise NotFound(f"no APNs configuration for {_whom(app_id)}")
    return ApnsChannelOut.model_validate(service.describe_channel(row))


@channels_router.delete("/apns", status_code=204)
async def delete_apns(workspace_id: WorkspaceId, session: Session, app_id: AppQuery = None) -> None:
    """Remove the APNs configuration of an app (or the workspace's default)."""
    if not await repository.delete_channel(session, workspace_id, "apns", app_id or ""):
        raise NotFound(f"no APNs configuration for {_whom(app_id)}")


@channels_router.put("/fcm")
async def put_fcm(body: FcmChannelIn, workspace_id: WorkspaceId, session: Session) -> FcmChannelOut:
    """Set the FCM service account for an app, or for every app without one of its own."""
    row = await service.save_fcm(session, get_settings(), workspace_id, body)
    return FcmChannelOut.model_validate(service.describe_channel(row))


@channels_router.get("/fcm")
async def get_fcm(workspace_id: WorkspaceId, session: Session, app_id: AppQuery = None) -> FcmChannelOut:
    """The FCM configuration of an app (or the workspace's default), without its service account key."""
    row = await repository.channel(session, workspace_id, "fcm", app_id or "")
    if row is None:
        raise NotFound(f"no FCM configuration for {_whom(app_id)}")
    return FcmChannelOut.model_validate(service.describe_channel(row))


@channels_router.delete("/fcm", status_code=204)
async def delete_fcm(workspace_id: WorkspaceId, session: Session, app_id: AppQuery = None) -> None:
    """Remove the FCM configuration of an app (or the workspace's default)."""
    if not await repository.delete_channel(session, workspace_id, "fcm", app_id or ""):
        raise NotFound(f"no FCM configuration for {_whom(app_id)}")


@channels_router.put("/email")
async def put_email(body: EmailChannelIn, workspace_id: WorkspaceId, session: Session) -> EmailChannelOut:
    """Set the SMTP server and default sender for an app, or for every app without one of its own."""
    row = await service.save_email(session, get_settings(), workspace_id, body)
    return EmailChannelOut.model_validate(service.describe_channel(row))


@channels_router.get("/email")
async def get_email(workspace_id: WorkspaceId, session: Session, app_id: AppQuery = None) -> EmailChannelOut:
    """The SMTP configuration of an app (or the workspace's default), without its password."""
    row = await repository.channel(session, workspace_id, "email", app_id or "")
    if row is None:
        raise NotFound(f"no email configuration for {_whom(app_id)}")
    return EmailChannelOut.model_validate(service.describe_channel(row))


@channels_router.delete("/email", status_code=204)
async def delete_email(workspace_id: WorkspaceId, session: Session, app_id: AppQuery = None) -> None:
    """Remove the SMTP configuration of an app (or the workspace's default): its email goes through the operator's relay."""
    if not await repository.delete_channel(session, workspace_id, "email", app_id or ""):
        raise NotFound(f"no email configuration for {_whom(app_id)}")


@channels_router.put("/sms")
async def put_sms(body: SmsChannelIn, workspace_id: WorkspaceId, session: Session) -> SmsChannelOut:
    """Set the Twilio account and sender for an app, or for every app without one of its own."""
    row = await service.save_sms(session, get_settings(), workspace_id, body)
    return SmsChannelOut.model_validate(service.describe_channel(row, get_settings().public_url))


@channels_router.get("/sms")
async def get_sms(workspace_id: WorkspaceId, session: Session, app_id: AppQuery = None) -> SmsChannelOut:
    """The SMS configuration of an app (or the workspace's default), without its auth token."""
    row = await repository.channel(session, workspace_id, "sms", app_id or "")
    if row is None:
        raise NotFound(f"no SMS configuration for {_whom(app_id)}")
    return SmsChannelOut.model_validate(service.describe_channel(row, get_settings().public_url))


@channels_router.delete("/sms", status_code=204)
async def delete_sms(workspace_id: WorkspaceId, session: Session, app_id: AppQuery = None) -> None:
    """Remove the SMS configuration of an app (or the workspace's default)."""
    if not await repository.delete_channel(session, workspace_id, "sms", app_id or ""):
        raise NotFound(f"no SMS configuration for {_whom(app_id)}")


@channels_router.post("/sms/inbound", include_in_schema=False)
async def sms_inbound(body: SmsInbound, request: Request, workspace_id: WorkspaceId, session: Session) -> SmsInboundAnswer:
    """An incoming text the gateway relays from Twilio's webhook: STOP, START and HELP (checked against the account's signature)."""
    dispatcher: service.Dispatcher | None = getattr(request.app.state, "dispatcher", None)
    outbox = dispatcher.outbox if dispatcher is not None else Outbox(models.outbox)
    try:
        answer, staged = await service.receive_sms(
            session, outbox, get_settings(), workspace_id, body, dispatcher.nc if dispatcher is not None else None
        )
    except service.InboundRefused as exc:
        raise Forbidden(str(exc), error="bad_signature") from None
    await session.commit()
    if staged and dispatcher is not None:
        await outbox.publish_after_commit(dispatcher.sessions, dispatcher.js, staged)
    return SmsInboundAnswer(keyword=answer.kind, reply=answer.reply, user_id=answer.user_id)


@channels_router.post("/test")
async def test_send(body: TestSendIn, request: Request, workspace_id: WorkspaceId) -> TestSendOut:
    """Send one message now through the channel's provider, to a user or an address, and answer how it went
    (the provider's answer, or why it was not sent); nothing is logged as a campaign's send."""
    dispatcher: service.Dispatcher = request.app.state.dispatcher
    result = await service.test_send(dispatcher, workspace_id, body)
    return TestSendOut.model_validate(service.describe_test(result))


@router.post("/engagement", include_in_schema=False)
async def record_engagement(body: EngagementIn, request: Request, workspace_id: WorkspaceId, session: Session) -> EngagementOut:
    """An open, click or unsubscribe the gateway read from a signed public link: the send's event on the user's timeline."""
    dispatcher: service.Dispatcher = request.app.state.dispatcher
    answer, staged = await service.record_engagement(session, dispatcher.outbox, dispatcher.nc, workspace_id, body)
    await session.commit()
    if staged:
        await dispatcher.outbox.publish_after_commit(dispatcher.sessions, dispatcher.js, staged)
    return answer


def _whom(app_id: str | None) -> str:
    return f"app {app_id!r}" if app_id else "the workspace (no app_id)"
