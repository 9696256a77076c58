"""Ingest use cases: validate calls, enrich them, and hand them to JetStream."""

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import nats.errors
import orjson
import structlog
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from prometheus_client import Counter
from pydantic import ValidationError

from kernel import bus, limits
from kernel.contracts import Event, Rejection, rejection_subject
from kernel.errors import BadRequest, HeraldError, PayloadTooLarge, Unavailable, is_dependency_outage
from services.ingest.config import IngestSettings
from services.ingest.domain import storable_call, to_event
from services.ingest.schemas import Batch, SegmentCall

log = structlog.get_logger(__name__)
REJECTED = Counter("herald_ingest_rejected_calls_total", "Calls ingest refused or dropped from a batch, by reason", ["reason"])
MAX_REJECTION_ERRORS = 10


def _describe(exc: ValidationError, where: str = "") -> list[dict[str, Any]]:
    return [
        {"loc": [where, *e["loc"]] if where else list(e["loc"]), "msg": e["msg"]}
        for e in exc.errors(include_url=False)
    ]


def parse_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"body is not valid JSON: {exc}", error="invalid_json") from exc


def validate_call(obj: Any, call_type: str | None, where: str = "") -> SegmentCall:
    """One Segment call, with its type forced by the route (or taken from the batch item)."""
    if not isinstance(obj, dict):
        raise BadRequest(f"{where or 'body'} must be a JSON object", error="invalid_call")
    if call_type is not None:
        obj = {**obj, "type": call_type}
    try:
        return SegmentCall.model_validate(obj)
    except ValidationError as exc:
        raise BadRequest(_describe(exc, where), error="invalid_call") from exc


def _beyond_limits(exc: limits.LimitExceeded) -> BadRequest:
    """A 400 naming the value Herald cannot store, by location and as a path (`batch[2].properties.a`)."""
    return BadRequest([{"loc": list(exc.loc), "path": exc.path, "msg": exc.problem}], error="invalid_call")


def _storable(obj: Any, loc: limits.Loc) -> Any:
    """A call (a JSON object) within the input limits; anything else is left for validate_call to refuse."""
    if not isinstance(obj, dict):
        return obj
    try:
        return storable_call(obj, loc)
    except limits.LimitExceeded as exc:
        raise _beyond_limits(exc) from None


def _event(
    workspace_id: str, call: SegmentCall, received_at: datetime, client_ip: str | None, loc: limits.Loc
) -> Event:
    """The bus event of a validated call; a 400 if its timestamps are out of range."""
    try:
        return to_event(workspace_id, call, received_at, client_ip, loc)
    except limits.LimitExceeded as exc:
        raise _beyond_limits(exc) from None


def _merged(batch_value: dict[str, Any], item_value: Any) -> Any:
    """A batch-wide default (`context`, `integrations`) under the call's own; a non-object is left to be refused."""
    if item_value is None:
        return batch_value
    if not isinstance(item_value, dict):
        return item_value
    return {**batch_value, **item_value}


def _size(item: dict[str, Any], where: str) -> int:
    """How many bytes a call weighs as JSON; a 400 if it cannot be written back at all (nested past orjson's limit)."""
    try:
        return len(orjson.dumps(item))
    except orjson.JSONEncodeError as exc:
        raise BadRequest(f"{where} cannot be stored: {exc}", error="invalid_call") from exc


@dataclass
class Received:
    """What one request brought: the events to store, and the calls of a batch dropped with why."""

    events: list[Event]
    rejections: list[Rejection] = field(default_factory=list)


def events_from_body(
    workspace_id: str, call: str, body: bytes, settings: IngestSettings, client_ip: str | None
) -> Received:
    """Every event in a request.

    A single call is stored or refused whole (a 400 naming the problem). A batch that is valid JSON
    within the size limits keeps its good calls and drops each malformed one with its reason, as
    Segment does: mobile SDKs discard a batch answered 4xx, so refusing all of it would lose the rest.
    """
    received_at = datetime.now(UTC)
    parsed = parse_json(body)
    if call not in ("batch", "import"):
        if len(body) > settings.max_call_bytes:
            raise PayloadTooLarge(f"a call may be at most {settings.max_call_bytes} bytes")
        segment_call = validate_call(_storable(parsed, ()), call)
        return Received([_event(workspace_id, segment_call, received_at, client_ip, ())])
    if len(body) > settings.max_batch_bytes:
        raise PayloadTooLarge(f"a batch may be at most {settings.max_batch_bytes} bytes")
    try:
        batch = Batch.model_validate(parsed)
    except ValidationError as exc:
        raise BadRequest(_describe(exc), error="invalid_batch") from exc
    if len(batch.batch) > settings.max_batch_events:
        raise PayloadTooLarge(f"a batch may hold at most {settings.max_batch_events} calls")
    try:
        # Checked once here, not in every call it is merged into.
        context = limits.storable(batch.context, ("context",))
    except limits.LimitExceeded as exc:
        raise _beyond_limits(exc) from None
    received = Received([])
    for index, raw in enumerate(batch.batch):
        try:
            received.events.append(_batch_event(workspace_id, batch, context, index, raw, received_at, settings, client_ip))
        except (BadRequest, PayloadTooLarge) as exc:
            received.rejections.append(rejection(workspace_id, call, exc, raw, received_at, index))
    return received


