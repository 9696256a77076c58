"""Segment's own client libraries, unmodified, pointed at Herald: what a customer switching over would run.

The browser SDK runs in headless Chromium on a page from another origin, so CORS, `text/plain`
bodies and the settings endpoint are exercised as a real site exercises them. The server SDKs run
as shipped (PyPI, npm). The mobile SDKs cannot run here; their upload is rebuilt byte for byte
from their sources instead.
"""

import asyncio
import gzip
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from herald.stack import Stack
from tests.e2e.conftest import Workspace
from tests.e2e.sdk_clients import StaticSite, chromium, npm_packages, run_node

SDK_TIMEOUT_MS = 20_000


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def names(timeline: dict[str, Any]) -> list[str]:
    return sorted(e["name"] for e in timeline["events"])


def message_ids(timeline: dict[str, Any]) -> set[str]:
    return {e["message_id"] for e in timeline["events"]}


# --- analytics-next (analytics.js 2.0) in a real browser ------------------------------------------------------------

SHOP_PAGE = b"""<!doctype html>
<html lang="de"><head><meta charset="utf-8"><title>Herald test shop</title>
<script src="/vendor/analytics-next/index.js"></script>
</head><body><h1>Pricing</h1></body></html>
"""

# The other way sites install analytics.js: a stub that queues calls until the standalone build,
# hosted by the site, loads and replays them. `_cdn` names Herald as the CDN it reads settings from.
SNIPPET_PAGE = """<!doctype html>
<html lang="de"><head><meta charset="utf-8"><title>Herald test shop</title>
<script>
  window.analytics = [];
  ["page", "identify", "track"].forEach(function (method) {
    analytics[method] = function () { analytics.push([method].concat([].slice.call(arguments))); return analytics; };
  });
  analytics._writeKey = %(write_key)s;
  analytics._cdn = %(cdn)s;
  analytics.page("Pricing", {plan: "pro"});
  analytics.identify(%(user)s, {first_name: "Ada", plan: "pro"});
  analytics.track("Product Added", {sku: "A1", price: 129});
</script>
<script async src="/vendor/analytics-next/standalone.js"></script>
</head><body><h1>Pricing</h1></body></html>
"""

# What a site's own code does: load the SDK with Herald as its CDN (so it reads its settings from the
# gateway), then the calls a visitor causes. Each call's promise settles once the SDK has delivered it.
VISIT = """
async ({writeKey, cdnURL, userId, options}) => {
  const [analytics] = await AnalyticsNext.AnalyticsBrowser.load({writeKey, cdnURL}, options)
  const sent = (ctx) => ({
    type: ctx.event.type, messageId: ctx.event.messageId,
    failed: ctx.failedDelivery() ? String(ctx.failedDelivery().reason) : null,
  })
  const page = await analytics.page('Pricing', {plan: 'pro'})
  const anonymousId = analytics.user().anonymousId()
  const identify = await analytics.identify(userId, {first_name: 'Ada', plan: 'pro'})
  const track = await analytics.track('Product Added', {sku: 'A1', price: 129})
  return {anonymousId, calls: [sent(page), sent(identify), sent(track)]}
}
"""


