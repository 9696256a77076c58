"""The pure rules of the user's rights: what a tombstone keeps, which events it keeps out, where an erasure stands."""

from datetime import UTC, datetime, timedelta

from kernel.contracts import Event
from services.profiles.privacy import domain

ERASED = datetime(2026, 6, 1, 12, tzinfo=UTC)


def event(at: datetime, received: datetime | None = None, **fields: object) -> Event:
    fields = {"type": "track", "event": "Viewed", "user_id": "ada", **fields}
    return Event(workspace_id="ws", message_id="m", timestamp=at, received_at=received or at, **fields)  # type: ignore[arg-type]


def test_a_digest_is_a_hash_of_the_identity_in_its_workspace() -> None:
    d = domain.digest("ws", ("user", "ada"))
    assert len(d) == 64 and "ada" not in d
    assert d != domain.digest("ws2", ("user", "ada")) != domain.digest("ws", ("anonymous", "ada"))
    assert domain.digest("ws", ("user", "\ud800")) != d  # a lone surrogate still hashes


def test_events_before_the_erasure_or_herald_s_own_are_kept_out_and_the_person_coming_back_is_not() -> None:
    before, after = ERASED - timedelta(days=1), ERASED + timedelta(minutes=1)
    assert domain.blocked(event(before), ERASED, herald_event=False)  # a replay
    assert domain.blocked(event(before, received=after), ERASED, herald_event=False)  # a late offline batch
    assert domain.blocked(event(after, received=before), ERASED, herald_event=False)  # a clock ahead, received before
    assert domain.blocked(event(after), ERASED, herald_event=True)  # an outcome of a send in flight
    assert not domain.blocked(event(after), ERASED, herald_event=False)  # signed up again
    assert not domain.blocked(event(before), None, herald_event=True)  # nobody erased


def test_a_batch_is_checked_against_the_tombstones_of_every_identity_it_names() -> None:
    events = [event(ERASED - timedelta(hours=1), user_id=None, anonymous_id="anon-1"), event(ERASED - timedelta(hours=1)),
              event(ERASED - timedelta(hours=1), type="alias", user_id="new-id", previous_id="anon-1"),
              event(ERASED + timedelta(hours=1))]
    tombstones = {domain.digest("ws", ("anonymous", "anon-1")): ERASED}
    assert domain.blocked_positions(events, [False] * 4, tombstones) == {0, 2}
    assert domain.blocked_positions(events, [False] * 4, {}) == set()


def test_an_erasure_is_pending_then_running_then_done() -> None:
    assert domain.status({}) == "pending"
    assert domain.status({"profiles": {}}) == "running"
    assert domain.status({s: {} for s in ("profiles", "segmenter", "scheduler", "dispatcher")}) == "done"
