"""What a campaign may change in each status (services.scheduler.domain.edit_refusal)."""

import pytest

from services.scheduler.domain import CAMPAIGN_STATUSES, edit_refusal

EVERYTHING = {"name", "channel", "trigger", "audience", "delay_seconds", "cancel_on", "starts_at", "ends_at", "message"}


def test_a_draft_changes_anything() -> None:
    assert edit_refusal("draft", EVERYTHING) is None


@pytest.mark.parametrize("status", CAMPAIGN_STATUSES)
def test_no_change_is_always_allowed_but_on_an_archived_campaign(status: str) -> None:
    assert (edit_refusal(status, set()) is None) == (status != "archived")


def test_an_active_campaign_changes_its_name_message_and_end_only() -> None:
    assert edit_refusal("active", {"name", "message", "ends_at"}) is None
    refusal = edit_refusal("active", {"name", "trigger", "audience"})
    assert refusal is not None and "pause it to change audience, trigger" in refusal


@pytest.mark.parametrize("status", ["active", "paused"])
def test_a_launched_campaign_keeps_its_channel(status: str) -> None:
    refusal = edit_refusal(status, {"channel", "message"})
    assert refusal is not None and "channel" in refusal and "duplicate" in refusal


def test_a_paused_campaign_changes_anything_but_its_channel() -> None:
    assert edit_refusal("paused", EVERYTHING - {"channel"}) is None


def test_an_archived_campaign_changes_nothing() -> None:
    refusal = edit_refusal("archived", {"name"})
    assert refusal is not None and "unarchive" in refusal
