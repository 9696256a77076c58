"""Re-publish one workspace's stored messages so that its consumers handle them again.

Every consumer is idempotent on the message's own id (an event's `message_id`, a send's
`send_id`), so a replay re-applies only what the database no longer has: after a restore to an
earlier point in time, say. Copies get fresh `Nats-Msg-Id`s so that the stream's de-duplication
window does not swallow them, and only messages stored before the replay began are read.

Replaying DEADLETTERS re-drives what consumers gave up on: each dead letter goes back to the
subject it was first published on (its `Herald-Dead-Subject` header), once the cause is fixed, and
is then removed from DEADLETTERS. Whatever fails again is filed there again, so the stream keeps
showing what is still broken. Every consumer of that subject sees the copy; being idempotent,
those that had handled it already change nothing.
"""

import uuid
from collections.abc import Callable
from datetime import datetime

import nats.errors
import structlog
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from kernel import bus
from kernel.contracts import DEAD_SUBJECT_HEADER, STREAMS, workspace_subjects
from kernel.logging import BUS_CORRELATION_HEADER

Progress = Callable[[int, int], None]  # (done, total)
log = structlog.get_logger(__name__)
DEAD_PREFIXES = tuple(subject.removesuffix(">") for subject in STREAMS[bus.DEAD_LETTERS])


def target_subject(msg: Msg, dead_letters: bool) -> str | None:
    """Where a stored message is re-published: its own subject, or a dead letter's original one."""
    if not dead_letters:
        return msg.subject
    original = (msg.headers or {}).get(DEAD_SUBJECT_HEADER)
    if not original or original.startswith(DEAD_PREFIXES):
        return None
    return original


async def replay(
    nats_url: str, stream: str, workspace_id: str, since: datetime, progress: Progress | None = None
) -> int:
    """Re-publish the workspace's messages stored in `stream` since `since`; returns how many.

    For DEADLETTERS each one goes back to its original subject and leaves DEADLETTERS once stored there.
    """
    subject_filter = workspace_subjects(stream, workspace_id)
    dead_letters = stream == bus.DEAD_LETTERS
    nc = await bus.connect(nats_url, name="herald-replay")
    try:
        js = nc.jetstream()
        last = (await js.stream_info(stream)).state.last_seq
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_TIME,
            opt_start_time=since,
            ack_policy=AckPolicy.NONE,
            inactive_threshold=60,
        )
        sub = await js.pull_subscribe(subject_filter, stream=stream, config=config)
        total = (await sub.consumer_info()).num_pending or 0
        run, done, published = uuid.uuid4().hex[:12], 0, 0
        while done < total:
            try:
                msgs = await sub.fetch(min(256, total - done), timeout=5)
            except nats.errors.TimeoutError:
                break
            stored = [m for m in msgs if m.metadata.sequence.stream <= last]
            copies = [(m, target_subject(m, dead_letters)) for m in stored]
            for m, target in copies:
                if target is None:
                    log.warning("replay_skipped_no_original_subject", stream=stream, sequence=m.metadata.sequence.stream)
            sendable = [(m, target) for m, target in copies if target is not None]
            await bus.publish_many(
                js,
                [(target, m.data, f"replay:{run}:{m.metadata.sequence.stream}") for m, target in sendable],
                correlation_ids=[(m.headers or {}).get(BUS_CORRELATION_HEADER) for m, _ in sendable],
            )
            if dead_letters:
                for m, _ in sendable:  # stored on its original subject again: no longer dead
                    await js.delete_msg(stream, m.metadata.sequence.stream)
            published += len(sendable)
            done += len(stored)
            if len(stored) < len(msgs):  # reached what was stored after the replay began
                total = done
            if progress is not None:
                progress(done, total)
        await sub.unsubscribe()
        return published
    finally:
        await nc.drain()
