"""Herald's own events ($message_*) on real PostgreSQL: on the timeline and counted, but not the user being seen."""

from datetime import timedelta

from nats.aio.client import Client as NATS

from tests.integration.test_profile_updates import T0, apply, event, profile

DISPATCHER = {"library": {"name": "herald-dispatcher"}}
BROWSER = {"library": {"name": "analytics.js"}, "timezone": "Europe/Berlin", "locale": "de-DE"}


async def test_a_message_sent_moves_neither_last_seen_nor_sessions(sessions, nc: NATS, workspace_id: str) -> None:  # type: ignore[no-untyped-def]
    js = nc.jetstream()
    await apply(sessions, js, event(workspace_id, user_id="ada", event="Viewed", context=BROWSER, timestamp=T0))
    sent = event(workspace_id, user_id="ada", event="$message_sent", context=DISPATCHER, timestamp=T0 + timedelta(days=2))
    late = event(workspace_id, user_id="ada", event="$message_failed", context={**BROWSER, "locale": "fr-FR"},
                 timestamp=T0 - timedelta(days=2))
    for e in (sent, late, sent):  # a redelivery too
        await apply(sessions, js, e)
    seen = await profile(sessions, workspace_id, "ada")
    assert (seen["computed"]["first_seen"], seen["computed"]["last_seen"]) == (T0, T0)
    assert seen["computed"]["sessions"]["count"] == 1
    assert seen["attributes"]["language"] == "de"  # a $ event's context is not the user's device
    assert seen["computed"]["event_counts"] == {"Viewed": 1, "$message_sent": 1, "$message_failed": 1}


async def test_the_same_events_in_one_batch_end_the_same(sessions, nc: NATS, workspace_id: str) -> None:  # type: ignore[no-untyped-def]
    js = nc.jetstream()
    events = [
        event(workspace_id, user_id="bo", event="$message_sent", context=DISPATCHER, timestamp=T0 + timedelta(days=1)),
        event(workspace_id, user_id="bo", event="Viewed", context=BROWSER, timestamp=T0),
    ]
    await apply(sessions, js, *events)
    seen = await profile(sessions, workspace_id, "bo")
    assert (seen["computed"]["first_seen"], seen["computed"]["last_seen"]) == (T0, T0)


async def test_a_profile_met_first_through_herald_s_events_takes_its_user_s_times(sessions, nc: NATS, workspace_id: str) -> None:  # type: ignore[no-untyped-def]
    js = nc.jetstream()
    ws_a, ws_b = workspace_id, f"{workspace_id}b"
    for ws, order in ((ws_a, (0, 1, 2)), (ws_b, (2, 1, 0))):
        events = [
            event(ws, user_id="cy", event="$message_sent", context=DISPATCHER, timestamp=T0 + timedelta(days=3)),
            event(ws, user_id="cy", event="$message_sent", context=DISPATCHER, timestamp=T0 - timedelta(days=3)),
            event(ws, user_id="cy", event="Viewed", context=BROWSER, timestamp=T0),
        ]
        await apply(sessions, js, events[order[0]])
        await apply(sessions, js, events[order[1]])
        await apply(sessions, js, events[order[2]])
    for ws in (ws_a, ws_b):
        seen = await profile(sessions, ws, "cy")
        assert (seen["computed"]["first_seen"], seen["computed"]["last_seen"]) == (T0, T0)
