"""A template is checked against what the dispatcher renders it with: every root and field it may read."""

import pytest

from kernel.contracts import ProfileSnapshot, SendRequested
from services import templates
from services.dispatcher.domain import template_context


def test_the_checked_fields_are_exactly_the_render_context_s() -> None:
    send = SendRequested.model_validate({
        "send_id": "s", "workspace_id": "w", "campaign_id": "c", "channel": "email", "profile_id": "p",
        "message": {"subject": "Hi", "body": "x"}, "requested_at": "2026-01-01T00:00:00Z",
    })
    context = template_context(send, ProfileSnapshot(profile_id="p"))
    assert {root: tuple(value) if isinstance(value, dict) else () for root, value in context.items()} == templates.TEMPLATE_FIELDS


@pytest.mark.parametrize(
    "source, problem",
    [
        ("Hi {{ usr.traits.name }}", "unknown variable `usr` (line 1, column 6)"),
        ("Hi\n{{ user.trait.name }}", "unknown variable `user.trait` (line 2, column 3) (`user` has user_id, traits"),
        ("{{ event.props.x }}", "unknown variable `event.props`"),
        ("{{ campaign.name }}", "unknown variable `campaign.name` (line 1, column 3) (`campaign` has id)"),
        ("{{ send_id.value }}", "(`send_id` is text)"),
        ("{{ user.traits.x | default: usr }}", "unknown variable `usr`"),
    ],
)
def test_a_variable_no_user_has_is_named_where_it_is(source: str, problem: str) -> None:
    assert any(problem in found for found in templates.problems(source)), templates.problems(source)


@pytest.mark.parametrize(
    "source",
    [
        "{{ user.traits.first_name }} {{ user['traits'].x }} {{ user.devices.size }} {{ user.devices.first.platform }}",
        "{{ event.properties.items | size }} {{ campaign.id }} {{ send_id }} {{ send_id.size }}",
        "{% for d in user.devices %}{{ d.platform }}{% endfor %}{% assign u = user %}{{ u.anything }}",
    ],
)
def test_what_the_render_context_has_is_accepted(source: str) -> None:
    assert templates.problems(source) == []


def test_each_unknown_field_is_named_once() -> None:
    assert len(templates.problems("{{ user.trait.a }} {{ user.trait.b }} {{ user.trats }}")) == 2
