from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from services.ingest.domain import corrected_timestamp, to_event
from services.ingest.schemas import SegmentCall

RECEIVED = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)


def test_clock_skew_is_removed_using_sent_at() -> None:
    # The device clock runs 1 hour fast: it says the event happened at 13:00 and was sent at 13:05.
    timestamp = datetime(2026, 11, 22, 13, 0, tzinfo=UTC)
    sent_at = datetime(2026, 11, 22, 13, 5, tzinfo=UTC)
    assert corrected_timestamp(RECEIVED, timestamp, sent_at) == RECEIVED - timedelta(minutes=5)


def test_timestamp_without_sent_at_is_kept_and_missing_timestamp_is_receipt_time() -> None:
    timestamp = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
    assert corrected_timestamp(RECEIVED, timestamp, None) == timestamp
    assert corrected_timestamp(RECEIVED, None, None) == RECEIVED


def test_naive_timestamps_are_utc() -> None:
    assert corrected_timestamp(RECEIVED, datetime(2026, 11, 20, 8, 0), None) == datetime(
        2026, 11, 20, 8, 0, tzinfo=UTC
    )


@pytest.mark.parametrize(
    "call, problem",
    [
        ({"type": "track", "event": "Signed Up"}, "userId or an anonymousId"),
        ({"type": "track", "userId": "u1"}, "non-empty event name"),
        ({"type": "alias", "userId": "u1"}, "userId and previousId"),
        ({"type": "group", "userId": "u1"}, "groupId"),
        ({"type": "track", "userId": "u1", "event": "x", "properties": []}, "dictionary"),
        ({"type": "shout", "userId": "u1"}, "type"),
    ],
)
def test_spec_violations_are_named(call: dict, problem: str) -> None:
    with pytest.raises(ValidationError) as info:
        SegmentCall.model_validate(call)
    assert problem in str(info.value)


def test_numeric_ids_become_strings_and_event_is_enriched() -> None:
    call = SegmentCall.model_validate(
        {"type": "track", "userId": 42, "event": "Order Completed", "messageId": "m-1",
         "properties": {"total": 99}, "context": {"locale": "de-DE"}}
    )
    event = to_event("ws_1", call, RECEIVED, "203.0.113.9")
    assert event.user_id == "42"
    assert event.message_id == "m-1"
    assert event.timestamp == RECEIVED
    assert event.context == {"locale": "de-DE", "ip": "203.0.113.9"}
    assert event.display_name == "Order Completed"


def test_missing_message_id_gets_one() -> None:
    call = SegmentCall.model_validate({"type": "identify", "anonymousId": "a-1", "traits": {"x": 1}})
    event = to_event("ws_1", call, RECEIVED, None)
    assert event.message_id.startswith("herald-")
    assert event.traits == {"x": 1}
