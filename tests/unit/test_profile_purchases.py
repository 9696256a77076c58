"""Purchase rules: what an Order Completed is worth in the workspace currency, in any order."""

import itertools
import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from services.profiles.activity import (
    BAD_AMOUNT,
    UNKNOWN_CURRENCY,
    Purchases,
    Rules,
    add_purchase,
    merge_purchases,
    order_amount,
)

EUR = Rules(currency="EUR", rates={"USD": Decimal("0.92"), "GBP": Decimal("1.17")})
T0 = datetime(2026, 11, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("properties", "amount", "reason"),
    [
        ({"revenue": 29.9, "total": 35.0, "currency": "EUR"}, Decimal("29.9"), None),
        ({"total": 35, "currency": "eur"}, Decimal("35"), None),
        ({"revenue": 10}, Decimal("10"), None),  # no currency: the workspace's
        ({"revenue": "12.50", "currency": "USD"}, Decimal("11.5"), None),
        ({"revenue": 0.1, "currency": "GBP"}, Decimal("0.117"), None),
        ({"products": [{"price": 10, "quantity": 2}, {"price": 4.5}], "currency": "EUR"}, Decimal("24.5"), None),
        ({"revenue": 10, "currency": "JPY"}, None, UNKNOWN_CURRENCY),
        ({"revenue": -5}, None, BAD_AMOUNT),
        ({"revenue": "lots"}, None, BAD_AMOUNT),
        ({"revenue": True}, None, BAD_AMOUNT),
        ({"revenue": float("inf")}, None, BAD_AMOUNT),
        ({"products": [{"price": "free"}]}, None, BAD_AMOUNT),
        ({}, None, None),
    ],
)
def test_an_order_s_amount_in_the_workspace_currency(properties: dict[str, Any], amount: Decimal | None, reason: str | None) -> None:
    assert order_amount(properties, EUR) == (amount, reason)


ORDERS = [(T0 + timedelta(hours=i), Decimal(v)) for i, v in enumerate(["0.1", "0.2", "0.3", "19.99", "1000000.0001"])] + [
    (T0 - timedelta(days=2), None)
]


def _play(orders: list[tuple[datetime, Decimal | None]] | tuple[tuple[datetime, Decimal | None], ...]) -> Purchases:
    p = Purchases()
    for at, amount in orders:
        add_purchase(p, at, amount)
    return p


def test_purchases_add_up_exactly_in_any_order_and_merge() -> None:
    results = {repr(_play(order)) for order in itertools.permutations(ORDERS)}
    assert len(results) == 1
    p = _play(ORDERS)
    assert (p.count, p.revenue, p.first, p.last) == (6, Decimal("1000020.5901"), T0 - timedelta(days=2), T0 + timedelta(hours=4))
    rng = random.Random(5)
    for _ in range(20):
        order = ORDERS[:]
        rng.shuffle(order)
        cut = rng.randrange(len(order) + 1)
        mine, other = _play(order[:cut]), _play(order[cut:])
        merge_purchases(mine, other)
        assert mine == p
