"""Channel credentials through the dispatcher's API on real PostgreSQL: validated when saved, secrets
sealed at rest and never shown, per app, rotatable."""

import os
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
import orjson
import pytest
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from kernel.web import create_app, open_resources
from services.dispatcher import service
from services.dispatcher.api import channels_router
from services.dispatcher.config import get_settings
from services.dispatcher.credentials import SecretBox
from services.dispatcher.models import ChannelConfig
from tests.conftest import as_gateway

KEY_A, KEY_B = Fernet.generate_key().decode(), Fernet.generate_key().decode()


def pem(key: Any) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def p8() -> str:
    """An APNs signing key as Apple hands it out: a P-256 key in an unencrypted PKCS#8 PEM."""
    return pem(ec.generate_private_key(ec.SECP256R1()))


def service_account(project_id: str = "herald-test", token_uri: str = "https://oauth2.googleapis.com/token") -> dict[str, Any]:
    return {
        "type": "service_account", "project_id": project_id, "private_key_id": "k1",
        "private_key": pem(rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        "client_email": f"push@{project_id}.iam.gserviceaccount.com", "client_id": "1",
        "token_uri": token_uri,
    }


def apns(**fields: Any) -> dict[str, Any]:
    return {"team_id": "TEAM123456", "key_id": "KEY1234567", "private_key": p8(), "topic": "com.example.shop",
            "environment": "sandbox", **fields}


Running = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def channels_api(infra: Any, workspace_id: str) -> Running:
    """The dispatcher's channel routes in-process (no consumer), with these settings, spoken to as the gateway."""

    @asynccontextmanager
    async def run(**env: str) -> AsyncIterator[httpx.AsyncClient]:
        saved = dict(os.environ)
        os.environ.pop("HERALD_SECRETS_KEY", None)
        os.environ.update(env)
        get_settings.cache_clear()

        @asynccontextmanager
        async def lifespan(app: FastAPI) -> AsyncIterator[None]:
            async with open_resources("dispatcher", get_settings()) as res:
                app.state.resources = res
                yield

        app = create_app("dispatcher channels", lifespan, [channels_router])
        try:
            async with app.router.lifespan_context(app):
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://dispatcher", auth=as_gateway(workspace_id)) as client:
                    yield client
        finally:
            os.environ.clear()
            os.environ.update(saved)
            get_settings.cache_clear()

    return run


def errors_at(response: httpx.Response) -> list[list[Any]]:
    assert response.status_code == 422, response.text
    return [e["loc"] for e in response.json()["detail"]]


async def stored(sessions: async_sessionmaker[AsyncSession], workspace_id: str) -> list[ChannelConfig]:
    async with sessions() as s:
        return list(await s.scalars(select(ChannelConfig).where(ChannelConfig.workspace_id == workspace_id)))


async def test_an_apns_key_is_stored_sealed_and_never_shown(channels_api: Running, sessions, workspace_id: str) -> None:  # type: ignore[no-untyped-def]
    body = apns()
    async with channels_api(HERALD_SECRETS_KEY=KEY_A) as api:
        saved = await api.put("/api/v1/channels/apns", json=body)
        assert saved.status_code == 200, saved.text
        shown = (await api.get("/api/v1/channels/apns")).json()
        listed = (await api.get("/api/v1/channels")).json()

    for answer in (saved.text, orjson.dumps(shown).decode(), orjson.dumps(listed).decode()):
        assert "PRIVATE KEY" not in answer and body["private_key"].splitlines()[1] not in answer
    assert {k: shown[k] for k in ("kind", "app_id", "team_id", "key_id", "topic", "environment", "private_key_set")} == {
        "kind": "apns", "app_id": None, "team_id": "TEAM123456", "key_id": "KEY1234567", "topic": "com.example.shop",
        "environment": "sandbox", "private_key_set": True,
    }
    assert [c["kind"] for c in listed["channels"]] == ["apns"]
    [row] = await stored(sessions, workspace_id)
    assert "PRIVATE KEY" not in row.secret and "PRIVATE KEY" not in orjson.dumps(row.settings).decode()
    assert SecretBox.from_setting(KEY_A).open(row.secret) == {"private_key": body["private_key"].strip() + "\n"}


async def test_bad_credentials_are_422s_naming_the_field(channels_api: Running, workspace_id: str) -> None:
    rsa_pem = pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    p384 = pem(ec.generate_private_key(ec.SECP384R1()))
    async with channels_api(HERALD_SECRETS_KEY=KEY_A) as api:
        assert errors_at(await api.put("/api/v1/channels/apns", json=apns(private_key="not a key"))) == [["body", "private_key"]]
        assert errors_at(await api.put("/api/v1/channels/apns", json=apns(private_key=rsa_pem))) == [["body", "private_key"]]
        assert errors_at(await api.put("/api/v1/channels/apns", json=apns(private_key=p384))) == [["body", "private_key"]]
        broken = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
        assert errors_at(await api.put("/api/v1/channels/apns", json=apns(private_key=broken))) == [["body", "private_key"]]
        assert errors_at(await api.put("/api/v1/channels/apns", json=apns(team_id="team"))) == [["body", "team_id"]]
        assert errors_at(await api.put("/api/v1/channels/apns", json=apns(topic="no spaces allowed"))) == [["body", "topic"]]
        assert errors_at(await api.put("/api/v1/channels/apns", json=apns(environment="staging"))) == [["body", "environment"]]
        assert errors_at(await api.put("/api/v1/channels/apns", json=apns(app_id="a/b"))) == [["body", "app_id"]]

        assert errors_at(await api.put("/api/v1/channels/fcm", json={"service_account": "{not json"})) == [["body", "service_account"]]
        account = service_account()
        account["private_key"] = p8()  # an EC key: service accounts sign with RSA
        answer = await api.put("/api/v1/channels/fcm", json={"service_account": account})
        assert errors_at(answer) == [["body", "service_account"]] and "private_key" in answer.text
        answer = await api.put("/api/v1/channels/fcm", json={"service_account": {**service_account(), "type": "user"}})
        assert errors_at(answer) == [["body", "service_account"]] and "`type`" in answer.text
        elsewhere = service_account(token_uri="http://169.254.169.254/token")
        answer = await api.put("/api/v1/channels/fcm", json={"service_account": elsewhere})
        assert errors_at(answer) == [["body", "service_account", "token_uri"]]
        assert "PRIVATE KEY" not in answer.text
        assert (await api.get("/api/v1/channels")).json() == {"channels": []}


async def test_fcm_per_app_and_workspace_default(channels_api: Running, workspace_id: str) -> None:
    async with channels_api(HERALD_SECRETS_KEY=KEY_A) as api:
        default = await api.put("/api/v1/channels/fcm", json={"service_account": service_account("herald-all")})
        own = await api.put(
            "/api/v1/channels/fcm",
            json={"app_id": "app_driver", "device_app": "Driver", "service_account": orjson.dumps(service_account("herald-driver")).decode()},
        )
        assert default.status_code == own.status_code == 200, own.text
        assert (await api.get("/api/v1/channels/fcm")).json()["project_id"] == "herald-all"
        driver = (await api.get("/api/v1/channels/fcm", params={"app_id": "app_driver"})).json()
        assert (driver["project_id"], driver["device_app"], driver["app_id"]) == ("herald-driver", "Driver", "app_driver")
        assert driver["client_email"] == "push@herald-driver.iam.gserviceaccount.com" and "private_key" not in driver
        assert (await api.get("/api/v1/channels/apns")).status_code == 404
        assert (await api.delete("/api/v1/channels/fcm", params={"app_id": "app_driver"})).status_code == 204
        assert (await api.get("/api/v1/channels/fcm", params={"app_id": "app_driver"})).status_code == 404
        assert (await api.delete("/api/v1/channels/fcm", params={"app_id": "app_driver"})).status_code == 404


async def test_without_a_secrets_key_nothing_is_stored(channels_api: Running, sessions, workspace_id: str) -> None:  # type: ignore[no-untyped-def]
    async with channels_api() as api:
        answer = await api.put("/api/v1/channels/apns", json=apns())
    assert answer.status_code == 409 and answer.json()["error"] == "secrets_key_missing"
    assert await stored(sessions, workspace_id) == []


async def test_a_new_key_reads_old_secrets_and_rotation_moves_them_to_it(channels_api: Running, sessions, workspace_id: str) -> None:  # type: ignore[no-untyped-def]
    async with channels_api(HERALD_SECRETS_KEY=KEY_A) as api:
        assert (await api.put("/api/v1/channels/apns", json=apns())).status_code == 200
    [before] = await stored(sessions, workspace_id)
    both = SecretBox.from_setting(f"{KEY_B},{KEY_A}")
    assert both.open(before.secret) and not both.is_current(before.secret)

    first = await service.rotate_secrets(sessions, both, page=1)  # other tests' secrets may be under other keys
    assert first["rotated"] >= 1
    [after] = await stored(sessions, workspace_id)
    assert SecretBox.from_setting(KEY_B).open(after.secret) == SecretBox.from_setting(KEY_A).open(before.secret)
    again = await service.rotate_secrets(sessions, both)
    assert again["rotated"] == 0 and again["current"] >= first["rotated"]


def test_a_secrets_key_that_is_not_fernet_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="entry 2 is not a Fernet key"):
        SecretBox.from_setting(f"{KEY_A},not-a-key")


