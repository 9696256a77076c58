"""Engagement rules without I/O: signed link tokens, links wrapped and the open pixel added at render time, and
which events a send's final outcome puts on the user's timeline."""

import re
from datetime import UTC, datetime
from html import unescape

from kernel import signing
from services.dispatcher import domain, service
from services.dispatcher.models import Delivery

KEY = b"k" * 40
LINKS = domain.Links("https://t.example", KEY, "ws_1", "send-1", "ada", "email")


def test_a_link_token_verifies_only_unaltered_under_its_key_and_for_its_purpose() -> None:
    token = signing.link_token(KEY, "click", {"w": "ws_1", "s": "send-1", "l": "https://a.example/"})
    assert signing.read_link_token(KEY, "click", token) == {"w": "ws_1", "s": "send-1", "l": "https://a.example/"}
    body, mac = token.split(".")
    other = signing.link_token(KEY, "click", {"w": "ws_1", "s": "send-1", "l": "https://evil.example/"}).split(".")[0]
    assert signing.read_link_token(KEY, "click", f"{other}.{mac}") is None  # another address under this MAC
    assert signing.read_link_token(KEY, "open", token) is None  # a click token is not an open token
    assert signing.read_link_token(b"y" * 40, "click", token) is None
    for broken in (body, "", ".", f"{body}.", f"{body}.{mac}x", f"{body}é.{mac}", "x" * 9000):
        assert signing.read_link_token(KEY, "click", broken) is None


def test_the_unsubscribe_token_keeps_its_published_shape() -> None:
    token = domain.unsubscribe_token(KEY, "ws_1", "send-1", "ada", "email")
    assert signing.read_link_token(KEY, "unsubscribe", token) == {"w": "ws_1", "s": "send-1", "u": "ada", "c": "email"}
    url = domain.Links("https://t.example", KEY, "ws_1", "send-1", "ada", "email", "sg_weekly").unsubscribe()
    assert signing.read_link_token(KEY, "unsubscribe", url.rsplit("/", 1)[1])["g"] == "sg_weekly"  # type: ignore[index]


def test_http_links_are_wrapped_per_link_and_an_open_pixel_goes_before_the_body_ends() -> None:
    html = ('<html><body><a href="https://a.example/x?p=1&amp;q=2">A</a> <a class="b" href=\'http://b.example/\'>B</a>'
            '<a href="mailto:x@y.z">m</a><a href="#top">t</a><a href="https://t.example/v1/unsubscribe/abc">u</a>'
            "</body></html>")
    tracked = domain.tracked_html(html, LINKS)
    wrapped = [unescape(h) for h in re.findall(r"""href=["']([^"']*)["']""", tracked)]
    assert wrapped[2:] == ["mailto:x@y.z", "#top", "https://t.example/v1/unsubscribe/abc"]
    claims = [signing.read_link_token(KEY, "click", u.removeprefix("https://t.example/v1/links/c/")) for u in wrapped[:2]]
    assert claims == [
        {"w": "ws_1", "s": "send-1", "u": "ada", "c": "email", "l": "https://a.example/x?p=1&q=2", "i": 1},
        {"w": "ws_1", "s": "send-1", "u": "ada", "c": "email", "l": "http://b.example/", "i": 2},
    ]
    assert "&amp;" in tracked.split("href=")[1] or "&" not in tracked.split("href=")[1].split(">")[0]
    pixel = re.search(r'<img src="https://t\.example/v1/links/o/([^"]+)" width="1" height="1" alt=""', tracked)
    assert pixel is not None and tracked.endswith("</body></html>")
    assert signing.read_link_token(KEY, "open", pixel.group(1)) == {"w": "ws_1", "s": "send-1", "u": "ada", "c": "email"}
    assert domain.tracked_html("<p>no body tag</p>", LINKS).startswith("<p>no body tag</p><img ")


def a_delivery(status: str, code: str = "ok", variant: str | None = None, **fields: object) -> Delivery:
    given: dict[str, object] = {
        "send_id": "send-1", "workspace_id": "ws_1", "campaign_id": "cmp_1", "profile_id": "p1", "user_id": "ada",
        "channel": "email", "status": status, "reason_code": code, "reason": None if code == "ok" else "why",
        "attempts": 1, "request": {"variant": variant} if variant else {}, "sent_at": datetime(2026, 12, 3, tzinfo=UTC),
    }
    return Delivery(**{**given, **fields})


def test_a_sent_send_is_sent_and_delivered_a_dead_address_bounced_each_with_its_send_and_variant() -> None:
    sent = service.outcome_events(a_delivery("sent", variant="B"))
    assert [(e.event, e.message_id) for e in sent] == [
        ("$message_sent", "herald:send-1:sent"), ("$message_delivered", "herald:send-1:delivered"),
    ]
    assert sent[1].properties == {"send_id": "send-1", "campaign_id": "cmp_1", "channel": "email", "variant": "B"}
    assert [e.event for e in service.outcome_events(a_delivery("failed", "hard_bounce"))] == ["$message_bounced"]
    assert [e.event for e in service.outcome_events(a_delivery("failed", "unregistered"))] == ["$message_bounced"]
    failed = service.outcome_events(a_delivery("failed", "recipient_refused"))
    assert [e.event for e in failed] == ["$message_failed"] and failed[0].properties["reason_code"] == "recipient_refused"
    assert [e.event for e in service.outcome_events(a_delivery("skipped", "no_address"))] == ["$message_skipped"]
    assert service.outcome_events(a_delivery("retrying", "smtp_busy")) == []  # not final: nothing yet
    assert service.outcome_events(a_delivery("sent", user_id=None)) == []  # an anonymous profile has no timeline here