class Browser:
    """A Chromium page on the shop's origin that can reach only the shop and the gateway, with what it did on record."""

    def __init__(self, page: Any, shop: StaticSite, gateway: str) -> None:
        self.page, self.shop, self.gateway = page, shop, gateway
        self.log: list[str] = []
        self.requests: list[Any] = []
        page.on("console", lambda m: self.log.append(f"console {m.type}: {m.text}"))
        page.on("request", lambda r: self.requests.append(r))
        page.on("requestfailed", lambda r: self.log.append(f"failed {r.method} {r.url}: {r.failure}"))
        page.on("response", lambda r: self.log.append(f"{r.status} {r.request.method} {r.url}"))

    def elsewhere(self) -> list[str]:
        """Requests to anything but the shop and Herald: a customer's visitors must not be sent to Segment."""
        return [r.url for r in self.requests if not r.url.startswith((self.shop.origin, self.gateway))]

    async def visit(self, ws: Workspace, user: str, options: dict[str, Any]) -> dict[str, Any]:
        """A visit to a page that loads the SDK with `AnalyticsBrowser.load`: what the SDK says it sent."""
        await self.page.goto(f"{self.shop.origin}/")
        visit: dict[str, Any] = await self.page.evaluate(
            VISIT, {"writeKey": ws.write_key, "cdnURL": self.gateway, "userId": user, "options": options}
        )
        return visit

    async def visit_snippet_page(self, ws: Workspace, user: str) -> str:
        """A visit to a page with the snippet and the standalone build; the visitor's anonymous id once loaded."""
        fields = {"write_key": ws.write_key, "cdn": self.gateway, "user": user}
        self.shop.files["/snippet"] = (
            (SNIPPET_PAGE % {k: json.dumps(v) for k, v in fields.items()}).encode(), "text/html; charset=utf-8"
        )
        await self.page.goto(f"{self.shop.origin}/snippet")
        await self.page.wait_for_function("() => window.analytics && window.analytics.initialized === true")
        anonymous_id: str = await self.page.evaluate("() => window.analytics.user().anonymousId()")
        return anonymous_id

    def sdk_calls(self) -> list[Any]:
        return [r for r in self.requests if r.url.startswith(self.gateway)]

    async def stored(self, ws: Workspace, user: str, count: int) -> dict[str, Any]:
        """The user's timeline once `count` events are on it; on timeout, what the browser saw, to tell why."""
        try:
            return await ws.stored(user, count=count)
        except AssertionError as e:
            raise AssertionError(f"{e}\nbrowser saw:\n" + "\n".join(self.log)) from None


@pytest.fixture
async def browser(stack: Stack) -> AsyncIterator[Browser]:
    executable = chromium()
    modules = npm_packages()
    from playwright.async_api import async_playwright

    umd = modules / "@segment/analytics-next/dist/umd"
    files = {
        "/": (SHOP_PAGE, "text/html; charset=utf-8"),
        "/favicon.ico": (b"", "image/x-icon"),
        "/vendor/analytics-next/index.js": ((umd / "index.js").read_bytes(), "text/javascript"),
        "/vendor/analytics-next/standalone.js": ((umd / "standalone.js").read_bytes(), "text/javascript"),
    }
    gateway = stack.config.url("gateway")
    with StaticSite(files) as shop:
        async with async_playwright() as playwright:
            # Names other than the shop's and the gateway's resolve nowhere: nothing leaves this machine.
            chrome = await playwright.chromium.launch(
                executable_path=executable,
                args=["--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1"],
            )
            try:
                context = await chrome.new_context(locale="de-DE", timezone_id="Europe/Berlin")
                context.set_default_timeout(SDK_TIMEOUT_MS)
                yield Browser(await context.new_page(), shop, gateway)
            finally:
                await chrome.close()


async def test_analytics_next_in_a_browser_on_another_origin(ws: Workspace, browser: Browser) -> None:
    user = unique("web")
    visit = await browser.visit(ws, user, options={})

    assert [c["failed"] for c in visit["calls"]] == [None, None, None], browser.log
    timeline = await browser.stored(ws, user, count=3)
    assert names(timeline) == ["Product Added", "identify", "page:Pricing"]
    assert message_ids(timeline) == {c["messageId"] for c in visit["calls"]}
    profile = await ws.user(user)
    assert profile is not None
    assert profile["traits"] == {"first_name": "Ada", "plan": "pro"}
    # The anonymous page view before identify belongs to the same person.
    assert profile["anonymous_ids"] == [visit["anonymousId"]]
    # The browser's language and time zone, as analytics.js reports them in `context`.
    assert (profile["attributes"].get("language"), profile["attributes"].get("time_zone")) == ("de", "Europe/Berlin")

    sdk_calls = browser.sdk_calls()
    assert [(r.method, r.url.removeprefix(browser.gateway)) for r in sdk_calls] == [
        ("GET", f"/v1/projects/{ws.write_key}/settings"), ("POST", "/v1/p"), ("POST", "/v1/i"), ("POST", "/v1/t"),
    ]
    # Sent as analytics.js sends them: a text/plain body (no JSON content type) carrying the write key.
    posted = sdk_calls[1]
    assert posted.headers["content-type"] == "text/plain"
    assert json.loads(posted.post_data)["writeKey"] == ws.write_key
    assert browser.elsewhere() == []


