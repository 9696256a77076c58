"""The user's rights in the profiles service: erasure jobs (requested, this service's part, tracked) and the
export of everything Herald holds on a person, streamed."""

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import structlog
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from kernel import bus
from kernel.contracts import (
    ERASING_SERVICES,
    EXPORT_SUBJECTS,
    ConversionPage,
    DeliveryPage,
    ErasureReport,
    ErasureRequested,
    InboxPage,
    MembershipPage,
    PersonalDataQuery,
    SendPage,
)
from kernel.db import unit_of_work
from kernel.errors import NotFound
from services.profiles import repository as profiles
from services.profiles import service as profile_service
from services.profiles.models import Profile
from services.profiles.privacy import domain, repository
from services.profiles.privacy.models import Erasure
from services.profiles.schemas import UserProfile

log = structlog.get_logger(__name__)

# Tables the export shows in sections of their own; any other table of the schema keyed by profile
# (subscriptions, consents, ...) is exported under its own name.
SHOWN_APART = ("profiles", "identities", "events", "event_counts", "devices")
EXPORT_TIMEOUT = 10.0  # seconds another service has to answer one page


# --- erasure ---------------------------------------------------------------------------------


async def request_erasure(session: AsyncSession, js: JetStreamContext, profile: Profile) -> Erasure:
    """Start erasing a person: the job is recorded, and the request stored in JetStream before this returns.

    The request names the profile and every profile merged into it (other services may still hold
    rows under those ids). It is published before the job commits: an erasure answered 202 is never lost.
    """
    ws = profile.workspace_id
    profile_ids = [profile.profile_id, *await repository.merged_into(session, ws, profile.profile_id)]
    erasure = await repository.add_erasure(session, ws, f"er_{uuid.uuid4().hex}", profile_ids)
    request = ErasureRequested(
        erasure_id=erasure.erasure_id, workspace_id=ws, profile_ids=profile_ids, requested_at=erasure.requested_at
    )
    await bus.publish_contracts(js, [request], timeout=10.0)
    log.info("erasure_requested", workspace_id=ws, erasure_id=erasure.erasure_id, profiles=len(profile_ids))
    return erasure


async def erase(session: AsyncSession, request: ErasureRequested) -> dict[str, int]:
    """This service's part: tombstone every name the person went by, then delete their rows from every table.

    The identities are locked as the event path locks them, so a batch in flight either lands before
    (and is deleted here) or after (and finds the tombstones).
    """
    ws, ids = request.workspace_id, request.profile_ids
    known = repository.keys_of(await repository.identities_of(session, ws, ids))
    await profiles.lock_identities(session, [(ws, kind, value) for kind, value in known])
    await profiles.lock_profiles(session, ws, sorted(ids))
    known = repository.keys_of(await repository.identities_of(session, ws, ids))  # as of the locks
    await repository.bury(session, ws, [domain.digest(ws, key) for key in known], datetime.now(UTC), request.erasure_id)
    erased: dict[str, int] = {"tombstones": len(known)}
    for table in await repository.person_tables(session):
        erased[table] = await repository.delete_rows(session, table, ws, ids)
    return erased


async def record_report(session: AsyncSession, report: ErasureReport) -> None:
    """A service finished its part of an erasure: note it (the first report of each service counts)."""
    erasure = await repository.get_erasure(session, report.workspace_id, report.erasure_id, lock=True)
    if erasure is None:
        log.warning("erasure_report_unknown_job", workspace_id=report.workspace_id, erasure_id=report.erasure_id,
                    service=report.service)
        return
    if report.service in erasure.progress:
        return
    progress = {**erasure.progress, report.service: {"at": report.at.isoformat(), "erased": report.erased}}
    erasure.progress = progress
    if domain.status(progress) == "done":
        erasure.done_at = report.at
        log.info("erasure_done", workspace_id=report.workspace_id, erasure_id=report.erasure_id)
    await session.flush()


async def find_erasure(session: AsyncSession, workspace_id: str, erasure_id: str) -> dict[str, Any]:
    """An erasure as the API shows it; 404 if this workspace has none by that id."""
    erasure = await repository.get_erasure(session, workspace_id, erasure_id)
    if erasure is None:
        raise NotFound(f"no erasure {erasure_id!r} in this workspace")
    return describe_erasure(erasure)


