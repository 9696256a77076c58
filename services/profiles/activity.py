"""Pure rules for what a profile's activity adds up to: sessions, their hour-of-week histogram, purchases.

Sessions:
- On a phone, a session is an `Application Opened` (Segment's mobile lifecycle events). Every Segment
  mobile SDK sends `Application Installed` or `Application Updated` *with* an `Application Opened` on
  the same launch, so those two add no session of their own, and `Application Backgrounded` only ends
  one. Each Opened is counted once (a redelivery is never applied twice: the event store sees to it).
- In a browser, a session is a run of events with no gap longer than the inactivity timeout (30
  minutes by default). A late event may start a session, stretch one, or join two into one: the
  profile keeps its most recent sessions as intervals so that any order of events ends the same,
  within those RETAINED sessions (an event older than all of them that falls near the forgotten
  ones is not counted: which forgotten session it belonged to is no longer known).
- The histogram counts session starts by hour of the week (Monday 00:00 first) in the time zone of
  the event that started the session, else the profile's, else UTC.

Purchases: each Segment `Order Completed` is one purchase of its `revenue`, else its `total`, else the
sum of its `products[]` (price × quantity), in its `currency` (the workspace's if it names none),
converted to the workspace currency with the configured rates. Amounts are exact decimals, so sums
do not depend on the order they are added in. A purchase whose amount cannot be read or converted
still counts; only its amount is left out (and the reason counted).
"""

import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from services.profiles.context import zone

OPENED = "Application Opened"
ORDER_COMPLETED = "Order Completed"
CENT = Decimal("0.0001")  # amounts are kept to four places (the column is NUMERIC(20, 4))
MAX_AMOUNT = Decimal(10) ** 12
UNKNOWN_CURRENCY = "unknown_currency"
BAD_AMOUNT = "bad_amount"
RETAINED = 32  # browser and phone sessions a profile keeps as intervals
HOURS_OF_WEEK = 7 * 24
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class Rules:
    """What the service's settings decide (config.py): the browser's inactivity timeout, the currency."""

    session_gap: timedelta = timedelta(minutes=30)
    currency: str = "USD"
    rates: dict[str, Decimal] = field(default_factory=dict)  # units of `currency` per unit of each other one


@dataclass(slots=True)
class Sessions:
    """A profile's sessions: what it shows, and the recent intervals that keep them order-independent."""

    count: int = 0
    first: datetime | None = None
    last: datetime | None = None  # when the newest session started
    hours: list[int] | None = None  # HOURS_OF_WEEK session starts, local time
    # recent: [[start µs, end µs, time zone or None, 1 browser / 0 phone], ...] by start; horizon: the
    # latest end of a browser session no longer kept
    state: dict[str, Any] | None = None
    # Not stored here: sessions started (or, joined into another, un-started) per UTC day since the profile was
    # read, for the per-day table that windowed counts read (taken and written by the service).
    started: Counter[date] = field(default_factory=Counter)


def _us(at: datetime) -> int:
    return (at - _EPOCH) // _MICRO


def _at(us: int) -> datetime:
    return _EPOCH + us * _MICRO


def hour_of_week(at: datetime, time_zone: str | None) -> int:
    """0 for Monday 00:00–00:59 in that zone (UTC if None or unknown), up to 167 for Sunday 23:00."""
    local = at.astimezone(zone(time_zone) or UTC) if time_zone else at.astimezone(UTC)
    return local.weekday() * 24 + local.hour