def _batch_event(
    workspace_id: str,
    batch: Batch,
    context: dict[str, Any],
    index: int,
    raw: Any,
    received_at: datetime,
    settings: IngestSettings,
    client_ip: str | None,
) -> Event:
    """The event of one call of a batch, with the batch's defaults; a 400 naming its problem otherwise."""
    where = f"batch[{index}]"
    if not isinstance(raw, dict):
        raise BadRequest(f"{where} must be a JSON object", error="not_an_object")
    item = _storable(raw, ("batch", index))
    item = {
        **item,
        "context": _merged(context, item.get("context")),
        "integrations": _merged(batch.integrations, item.get("integrations")),
    }
    if batch.sentAt is not None and not item.get("sentAt"):
        item["sentAt"] = batch.sentAt.isoformat()
    # Measured as stored, batch-wide context included: a large batch context must not multiply
    # into thousands of large events.
    if _size(item, where) > settings.max_call_bytes:
        raise PayloadTooLarge(f"{where} exceeds {settings.max_call_bytes} bytes", error="call_too_large")
    segment_call = validate_call(item, None, where)
    return _event(workspace_id, segment_call, received_at, client_ip, ("batch", index))


def _text(value: Any, limit: int) -> str | None:
    """A short identifying field of a refused call, if it is text (whatever else it is, it is left out)."""
    return value[:limit] if isinstance(value, str) and value else None


def rejection(
    workspace_id: str, route: str, exc: HeraldError, raw: Any, at: datetime, index: int | None = None
) -> Rejection:
    """The record of a refused call: where it was, what identifies it, and why (counted and logged too)."""
    call = raw if isinstance(raw, dict) else {}
    detail = exc.detail if isinstance(exc.detail, list) else [{"msg": str(exc.detail)}]
    record = Rejection(
        workspace_id=workspace_id,
        rejection_id=uuid.uuid4().hex,
        at=at,
        route=route,
        index=index,
        type=_text(call.get("type"), 16) if route in ("batch", "import") else route,
        message_id=_text(call.get("messageId"), 256),
        event=_text(call.get("event"), 512),
        reason=exc.error,
        errors=detail[:MAX_REJECTION_ERRORS],
    )
    REJECTED.labels(record.reason).inc()
    log.info("ingest_call_rejected", workspace_id=workspace_id, route=route, index=index, reason=record.reason,
             message_id=record.message_id)
    return record


async def publish_events(js: JetStreamContext, events: list[Event], timeout: float) -> None:
    """Store the events in the EVENTS stream; returns only once JetStream acknowledged all."""
    await bus.publish_contracts(js, events, timeout=timeout)


async def store_events(
    nc: NATS, js: JetStreamContext, workspace_id: str, events: list[Event], timeout: float
) -> None:
    """Store the events, or answer 503 when the bus cannot (logged once, with its cause); never a 200 for less."""
    if not nc.is_connected:
        # Publishing now would only wait in the client's reconnect buffer until the timeout.
        raise _unavailable(workspace_id, events, "nats_disconnected", None)
    try:
        await publish_events(js, events, timeout)
    except Exception as exc:
        if not is_dependency_outage(exc):
            raise
        cause = "publish_timeout" if isinstance(exc, TimeoutError) else "publish_failed"
        raise _unavailable(workspace_id, events, cause, exc) from exc


REJECTION_PUBLISH_TIMEOUT = 1.0


async def list_rejections_of(nc: NATS, js: JetStreamContext, rejections: list[Rejection]) -> None:
    """Keep the rejections for GET /api/v1/ingest/rejections, best effort.

    They are diagnostics: they are counted and logged whatever happens here, and failing to list
    them never turns the answer about the stored calls into an error.
    """
    if not rejections or not nc.is_connected:
        return
    try:
        await bus.publish_contracts(js, rejections, timeout=REJECTION_PUBLISH_TIMEOUT)
    except Exception as exc:
        if not is_dependency_outage(exc):
            raise
        log.warning("ingest_rejections_not_listed", count=len(rejections), error_type=type(exc).__name__)


def _unavailable(workspace_id: str, events: list[Event], cause: str, exc: Exception | None) -> Unavailable:
    """Log why ingest answers 503 for this request, and the error to answer it with."""
    error_type = type(exc).__name__ if exc is not None else None
    log.warning("ingest_unavailable", workspace_id=workspace_id, events=len(events), cause=cause, error_type=error_type)
    reason = error_type or "NATS disconnected"
    return Unavailable(f"event storage is unavailable ({reason}); retry")


async def recent_rejections(js: JetStreamContext, workspace_id: str, limit: int) -> list[dict[str, Any]]:
    """The workspace's rejected calls, newest first (REJECTIONS keeps the last REJECTIONS_KEPT of each)."""
    config = ConsumerConfig(deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.NONE, inactive_threshold=30)
    sub = await js.pull_subscribe(rejection_subject(workspace_id), stream=bus.REJECTIONS, config=config)
    try:
        pending = (await sub.consumer_info()).num_pending or 0
        kept: list[dict[str, Any]] = []
        while len(kept) < pending:
            try:
                msgs = await sub.fetch(min(256, pending - len(kept)), timeout=2)
            except nats.errors.TimeoutError:
                break  # trimmed while being read: what was read is the answer
            kept.extend(orjson.loads(m.data) for m in msgs)
    finally:
        await sub.unsubscribe()
    kept.reverse()
    return kept[:limit]