def describe_erasure(erasure: Erasure) -> dict[str, Any]:
    """The public shape of an erasure job: its status, and each service's part."""
    return {
        "erasure_id": erasure.erasure_id,
        "status": domain.status(erasure.progress),
        "requested_at": erasure.requested_at,
        "done_at": erasure.done_at,
        "services": {
            service: {"status": "done", **erasure.progress[service]} if service in erasure.progress else {"status": "pending"}
            for service in ERASING_SERVICES
        },
    }


# --- export ----------------------------------------------------------------------------------


def _json(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)


@dataclass
class _Part:
    """Another service's part of the export: where to ask, and the page shape it answers."""

    name: str
    service: str
    page: type[MembershipPage] | type[SendPage] | type[DeliveryPage] | type[ConversionPage] | type[InboxPage]
    part: str = ""  # which of the service's parts (PersonalDataQuery.part)


OTHER_PARTS = (
    _Part("memberships", "segmenter", MembershipPage),
    _Part("sends", "scheduler", SendPage),
    _Part("conversions", "scheduler", ConversionPage, "conversions"),
    _Part("deliveries", "dispatcher", DeliveryPage),
    _Part("inbox_messages", "dispatcher", InboxPage, "inbox"),
)


async def export(
    sessions: async_sessionmaker[AsyncSession], nc: NATS, profile: Profile, currency: str
) -> AsyncIterator[bytes]:
    """Everything held on a person as one JSON document, written as it is read.

    Events come through a server-side cursor and the other services' parts a page at a time, so a
    person with a long history is never held in memory whole. A part that cannot be read (a service
    not answering) is named under `incomplete`, and the document stays valid JSON.
    """
    ws = profile.workspace_id
    incomplete: list[dict[str, str]] = []
    async with unit_of_work(sessions) as session:
        described = UserProfile.model_validate(await profile_service.describe(session, profile, currency))
        ids = [profile.profile_id, *await repository.merged_into(session, ws, profile.profile_id)]
        identities = await repository.identities_of(session, ws, ids)
        head = {
            "exported_at": datetime.now(UTC),
            "user_id": profile.user_id,
            "profile": described.model_dump(mode="json"),
            "identities": [{"kind": i.kind, "value": i.value, "since": i.created_at} for i in identities],
            "merged_profile_ids": ids[1:],
        }
        yield _json(head)[:-1]
        for table in await repository.person_tables(session):
            if table in SHOWN_APART:
                continue
            yield b', ' + _json(table) + b': '
            async for chunk in _array(repository.stream_rows(session, table, ws, ids, columns="(to_jsonb(r) - 'workspace_id')::text")):
                yield chunk
        yield b', "events": '
        rows = repository.stream_rows(
            session, "events", ws, ids, order_by="timestamp, message_id",
            columns="(to_jsonb(r) - 'workspace_id' - 'profile_id' - 'merged_profile_ids')::text",
        )
        async for chunk in _array(rows):
            yield chunk
    for part in OTHER_PARTS:
        yield b', ' + _json(part.name) + b': ['
        first = True
        try:
            async for record in _pages(nc, part, ws, ids):
                yield (b'' if first else b', ') + record
                first = False
        except Exception as exc:  # a part left out is named, never a truncated document
            log.warning("export_part_failed", workspace_id=ws, part=part.name, error_type=type(exc).__name__)
            incomplete.append({"part": part.name, "reason": f"the {part.service} did not answer ({type(exc).__name__})"})
        yield b']'
    yield b', "incomplete": ' + _json(incomplete) + b'}'


async def _array(chunks: AsyncIterator[list[Any]]) -> AsyncIterator[bytes]:
    """JSON texts from the database as one JSON array, written a chunk at a time."""
    yield b'['
    first = True
    async for chunk in chunks:
        if chunk:
            text = ", ".join(chunk).encode()
            yield text if first else b', ' + text
            first = False
    yield b']'


async def _pages(nc: NATS, part: _Part, workspace_id: str, profile_ids: list[str]) -> AsyncIterator[bytes]:
    """Another service's records on the person, each as JSON, a page at a time."""
    after: str | None = None
    while True:
        query = PersonalDataQuery(workspace_id=workspace_id, profile_ids=profile_ids, part=part.part, after=after)
        page: BaseModel = await bus.request(nc, EXPORT_SUBJECTS[part.service], query, part.page, timeout=EXPORT_TIMEOUT)
        assert isinstance(page, MembershipPage | SendPage | DeliveryPage | ConversionPage | InboxPage)
        for record in page.records:
            yield record.model_dump_json().encode()
        if page.after is None:
            return
        after = page.after
