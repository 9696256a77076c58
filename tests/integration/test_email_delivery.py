"""Real email through a real SMTP server (the dev sink, aiosmtpd): HTML with a text alternative and inlined CSS,
the workspace's SMTP server and default sender, one-click unsubscribe headers, pooled connections, hard bounces."""

from collections.abc import AsyncIterator

import pytest
from cryptography.fernet import Fernet
from nats.aio.client import Client as NATS
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from kernel.db import unit_of_work
from kernel.outbox import Outbox
from services.dispatcher import domain, models, service
from services.dispatcher.domain import WebhookPolicy
from services.dispatcher.models import Suppression
from services.dispatcher.providers import SmtpProvider, WebhookProvider
from services.dispatcher.schemas import EmailChannelIn
from tests.integration.helpers import person
from tests.integration.test_dispatch_delivery import (  # noqa: F401  (fixtures)
    SmtpSink,
    a_send,
    delivery,
    handle,
    responder,
    retry_now,
    settings,
    smtp,
)

LINK_KEY = "k" * 40
HTML = """<html><head><style>
  p.lead { color: #336699; font-size: 18px }
  @media (max-width: 600px) { p.lead { font-size: 14px } }
</style></head><body>
<h1>Hi {{ user.traits.first_name }}</h1>
<p class="lead">Your {{ event.properties.name }} is waiting.</p>
<ul><li>Free returns</li><li>Ships today</li></ul>
<p><a href="https://shop.example/cart">Back to your cart</a></p>
</body></html>"""


@pytest.fixture
async def mailer(sessions: async_sessionmaker[AsyncSession], nc: NATS, smtp: SmtpSink) -> AsyncIterator[service.Dispatcher]:  # noqa: F811
    """A dispatcher whose process-wide relay is the sink, with signed links and two pooled connections per server."""
    configured = settings(
        public_url="https://herald.example", link_key=LINK_KEY, secrets_key=Fernet.generate_key().decode(),
        webhook_allowed_hosts="127.0.0.1",
    )
    webhook = WebhookProvider(WebhookPolicy.parse(configured.webhook_allowed_hosts), timeout=5)
    mail = SmtpProvider("127.0.0.1", smtp.port, "Herald <t@herald.local>", timeout=2, pool_size=2)
    yield service.Dispatcher(sessions, nc, nc.jetstream(), service.Providers(mail, webhook), Outbox(models.outbox), configured)
    await mail.aclose()
    await webhook.aclose()


async def test_an_html_email_goes_as_multipart_alternative_with_inlined_css_and_one_click_unsubscribe(
    mailer, responder, smtp, sessions, workspace_id  # type: ignore[no-untyped-def]  # noqa: F811
) -> None:
    profile_id = await person(sessions, workspace_id, {"first_name": "<b>Ada</b> & co", "email": "ada@example.com"})
    send = a_send(workspace_id, profile_id, "email", {"subject": "Your {{ event.properties.name }}", "html": HTML,
                                                      "reply_to": "Help <help@shop.example>"})
    await handle(mailer, send)

    row = await delivery(sessions, send.send_id)
    assert (row.status, row.reason_code) == ("sent", "ok"), row.reason
    [caught] = smtp.catcher.emails
    assert caught["content_type"] == "multipart/alternative"
    assert caught["parts"] == ["multipart/alternative", "text/plain", "text/html"]
    html = caught["html"]
    assert '<p class="lead" style="color: #336699;font-size: 18px;">Your Kite is waiting.</p>' in html
    assert "@media (max-width: 600px)" in html  # kept for the clients that read <style>
    assert "Hi &lt;b&gt;Ada&lt;/b&gt; &amp; co" in html  # the user's text, never markup
    text = caught["body"].replace("\r\n", "\n")  # lines end in CRLF on the wire
    assert "Hi <b>Ada</b> & co" in text and "Your Kite is waiting." in text
    assert "- Free returns\n- Ships today" in text
    assert "Back to your cart (https://shop.example/cart)" in text
    assert "color" not in text and "<" not in text.replace("<b>Ada</b>", "")

    headers = caught["headers"]
    assert headers["Reply-To"] == "Help <help@shop.example>"
    assert headers["From"] == "Herald <t@herald.local>"  # no workspace configuration: the process-wide sender
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    url = headers["List-Unsubscribe"].strip("<>")
    assert url.startswith("https://herald.example/v1/unsubscribe/")
    token = url.rsplit("/", 1)[1]
    assert domain.read_unsubscribe_token(LINK_KEY.encode(), token) == {
        "w": workspace_id, "s": send.send_id, "u": profile_id, "c": "email"
    }
    forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    assert domain.read_unsubscribe_token(LINK_KEY.encode(), forged) is None
    assert domain.read_unsubscribe_token(b"another key of forty characters........", token) is None


