"""APNs and FCM providers against the dev sinks' protocol servers: HTTP/2 with a verified ES256 provider
token, an OAuth2 access token minted from a service account, and the providers' answers (sent, dead
token, rate limited, unavailable, refused) turned into what the dispatcher does next. No mocks."""

import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from herald.infra import free_port
from herald.sinks import Catcher, build_http, serving_http
from services.dispatcher.domain import PayloadTooLarge, RenderedPush, apns_request, fcm_message
from services.dispatcher.providers import (
    APNS_TOKEN_REFRESH_SECONDS,
    ApnsCredentials,
    ApnsProvider,
    DeadToken,
    DeliveryError,
    FcmProvider,
)

NOW = datetime.now(UTC)
PUSH = RenderedPush(title="Hi Ada", body="Your kite is waiting", image_url="https://cdn.example.com/kite.png",
                    deep_link="shop://cart", data={"cart": "42"}, ttl_seconds=3600, collapse_key="cart", badge=1, sound="default")


@dataclass
class Sink:
    url: str
    catcher: Catcher
    http: httpx.AsyncClient

    async def apns_key(self) -> ApnsCredentials:
        issued = (await self.http.post(f"{self.url}/apns/keys")).json()
        return ApnsCredentials(issued["team_id"], issued["key_id"], issued["private_key"], "com.example.shop", "sandbox")

    async def service_account(self, project_id: str = "herald-test") -> dict[str, Any]:
        answer = await self.http.post(f"{self.url}/fcm/service-accounts", json={"project_id": project_id})
        assert answer.status_code == 201, answer.text
        return dict(answer.json())

    async def dead(self, token: str) -> None:
        assert (await self.http.post(f"{self.url}/push/dead-tokens", json={"token": token})).status_code == 204

    async def outage(self, service: str, status: int, times: int = 1, retry_after: int | None = None) -> None:
        body = {"service": service, "status": status, "times": times, "retry_after": retry_after}
        assert (await self.http.post(f"{self.url}/push/outages", json=body)).status_code == 204

    async def auth(self) -> dict[str, dict[str, int]]:
        return dict((await self.http.get(f"{self.url}/push/auth")).json())


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    catcher, port = Catcher(None), free_port()
    async with serving_http(build_http(catcher), "127.0.0.1", port), httpx.AsyncClient() as http:
        yield Sink(f"http://127.0.0.1:{port}", catcher, http)


@pytest.fixture
async def apns(sink: Sink) -> AsyncIterator[ApnsProvider]:
    provider = ApnsProvider(f"{sink.url}/apns", f"{sink.url}/apns", timeout=5)
    yield provider
    await provider.aclose()


@pytest.fixture
async def fcm(sink: Sink) -> AsyncIterator[FcmProvider]:
    provider = FcmProvider(f"{sink.url}/fcm", timeout=5, token_origins=frozenset({sink.url}))
    yield provider
    await provider.aclose()


def apns_token() -> str:
    return secrets.token_hex(32)


def fcm_token() -> str:
    return f"{secrets.token_urlsafe(16)}:APA91b{secrets.token_urlsafe(100)}"


async def test_an_apns_push_goes_over_http2_with_one_provider_token_for_many(sink: Sink, apns: ApnsProvider) -> None:
    credentials, tokens = await sink.apns_key(), [apns_token() for _ in range(3)]
    for token in tokens:
        apns_id = await apns.send(credentials, token, apns_request(PUSH, credentials.topic, f"00000000-0000-4000-8000-00000000000{len(token) % 10}", NOW))
        assert apns_id
    assert [p["token"] for p in sink.catcher.pushes] == tokens
    first = sink.catcher.pushes[0]
    assert first["http_version"] == "2"
    assert first["headers"]["apns-topic"] == "com.example.shop"
    assert (first["headers"]["apns-push-type"], first["headers"]["apns-priority"]) == ("alert", "10")
    assert first["headers"]["apns-collapse-id"] == "cart"
    assert int(first["headers"]["apns-expiration"]) == int(NOW.timestamp()) + 3600
    assert first["payload"] == {
        "aps": {"alert": {"title": "Hi Ada", "body": "Your kite is waiting"}, "sound": "default", "badge": 1, "mutable-content": 1},
        "cart": "42", "deep_link": "shop://cart", "image_url": "https://cdn.example.com/kite.png",
    }
    assert (await sink.auth())["apns_provider_tokens"] == {credentials.key_id: 1}


async def test_a_silent_push_is_a_background_push_at_priority_5(sink: Sink, apns: ApnsProvider) -> None:
    credentials = await sink.apns_key()
    await apns.send(credentials, apns_token(), apns_request(RenderedPush(data={"sync": "1"}), credentials.topic, "id-1", NOW))
    [push] = sink.catcher.pushes
    assert (push["headers"]["apns-push-type"], push["headers"]["apns-priority"]) == ("background", "5")
    assert push["payload"] == {"aps": {"content-available": 1}, "sync": "1"}


