"""Re-publish one workspace's stored messages so that its consumers handle them again.

Every consumer is idempotent on the message's own id (an event's `message_id`, a send's
`send_id`), so a replay re-applies only what the database no longer has: after a restore to an
earlier point in time, say. Copies get fresh `Nats-Msg-Id`s so that the stream's de-duplication
window does not swallow them, and only messages stored before the replay began are read.
"""

import uuid
from collections.abc import Callable
from datetime import datetime

import nats.errors
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from kernel import bus
from kernel.contracts import workspace_subjects
from kernel.logging import BUS_CORRELATION_HEADER

Progress = Callable[[int, int], None]  # (done, total)


async def replay(
    nats_url: str, stream: str, workspace_id: str, since: datetime, progress: Progress | None = None
) -> int:
    """Re-publish the workspace's messages stored in `stream` since `since`; returns how many."""
    subject_filter = workspace_subjects(stream, workspace_id)
    nc = await bus.connect(nats_url, name="herald-replay")
    try:
        js = nc.jetstream()
        last = (await js.stream_info(stream)).state.last_seq
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_TIME,
            opt_start_time=since,  # type: ignore[arg-type]
            ack_policy=AckPolicy.NONE,
            inactive_threshold=60,
        )
        sub = await js.pull_subscribe(subject_filter, stream=stream, config=config)
        total = (await sub.consumer_info()).num_pending or 0
        run, done = uuid.uuid4().hex[:12], 0
        while done < total:
            try:
                msgs = await sub.fetch(min(256, total - done), timeout=5)
            except nats.errors.TimeoutError:
                break
            copies = [m for m in msgs if m.metadata.sequence.stream <= last]
            await bus.publish_many(
                js,
                [(m.subject, m.data, f"replay:{run}:{m.metadata.sequence.stream}") for m in copies],
                correlation_ids=[(m.headers or {}).get(BUS_CORRELATION_HEADER) for m in copies],
            )
            done += len(copies)
            if len(copies) < len(msgs):  # reached what was stored after the replay began
                total = done
            if progress is not None:
                progress(done, total)
        await sub.unsubscribe()
        return done
    finally:
        await nc.drain()
