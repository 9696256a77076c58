from datetime import UTC, datetime, timedelta

from kernel.contracts import Event
from services.profiles.domain import (
    ANONYMOUS,
    USER,
    KnownProfile,
    apply_traits,
    merge_traits,
    resolve,
)

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def event(**fields: object) -> Event:
    base = {"workspace_id": "ws", "message_id": "m", "type": "track", "event": "x", "timestamp": T0, "received_at": T0}
    return Event.model_validate({**base, **fields})


def known(profile_id: str, user_id: str | None) -> KnownProfile:
    return KnownProfile(profile_id, user_id)


def test_first_sight_creates_a_profile_with_both_ids_linked() -> None:
    plan = resolve(event(user_id="u1", anonymous_id="a1"), {})
    assert plan.survivor is None and plan.merge == []
    assert plan.link == [(ANONYMOUS, "a1"), (USER, "u1")]
    assert plan.user_id == "u1"


def test_identify_merges_the_anonymous_profile_into_the_known_user() -> None:
    plan = resolve(
        event(type="identify", user_id="u1", anonymous_id="a1"),
        {(USER, "u1"): known("P_user", "u1"), (ANONYMOUS, "a1"): known("P_anon", None)},
    )
    assert plan.survivor == "P_user"
    assert plan.merge == ["P_anon"]


def test_anonymous_profile_becomes_the_user_when_the_user_is_new() -> None:
    plan = resolve(event(type="identify", user_id="u1", anonymous_id="a1"), {(ANONYMOUS, "a1"): known("P_anon", None)})
    assert plan.survivor == "P_anon"
    assert plan.link == [(USER, "u1")]
    assert plan.user_id == "u1"


def test_a_device_shared_by_two_known_users_never_merges_them() -> None:
    plan = resolve(event(user_id="u2", anonymous_id="a1"), {(ANONYMOUS, "a1"): known("P_u1", "u1")})
    assert plan.survivor is None  # u2 gets a profile of their own
    assert plan.merge == []


def test_alias_merges_the_previous_identity_even_if_known() -> None:
    plan = resolve(
        event(type="alias", user_id="new", previous_id="old"),
        {(USER, "new"): known("P_new", "new"), (USER, "old"): known("P_old", "old")},
    )
    assert plan.survivor == "P_new"
    assert plan.merge == ["P_old"]


def test_alias_to_a_new_id_joins_the_previous_profile() -> None:
    plan = resolve(event(type="alias", user_id="new", previous_id="old"), {(USER, "old"): known("P_old", "old")})
    assert plan.survivor == "P_old"
    assert (USER, "new") in plan.link


def test_traits_are_last_writer_wins_on_event_time_in_any_order() -> None:
    newer, older = T0 + timedelta(hours=1), T0
    a_traits: dict = {}
    a_times: dict = {}
    apply_traits(a_traits, a_times, {"plan": "pro"}, newer)
    changed = apply_traits(a_traits, a_times, {"plan": "free", "city": "Oslo"}, older)
    assert a_traits == {"plan": "pro", "city": "Oslo"}
    assert changed == ["city"]

    b_traits: dict = {}
    b_times: dict = {}
    apply_traits(b_traits, b_times, {"plan": "free", "city": "Oslo"}, older)
    apply_traits(b_traits, b_times, {"plan": "pro"}, newer)
    assert b_traits == a_traits and b_times == a_times


def test_merging_profiles_keeps_the_newest_value_of_each_trait() -> None:
    traits, times = {"plan": "free", "city": "Oslo"}, {"plan": "2026-01-01", "city": "2026-03-01"}
    changed = merge_traits(traits, times, {"plan": "pro", "city": "Rome"}, {"plan": "2026-02-01", "city": "2026-01-01"})
    assert traits == {"plan": "pro", "city": "Oslo"}
    assert changed == ["plan"]
