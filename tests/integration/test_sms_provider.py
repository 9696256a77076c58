"""The SMS provider against the Twilio-compatible sink over real HTTP: Basic auth, the form, Twilio's answers."""

from collections.abc import AsyncIterator

import httpx
import pytest

from herald.infra import free_port
from herald.sinks import Catcher, build_http, serving_http
from services.dispatcher.providers import DeliveryError, InvalidRecipient, TwilioCredentials, TwilioProvider


@pytest.fixture
async def twilio() -> AsyncIterator[tuple[Catcher, str]]:
    catcher, port = Catcher(None), free_port()
    async with serving_http(build_http(catcher), "127.0.0.1", port):
        yield catcher, f"http://127.0.0.1:{port}"


async def test_a_text_goes_as_twilios_form_and_twilios_answers_are_read(twilio: tuple[Catcher, str]) -> None:
    catcher, base = twilio
    async with httpx.AsyncClient(base_url=base) as sink:
        account = (await sink.post("/twilio/accounts")).json()
    provider = TwilioProvider(f"{base}/twilio", timeout=5)
    try:
        by_number = TwilioCredentials(account["account_sid"], account["auth_token"], from_number="+16502530000")
        by_service = TwilioCredentials(account["account_sid"], account["auth_token"],
                                       messaging_service_sid="MG" + "0" * 32)
        sid = await provider.send(by_number, "+14155552671", "Hi €5")
        assert sid.startswith("SM") and len(sid) == 34
        await provider.send(by_service, "+14155552671", "Hi again")
        assert [(t["to"], t["from"], t["messaging_service_sid"], t["body"]) for t in catcher.texts] == [
            ("+14155552671", "+16502530000", None, "Hi €5"), ("+14155552671", None, "MG" + "0" * 32, "Hi again"),
        ]

        with pytest.raises(InvalidRecipient) as bad:
            await provider.send(by_number, "+1234", "x")
        assert bad.value.code == "invalid_number" and "error 21211" in str(bad.value) and not bad.value.transient

        wrong = TwilioCredentials(account["account_sid"], "0" * 32, from_number="+16502530000")
        with pytest.raises(DeliveryError) as refused:
            await provider.send(wrong, "+14155552671", "x")
        assert (refused.value.code, refused.value.transient) == ("provider_auth", False)
        assert len(catcher.texts) == 2
    finally:
        await provider.aclose()

    gone = TwilioProvider("http://127.0.0.1:1", timeout=1)
    with pytest.raises(DeliveryError) as down:
        await gone.send(by_number, "+14155552671", "x")
    assert (down.value.code, down.value.transient) == ("provider_unreachable", True)
    await gone.aclose()
