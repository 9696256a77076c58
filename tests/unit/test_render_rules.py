from datetime import UTC, datetime

import pytest

from kernel.contracts import ProfileSnapshot, SendRequested, TriggerEvent
from services.dispatcher.domain import RenderError, email_address, render_email, render_webhook

NOW = datetime(2026, 11, 22, tzinfo=UTC)


def send(channel: str, message: dict) -> SendRequested:
    return SendRequested(
        send_id="s1", workspace_id="ws", campaign_id="c1", channel=channel, profile_id="p1", user_id="u1",
        message=message, requested_at=NOW,
        trigger=TriggerEvent(message_id="m1", name="Product Added", properties={"name": "Red Shoes", "price": 150}, timestamp=NOW),
    )


EMAIL = {"subject": "Still thinking it over, {{ user.traits.first_name | default: 'friend' }}?",
         "body": "Your {{ event.properties.name }} is waiting."}


def test_email_is_personalised_from_traits_and_the_trigger_event() -> None:
    profile = ProfileSnapshot(profile_id="p1", user_id="u1", traits={"first_name": "Ada", "email": "ada@example.com"})
    email = render_email(send("email", EMAIL), profile, "ada@example.com")
    assert email.subject == "Still thinking it over, Ada?"
    assert email.body == "Your Red Shoes is waiting."


def test_default_filter_covers_a_missing_trait() -> None:
    email = render_email(send("email", EMAIL), ProfileSnapshot(profile_id="p1"), "x@example.com")
    assert email.subject == "Still thinking it over, friend?"


def test_a_broken_template_is_a_render_error_naming_the_field() -> None:
    with pytest.raises(RenderError, match="message.body"):
        render_email(send("email", {"subject": "Hi", "body": "{% if %}"}), ProfileSnapshot(profile_id="p1"), "x@y.z")


def test_webhook_object_bodies_have_their_strings_rendered() -> None:
    hook = render_webhook(
        send("webhook", {"url": "http://127.0.0.1:9/hook", "body": {"text": "{{ event.properties.name }}", "n": 1, "tags": ["{{ user.user_id }}"]}}),
        ProfileSnapshot(profile_id="p1", user_id="u1"),
    )
    assert hook.body == {"text": "Red Shoes", "n": 1, "tags": ["u1"]}


def test_webhook_string_body_must_render_to_json() -> None:
    with pytest.raises(RenderError, match="valid JSON"):
        render_webhook(send("webhook", {"url": "http://127.0.0.1:9/", "body": "hello {{ user.user_id }}"}), ProfileSnapshot(profile_id="p1"))


def test_only_plausible_addresses_are_used() -> None:
    assert email_address(ProfileSnapshot(profile_id="p", traits={"email": " a@b.c "})) == "a@b.c"
    assert email_address(ProfileSnapshot(profile_id="p", traits={"email": "nope"})) is None
    assert email_address(ProfileSnapshot(profile_id="p", traits={})) is None
