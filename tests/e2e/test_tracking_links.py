"""An email's signed public links, served by the gateway of the real stack: the open pixel, click redirects and
one-click unsubscribe (RFC 8058) with its landing page; forged or altered links are 404; each outcome lands once
on the user's timeline, and an unsubscribe changes the user's subscription in the profiles service."""

import re
import uuid
from html import unescape
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from kernel import signing
from tests.conftest import eventually
from tests.e2e.conftest import Workspace

HTML = (
    "<html><body><h1>Hi {{ user.traits.first_name }}</h1>"
    '<p><a href="https://shop.example/cart?item={{ event.properties.sku }}&amp;ref=mail">Back to your cart</a></p>'
    '<p><a href="https://shop.example/help">Help</a> or <a href="mailto:care@shop.example">write to us</a></p>'
    "</body></html>"
)


async def an_email(space: Workspace, **message: Any) -> tuple[str, dict[str, Any]]:
    """A user who gets the campaign's email; returns their id and the email as the SMTP sink caught it."""
    await space.campaign(delay_seconds=0, cancel_on=[], message={"subject": "Your cart", "html": HTML, **message})
    user = f"ada-{uuid.uuid4().hex[:8]}"
    address = f"{user}@example.com"
    await space.identify(user, {"first_name": "Ada", "email": address})
    await space.stored(user)
    assert (await space.track(user, properties={"name": "Kite", "sku": "k-1", "price": 150})).status_code == 200
    [email] = await eventually(lambda: space.emails_to(address), timeout=30)
    return user, email


def hrefs(html: str) -> list[str]:
    return [unescape(h) for h in re.findall(r'<a\b[^>]*\shref="([^"]*)"', html)]


def pixel_of(html: str) -> str:
    [src] = re.findall(r'<img src="([^"]*/v1/links/o/[^"]*)"', html)
    return unescape(src)


def path(url: str) -> str:
    return urlsplit(url).path


async def timeline(space: Workspace, user: str) -> list[dict[str, Any]]:
    r = await space.api.get(f"/api/v1/users/{user}/events")
    assert r.status_code == 200, r.text
    return list(r.json()["events"])


def named(events: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in events if e["name"] == name]


def altered(token: str) -> list[str]:
    """The token with its claims changed (another send), its MAC changed, and cut short."""
    body, mac = token.split(".")
    claims = signing._unb64(body).replace(b'"s":"', b'"s":"x')
    return [f"{signing._b64(claims)}.{mac}", f"{body}.{mac[:-3]}{'AAA' if not mac.endswith('AAA') else 'BBB'}", body]


async def test_links_are_wrapped_opens_and_clicks_are_recorded_once_and_forged_links_are_404(ws: Workspace) -> None:
    user, email = await an_email(ws)
    links = hrefs(email["html"])
    assert [path(u).startswith("/v1/links/c/") for u in links] == [True, True, False]  # mailto: is left alone
    assert links[2] == "mailto:care@shop.example"
    # The plain-text alternative keeps the addresses themselves.
    assert "https://shop.example/cart?item=k-1&ref=mail" in email["body"]
    gateway = ws.sdk.base_url
    assert all(u.startswith(str(gateway).rstrip("/")) for u in links[:2])  # under HERALD_PUBLIC_URL

    async with httpx.AsyncClient(base_url=gateway, timeout=10) as browser:  # no key: whoever holds the email
        for _ in range(2):  # the image loaded twice: one open
            opened = await browser.get(path(pixel_of(email["html"])))
            assert opened.status_code == 200 and opened.headers["content-type"] == "image/gif"
            assert opened.content.startswith(b"GIF89a") and "no-store" in opened.headers["cache-control"]
        clicked = await browser.get(path(links[0]))
        assert clicked.status_code == 302
        assert clicked.headers["location"] == "https://shop.example/cart?item=k-1&ref=mail"
        assert (await browser.get(path(links[0]))).status_code == 302  # clicked again: still one click
        assert (await browser.get(path(links[1]))).headers["location"] == "https://shop.example/help"

        click_token = path(links[0]).rsplit("/", 1)[1]
        for forged in altered(click_token):
            assert (await browser.get(f"/v1/links/c/{forged}")).status_code == 404
        assert (await browser.get(f"/v1/links/o/{click_token}")).status_code == 404  # a click token is no pixel
        assert (await browser.get(f"/v1/unsubscribe/{click_token}")).status_code == 404
        assert (await browser.get("/v1/links/c/not-a-token")).status_code == 404

    async def recorded() -> list[dict[str, Any]] | None:
        events = await timeline(ws, user)
        return events if len(named(events, "$message_clicked")) == 2 and named(events, "$message_opened") else None

    events = await eventually(recorded, timeout=15)
    [sent] = named(events, "$message_sent")
    send_id, campaign_id = sent["properties"]["send_id"], sent["properties"]["campaign_id"]
    [open_event] = named(events, "$message_opened")  # the pixel twice and two clicks: one open of this send
    assert open_event["properties"] == {"send_id": send_id, "campaign_id": campaign_id, "channel": "email"}
    clicks = sorted(named(events, "$message_clicked"), key=lambda e: e["properties"]["link"])
    assert [(c["properties"]["url"], c["properties"]["link"], c["properties"]["send_id"]) for c in clicks] == [
        ("https://shop.example/cart?item=k-1&ref=mail", 1, send_id), ("https://shop.example/help", 2, send_id),
    ]
    assert named(await timeline(ws, user), "$message_opened") == [open_event]  # nothing more came later


