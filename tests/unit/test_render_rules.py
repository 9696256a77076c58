import time
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


def limited(body: str, **properties: object) -> tuple[str | None, float]:
    """Render an email body with these event properties: (the RenderError, or None) and the CPU seconds it took."""
    message = send("email", {"subject": "s", "body": body})
    message = message.model_copy(update={"trigger": message.trigger.model_copy(update={"properties": properties})})  # type: ignore[union-attr]
    started = time.thread_time()
    try:
        render_email(message, ProfileSnapshot(profile_id="p", traits={"big": "ab" * 100_000}), "a@b.c")
    except RenderError as exc:
        return str(exc), time.thread_time() - started
    return None, time.thread_time() - started


@pytest.mark.parametrize(
    "body, properties, words",
    [
        ("{% for i in (1..event.properties.n) %}x{% endfor %}", {"n": 10**12}, "loop iteration limit"),
        ("{% for i in (1..event.properties.n) %}{% for j in (1..event.properties.n) %}{% endfor %}{% endfor %}", {"n": 1000}, "loop iteration limit"),
        ("{% for i in (1..event.properties.n) %}{% endfor %}" * 40, {"n": 5000}, "loop iteration limit"),  # one after another
        ("{% for i in (1..event.properties.n) %}" + "x" * 100 + "{% endfor %}", {"n": 9000}, "output stream limit"),
        ("{{ (1..event.properties.n) | join: ',' }}", {"n": 10**7}, "range"),
        ("{{ event.properties.s | replace: 'a', user.traits.big }}", {"s": "a" * 100}, "replace"),
        ("{{ event.properties.s | split: '' | join: user.traits.big }}", {"s": "abcdefgh"}, "join"),
        ("{{ (1..event.properties.n) | join: user.traits.big }}", {"n": 5000}, "join"),
        ("{% capture s %}ab{% endcapture %}{% for i in (1..40) %}{% capture s %}{{ s }}{{ s }}{% endcapture %}{% endfor %}", {}, "limit"),
        ("{% assign x = 99999999 %}{% for i in (1..12) %}{% assign x = x | times: x %}{% endfor %}{{ x }}", {}, "too large"),
        ("{% for i in (1..event.properties.n) %}{% echo user.traits.big | upcase | size %}{% endfor %}", {"n": 10000}, "budget"),
    ],
)
def test_a_template_beyond_the_limits_is_a_render_error_in_a_fraction_of_a_second(body: str, properties: dict, words: str) -> None:
    error, seconds = limited(body, **properties)
    assert error is not None and words in error and "message.body" in error
    assert seconds < 0.5


def test_a_render_error_says_where_without_the_template_or_the_data() -> None:
    error, _ = limited("x" * 5000 + "{{ user.traits.big | nosuchfilter }}")
    assert error is not None and "nosuchfilter" in error and "line 1" in error
    assert len(error) < 300 and "xxxxxxxxxx" not in error


def test_a_webhook_body_shares_one_budget_across_its_strings() -> None:
    loop = "{% for i in (1..6000) %}{% endfor %}"
    ok = render_webhook(send("webhook", {"url": "https://hooks.example.com/", "body": {"a": loop}}), ProfileSnapshot(profile_id="p"))
    assert ok.body == {"a": ""}
    with pytest.raises(RenderError, match="loop iteration limit"):
        render_webhook(send("webhook", {"url": "https://hooks.example.com/", "body": {"a": loop, "b": [loop]}}), ProfileSnapshot(profile_id="p"))


def test_a_template_reads_exactly_the_roots_the_scheduler_allows() -> None:
    from services.dispatcher.domain import template_context
    from services.templates import TEMPLATE_ROOTS

    assert tuple(template_context(send("email", EMAIL), ProfileSnapshot(profile_id="p"))) == TEMPLATE_ROOTS


def test_garbage_collection_during_a_render_is_not_charged_to_the_template() -> None:
    import gc

    from services.templates import Budget, BudgetExceeded

    heap = [[i] for i in range(400_000)]  # a busy dispatcher's heap: a full collection walks all of it
    for cell in heap:
        cell.append(cell)
    budget = Budget(seconds=0.002)
    started = time.thread_time()
    with budget.running():
        gc.collect()
        collected_in = time.thread_time() - started
        budget.check_time()  # the collector's time is not the template's
    assert collected_in > 0.002, "the collection must take longer than the budget for this test to mean anything"
    with budget.running(), pytest.raises(BudgetExceeded):  # the template's own CPU still counts
        while True:
            budget.check_time()
    del heap