async def test_analytics_next_batching_posts_one_batch(ws: Workspace, browser: Browser) -> None:
    user = unique("web-batch")
    batching = {"strategy": "batching", "config": {"size": 3, "timeout": 1000}}
    async with browser.page.expect_response(lambda r: r.url == f"{browser.gateway}/v1/b") as uploaded:
        visit = await browser.visit(ws, user, options={"integrations": {"Segment.io": {"deliveryStrategy": batching}}})
    response = await uploaded.value

    assert response.status == 200, browser.log
    body = json.loads(response.request.post_data)
    assert body["writeKey"] == ws.write_key and len(body["batch"]) == 3
    timeline = await browser.stored(ws, user, count=3)
    assert message_ids(timeline) == {c["messageId"] for c in visit["calls"]}
    assert (await ws.user(user))["anonymous_ids"] == [visit["anonymousId"]]  # type: ignore[index]
    assert browser.elsewhere() == []


async def test_analytics_js_snippet_with_herald_as_its_cdn(ws: Workspace, browser: Browser) -> None:
    user = unique("web-snippet")
    anonymous_id = await browser.visit_snippet_page(ws, user)

    timeline = await browser.stored(ws, user, count=3)
    assert names(timeline) == ["Product Added", "identify", "page:Pricing"]
    posted = [json.loads(r.post_data) for r in browser.sdk_calls() if r.method == "POST"]
    assert message_ids(timeline) == {call["messageId"] for call in posted}
    assert (await ws.user(user))["anonymous_ids"] == [anonymous_id]  # type: ignore[index]
    assert browser.elsewhere() == []


# --- server libraries ----------------------------------------------------------------------------------------------


async def test_python_library_uploads_to_herald(ws: Workspace, stack: Stack) -> None:
    """segment-analytics-python, `host` pointed at the gateway, gzip on, synchronous: an error raises."""
    from segment.analytics import Client

    user = unique("py")

    def send() -> list[str]:
        client = Client(ws.write_key, host=stack.config.url("gateway"), sync_mode=True, gzip=True)
        _, identify = client.identify(user, {"first_name": "Grace", "plan": "team"})
        _, track = client.track(user, "Order Completed", {"total": 59.8, "currency": "EUR"})
        return [identify["messageId"], track["messageId"]]

    sent = await asyncio.to_thread(send)

    timeline = await ws.stored(user, count=2)
    assert message_ids(timeline) == set(sent)
    order = next(e for e in timeline["events"] if e["name"] == "Order Completed")
    assert order["properties"] == {"total": 59.8, "currency": "EUR"}
    assert (await ws.user(user))["traits"] == {"first_name": "Grace", "plan": "team"}  # type: ignore[index]


NODE_SERVER = """
const { Analytics } = require('@segment/analytics-node')
const cfg = JSON.parse(process.env.HERALD_SDK_TEST)
const analytics = new Analytics({ writeKey: cfg.writeKey, host: cfg.host, flushAt: 2, flushInterval: 200, maxRetries: 1 })
const out = { responses: [], errors: [], messageIds: [] }
analytics.on('http_response', (r) => out.responses.push({ url: r.url, status: r.status }))
analytics.on('error', (e) => out.errors.push(String(e.reason || e.code)))
const delivered = (err, ctx) => err ? out.errors.push(String(err.reason || err)) : out.messageIds.push(ctx.event.messageId)
analytics.identify({ userId: cfg.userId, traits: { first_name: 'Linus', plan: 'free' } }, delivered)
analytics.track({ userId: cfg.userId, event: 'Report Exported', properties: { format: 'csv' } }, delivered)
analytics.closeAndFlush({ timeout: 20000 }).then(() => console.log(JSON.stringify(out)))
"""


async def test_node_library_uploads_to_herald(ws: Workspace, stack: Stack) -> None:
    """@segment/analytics-node, `host` pointed at the gateway, flushed and closed as a server shuts down."""
    user = unique("node")
    config = {"writeKey": ws.write_key, "host": stack.config.url("gateway"), "userId": user}
    out = await asyncio.to_thread(run_node, NODE_SERVER, config)

    assert out["errors"] == [] and len(out["messageIds"]) == 2, out
    assert out["responses"] == [{"url": f"{stack.config.url('gateway')}/v1/batch", "status": 200}]
    timeline = await ws.stored(user, count=2)
    assert message_ids(timeline) == set(out["messageIds"])
    assert (await ws.user(user))["traits"] == {"first_name": "Linus", "plan": "free"}  # type: ignore[index]


