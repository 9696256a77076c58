"""Braze's /users/track and /users/identify as Herald events: each object checked on its own, translated,
and stored in JetStream before the answer (partial success: the objects that cannot be taken are listed)."""

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import nats.errors
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from pydantic import BaseModel, ValidationError

from kernel import bus, limits
from kernel.contracts import BRAZE_LOOKUP_SUBJECT, BrazeKnown, BrazeLookup, Event
from kernel.errors import BadRequest, Unavailable
from services.ingest import service as ingest
from services.ingest.braze import domain
from services.ingest.braze.schemas import (
    AliasToIdentify,
    EmailToIdentify,
    EventObject,
    Identifiers,
    IdentifyRequest,
    IdentifyResponse,
    ObjectError,
    PurchaseObject,
    TrackRequest,
    TrackResponse,
)
from services.ingest.config import IngestSettings
from services.ingest.domain import storable_call, to_event
from services.ingest.schemas import SegmentCall

LOOKUP_TIMEOUT = 5.0


@dataclass
class _Objects:
    """The objects of one request that parsed, by array, with what went wrong with the others."""

    parsed: dict[str, list[tuple[int, Any, Any]]] = field(default_factory=dict)  # array -> (index, raw, model)
    errors: list[ObjectError] = field(default_factory=list)

    def add(self, array: str, index: int, raw: Any, model: type[BaseModel]) -> None:
        if not isinstance(raw, dict):
            self.errors.append(ObjectError(type=f"{array}[{index}] must be a JSON object", input_array=array, index=index))
            return
        try:
            parsed = model.model_validate(raw if model is not Identifiers else _identifiers_of(raw))
        except ValidationError as exc:
            self.errors.append(ObjectError(type=_described(exc), input_array=array, index=index))
            return
        self.parsed.setdefault(array, []).append((index, raw, parsed))


def _identifiers_of(raw: dict[str, Any]) -> dict[str, Any]:
    """An attributes object's identifying fields (everything else in it is an attribute)."""
    return {k: v for k, v in raw.items() if k in domain.IDENTIFIER_FIELDS or k in ("braze_id", "phone")}


def _described(exc: ValidationError) -> str:
    """Each problem with the field it is at (`time: Field required`)."""
    parts = []
    for e in exc.errors(include_url=False):
        where = ".".join(str(p) for p in e["loc"])
        parts.append(f"{where}: {e['msg']}" if where else e["msg"].removeprefix("Value error, "))
    return "; ".join(parts)


def parse_body(body: bytes, model: type[BaseModel]) -> Any:
    """The request as `model`, or a 400 naming the field (a whole request Braze's shape cannot take)."""
    parsed = ingest.parse_json(body)
    if not isinstance(parsed, dict):
        raise BadRequest("the body must be a JSON object", error="invalid_request")
    try:
        return model.model_validate(parsed)
    except ValidationError as exc:
        raise BadRequest(ingest._describe(exc), error="invalid_request") from exc


async def _lookup(nc: NATS, query: BrazeLookup) -> BrazeKnown:
    """Ask the profiles service who exists; a 503 when it cannot answer (nothing is stored then)."""
    if not query.emails and not query.user_ids and not query.anonymous_ids:
        return BrazeKnown()
    try:
        return await bus.request(nc, BRAZE_LOOKUP_SUBJECT, query, BrazeKnown, timeout=LOOKUP_TIMEOUT)
    except (nats.errors.Error, TimeoutError, RuntimeError) as exc:
        raise Unavailable(f"the profiles service did not answer which users exist ({type(exc).__name__}); retry") from exc


def _event(workspace_id: str, call: dict[str, Any], received_at: datetime, ip: str | None) -> Event:
    """The stored event of a translated call, checked as any Segment call is (limits, timestamps)."""
    call = {**call, "messageId": f"braze-{uuid.uuid4()}"}
    try:
        return to_event(workspace_id, SegmentCall.model_validate(storable_call(call)), received_at, ip)
    except limits.LimitExceeded as exc:
        raise BadRequest(f"{exc.path}: {exc.problem}" if exc.path else exc.problem) from None
    except ValidationError as exc:
        raise BadRequest(_described(exc)) from None


