"""Client-chosen messageIds that NATS would rewrite in a header still de-duplicate only true repeats."""

import uuid
from datetime import UTC, datetime

from nats.aio.client import Client as NATS

from kernel.contracts import Event, header_safe
from services.ingest.service import publish_events

NOW = datetime.now(UTC)


def test_plain_ids_stay_readable_and_others_become_distinct_digests() -> None:
    assert header_safe("msg-123_ab:c") == "msg-123_ab:c"
    odd = [header_safe(v) for v in ("a\nb", "a b", "a\r\nb", "a\tb", "é", "x" * 201)]
    assert len(set(odd)) == len(odd) and all(v.startswith("sha256-") for v in odd)


async def test_ids_differing_only_in_what_nats_rewrites_are_both_stored(nc: NATS) -> None:
    ws = f"ws_{uuid.uuid4().hex[:12]}"
    events = [
        Event(workspace_id=ws, message_id=m, type="track", user_id="u", event="e", timestamp=NOW, received_at=NOW)
        for m in ("a\nb", "a b", "a\r\nb", "a b")  # the last is a true repeat of the second
    ]
    js = nc.jetstream()
    await publish_events(js, events, timeout=5)
    sub = await js.subscribe(f"events.{ws}.>", ordered_consumer=True)
    stored = []
    while True:
        try:
            stored.append((await sub.next_msg(timeout=1)).data)
        except TimeoutError:
            break
    assert len(stored) == 3