# --- the mobile SDKs' upload, rebuilt from their sources -----------------------------------------------------------
#
# Neither SDK runs on this machine, so the test sends what they send. Learned from (not copied):
# analytics-kotlin (core 1.24.1):
#   core/.../core/HTTPClient.kt              POST https://{apiHost}/b, Content-Type text/plain, Content-Encoding gzip,
#                                            User-Agent analytics-kotlin/{version}, no Authorization header;
#                                            GET https://{cdnHost}/projects/{writeKey}/settings
#   core/.../core/utilities/StorageImpl.kt   the body: {"batch":[e1,e2,...],"sentAt":"…","writeKey":"…"}
#   core/.../core/Events.kt, platform/EventPipeline.kt   each event: type, messageId, anonymousId, timestamp,
#                                            context, integrations {}, _metadata {bundled, unbundled, bundledIds};
#                                            a blank userId is left out
#   android/.../plugins/AndroidContextPlugin.kt  context: app, device (type "android"), os, screen (density),
#                                            network, locale, userAgent, timezone; core ContextPlugin.kt: library,
#                                            instanceId; DeviceToken.kt: device.token
#   android/.../plugins/AndroidLifecyclePlugin.kt  "Application Installed" {version, build},
#                                            "Application Opened" {from_background, version, build}
#   core/.../platform/plugins/SegmentDestination.kt  the settings' Segment.io apiHost replaces the configured one
# analytics-swift (1.9.4):
#   Sources/Segment/Utilities/Networking/HTTPClient.swift  POST https://{apiHost}/b, Content-Type
#                                            application/json; charset=utf-8, User-Agent analytics-ios/{version},
#                                            Accept-Encoding gzip, uncompressed body, no Authorization header
#   Sources/Segment/Utilities/Storage/Types/DirectoryStore.swift  the body as its batch file holds it, one event a line:
#                                            `{ "batch": [` / e1 / `,e2` / … / `],"sentAt":"…","writeKey":"…"}`
#   Sources/Segment/Plugins/Context.swift    context: library, app {name, version, build, namespace}, device
#                                            (manufacturer Apple, type "ios"), os, screen, locale, timezone,
#                                            network {bluetooth, cellular, wifi}, userAgent, instanceId
#   Sources/Segment/Plugins/Platforms/iOS/iOSLifecycleEvents.swift  "Application Installed",
#                                            "Application Opened" {from_background, version, build,
#                                            referring_application, url}
#   Sources/Segment/Plugins/SegmentDestination.swift  the settings' Segment.io apiHost replaces the configured one


def sdk_time(at: datetime) -> str:
    """ISO 8601 in UTC with milliseconds, as both SDKs stamp events and batches."""
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def mobile_session(platform: str, anonymous_id: str, user_id: str) -> list[dict[str, Any]]:
    """A first launch: install, open, a screen, sign-in, a product added; the events as the SDK stamps them."""
    android = platform == "android"
    app = {"name": "Shop", "version": "3.2.0", "build": "320", "namespace": "com.example.shop"}
    device: dict[str, Any] = (
        {"id": uuid.uuid4().hex, "manufacturer": "Google", "model": "Pixel 8", "name": "shiba", "type": "android"}
        if android else
        {"manufacturer": "Apple", "type": "ios", "model": "iPhone15,2", "name": "iPhone", "id": str(uuid.uuid4()).upper()}
    )
    device["token"] = uuid.uuid4().hex * 2
    context: dict[str, Any] = {
        "app": app,
        "device": device,
        "os": {"name": "Android", "version": "14"} if android else {"name": "iOS", "version": "18.1"},
        "screen": {"density": 2.625, "height": 2205, "width": 1080} if android else {"width": 393, "height": 852},
        "network": {"wifi": True, "bluetooth": False, "cellular": False},
        "locale": "de-DE",
        "timezone": "Europe/Berlin",
        "userAgent": "Dalvik/2.1.0 (Linux; U; Android 14; Pixel 8 Build/AP2A.240805.005)" if android
        else "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
        "library": {"name": "analytics-kotlin", "version": "1.24.1"} if android
        else {"name": "analytics-swift", "version": "1.9.4"},
        "instanceId": str(uuid.uuid4()),
    }
    opened: dict[str, Any] = {"from_background": False, "version": "3.2.0", "build": "320"}
    if not android:
        opened |= {"referring_application": "", "url": ""}
    calls: list[dict[str, Any]] = [
        {"type": "track", "event": "Application Installed", "properties": {"version": "3.2.0", "build": "320"}},
        {"type": "track", "event": "Application Opened", "properties": opened},
        {"type": "screen", "name": "Home", "category": "", "properties": {}},
        {"type": "identify", "userId": user_id, "traits": {"first_name": "Ada", "email": f"{user_id}@example.com"}},
        {"type": "track", "userId": user_id, "event": "Product Added", "properties": {"sku": "A1", "price": 129.0}},
    ]
    start = datetime.now(UTC) - timedelta(seconds=30)
    return [
        {
            **call,
            "anonymousId": anonymous_id,
            "messageId": str(uuid.uuid4()),
            "timestamp": sdk_time(start + timedelta(seconds=i)),
            "context": context,
            "integrations": {},
            "_metadata": {"bundled": [], "unbundled": [], "bundledIds": []},
        }
        for i, call in enumerate(calls)
    ]