async def test_one_click_unsubscribe_and_its_landing_page_change_the_users_subscription(ws: Workspace) -> None:
    user, email = await an_email(ws)
    url = email["headers"]["List-Unsubscribe"].strip("<>")
    assert email["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert url.startswith(f"{str(ws.sdk.base_url).rstrip('/')}/v1/unsubscribe/")

    async with httpx.AsyncClient(base_url=ws.sdk.base_url, timeout=10) as browser:
        landing = await browser.get(path(url))  # a person (or a mail scanner) opens the link: nothing changes yet
        assert landing.status_code == 200 and landing.headers["content-type"].startswith("text/html")
        assert '<form method="post">' in landing.text and "<script" not in landing.text
        assert landing.headers["x-frame-options"] == "DENY"
        profile = await ws.user(user)
        assert profile is not None and (profile.get("subscriptions") or {}).get("email") is None

        for forged in altered(path(url).rsplit("/", 1)[1]):
            assert (await browser.post(f"/v1/unsubscribe/{forged}", content=b"List-Unsubscribe=One-Click")).status_code == 404

        done = await browser.post(  # what a mail client's one-click sends (RFC 8058)
            path(url), content=b"List-Unsubscribe=One-Click", headers={"content-type": "application/x-www-form-urlencoded"}
        )
        assert done.status_code == 200 and "unsubscribed" in done.text
        assert (await browser.post(path(url), data={"List-Unsubscribe": "One-Click"})).status_code == 200  # the button, again

    profile = await ws.user(user)
    assert profile is not None
    assert profile["subscriptions"]["email"]["state"] == "unsubscribed"
    assert profile["subscriptions"]["email"]["source"] == "link"

    async def recorded() -> list[dict[str, Any]] | None:
        return named(await timeline(ws, user), "$message_unsubscribed") or None

    [left] = await eventually(recorded, timeout=15)
    assert left["properties"]["channel"] == "email" and left["properties"]["source"] == "link"
    assert left["properties"]["send_id"] == named(await timeline(ws, user), "$message_sent")[0]["properties"]["send_id"]


@pytest.mark.parametrize("route", ["/v1/links/o/{t}", "/v1/links/c/{t}", "/v1/unsubscribe/{t}"])
async def test_a_link_signed_with_another_key_is_404(ws: Workspace, route: str) -> None:
    purpose = {"o": "open", "c": "click"}.get(route.split("/")[3], "unsubscribe")
    claims = {"w": ws.workspace_id, "s": "s1", "u": "ada", "c": "email", "l": "https://evil.example/", "i": 1}
    token = signing.link_token(b"not the stack's key, but long enough......", purpose, claims)
    async with httpx.AsyncClient(base_url=ws.sdk.base_url, timeout=10) as browser:
        answer = await browser.get(route.format(t=token))
    assert answer.status_code == 404 and "location" not in answer.headers
