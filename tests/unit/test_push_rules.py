"""Push rules without I/O: what a push campaign must be, which provider a token belongs to, what a send's
devices add up to."""

from typing import Any

import pytest
from pydantic import ValidationError

from services.dispatcher.domain import push_service_of
from services.dispatcher.service import DeviceResult, push_outcome
from services.scheduler.schemas import CampaignIn


def push_campaign(message: dict[str, Any], **fields: Any) -> CampaignIn:
    return CampaignIn.model_validate({"name": "p", "channel": "push", "trigger": {"event": "Added"}, "message": message, **fields})


def test_a_push_campaign_keeps_its_app_in_the_message() -> None:
    campaign = push_campaign({"title": "Hi {{ user.traits.first_name }}", "data": {"k": "v"}}, app_id="app_shop")
    assert campaign.message["app_id"] == "app_shop" and campaign.message["priority"] == "high"


@pytest.mark.parametrize("message, loc", [
    ({}, ("message",)),
    ({"title": "Hi {{ user.traits.first_name "}, ("message", "title")),
    ({"body": "ok", "data": {"k": "{% if %}"}}, ("message", "data", "k")),
    ({"body": "ok", "ios": {"subtitle": "{{ x | nope }}"}}, ("message", "ios", "subtitle")),
    ({"body": "ok", "ttl": -1}, ("message", "ttl")),
    ({"body": "ok", "priority": "urgent"}, ("message", "priority")),
    ({"body": "ok", "collapse_key": "x" * 65}, ("message", "collapse_key")),
    ({"body": "ok", "android": {"color": "red"}}, ("message", "android", "color")),
    ({"body": "ok", "subject": "an email field"}, ("message", "subject")),
])
def test_a_bad_push_message_is_refused_at_its_field(message: dict[str, Any], loc: tuple[str, ...]) -> None:
    with pytest.raises(ValidationError) as refused:
        push_campaign(message)
    assert any(tuple(e["loc"][: len(loc)]) == loc for e in refused.value.errors()), refused.value.errors()


def test_the_token_says_which_provider() -> None:
    assert push_service_of("ab" * 32) == "apns"
    assert push_service_of("dGVzdA:APA91bHun4MxP5egoKMwt2KZFBaFUH-1RYqx") == "fcm"
    assert push_service_of("ab" * 31) == "fcm"


def device(status: str, code: str = "ok", retry_after: float | None = None) -> DeviceResult:
    return DeviceResult("d", "ios", "apns", status, code, f"{code} reason", retry_after=retry_after)  # type: ignore[arg-type]


def test_a_send_is_sent_when_any_device_took_it_and_retried_while_any_may_still() -> None:
    assert push_outcome([device("sent"), device("failed", "unregistered")], {}).status == "sent"
    retry = push_outcome([device("sent"), device("retry", "rate_limited", 5), device("retry", "provider_unavailable", 30)], {})
    assert (retry.status, retry.retry_after) == ("retry", 30)
    assert push_outcome([device("failed", "unregistered")], {"other": "sent"}).status == "sent"
    failed = push_outcome([device("skipped", "payload_too_large"), device("failed", "unregistered")], {})
    assert (failed.status, failed.code) == ("failed", "unregistered")
    assert push_outcome([device("skipped", "no_credentials")], {}).code == "no_credentials"
