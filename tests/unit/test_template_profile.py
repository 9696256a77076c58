"""Templates read the whole profile: standard attributes, devices and computed values, beside traits."""

from datetime import UTC, datetime
from typing import Any

from kernel.contracts import ProfileSnapshot, SendRequested
from services.dispatcher.domain import render_email, render_webhook, template_context

NOW = datetime(2026, 11, 22, 9, 30, tzinfo=UTC)
# The profile as GET /api/v1/users/{id} shows it (DESIGN.md's shape), push token and all.
PROFILE: dict[str, Any] = {
    "user_id": "ada", "profile_id": "p1", "anonymous_ids": ["anon-1"], "aliases": [],
    "traits": {"first_name": "Ada", "email": "ada@example.com"},
    "attributes": {"language": "de", "time_zone": "Europe/Berlin", "country": "DE", "city": "Berlin",
                   "location": {"lat": 52.52, "lon": 13.4, "at": NOW.isoformat()}},
    "devices": [{"device_id": "d1", "platform": "ios", "app": "Shop", "app_version": "3.2.0", "os_version": "18.1",
                 "model": "iPhone15,2", "locale": "de-DE", "time_zone": "Europe/Berlin", "push_token": "secret-token",
                 "push_enabled": True, "last_seen": NOW.isoformat()}],
    "computed": {"first_seen": NOW.isoformat(), "last_seen": NOW.isoformat(), "event_counts": {"Order Completed": 2},
                 "sessions": {"count": 12, "first": NOW.isoformat(), "last": NOW.isoformat(), "hour_of_week": [[0] * 24] * 7},
                 "purchases": {"count": 2, "revenue": 59.8, "currency": "EUR", "first": NOW.isoformat(), "last": NOW.isoformat()}},
}


def send(channel: str, message: dict[str, Any]) -> SendRequested:
    return SendRequested(send_id="s1", workspace_id="ws", campaign_id="c1", channel=channel, profile_id="p1",
                         user_id="ada", message=message, requested_at=NOW)


def snapshot() -> ProfileSnapshot:
    return ProfileSnapshot.model_validate_json(ProfileSnapshot.model_validate(PROFILE).model_dump_json())  # as on the bus


def test_an_email_reads_attributes_devices_and_computed_values() -> None:
    body = (
        "{% if user.attributes.language == 'de' %}Hallo{% else %}Hello{% endif %} {{ user.traits.first_name }} in "
        "{{ user.attributes.city }} ({{ user.attributes.location.lat | round }}), "
        "{% for d in user.devices %}{% if d.push_enabled %}{{ d.platform }} {{ d.app_version }}{% endif %}{% endfor %}, "
        "{{ user.computed.sessions.count }} sessions, {{ user.computed.purchases.revenue }} "
        "{{ user.computed.purchases.currency }} over {{ user.computed.purchases.count }} orders, "
        "{{ user.computed.event_counts['Order Completed'] }} counted, last seen {{ user.computed.last_seen | date: '%Y-%m-%d' }}"
    )
    email = render_email(send("email", {"subject": "Hi", "body": body}), snapshot(), "ada@example.com")
    assert email.body == ("Hallo Ada in Berlin (53), ios 3.2.0, 12 sessions, 59.8 EUR over 2 orders, 2 counted, "
                          "last seen 2026-11-22")


def test_a_push_token_never_reaches_a_template() -> None:
    context = template_context(send("email", {"subject": "s", "body": "b"}), snapshot())
    assert "push_token" not in context["user"]["devices"][0]
    body = {"device": "{% for pair in user.devices[0] %}{{ pair[0] }}={{ pair[1] }};{% endfor %}"}
    hook = render_webhook(send("webhook", {"url": "https://hooks.example.com", "body": body}), snapshot())
    assert "platform=ios;" in hook.body["device"] and "secret-token" not in hook.body["device"]


def test_a_profile_with_no_attributes_devices_or_activity_renders_its_defaults() -> None:
    bare = ProfileSnapshot(profile_id="p1", traits={"first_name": "Bo"})
    body = ("{{ user.attributes.city | default: 'your city' }}, {{ user.devices | size }} devices, "
            "{{ user.computed.sessions.count }} sessions, {{ user.computed.purchases.revenue }}")
    email = render_email(send("email", {"subject": "Hi", "body": body}), bare, "bo@example.com")
    assert email.body == "your city, 0 devices, 0 sessions, 0.0"