def add_session(sessions: Sessions, at: datetime, time_zone: str | None, browser: bool, gap: timedelta) -> bool:
    """Add one event that is session activity; True if the sessions changed (see the module's rules)."""
    t = _us(at)
    return _add(sessions, t, t, time_zone, browser, gap // _MICRO)


def _add(sessions: Sessions, start: int, end: int, time_zone: str | None, browser: bool, gap: int) -> bool:
    """Add activity from `start` to `end` (µs): a new session, or joined with the browser sessions within `gap` of it."""
    state = sessions.state if sessions.state is not None else {"recent": [], "horizon": None}
    sessions.state = state
    recent: list[list[Any]] = state["recent"]
    if browser and state["horizon"] is not None and start <= state["horizon"] + gap:
        return False  # next to sessions no longer kept
    near = [s for s in recent if s[3] and s[0] - gap <= end and start <= s[1] + gap] if browser else []
    if len(near) == 1 and near[0][0] <= start and end <= near[0][1]:
        return False  # inside a known session
    hours = sessions.hours if sessions.hours is not None else [0] * HOURS_OF_WEEK
    sessions.hours = hours
    first = (start, time_zone or "")
    for s in near:  # they and this activity are one session now, starting at the earliest of them
        first = min(first, (s[0], s[2] or ""))
        end = max(end, s[1])
        hours[hour_of_week(_at(s[0]), s[2])] -= 1
        sessions.started[_at(s[0]).date()] -= 1
        recent.remove(s)
    start, time_zone = first[0], first[1] or None
    recent.append([start, end, time_zone, 1 if browser else 0])
    recent.sort(key=lambda s: (s[0], s[3]))
    hours[hour_of_week(_at(start), time_zone)] += 1
    sessions.started[_at(start).date()] += 1
    sessions.count += 1 - len(near)
    began = _at(start)
    sessions.first = min(sessions.first or began, began)
    while len(recent) > RETAINED:
        dropped = recent.pop(0)
        if dropped[3]:
            state["horizon"] = max(state["horizon"] or dropped[1], dropped[1])
    sessions.last = _at(recent[-1][0]) if recent else sessions.last
    return True


def merge_sessions(mine: Sessions, other: Sessions, gap: timedelta) -> None:
    """Fold another profile's sessions into these, as if its events had landed here."""
    if not other.count:
        return
    recent = (other.state or {}).get("recent", [])
    # Sessions the other profile no longer kept as intervals are counted as they were.
    mine.count += other.count - len(recent)
    leftover = list(other.hours or [0] * HOURS_OF_WEEK)
    for s in recent:
        leftover[hour_of_week(_at(s[0]), s[2])] -= 1
        # its per-day rows move here whole (repository.move_profile); these sessions are added again below
        mine.started[_at(s[0]).date()] -= 1
    mine.hours = [a + b for a, b in zip(mine.hours or [0] * HOURS_OF_WEEK, leftover, strict=True)]
    for start, end, tz, browser in recent:
        _add(mine, start, end, tz, bool(browser), gap // _MICRO)
    if other.first is not None:
        mine.first = min(mine.first or other.first, other.first)
    if mine.last is None and other.last is not None:
        mine.last = other.last


@dataclass(slots=True)
class Purchases:
    count: int = 0
    revenue: Decimal = Decimal(0)  # in the workspace currency
    first: datetime | None = None
    last: datetime | None = None


def _number(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def order_amount(properties: dict[str, Any], rules: Rules) -> tuple[Decimal | None, str | None]:
    """An order's amount in the workspace currency, or (None, why it cannot be known)."""
    raw = properties.get("revenue", properties.get("total"))
    if raw is not None:
        amount = _number(raw)
    else:
        products = properties.get("products")
        if not isinstance(products, list) or not products:
            return None, None  # an order with no amount: counted, nothing to add
        amount = Decimal(0)
        for product in products:
            price = _number(product.get("price")) if isinstance(product, dict) else None
            quantity = _number(product.get("quantity", 1)) if isinstance(product, dict) else None
            if price is None or quantity is None:
                return None, BAD_AMOUNT
            amount += price * quantity
    if amount is None or amount < 0 or amount > MAX_AMOUNT:
        return None, BAD_AMOUNT
    currency = properties.get("currency") or rules.currency
    currency = currency.strip().upper() if isinstance(currency, str) else ""
    rate = Decimal(1) if currency == rules.currency else rules.rates.get(currency)
    if rate is None:
        return None, UNKNOWN_CURRENCY
    return (amount * rate).quantize(CENT), None


def add_purchase(purchases: Purchases, at: datetime, amount: Decimal | None) -> None:
    """One more purchase at `at`, worth `amount` (None: unknown, counted all the same)."""
    purchases.count += 1
    purchases.revenue += amount or 0
    purchases.first = min(purchases.first or at, at)
    purchases.last = max(purchases.last or at, at)


def merge_purchases(mine: Purchases, other: Purchases) -> None:
    """Fold another profile's purchases into these."""
    mine.count += other.count
    mine.revenue += other.revenue
    for at in (other.first, other.last):
        if at is not None:
            mine.first = min(mine.first or at, at)
            mine.last = max(mine.last or at, at)