async def test_apns_dead_tokens_outages_and_foreign_keys(sink: Sink, apns: ApnsProvider) -> None:
    credentials, dead = await sink.apns_key(), apns_token()
    request = apns_request(PUSH, credentials.topic, "id-2", NOW)
    await sink.dead(dead)
    with pytest.raises(DeadToken) as gone:
        await apns.send(credentials, dead, request)
    assert gone.value.code == "unregistered" and "Unregistered" in str(gone.value)
    with pytest.raises(DeadToken) as malformed:
        await apns.send(credentials, "not-a-token", request)
    assert malformed.value.code == "bad_device_token"

    await sink.outage("apns", 429, retry_after=7)
    with pytest.raises(DeliveryError) as limited:
        await apns.send(credentials, apns_token(), request)
    assert (limited.value.transient, limited.value.code, limited.value.retry_after) == (True, "rate_limited", 7.0)
    await sink.outage("apns", 503)
    with pytest.raises(DeliveryError) as down:
        await apns.send(credentials, apns_token(), request)
    assert (down.value.transient, down.value.code) == (True, "provider_unavailable")

    key = ec.generate_private_key(ec.SECP256R1())
    foreign = ApnsCredentials(credentials.team_id, "ZZZZZZZZZZ", key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode(), "com.example.shop", "sandbox")
    with pytest.raises(DeliveryError) as refused:
        await apns.send(foreign, apns_token(), request)
    assert (refused.value.transient, refused.value.code) == (False, "provider_auth")
    assert "InvalidProviderToken" in str(refused.value)
    assert len(sink.catcher.pushes) == 0


def test_an_apns_payload_over_4_kb_is_refused_before_sending() -> None:
    with pytest.raises(PayloadTooLarge, match="4096"):
        apns_request(RenderedPush(title="big", body="x" * 5000), "com.example.shop", "id", NOW)


def test_the_provider_token_is_reused_inside_its_hour_and_made_anew_well_before_it_ends() -> None:
    key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    credentials = ApnsCredentials("TEAM123456", "KEY1234567", key, "com.example.shop")
    provider, t0 = ApnsProvider("https://apns.invalid", "https://apns.invalid", 1), time.time()
    first = provider.provider_token(credentials, t0)
    assert provider.provider_token(credentials, t0 + 20 * 60) == first
    renewed = provider.provider_token(credentials, t0 + APNS_TOKEN_REFRESH_SECONDS + 1)
    assert renewed != first and 20 * 60 <= APNS_TOKEN_REFRESH_SECONDS <= 50 * 60


async def test_fcm_mints_one_access_token_and_sends_each_block(sink: Sink, fcm: FcmProvider) -> None:
    account, tokens = await sink.service_account(), [fcm_token() for _ in range(3)]
    names = [await fcm.send(account, fcm_message(PUSH, token, NOW)) for token in tokens]
    assert all(name.startswith("projects/herald-test/messages/") for name in names)
    assert (await sink.auth())["fcm_access_tokens"] == {account["client_email"]: 1}
    message = sink.catcher.pushes[0]["message"]
    assert message["token"] == tokens[0]
    assert message["notification"] == {"title": "Hi Ada", "body": "Your kite is waiting", "image": "https://cdn.example.com/kite.png"}
    assert message["data"] == {"cart": "42", "deep_link": "shop://cart", "image_url": "https://cdn.example.com/kite.png"}
    assert message["android"] == {"priority": "HIGH", "ttl": "3600s", "collapse_key": "cart", "notification": {"sound": "default"}}
    assert message["apns"]["payload"] == {"aps": {"sound": "default", "badge": 1, "mutable-content": 1}}
    assert message["webpush"]["headers"] == {"Urgency": "high", "TTL": "3600"}


async def test_fcm_dead_tokens_outages_and_revoked_access(sink: Sink, fcm: FcmProvider) -> None:
    account, dead = await sink.service_account(), fcm_token()
    await sink.dead(dead)
    with pytest.raises(DeadToken) as gone:
        await fcm.send(account, fcm_message(PUSH, dead, NOW))
    assert gone.value.code == "unregistered"
    with pytest.raises(DeadToken) as malformed:
        await fcm.send(account, fcm_message(PUSH, "short", NOW))
    assert malformed.value.code == "bad_device_token"

    await sink.outage("fcm", 429, retry_after=30)
    with pytest.raises(DeliveryError) as limited:
        await fcm.send(account, fcm_message(PUSH, fcm_token(), NOW))
    assert (limited.value.transient, limited.value.code, limited.value.retry_after) == (True, "rate_limited", 30.0)

    sink.catcher.push.access_tokens.clear()  # Google revoked the access token early
    with pytest.raises(DeliveryError) as revoked:
        await fcm.send(account, fcm_message(PUSH, fcm_token(), NOW))
    assert (revoked.value.transient, revoked.value.code) == (True, "provider_auth_expired")
    assert await fcm.send(account, fcm_message(PUSH, fcm_token(), NOW))  # the retry mints a new one
    assert (await sink.auth())["fcm_access_tokens"] == {account["client_email"]: 2}


async def test_fcm_refuses_foreign_keys_and_token_endpoints_it_was_not_told_of(sink: Sink, fcm: FcmProvider) -> None:
    account, other = await sink.service_account(), await sink.service_account()
    forged = {**account, "private_key": other["private_key"]}  # a key the account does not have
    with pytest.raises(DeliveryError) as refused:
        await fcm.send(forged, fcm_message(PUSH, fcm_token(), NOW))
    assert (refused.value.transient, refused.value.code) == (False, "provider_auth") and "invalid_grant" in str(refused.value)
    elsewhere = {**account, "token_uri": "http://169.254.169.254/token"}
    with pytest.raises(DeliveryError) as blocked:
        await fcm.send(elsewhere, fcm_message(PUSH, fcm_token(), NOW))
    assert blocked.value.code == "provider_auth"
    assert sink.catcher.pushes == []