async def track(
    nc: NATS, js: JetStreamContext, workspace_id: str, request: TrackRequest, settings: IngestSettings, ip: str | None
) -> TrackResponse:
    """Store every object of a /users/track that can be taken; list the others (partial success)."""
    objects = _Objects()
    for index, raw in enumerate(request.attributes):
        objects.add("attributes", index, raw, Identifiers)
    for index, raw in enumerate(request.events):
        objects.add("events", index, raw, EventObject)
    for index, raw in enumerate(request.purchases):
        objects.add("purchases", index, raw, PurchaseObject)
    everything = [model for items in objects.parsed.values() for _, _, model in items]
    known = await _lookup(nc, BrazeLookup(
        workspace_id=workspace_id,
        emails=sorted({m.email.lower() for m in everything if m.email is not None}),
        user_ids=sorted({m.external_id for m in everything if m.update_existing_only and m.external_id}),
        anonymous_ids=sorted({domain.alias_id(m.user_alias) for m in everything if m.update_existing_only and m.user_alias}),
    ))
    users, anonymous = set(known.user_ids), set(known.anonymous_ids)
    received_at = datetime.now(UTC)
    events: list[Event] = []
    processed = {"attributes": 0, "events": 0, "purchases": 0}
    translate: dict[str, Callable[[Any, Any, tuple[str | None, str | None]], dict[str, Any]]] = {
        "attributes": lambda raw, m, who: domain.attributes_call(raw, m, who),
        "events": lambda raw, m, who: domain.event_call(m.name, m.time, m.properties, m, who),
        "purchases": lambda raw, m, who: domain.purchase_call(m, who),
    }
    for array in ("attributes", "events", "purchases"):  # Braze applies attributes before events
        for index, raw, model in objects.parsed.get(array, []):
            processed[array] += 1
            if model.update_existing_only and not domain.exists(model, known.emails, users, anonymous):
                continue  # Braze's update-only mode: nobody to update, nothing made
            try:
                events.append(_event(workspace_id, translate[array](raw, model, domain.identity(model, known.emails)),
                                     received_at, ip))
            except BadRequest as exc:
                processed[array] -= 1
                objects.errors.append(ObjectError(type=str(exc.detail), input_array=array, index=index))
    if events:
        await ingest.store_events(nc, js, workspace_id, events, settings.publish_timeout_seconds)
    answer = TrackResponse(
        message="success", errors=sorted(objects.errors, key=lambda e: (e.input_array, e.index)) or None,
        **{f"{array}_processed": n for array, n in processed.items() if n or getattr(request, array)},
    )
    return answer


async def identify(
    nc: NATS, js: JetStreamContext, workspace_id: str, request: IdentifyRequest, settings: IngestSettings,
    ip: str | None,
) -> IdentifyResponse:
    """Merge alias-only (and email-only) profiles into an external id: an identify naming both, per object."""
    objects = _Objects()
    for index, raw in enumerate(request.aliases_to_identify):
        objects.add("aliases_to_identify", index, raw, AliasToIdentify)
    for index, raw in enumerate(request.emails_to_identify):
        objects.add("emails_to_identify", index, raw, EmailToIdentify)
    received_at = datetime.now(UTC)
    events: list[Event] = []
    for array, items in objects.parsed.items():
        for index, _, model in items:
            anonymous = domain.alias_id(model.user_alias) if array == "aliases_to_identify" else domain.email_id(model.email)
            call = {"type": "identify", "userId": model.external_id, "anonymousId": anonymous,
                    "context": {"library": {"name": "braze-rest-api"}}}
            try:
                events.append(_event(workspace_id, call, received_at, ip))
            except BadRequest as exc:
                objects.errors.append(ObjectError(type=str(exc.detail), input_array=array, index=index))
    if events:
        await ingest.store_events(nc, js, workspace_id, events, settings.publish_timeout_seconds)
    answer = IdentifyResponse(
        message="success",
        aliases_processed=len(objects.parsed.get("aliases_to_identify", [])) if request.aliases_to_identify else None,
        emails_processed=len(objects.parsed.get("emails_to_identify", [])) if request.emails_to_identify else None,
        errors=objects.errors or None,
    )
    return answer


def refused(answer: TrackResponse | IdentifyResponse) -> dict[str, Any] | None:
    """When every object was refused: Herald's error envelope with Braze's fields beside it (for a 400)."""
    counts = [v for k, v in answer.model_dump().items() if k.endswith("_processed") and v is not None]
    if not answer.errors or any(counts):
        return None
    detail = f"none of the objects could be taken ({len(answer.errors)} refused); see errors"
    return {**answer.model_dump(exclude_none=True), "message": detail, "error": "invalid_objects", "detail": detail}
