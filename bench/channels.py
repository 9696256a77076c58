"""9. Channels: push sends rendered and delivered to the APNs-compatible sink, against raw HTTP/2 POSTs to the same
sink in the same run; and email through pooled SMTP connections, against raw SMTP on as many kept connections.

The stack's sinks process (`herald serve sinks`, what `make run` starts) is started for this scenario: the APNs
sink checks every push as APNs does (the ES256 provider token verified against the issued key, the headers, the
payload), for Herald's pushes and the raw ones alike, so the ratio compares like with like.
"""

import asyncio
import secrets
import time
import uuid
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

import aiosmtplib
import httpx
import orjson

from bench.harness import Env, Figure
from kernel.contracts import SendRequested, send_subject
from services.dispatcher.providers import ApnsCredentials, ApnsProvider

Progress = Any
PUSH_TARGET_RATIO = 0.7
RAW_STREAMS = 16  # concurrent HTTP/2 streams of the raw baseline, on one connection as the dispatcher's
USERS = 50
TOPIC = "com.example.bench"


async def _sinks(env: Env) -> httpx.AsyncClient:
    """The stack's sinks, started for this scenario if the stack runs without them."""
    if "sinks" not in env.stack.procs:
        env.stack.start_one("sinks")
        await asyncio.to_thread(env.stack.wait_ready, 30)
    return httpx.AsyncClient(base_url=env.url("sinks"), timeout=30)


async def _people(env: Env, ws: dict[str, str], tokens: list[str]) -> list[str]:
    """USERS users, each with an iPhone (its token) and an email address; their profile ids once stored."""
    wid = ws["workspace_id"]
    async with env.sdk(ws) as sdk:
        for u, token in enumerate(tokens):
            context = {"app": {"name": "Bench"}, "os": {"name": "iOS"}, "device": {"id": f"c-d{u}", "type": "ios", "token": token}}
            body = {"userId": f"c-u{u}", "traits": {"first_name": f"User {u}", "email": f"c-u{u}@example.com"}, "context": context}
            (await sdk.post("/v1/identify", json=body)).raise_for_status()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        rows = await env.db.fetch(
            "SELECT profile_id FROM profiles.segment_devices WHERE workspace_id = $1 AND push_enabled AND push_token IS NOT NULL",
            wid,
        )
        if len(rows) >= len(tokens):
            return [r["profile_id"] for r in rows]
        await asyncio.sleep(0.2)
    raise TimeoutError(f"the bench's {len(tokens)} devices were not stored within 60s")


async def _publish(env: Env, sends: list[SendRequested]) -> None:
    js = env.nc.jetstream()
    for start in range(0, len(sends), 500):
        acks = [await js.publish_async(send_subject(s.workspace_id, s.channel), s.model_dump_json().encode(),
                                       headers={"Nats-Msg-Id": s.send_id}) for s in sends[start : start + 500]]
        await asyncio.gather(*acks)


async def _delivered(env: Env, workspace_id: str, channel: str, count: int, timeout: float) -> None:
    """Wait until `count` sends of this channel are final; TimeoutError naming how far they got, or how they failed."""
    deadline = time.monotonic() + timeout
    while True:
        rows = await env.db.fetch(
            "SELECT status, count(*) AS n FROM dispatcher.deliveries WHERE workspace_id = $1 AND channel = $2 "
            "AND status IN ('sent', 'failed', 'skipped', 'unknown') GROUP BY status", workspace_id, channel,
        )
        done = {r["status"]: r["n"] for r in rows}
        if sum(done.values()) >= count:
            if done.get("sent", 0) != count:
                reasons = await env.db.fetch(
                    "SELECT reason FROM dispatcher.deliveries WHERE workspace_id = $1 AND channel = $2 AND status <> 'sent' "
                    "LIMIT 1", workspace_id, channel,
                )
                raise RuntimeError(f"{channel}: {done}; e.g. {reasons[0]['reason'] if reasons else '?'}")
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{sum(done.values())} of {count} {channel} sends final within {timeout:.0f}s")
        await asyncio.sleep(0.1)


async def raw_apns_rate(url: str, credentials: ApnsCredentials, tokens: list[str], count: int) -> float:
    """Bare APNs requests (what the dispatcher sends, already rendered) on one HTTP/2 connection, RAW_STREAMS at a
    time: pushes/s the sink took."""
    token = ApnsProvider(url, url, 30).provider_token(credentials)
    headers = {"authorization": f"bearer {token}", "apns-topic": TOPIC, "apns-push-type": "alert", "apns-priority": "10",
               "content-type": "application/json"}
    bodies = [orjson.dumps({"aps": {"alert": {"title": f"Hi User {i % USERS}", "body": "Your cart is waiting."}}})
              for i in range(count)]
    async with httpx.AsyncClient(http1=False, http2=True, timeout=30, trust_env=False) as client:
        async def worker(mine: range) -> None:
            for i in mine:
                target = f"{url}/3/device/{tokens[i % len(tokens)]}"
                try:
                    r = await client.post(target, content=bodies[i], headers=headers)
                except httpx.RemoteProtocolError:  # a GOAWAY retired the connection: again on a new one, as the dispatcher does
                    r = await client.post(target, content=bodies[i], headers=headers)
                if r.status_code != 200:
                    raise RuntimeError(f"the APNs sink answered {r.status_code} {r.text[:120]}")

        started = time.perf_counter()
        await asyncio.gather(*(worker(range(w, count, RAW_STREAMS)) for w in range(RAW_STREAMS)))
        return count / (time.perf_counter() - started)


