"""Pure profile rules: which profile an event belongs to, when profiles merge, trait and attribute order."""

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kernel.contracts import Event
from services.profiles.activity import Purchases, Sessions
from services.profiles.context import stamp

USER = "user"
ANONYMOUS = "anonymous"
Identity = tuple[str, str]  # (kind, value)


@dataclass(frozen=True)
class KnownProfile:
    profile_id: str
    user_id: str | None


@dataclass
class ProfileState:
    """A profile as a batch works on it: read and locked once, written once at the end."""

    profile_id: str
    user_id: str | None
    traits: dict[str, Any]
    trait_times: dict[str, str]
    first_seen: datetime
    last_seen: datetime
    attributes: dict[str, Any] = field(default_factory=dict)  # the standard ones (see context.py)
    attribute_times: dict[str, str] = field(default_factory=dict)  # context.stamp: rank, then time
    sessions: Sessions = field(default_factory=Sessions)
    purchases: Purchases = field(default_factory=Purchases)
    # False while only Herald's own events ($message_*) are known: first/last seen are theirs until the user shows up.
    user_seen: bool = True
    trait_ops: dict[str, Any] = field(default_factory=dict)  # attributes/domain.py: bases and operations


@dataclass
class Resolution:
    """What to do with an event's identities: the profile it lands on and what merges into it."""

    survivor: str | None  # None: create a new profile
    merge: list[str] = field(default_factory=list)
    link: list[Identity] = field(default_factory=list)  # identities to point at the survivor
    user_id: str | None = None  # the survivor's user id after this event


def identities_to_lock(event: Event) -> list[Identity]:
    """Every identity an event names; their advisory locks serialize work on one person."""
    ids: set[Identity] = set()
    if event.user_id:
        ids.add((USER, event.user_id))
    if event.anonymous_id:
        ids.add((ANONYMOUS, event.anonymous_id))
    if event.type == "alias" and event.previous_id:
        ids.update({(USER, event.previous_id), (ANONYMOUS, event.previous_id)})
    return sorted(ids)


def resolve(event: Event, known: dict[Identity, KnownProfile]) -> Resolution:
    """Decide where an event lands.

    - An event naming a userId lands on that user's profile; anonymous-only profiles it names
      (its anonymousId) merge into it, so earlier anonymous events land on the known user.
    - A profile that already belongs to a *different* known user is never merged implicitly
      (a shared device logging in as someone else); only `alias` merges known users.
    - `alias` merges the previousId's profile into the userId's.
    """
    user_key = (USER, event.user_id) if event.user_id else None
    anon_key = (ANONYMOUS, event.anonymous_id) if event.anonymous_id else None
    prev_keys = (
        [(USER, event.previous_id), (ANONYMOUS, event.previous_id)]
        if event.type == "alias" and event.previous_id
        else []
    )

    survivor: KnownProfile | None = None
    if user_key and user_key in known:
        survivor = known[user_key]
    elif anon_key and anon_key in known:
        candidate = known[anon_key]
        if user_key is None or candidate.user_id is None:
            survivor = candidate
    if survivor is None:
        # alias with a new userId: the new id joins the previous id's profile.
        survivor = next((known[k] for k in prev_keys if k in known), None)

    merge: list[str] = []
    link: list[Identity] = []
    for key in (anon_key, *prev_keys):
        if key is None:
            continue
        other = known.get(key)
        is_alias = key in prev_keys
        if other is None:
            if key == anon_key or key[0] == USER:
                link.append(key)
            continue
        if survivor is None or other.profile_id == survivor.profile_id:
            continue
        if is_alias or other.user_id is None:
            if other.profile_id not in merge:
                merge.append(other.profile_id)
        # else: the anonymous id belongs to another known user; leave it with them.
    if user_key and user_key not in known:
        link.append(user_key)

    user_id = (survivor.user_id if survivor else None) or event.user_id
    if survivor is None and merge:
        raise AssertionError("merge without a survivor")
    return Resolution(
        survivor=survivor.profile_id if survivor else None,
        merge=merge,
        link=sorted(set(link)),
        user_id=user_id,
    )


def apply_traits(
    traits: dict[str, Any], times: dict[str, str], incoming: dict[str, Any], at: datetime
) -> list[str]:
    """Last writer wins per trait, on the event's timestamp; returns the traits that changed.

    Updates `traits` and `times` in place. A late event never overwrites a newer value, so
    profiles converge whatever order events arrive in. Ties go to the larger JSON value so that
    every replica agrees.
    """
    stamp = at.isoformat()
    changed = []
    for name, value in incoming.items():
        previous = times.get(name)
        if previous is not None and (
            previous > stamp or (previous == stamp and repr(traits.get(name)) >= repr(value))
        ):
            continue
        if traits.get(name) != value or name not in traits:
            changed.append(name)
        traits[name] = value
        times[name] = stamp
    return changed


def merge_traits(
    traits: dict[str, Any],
    times: dict[str, str],
    other_traits: dict[str, Any],
    other_times: dict[str, str],
) -> list[str]:
    """Fold another profile's traits (or standard attributes) into this one, one by one, newest wins."""
    changed: list[str] = []
    for name, value in other_traits.items():
        stamp = other_times.get(name, "")
        mine = times.get(name)
        if mine is None or mine < stamp or (mine == stamp and repr(traits.get(name)) < repr(value)):
            if traits.get(name) != value:
                changed.append(name)
            traits[name] = value
            times[name] = stamp
    return changed


def apply_attributes(
    values: dict[str, Any], times: dict[str, str], observed: dict[str, tuple[int, Any]], at: datetime
) -> tuple[list[str], bool]:
    """Highest rank, then last writer, wins per standard attribute; (the attributes that changed, whether any was written).

    Updates `values` and `times` in place, like `apply_traits`: a late or lower-ranked observation never
    overwrites what the profile holds, and ties go to the larger value, so replicas agree. An attribute
    written again with the same value still counts as written (its time moved, and must be stored).
    """
    changed: list[str] = []
    written = False
    time = stamp(0, at)[1:]  # formatted once per event, not per attribute
    for name, (rank, value) in observed.items():
        when = f"{rank}{time}"
        previous = times.get(name)
        if previous is not None and (
            previous > when or (previous == when and repr(values.get(name)) >= repr(value))
        ):
            continue
        if name not in values or values[name] != value:
            changed.append(name)
        values[name] = value
        times[name] = when
        written = True
    return changed, written


def see(profile: ProfileState, at: datetime, by_user: bool) -> bool:
    """Move first/last seen for an event at `at`; True if the profile now counts as seen by its user.

    First and last seen are the user's own events; Herald's (a message sent, delivered, opened) move
    them only while the profile has none, so that the profile converges in any order of events.
    """
    if by_user and not profile.user_seen:
        profile.first_seen = profile.last_seen = at
        profile.user_seen = True
        return True
    if by_user or not profile.user_seen:
        profile.first_seen = min(profile.first_seen, at)
        profile.last_seen = max(profile.last_seen, at)
    return False


def merge_seen(profile: ProfileState, other: ProfileState) -> None:
    """Fold another profile's first/last seen into this one's (the user's own events first)."""
    if other.user_seen and not profile.user_seen:
        profile.first_seen, profile.last_seen, profile.user_seen = other.first_seen, other.last_seen, True
    elif other.user_seen == profile.user_seen:
        profile.first_seen = min(profile.first_seen, other.first_seen)
        profile.last_seen = max(profile.last_seen, other.last_seen)
