"""Purchases on real PostgreSQL: Order Completed adds up in the workspace currency, once per event, in any order."""

from datetime import timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from kernel.db import unit_of_work
from services.profiles import service
from services.profiles.activity import Rules
from services.profiles.app import build
from services.profiles.config import get_settings
from tests.integration.helpers import running
from tests.integration.test_profile_sessions import activity_days
from tests.integration.test_profile_updates import T0, event

EUR = Rules(currency="EUR", rates={"USD": Decimal("0.92")})


def orders(ws: str, user: str = "ada") -> list[Any]:
    return [
        event(ws, user_id=user, event="Order Completed", properties={"revenue": 19.9, "currency": "EUR"}, timestamp=T0),
        event(ws, user_id=user, event="Order Completed", properties={"total": 50, "currency": "USD"}, timestamp=T0 + timedelta(days=3)),
        event(ws, user_id=user, event="Order Completed",
              properties={"products": [{"price": 9.95, "quantity": 2}], "currency": "EUR"}, timestamp=T0 - timedelta(days=1)),
        event(ws, user_id=user, event="Order Completed", properties={"revenue": 5, "currency": "XBT"}, timestamp=T0 + timedelta(hours=1)),
        event(ws, user_id=user, event="Product Viewed", properties={"revenue": 1000}, timestamp=T0),  # not a purchase
    ]


async def _apply(sessions: async_sessionmaker[AsyncSession], *events: Any) -> None:
    async with unit_of_work(sessions) as s:
        await service.apply_events(s, list(events), EUR)


async def purchases(sessions: async_sessionmaker[AsyncSession], workspace_id: str, user_id: str) -> dict[str, Any]:
    async with unit_of_work(sessions) as s:
        found = await service.find_profile(s, workspace_id, user_id, "user_id")
        return (await service.describe(s, found, "EUR"))["computed"]["purchases"]  # type: ignore[no-any-return]


async def test_purchases_add_up_once_in_the_workspace_currency_whatever_the_order(sessions, workspace_id: str) -> None:  # type: ignore[no-untyped-def]
    one_by_one, batched = workspace_id, f"{workspace_id}b"
    placed = orders(one_by_one)
    for e in placed:
        await _apply(sessions, e)
    await _apply(sessions, *placed[:2])  # redeliveries add nothing
    await _apply(sessions, *reversed(orders(batched)))
    expected = await purchases(sessions, one_by_one, "ada")
    assert await purchases(sessions, batched, "ada") == expected
    # 19.90 + 50 USD at 0.92 + 2 x 9.95, exactly; the XBT order counts, its amount cannot be converted
    assert expected == {"count": 4, "revenue": 85.8, "currency": "EUR",
                        "first": T0 - timedelta(days=1), "last": T0 + timedelta(days=3)}
    # per UTC day, for windowed revenue ("spent over X in the last 30 days"), converted the same way
    day = T0.date()
    assert await activity_days(sessions, one_by_one, "ada") == {
        day - timedelta(days=1): (0, 1, Decimal("19.9000")), day: (0, 2, Decimal("19.9000")),
        day + timedelta(days=3): (0, 1, Decimal("46.0000")),
    }
    assert await activity_days(sessions, batched, "ada") == await activity_days(sessions, one_by_one, "ada")


async def test_a_merge_adds_the_anonymous_purchases_and_the_api_names_the_currency(sessions, workspace_id: str) -> None:  # type: ignore[no-untyped-def]
    await _apply(sessions, *orders(workspace_id, "bo")[:2])
    await _apply(sessions, event(workspace_id, anonymous_id="anon-bo", event="Order Completed",
                                 properties={"revenue": 10, "currency": "EUR"}, timestamp=T0 - timedelta(days=9)))
    await _apply(sessions, event(workspace_id, type="identify", user_id="bo", anonymous_id="anon-bo"))
    async with running(build, get_settings, workspace_id, HERALD_WORKSPACE_CURRENCY="EUR",
                       HERALD_CURRENCY_RATES='{"usd": 0.92}') as client:
        assert get_settings().rules().rates == {"USD": Decimal("0.92")}
        body = (await client.get("/api/v1/users/bo")).json()
    bought = body["computed"]["purchases"]
    assert (bought["count"], bought["revenue"], bought["currency"]) == (3, 75.9, "EUR")
    assert bought["first"].startswith("2026-10-23")
    by_day = await activity_days(sessions, workspace_id, "bo")  # the anonymous day moved with the merge
    assert sum(n for _, n, _ in by_day.values()) == 3 and by_day[(T0 - timedelta(days=9)).date()] == (0, 1, Decimal("10.0000"))
