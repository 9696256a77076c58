"""What a campaign may hold, checked when it is saved: a refused campaign is a 422 naming the field."""

from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import ValidationError

from services.scheduler import schemas
from services.scheduler.schemas import CampaignIn

EMAIL = {"subject": "Hi {{ user.traits.first_name | default: 'there' }}", "body": "Your {{ event.properties.name }}."}


def campaign(channel: str = "email", message: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    return {
        "name": "Abandoned cart", "channel": channel, "trigger": {"event": "Product Added"},
        "message": message if message is not None else EMAIL, **fields,
    }


def nested(depth: int) -> Any:
    """A list inside a list, `depth` deep."""
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def webhook(**message: Any) -> dict[str, Any]:
    return campaign("webhook", {"url": "https://hooks.example.com/in", **message})


def refused(body: dict[str, Any]) -> dict[tuple[str | int, ...], str]:
    """The locations refused, each with its message."""
    with pytest.raises(ValidationError) as caught:
        CampaignIn.model_validate(body)
    return {tuple(e["loc"]): e["msg"] for e in caught.value.errors()}


@pytest.fixture
def allowed(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Private hosts an operator allows (the dev stack's sinks, a VPC endpoint)."""
    monkeypatch.setenv("HERALD_WEBHOOK_ALLOWED_HOSTS", "127.0.0.1, localhost, 10.0.0.0/8")
    schemas.webhook_policy.cache_clear()
    yield
    monkeypatch.delenv("HERALD_WEBHOOK_ALLOWED_HOSTS")
    schemas.webhook_policy.cache_clear()


def test_an_ordinary_campaign_is_accepted() -> None:
    saved = CampaignIn.model_validate(campaign(cancel_on=["Order Completed"], delay_seconds=1800))
    assert saved.message == EMAIL
    hook = CampaignIn.model_validate(webhook(headers={"X-Token": "abc 123"}, body={"n": 1, "text": "{{ user.user_id }}"}))
    assert hook.message["url"] == "https://hooks.example.com/in"


@pytest.mark.parametrize(
    "field, template",
    [
        ("body", "{% for i in (1..1000000000000) %}x{% endfor %}"),
        ("body", "{% for i in (1..100) %}{% for j in (1..100) %}{% for k in (1..2) %}{% endfor %}{% endfor %}{% endfor %}"),
        ("subject", "{{ (1..100000000) | sum }}"),
        ("body", "{% tablerow i in (1..20000) %}{{ i }}{% endtablerow %}"),
    ],
)
def test_a_template_beyond_the_loop_limit_is_refused_naming_its_field(field: str, template: str) -> None:
    errors = refused(campaign(message={**EMAIL, field: template}))
    assert list(errors) == [("message", field)]
    assert "10000" in errors[("message", field)]


def test_a_loop_within_the_limit_or_bounded_by_data_is_accepted() -> None:
    body = "{% for i in (1..100) %}{{ i }}{% endfor %}{% for item in event.properties.items limit: 5 %}{{ item }}{% endfor %}"
    CampaignIn.model_validate(campaign(message={**EMAIL, "body": body}))
    CampaignIn.model_validate(campaign(message={**EMAIL, "body": "{% for i in (1..1000000000000) limit: 3 %}{{ i }}{% endfor %}"}))


@pytest.mark.parametrize(
    "template, words",
    [
        ("{{ user.traits.name | nosuchfilter }}", "unknown filter"),
        ("{% include 'header' %}", "partial"),
        ("Hi {{ usr.traits.name }}", "unknown variable `usr`"),
        ("{% if %}", "not a valid Liquid template"),
        ("x" * 40_000, "longer than"),
        ("{% if a %}" * 20 + "{% endif %}" * 20, "not a valid Liquid template"),
    ],
)
def test_what_cannot_render_is_refused_when_saved(template: str, words: str) -> None:
    errors = refused(campaign(message={**EMAIL, "body": template}))
    assert words in errors[("message", "body")]


def test_locals_loops_and_counters_are_not_unknown_variables() -> None:
    body = (
        "{% assign total = 0 %}{% capture greeting %}Hi{% endcapture %}{% increment n %}"
        "{% for item in event.properties.items %}{{ forloop.index }}{{ item.name }}{% endfor %}"
        "{{ greeting }} {{ total }} {{ campaign.id }} {{ send_id }}"
    )
    CampaignIn.model_validate(campaign(message={**EMAIL, "body": body}))


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8025/webhooks/x",
        "http://[::1]/x",
        "http://2130706433/x",  # 127.0.0.1 as one decimal number
        "http://0x7f.1/x",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/x",
        "http://0.0.0.0:5432/",
        "http://localhost:4222/",
        "http://LOCALHOST./x",
        "http://admin.localhost/x",
        "http://[::ffff:127.0.0.1]/x",
        "http://192.168.1.1/x",
        "http://100.64.0.1/x",  # carrier-grade NAT
        "http://224.0.0.1/x",
    ],
)
def test_webhooks_to_private_addresses_are_refused_naming_the_url(url: str) -> None:
    errors = refused(webhook(url=url))
    assert list(errors) == [("message", "url")]
    assert "HERALD_WEBHOOK_ALLOWED_HOSTS" in errors[("message", "url")]


def test_public_addresses_and_names_are_accepted_and_resolved_only_at_send_time() -> None:
    for url in ("https://hooks.example.com/in", "http://93.184.216.34/x", "https://[2606:2800:220:1:248:1893:25c8:1946]/"):
        CampaignIn.model_validate(webhook(url=url))


def test_the_operators_allow_list_admits_private_hosts(allowed: None) -> None:
    for url in ("http://127.0.0.1:8025/webhooks/x", "http://localhost:8025/x", "http://10.1.2.3/x"):
        CampaignIn.model_validate(webhook(url=url))
    assert list(refused(webhook(url="http://[::1]/x"))) == [("message", "url")]
    assert list(refused(webhook(url="http://192.168.1.1/x"))) == [("message", "url")]


@pytest.mark.parametrize(
    "headers, name",
    [
        ({"X-City": "café"}, "X-City"),  # Latin-1, but a webhook's headers go out as ASCII (RFC 9110: obs-text is obsolete)
        ({"X-City": "Zürich ☃"}, "X-City"),
        ({"X-Note": "a\r\nX-Injected: 1"}, "X-Note"),
        ({"X-Note": "a\nb"}, "X-Note"),
        ({"X-Nul": "a\x01b"}, "X-Nul"),
        ({"X Space": "v"}, "X Space"),
        ({"X-Ünï": "v"}, "X-Ünï"),
        ({"": "v"}, ""),
        ({"Host": "internal.example"}, "Host"),
        ({"Content-Length": "0"}, "Content-Length"),
        ({"Transfer-Encoding": "chunked"}, "Transfer-Encoding"),
        ({"Idempotency-Key": "mine"}, "Idempotency-Key"),
    ],
)
def test_headers_that_would_break_the_request_are_refused_naming_the_header(headers: dict[str, str], name: str) -> None:
    errors = refused(webhook(headers=headers))
    assert list(errors) == [("message", "headers", name)]


@pytest.mark.parametrize(
    "sender",
    ["Shop <shop@example.com>\r\nBcc: all@example.com", "a@example.com, b@example.com", "not an address", "Shop <shop@localhost>", ""],
)
def test_from_must_be_one_address_on_one_line(sender: str) -> None:
    errors = refused(campaign(message={**EMAIL, "from": sender}))
    assert list(errors) == [("message", "from")]


def test_a_display_name_with_a_comma_is_one_address() -> None:
    saved = CampaignIn.model_validate(campaign(message={**EMAIL, "from": '"Shop, Inc" <shop@example.com>'}))
    assert saved.message["from"] == '"Shop, Inc" <shop@example.com>'


@pytest.mark.parametrize(
    "body, loc",
    [
        (campaign(name="Cart\x00"), ("name",)),
        (campaign(trigger={"event": "Product\x00Added"}), ("trigger", "event")),
        (campaign(cancel_on=["Order Completed", "Order\x00"]), ("cancel_on", 1)),
        (campaign(message={**EMAIL, "subject": "Hi\x00"}), ("message", "subject")),
        (campaign(message={**EMAIL, "body": "{{ user.user_id }}\x00"}), ("message", "body")),
        (webhook(body={"a": {"b": ["ok", "x\x00"]}}), ("message", "body", "a", "b", 1)),
        (webhook(body={"k\x00": 1}), ("message", "body", "k\x00")),
        (campaign(trigger={"event": "x", "where": [{"property": "p", "op": "eq", "value": "v\x00"}]}), ("trigger", "where", 0, "value")),
        (campaign(name="lone \ud800 surrogate"), ("name",)),
    ],
)
def test_text_postgresql_cannot_store_is_refused_where_it_is(body: dict[str, Any], loc: tuple[str | int, ...]) -> None:
    errors = refused(body)
    assert loc in errors, errors


@pytest.mark.parametrize(
    "body, loc",
    [
        (campaign(delay_seconds=10**12), ("delay_seconds",)),
        (campaign(delay_seconds=-1), ("delay_seconds",)),
        (webhook(body={"n": 2**70}), ("message", "body", "n")),
        (webhook(body={"n": float("inf")}), ("message", "body", "n")),
        (webhook(body={"n": float("nan")}), ("message", "body", "n")),
        (campaign(trigger={"event": "x", "where": [{"property": "p", "op": "gt", "value": 10**30}]}), ("trigger", "where", 0, "value")),
        (webhook(body={"a": "x" * 30_000, "b": "y" * 30_000, "c": "z" * 30_000, "d": "w" * 30_000, "e": "v" * 30_000}), ("message",)),
        (webhook(body={"a": nested(40)}), ("message", "body", "a")),
        (campaign(trigger={"event": "x" * 600}), ("trigger", "event")),
        (campaign(cancel_on=[f"e{i}" for i in range(101)]), ("cancel_on",)),
        (webhook(headers={f"X-{i}": "v" for i in range(101)}), ("message", "headers")),
    ],
)
def test_numbers_and_sizes_stay_bounded(body: dict[str, Any], loc: tuple[str | int, ...]) -> None:
    errors = refused(body)
    assert any(found[: len(loc)] == loc for found in errors), errors


def test_an_email_may_be_html_only_with_reply_to_and_an_app() -> None:
    saved = CampaignIn.model_validate(campaign(
        message={"subject": "Hi", "html": "<p>Hi {{ user.traits.first_name }}</p>", "reply_to": "Care <care@shop.example>"},
        app_id="shop",
    ))
    assert saved.message == {"subject": "Hi", "html": "<p>Hi {{ user.traits.first_name }}</p>",
                             "reply_to": "Care <care@shop.example>", "app_id": "shop"}


def test_an_email_needs_a_body_and_its_html_and_reply_to_are_checked_naming_them() -> None:
    assert list(refused(campaign(message={"subject": "Hi"}))) == [("message",)]
    errors = refused(campaign(message={"subject": "Hi", "html": "<p>{{ user.traits.x | nosuchfilter }}</p>",
                                       "reply_to": "a@example.com\r\nBcc: all@example.com"}))
    assert set(errors) == {("message", "html"), ("message", "reply_to")}