async def test_the_workspaces_smtp_server_and_sender_are_used_and_connections_are_reused(
    mailer, responder, smtp, sessions, workspace_id  # type: ignore[no-untyped-def]  # noqa: F811
) -> None:
    async with unit_of_work(sessions) as s:
        await service.save_email(s, mailer.settings, workspace_id, EmailChannelIn.model_validate({
            "host": "127.0.0.1", "port": smtp.port, "tls": "none", "from": "Shop <hi@shop.example>",
            "reply_to": "care@shop.example",
        }))
    people = [await person(sessions, workspace_id, {"email": f"p{i}@example.com"}) for i in range(6)]
    message = {"subject": "Hello", "body": "Plain {{ user.traits.email }}", "from": None}
    first = [a_send(workspace_id, p, "email", {k: v for k, v in message.items() if v}) for p in people]
    await handle(mailer, *first)
    opened = smtp.catcher.smtp_connections
    assert 1 <= opened <= 2  # six messages at once over at most the pool's two connections
    second = [a_send(workspace_id, p, "email", {"subject": "Again", "body": "b"}) for p in people]
    await handle(mailer, *second)
    assert smtp.catcher.smtp_connections == opened  # the second batch reused them
    assert len({e["connection"] for e in smtp.catcher.emails}) == opened

    assert {(await delivery(sessions, s.send_id)).status for s in first + second} == {"sent"}
    assert {e["headers"]["From"] for e in smtp.catcher.emails} == {"Shop <hi@shop.example>"}
    assert {e["headers"]["Reply-To"] for e in smtp.catcher.emails} == {"care@shop.example"}
    assert {e["content_type"] for e in smtp.catcher.emails} == {"text/plain"}  # no HTML: a plain text email

    await smtp.stop()  # the server goes away and comes back: pooled connections are dead, new ones are made
    await smtp.start()
    again = a_send(workspace_id, people[0], "email", {"subject": "Back", "body": "b", "from": "Promo <promo@shop.example>"})
    await handle(mailer, again)
    row = await delivery(sessions, again.send_id)
    assert (row.status, row.reason_code) == ("sent", "ok"), row.reason
    assert smtp.catcher.emails[-1]["headers"]["From"] == "Promo <promo@shop.example>"  # the campaign's own sender


async def test_a_hard_bounce_fails_the_send_and_suppresses_the_address_for_later_sends(
    mailer, responder, smtp, sessions, workspace_id  # type: ignore[no-untyped-def]  # noqa: F811
) -> None:
    smtp.catcher.bounces["gone@example.com"] = "550 5.1.1 <gone@example.com>: Recipient address rejected: User unknown"
    smtp.catcher.bounces["full@example.com"] = "452 4.2.2 Mailbox full"
    smtp.catcher.bounces["policy@example.com"] = "550 5.7.1 Relaying denied"
    gone = await person(sessions, workspace_id, {"email": "Gone@Example.com"})
    full = await person(sessions, workspace_id, {"email": "full@example.com"})
    policy = await person(sessions, workspace_id, {"email": "policy@example.com"})
    fine = await person(sessions, workspace_id, {"email": "fine@example.com"})
    message = {"subject": "s", "body": "b"}
    sends = [a_send(workspace_id, p, "email", message) for p in (gone, full, policy, fine)]
    await handle(mailer, *sends)

    rows = [await delivery(sessions, s.send_id) for s in sends]
    assert [(r.status, r.reason_code) for r in rows] == [
        ("failed", "hard_bounce"), ("retrying", "smtp_busy"), ("failed", "recipient_refused"), ("sent", "ok"),
    ]
    assert "550 5.1.1" in (rows[0].reason or "") and "User unknown" in (rows[0].reason or "")
    async with sessions() as s:
        suppressed = list(await s.scalars(select(Suppression).where(Suppression.workspace_id == workspace_id)))
    assert [(x.channel, x.address, x.reason_code, x.send_id) for x in suppressed] == [
        ("email", "gone@example.com", "hard_bounce", sends[0].send_id)  # a policy refusal is no bad address
    ]

    later = [a_send(workspace_id, gone, "email", message), a_send(workspace_id, fine, "email", message)]
    await handle(mailer, *later)
    rows = [await delivery(sessions, s.send_id) for s in later]
    assert [(r.status, r.reason_code) for r in rows] == [("skipped", "suppressed"), ("sent", "ok")]
    assert "undeliverable" in (rows[0].reason or "") and "550 5.1.1" in (rows[0].reason or "")
    assert [e["rcpt_tos"] for e in smtp.catcher.emails] == [["fine@example.com"], ["fine@example.com"]]

    del smtp.catcher.bounces["full@example.com"]  # the mailbox has room again: the 4xx was worth retrying
    await retry_now(mailer, sessions, sends[1])
    assert (await delivery(sessions, sends[1].send_id)).status == "sent"