def mobile_upload(platform: str, write_key: str, events: list[dict[str, Any]]) -> tuple[bytes, dict[str, str]]:
    """The request body and headers of one batch upload, framed as each SDK's batch file frames it."""
    encoded = [json.dumps(e, separators=(",", ":")) for e in events]
    ending = f'],"sentAt":"{sdk_time(datetime.now(UTC))}","writeKey":"{write_key}"}}'
    if platform == "android":
        body = ('{"batch":[' + ",".join(encoded) + ending).encode()
        headers = {"Content-Type": "text/plain", "Content-Encoding": "gzip", "User-Agent": "analytics-kotlin/1.24.1"}
        return gzip.compress(body), headers
    lines = ['{ "batch": [', encoded[0], *("," + e for e in encoded[1:]), ending]
    headers = {"Content-Type": "application/json; charset=utf-8", "User-Agent": "analytics-ios/1.9.4",
               "Accept-Encoding": "gzip"}
    return "".join(line + "\n" for line in lines).encode(), headers


@pytest.mark.parametrize("platform", ["android", "ios"])
async def test_mobile_sdk_upload_as_the_sdks_send_it(ws: Workspace, stack: Stack, platform: str) -> None:
    anon, user = str(uuid.uuid4()), unique(platform)
    user_agent = {"android": "analytics-kotlin/1.24.1", "ios": "analytics-ios/1.9.4"}[platform]
    async with httpx.AsyncClient(base_url=stack.config.url("gateway"), timeout=10) as app:
        # The SDK starts with its settings from cdnHost (Herald's "<host>/v1"); it then uploads to the
        # settings' Segment.io apiHost, whatever it was configured with.
        r = await app.get(f"/v1/projects/{ws.write_key}/settings", headers={"User-Agent": user_agent})
        assert r.status_code == 200, r.text
        segment_io = r.json()["integrations"]["Segment.io"]
        assert segment_io["apiKey"] == ws.write_key
        upload_url = f"http://{segment_io['apiHost']}/b"

        events = mobile_session(platform, anon, user)
        body, headers = mobile_upload(platform, ws.write_key, events)
        r = await app.post(upload_url, content=body, headers=headers)
    assert r.status_code == 200, r.text

    timeline = await ws.stored(user, count=len(events))
    assert message_ids(timeline) == {e["messageId"] for e in events}
    assert names(timeline) == ["Application Installed", "Application Opened", "Product Added", "identify", "screen:Home"]
    profile = await ws.user(user)
    assert profile is not None and profile["anonymous_ids"] == [anon]
    assert profile["traits"] == {"first_name": "Ada", "email": f"{user}@example.com"}
    opened = next(e for e in timeline["events"] if e["name"] == "Application Opened")
    assert opened["properties"]["from_background"] is False
    # What the SDK's context says about the phone becomes the profile's standard attributes.
    context = events[0]["context"]
    expected = {"language": "de", "time_zone": "Europe/Berlin", "app_name": "Shop", "app_version": "3.2.0",
                "os_name": context["os"]["name"], "os_version": context["os"]["version"],
                "device_model": context["device"]["model"]}
    assert {name: profile["attributes"].get(name) for name in expected} == expected
    # The phone is one of the user's devices, with the push token the SDK reports in `context.device.token`.
    device = context["device"]
    assert [(d["device_id"], d["platform"], d["model"], d["app_version"], d["push_token"]) for d in profile["devices"]] \
        == [(device["id"], "android" if platform == "android" else "ios", device["model"], "3.2.0", device["token"])]
