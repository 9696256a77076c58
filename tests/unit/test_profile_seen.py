"""First and last seen are the user's own events; Herald's count only while there are none, in any order."""

import itertools
import random
from datetime import UTC, datetime, timedelta

from services.profiles.domain import ProfileState, merge_seen, see

T0 = datetime(2026, 11, 1, tzinfo=UTC)
D = timedelta(days=1)
EVENTS = [(T0 + 3 * D, False), (T0 - 3 * D, False), (T0, True), (T0 + D, True)]  # (when, by the user)


def play(events: list[tuple[datetime, bool]] | tuple[tuple[datetime, bool], ...]) -> ProfileState:
    (first_at, first_by_user), *rest = events
    p = ProfileState("p", "u", {}, {}, first_at, first_at, user_seen=first_by_user)
    for at, by_user in rest:
        see(p, at, by_user)
    return p


def test_herald_events_never_move_a_seen_profile_in_any_order() -> None:
    results = {(p.first_seen, p.last_seen, p.user_seen) for p in map(play, itertools.permutations(EVENTS))}
    assert results == {(T0, T0 + D, True)}


def test_a_profile_of_herald_events_only_is_seen_at_them() -> None:
    p = play([e for e in EVENTS if not e[1]])
    assert (p.first_seen, p.last_seen, p.user_seen) == (T0 - 3 * D, T0 + 3 * D, False)


def test_merging_ends_where_one_profile_would() -> None:
    rng = random.Random(11)
    for _ in range(30):
        order = EVENTS[:]
        rng.shuffle(order)
        cut = rng.randrange(1, len(order))
        mine, other = play(order[:cut]), play(order[cut:])
        merge_seen(mine, other)
        assert (mine.first_seen, mine.last_seen, mine.user_seen) == (T0, T0 + D, True)
