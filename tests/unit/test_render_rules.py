from datetime import UTC, datetime

import pytest

from kernel.contracts import ProfileSnapshot, SendRequested, TriggerEvent
from services.dispatcher.domain import (
    InvalidAddress,
    RenderError,
    email_address,
    render_email,
    render_webhook,
    retry_at,
)

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
    assert email_address(ProfileSnapshot(profile_id="p", traits={})) is None
    assert email_address(ProfileSnapshot(profile_id="p", traits={"email": "  "})) is None
    for unusable in ("nope", "a@localhost", "a@b.c\nBcc: x@y.z", "a@\rb.c", "<a@b.c>, c@d.e", 42, ["a@b.c"], "x" * 251 + "@b.c"):
        with pytest.raises(InvalidAddress):
            email_address(ProfileSnapshot(profile_id="p", traits={"email": unusable}))


def test_a_subject_is_always_one_header_line() -> None:
    sent = send("email", {"subject": "Hi {{ user.traits.name }}", "body": "b"})
    email = render_email(sent, ProfileSnapshot(profile_id="p", traits={"name": "Bo\r\nBcc: all@x.y\x00"}), "a@b.c")
    assert email.subject == "Hi Bo Bcc: all@x.y"
    with pytest.raises(InvalidAddress):
        render_email(send("email", {"subject": "s", "body": "b", "from": "a@b.c\nBcc: x@y.z"}), ProfileSnapshot(profile_id="p"), "a@b.c")


def test_retries_back_off_exponentially_up_to_a_cap_and_honour_retry_after() -> None:
    waits = [(retry_at(NOW, n, 5, 900) - NOW).total_seconds() for n in range(1, 10)]
    assert waits == [5, 10, 20, 40, 80, 160, 320, 640, 900]
    assert (retry_at(NOW, 1, 5, 900, retry_after=120) - NOW).total_seconds() == 120
    assert (retry_at(NOW, 1, 5, 900, retry_after=86400) - NOW).total_seconds() == 900
