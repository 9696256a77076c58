"""Pure rules of the user's rights: how an erased identity is remembered, which events it keeps out, and
where an erasure stands."""

import hashlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

from kernel.contracts import ERASING_SERVICES, Event
from services.profiles.domain import Identity, identities_to_lock

ErasureStatus = Literal["pending", "running", "done"]


def digest(workspace_id: str, identity: Identity) -> str:
    """What a tombstone keeps of a user id, alias or anonymous id: a SHA-256 of it within its workspace."""
    kind, value = identity
    return hashlib.sha256(f"{workspace_id}\x1f{kind}\x1f{value}".encode("utf-8", "surrogatepass")).hexdigest()


def event_digests(event: Event) -> list[str]:
    """The digests of every identity an event names (the ones its profile would be found or made by)."""
    return [digest(event.workspace_id, identity) for identity in identities_to_lock(event)]


def blocked_positions(events: list[Event], herald: list[bool], erased: Mapping[str, datetime]) -> set[int]:
    """The positions of the events that tombstones (digest -> when erased) keep out; `herald`: Herald's own."""
    found = set()
    for i, event in enumerate(events):
        times = [erased[d] for d in event_digests(event) if d in erased]
        if times and blocked(event, max(times), herald[i]):
            found.add(i)
    return found


def blocked(event: Event, erased_at: datetime | None, herald_event: bool) -> bool:
    """Whether an event naming an erased identity (erased at `erased_at`; None: none is) is dropped.

    Dropped: Herald's own events about the person (a send that was in flight), and any event that
    happened or was received before the erasure (a replay, a phone's late offline batch). An event
    that happened and arrived after it is the person coming back: it makes a new profile.
    """
    if erased_at is None:
        return False
    return herald_event or min(event.timestamp, event.received_at) <= erased_at


def status(progress: Mapping[str, Any], services: tuple[str, ...] = ERASING_SERVICES) -> ErasureStatus:
    """Pending until a service reports its part done, running until all have, then done."""
    done = [service for service in services if service in progress]
    if not done:
        return "pending"
    return "done" if len(done) == len(services) else "running"
