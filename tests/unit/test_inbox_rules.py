"""In-app message and content card rules without I/O: rendering for a user, links an app may open, expiry, and
what an app's impression, click and dismissal reports change and say on the timeline."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from kernel.contracts import INBOX_DEFAULT_TTL_HOURS, ContentCardContent, InAppContent, ProfileSnapshot, SendRequested
from services.dispatcher.domain import PayloadTooLarge, RenderError, Undeliverable
from services.dispatcher.inbox import domain

NOW = datetime(2026, 12, 3, 20, 0, tzinfo=UTC)
ADA = ProfileSnapshot(profile_id="p1", user_id="ada", traits={"first_name": "Ada", "sku": "rs-42"})


def send(channel: str, message: dict[str, Any]) -> SendRequested:
    return SendRequested.model_validate({
        "send_id": "s1", "workspace_id": "ws", "campaign_id": "c1", "channel": channel, "profile_id": "p1",
        "user_id": "ada", "message": message, "requested_at": NOW,
    })


def test_an_in_app_message_renders_every_text_and_link_for_the_user() -> None:
    rendered = domain.render(send("in_app", {
        "layout": "slide_up", "header": "Hi {{ user.traits.first_name }}", "body": "  Your {{ user.traits.sku }}  ",
        "image_url": "https://cdn.example.com/{{ user.traits.sku }}.png", "deep_link": "shop://p/{{ user.traits.sku }}",
        "buttons": [{"text": "See {{ user.traits.sku }}", "url": "https://shop.example/{{ user.traits.sku }}"},
                    {"text": "Later"}],
        "ttl_hours": 2,
    }), ADA, NOW)
    assert rendered.content == {
        "layout": "slide_up", "header": "Hi Ada", "body": "Your rs-42", "image_url": "https://cdn.example.com/rs-42.png",
        "deep_link": "shop://p/rs-42",
        "buttons": [{"text": "See rs-42", "deep_link": None, "url": "https://shop.example/rs-42", "action": "open"},
                    {"text": "Later", "deep_link": None, "url": None, "action": "close"}],
    }
    assert (rendered.pinned, rendered.sent_at, rendered.expires_at) == (False, NOW, NOW + timedelta(hours=2))


def test_a_content_card_renders_and_keeps_its_pin() -> None:
    rendered = domain.render(send("content_card", {
        "title": "{{ user.traits.first_name }}, 20% off", "body": "Today only", "link": "https://shop.example/sale",
        "link_text": "Shop", "pinned": True, "expires_at": "2026-12-24T00:00:00Z",
    }), ADA, NOW)
    assert rendered.content == {"title": "Ada, 20% off", "body": "Today only", "image_url": None,
                                "link": "https://shop.example/sale", "link_text": "Shop"}
    assert rendered.pinned and rendered.expires_at == datetime(2026, 12, 24, tzinfo=UTC)


def test_without_an_expiry_a_message_leaves_the_feed_after_the_default() -> None:
    card = ContentCardContent(title="t")
    assert domain.expires_at(card, NOW) == NOW + timedelta(hours=INBOX_DEFAULT_TTL_HOURS)
    with pytest.raises(domain.Expired):
        domain.render(send("content_card", {"title": "t", "expires_at": "2026-12-01T00:00:00Z"}), ADA, NOW)


@pytest.mark.parametrize(("field", "value", "why"), [
    ("deep_link", "javascript:alert(1)", "may not be a javascript"),
    ("deep_link", "JavaScript:alert(1)", "may not be a javascript"),
    ("deep_link", "data:text/html,<b>x</b>", "may not be a data"),
    ("deep_link", "/relative/path", "has no scheme"),
    ("deep_link", "https:///no-host", "not an http.s. URL with a host"),
    ("image_url", "shop://not-an-image", "not an http.s. URL"),
    ("image_url", "https://cdn.example.com/a b.png", "spaces or control characters"),
])
def test_a_link_an_app_must_not_open_skips_the_send(field: str, value: str, why: str) -> None:
    with pytest.raises(domain.InvalidLink, match=why) as refused:
        domain.render(send("in_app", {"header": "h", field: value}), ADA, NOW)
    assert refused.value.code == "invalid_link" and f"message.{field}" in str(refused.value)


def test_a_link_that_a_user_value_turns_bad_is_refused_too() -> None:
    evil = ProfileSnapshot(profile_id="p2", traits={"home": "javascript:steal()"})
    with pytest.raises(domain.InvalidLink):
        domain.render(send("content_card", {"title": "t", "link": "{{ user.traits.home }}"}), evil, NOW)


def test_a_message_that_renders_empty_or_too_large_or_broken_is_skipped() -> None:
    nameless = ProfileSnapshot(profile_id="p3")
    with pytest.raises(Undeliverable, match="no header, body or image"):
        domain.render(send("in_app", {"header": "{{ user.traits.first_name }}"}), nameless, NOW)
    with pytest.raises(PayloadTooLarge):
        domain.render(send("in_app", {"body": "{% for i in (1..7000) %}{{ user.traits.sku }}{% endfor %}"}), ADA, NOW)
    with pytest.raises(RenderError, match="message.buttons"):
        domain.render(send("in_app", {"header": "h", "buttons": [{"text": "{{ 1 | divided_by: 0 }}"}]}), ADA, NOW)


@pytest.mark.parametrize(("message", "why"), [
    ({"header": "h", "expires_at": "2026-12-24T00:00:00Z", "ttl_hours": 1}, "not both"),
    ({"header": "h", "expires_at": "2026-12-24T00:00:00"}, "time zone"),
    ({"header": "h", "ttl_hours": 0}, "greater than 0"),
    ({"layout": "modal"}, "needs a header, a body or an image_url"),
    ({"header": "h", "buttons": [{"text": "x", "url": "https://a.example", "deep_link": "a://b"}]}, "not both"),
    ({"header": "h", "buttons": [{"text": "x", "action": "open"}]}, "needs a `deep_link` or a `url`"),
    ({"header": "h", "buttons": [{"text": "a"}, {"text": "b"}, {"text": "c"}]}, "at most 2"),
    ({"header": "h", "layout": "banner"}, "modal"),
])
def test_an_in_app_message_that_cannot_be_shown_is_refused_when_made(message: dict[str, Any], why: str) -> None:
    with pytest.raises(ValidationError, match=why):
        InAppContent.model_validate(message)


def state(**fields: Any) -> domain.MessageState:
    content = {"deep_link": "shop://sale", "buttons": [{"text": "Go", "deep_link": None, "url": "https://x.example",
                                                      "action": "open"}]}
    return domain.MessageState(**{"channel": "in_app", "content": content, **fields})


def test_an_impression_marks_the_message_seen_once() -> None:
    first = domain.engagement(state(), "impression", None, NOW)
    assert (first.changes, first.event, first.dedupe) == ({"viewed_at": NOW}, "$message_viewed", "viewed")
    again = domain.engagement(state(viewed_at=NOW), "impression", None, NOW + timedelta(minutes=1))
    assert again.changes == {} and again.dedupe == first.dedupe  # the same event: stored once


def test_a_click_counts_as_seen_and_names_its_button_and_link() -> None:
    click = domain.engagement(state(), "click", 0, NOW)
    assert click.changes == {"viewed_at": NOW, "clicked_at": NOW}
    assert (click.event, click.dedupe) == ("$message_clicked", "clicked:0")
    assert click.properties == {"button": 0, "button_text": "Go", "action": "open", "url": "https://x.example"}
    body = domain.engagement(state(viewed_at=NOW, clicked_at=NOW), "click", None, NOW)
    assert (body.changes, body.dedupe, body.properties) == ({}, "clicked", {"url": "shop://sale"})


def test_a_dismissal_is_recorded_once() -> None:
    dismissal = domain.engagement(state(), "dismissal", None, NOW)
    assert (dismissal.changes, dismissal.event) == ({"dismissed_at": NOW}, "$message_dismissed")
    assert domain.engagement(state(dismissed_at=NOW), "dismissal", None, NOW).changes == {}


def test_a_button_the_message_does_not_have_is_refused() -> None:
    with pytest.raises(domain.BadEvent, match="1 button") as missing:
        domain.engagement(state(), "click", 1, NOW)
    assert missing.value.field == "button"
    with pytest.raises(domain.BadEvent, match="only a click"):
        domain.engagement(state(), "impression", 0, NOW)
    card = domain.MessageState("content_card", {"title": "t", "link": None})
    with pytest.raises(domain.BadEvent):
        domain.engagement(card, "click", 0, NOW)


def test_a_campaign_checks_every_template_of_its_in_app_message_and_card() -> None:
    from services.scheduler.schemas import CampaignIn

    with pytest.raises(ValidationError) as refused:
        CampaignIn.model_validate({"name": "n", "channel": "in_app", "trigger": {"event": "e"},
                                   "message": {"header": "ok", "buttons": [{"text": "{{ usr.name }}"}]}})
    assert [e["loc"] for e in refused.value.errors()] == [("message", "buttons", 0, "text")]
    with pytest.raises(ValidationError) as unknown:
        CampaignIn.model_validate({"name": "n", "channel": "content_card", "trigger": {"event": "e"},
                                   "message": {"title": "t", "colour": "red"}})
    assert [e["loc"] for e in unknown.value.errors()] == [("message", "colour")]
    saved = CampaignIn.model_validate({"name": "n", "channel": "content_card", "trigger": {"event": "e"},
                                       "message": {"title": "Hi {{ user.traits.first_name }}", "pinned": True,
                                                   "ttl_hours": 24}})
    assert saved.message == {"title": "Hi {{ user.traits.first_name }}", "pinned": True, "ttl_hours": 24.0}