async def raw_smtp_rate(port: int, count: int, connections: int) -> float:
    """Bare SMTP (aiosmtplib) on `connections` kept connections, one message after another on each: emails/s."""
    async def connection(n: int, c: int) -> None:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=30)
        await client.connect()
        try:
            for i in range(n):
                message = EmailMessage()
                message["From"], message["To"], message["Subject"] = "bench@herald.local", f"raw{c}-{i}@example.com", "Hi"
                message.set_content("Your cart is waiting.")
                await client.send_message(message)
        finally:
            await client.quit()

    per = count // connections
    started = time.perf_counter()
    await asyncio.gather(*(connection(per, c) for c in range(connections)))
    return per * connections / (time.perf_counter() - started)


async def channels(env: Env, size: Any, advance: Progress) -> list[Figure]:
    """Push to the APNs sink vs raw HTTP/2 POSTs to it; email through the dispatcher's SMTP pool vs raw SMTP."""
    sinks = await _sinks(env)
    ws = await env.workspace("bench-channels")
    wid, n = ws["workspace_id"], size.dispatch_sends
    try:
        key = (await sinks.post("/apns/keys")).json()
        apns = {"team_id": key["team_id"], "key_id": key["key_id"], "private_key": key["private_key"], "topic": TOPIC,
                "environment": "sandbox"}
        async with env.api(ws) as api:
            (await api.put("/api/v1/channels/apns", json=apns)).raise_for_status()
        tokens = [secrets.token_hex(32) for _ in range(USERS)]
        profile_ids = await _people(env, ws, tokens)
        await env.settle()
        advance(0.1)

        now = datetime.now(UTC)
        push = {"title": "Hi {{ user.traits.first_name }}", "body": "Your cart is waiting."}
        sends = [SendRequested.model_validate(dict(
            send_id=f"p-{uuid.uuid4().hex}", workspace_id=wid, campaign_id="bench", channel="push",
            profile_id=profile_ids[i % USERS], user_id=None, message=push, requested_at=now,
        )) for i in range(n)]
        with env.cpu_window("9. Channels", "push sends", n, "send"):
            started = time.perf_counter()
            await _publish(env, sends)
            await _delivered(env, wid, "push", n, size.drain_timeout)
            push_rate = n / (time.perf_counter() - started)
        advance(0.35)
        raw = await raw_apns_rate(f"{env.url('sinks')}/apns", ApnsCredentials(**apns), tokens, n)
        advance(0.15)

        emails = max(100, n // 4)
        mail = {"subject": "Hi {{ user.traits.first_name }}", "body": "Your cart is waiting."}
        sends = [SendRequested.model_validate(dict(
            send_id=f"e-{uuid.uuid4().hex}", workspace_id=wid, campaign_id="bench", channel="email",
            profile_id=profile_ids[i % USERS], user_id=None, message=mail, requested_at=now,
        )) for i in range(emails)]
        with env.cpu_window("9. Channels", "email sends", emails, "send"):
            started = time.perf_counter()
            await _publish(env, sends)
            await _delivered(env, wid, "email", emails, size.drain_timeout)
            email_rate = emails / (time.perf_counter() - started)
        advance(0.3)
        pool = 4  # HERALD_SMTP_POOL_SIZE's default: the dispatcher's connections to one server
        raw_email = await raw_smtp_rate(env.stack.config.smtp_port, emails, pool)
        advance(0.1)
    finally:
        await sinks.delete("/messages")
        await sinks.aclose()
    return [
        Figure("9. Channels", "push sends rendered and delivered to the APNs sink (HTTP/2)", push_rate, "msgs/s",
               f"raw HTTP/2 POSTs to the APNs sink, {RAW_STREAMS} streams on one connection", raw, PUSH_TARGET_RATIO * raw,
               note=f"{n:,} sends to {USERS} iPhones; target: ≥ {PUSH_TARGET_RATIO} of the raw POSTs"),
        Figure("9. Channels", f"email sends rendered and accepted by SMTP (pool of {pool})", email_rate, "msgs/s",
               f"raw SMTP (aiosmtplib) on {pool} kept connections", raw_email,
               note=f"{emails:,} sends to the stack's SMTP sink"),
    ]
