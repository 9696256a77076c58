"""SMS rules without I/O: segments by encoding, numbers to E.164, keywords, Twilio's request signature."""

import base64
import hashlib
import hmac

import pytest

from kernel.contracts import ProfileSnapshot, StandardAttributes
from services.dispatcher import domain


@pytest.mark.parametrize(("body", "encoding", "segments"), [
    ("a" * 160, "GSM-7", 1),
    ("a" * 161, "GSM-7", 2),
    ("a" * 306, "GSM-7", 2),
    ("a" * 307, "GSM-7", 3),
    ("€" * 80, "GSM-7", 1),  # an extension character takes two septets
    ("€" * 81, "GSM-7", 2),
    ("Grüße à Zoé, £5 @ 10€!", "GSM-7", 1),
    ("Zoë", "UCS-2", 1),  # ë is not in the GSM alphabet
    ("ç" * 70, "UCS-2", 1),  # lower-case ç is not in the GSM alphabet (only Ç is)
    ("ç" * 71, "UCS-2", 2),
    ("ç" * 134, "UCS-2", 2),
    ("ç" * 135, "UCS-2", 3),
    ("👋" * 35, "UCS-2", 1),  # an emoji is two UTF-16 units
    ("👋" * 36, "UCS-2", 2),
])
def test_segments_follow_the_encoding(body: str, encoding: str, segments: int) -> None:
    counted = domain.sms_segments(body)
    assert (counted.encoding, counted.segments) == (encoding, segments)


def person(phone: object, country: str | None = None) -> ProfileSnapshot:
    return ProfileSnapshot(profile_id="p", traits={"phone": phone}, attributes=StandardAttributes(country=country))


def test_numbers_are_normalized_to_e164_reading_a_local_number_in_the_users_country() -> None:
    assert domain.phone_number(person("+1 (415) 555-2671")) == "+14155552671"
    assert domain.phone_number(person("07911 123456", "GB")) == "+447911123456"
    assert domain.phone_number(person("030 901820", "de")) == "+4930901820"
    assert domain.phone_number(person("")) is None
    assert domain.phone_number(ProfileSnapshot(profile_id="p")) is None


@pytest.mark.parametrize(("phone", "words"), [
    ("07911 123456", "country unknown"),
    ("12345", "not a phone number"),
    ("+1 555 000 0000", "not a valid phone number"),
    ("call me", "not a phone number"),
    (4155552671, "is a int"),
    ("+1415\n5552671", "control characters"),
])
def test_a_number_that_cannot_take_texts_is_refused_with_why(phone: object, words: str) -> None:
    with pytest.raises(domain.InvalidNumber, match=words):
        domain.phone_number(person(phone))


def test_keywords_are_one_word_in_any_case() -> None:
    assert domain.sms_keyword(" stop ") == ("stop", "STOP")
    assert domain.sms_keyword("Unsubscribe.") == ("stop", "UNSUBSCRIBE")
    assert domain.sms_keyword("start") == ("start", "START")
    assert domain.sms_keyword("HELP!") == ("help", "HELP")
    assert domain.sms_keyword("please stop texting me") is None
    assert domain.sms_keyword("") is None


def test_the_twilio_signature_is_hmac_sha1_of_the_url_and_the_sorted_parameters() -> None:
    params = [("To", "+16502530000"), ("Body", "STOP"), ("From", "+14155552671")]
    signed = b"https://h.example/v1/sms/inbound/ws_1?x=1BodySTOPFrom+14155552671To+16502530000"
    expected = base64.b64encode(hmac.new(b"token", signed, hashlib.sha1).digest()).decode()
    assert domain.twilio_signature("token", "https://h.example/v1/sms/inbound/ws_1?x=1", params) == expected