async def test_smtp_credentials_are_stored_sealed_checked_and_the_password_never_shown(  # type: ignore[no-untyped-def]
    channels_api: Running, sessions, workspace_id: str
) -> None:
    body = {"host": "smtp.sendgrid.net", "port": 587, "username": "apikey", "password": "SG.secret-value",
            "tls": "starttls", "from": "Shop <hi@shop.example>", "reply_to": "care@shop.example"}
    async with channels_api(HERALD_SECRETS_KEY=KEY_A) as api:
        saved = await api.put("/api/v1/channels/email", json=body)
        assert saved.status_code == 200, saved.text
        shown = (await api.get("/api/v1/channels/email")).json()
        listed = (await api.get("/api/v1/channels")).json()
        for bad, field in [
            ({**body, "host": "smtp.example.com:25"}, "host"),
            ({**body, "port": 70000}, "port"),
            ({**body, "tls": "ssl3"}, "tls"),
            ({**body, "from": "a@example.com\r\nBcc: all@example.com"}, "from"),
            ({**body, "reply_to": "not an address"}, "reply_to"),
            ({**body, "password": "two\nlines"}, "password"),
            ({**body, "extra": 1}, "extra"),
        ]:
            assert errors_at(await api.put("/api/v1/channels/email", json=bad)) == [["body", field]], field
        login_half = await api.put("/api/v1/channels/email", json={k: v for k, v in body.items() if k != "password"})
        assert login_half.status_code == 422 and "username" in login_half.text
        private = await api.put("/api/v1/channels/email", json={**body, "host": "10.0.0.5"})
        assert errors_at(private) == [["body", "host"]]
        assert (await api.delete("/api/v1/channels/email?app_id=nope")).status_code == 404

    for answer in (saved.text, orjson.dumps(shown).decode(), orjson.dumps(listed).decode()):
        assert "SG.secret-value" not in answer
    assert shown == {**{k: v for k, v in body.items() if k != "password"}, "kind": "email", "app_id": None,
                     "password_set": True, "updated_at": shown["updated_at"]}
    assert [c["kind"] for c in listed["channels"]] == ["email"]
    [row] = await stored(sessions, workspace_id)
    assert "SG.secret-value" not in row.secret and SecretBox.from_setting(KEY_A).open(row.secret) == {"password": "SG.secret-value"}


async def test_a_twilio_account_is_stored_sealed_and_checked_naming_the_field(  # type: ignore[no-untyped-def]
    channels_api: Running, sessions, workspace_id: str
) -> None:
    body = {"account_sid": "AC" + "a1" * 16, "auth_token": "f00d" * 8, "from_number": "+1 650 253 0000"}
    async with channels_api(HERALD_SECRETS_KEY=KEY_A) as api:
        saved = await api.put("/api/v1/channels/sms", json=body)
        assert saved.status_code == 200, saved.text
        for bad, field in [
            ({**body, "account_sid": "AC123"}, ["body", "account_sid"]),
            ({**body, "auth_token": "x y"}, ["body", "auth_token"]),
            ({**body, "from_number": "12345"}, ["body", "from_number"]),
            ({**body, "messaging_service_sid": "MGnope"}, ["body", "messaging_service_sid"]),
            ({**body, "messaging_service_sid": "MG" + "0" * 32}, ["body"]),  # both senders
            ({k: v for k, v in body.items() if k != "from_number"}, ["body"]),  # no sender
        ]:
            assert errors_at(await api.put("/api/v1/channels/sms", json=bad)) == [field], field
    assert "f00d" not in saved.text
    assert saved.json() | {"updated_at": None} == {
        "kind": "sms", "app_id": None, "account_sid": body["account_sid"], "from_number": "+16502530000",
        "messaging_service_sid": None, "auth_token_set": True, "inbound_url": f"/v1/sms/inbound/{workspace_id}",
        "updated_at": None,
    }
    [row] = await stored(sessions, workspace_id)
    assert SecretBox.from_setting(KEY_A).open(row.secret) == {"auth_token": body["auth_token"]}
