"""Risk checks of the trade loop: each refuses with one line naming the check and its numbers.

Bar checks (the whole bar is skipped, no order is sent, the book is unchanged):

* ``stale_data``: the newest bar is not newer than the last processed one (the feed returned no new bar);
* ``missing_data``: a price of the newest bar is missing, not finite or not positive;
* ``market_closed``: the bar's time is not a session of the market's calendar (exchange-calendars,
  via :func:`data_processors.calendars.calendar_times`), or a live broker's clock says closed.

Account check (trading stops; the reason is stored and shown by ``finmeta trade status``):

* ``daily_loss``: the value fell by more than ``daily_loss_limit`` (a fraction) from the day's start
  value (the value at the last processed bar of an earlier day).

Order checks (the order is refused, recorded with status ``refused`` and its line; the others go):

* ``max_order_notional``: qty x reference price > ``max_order_notional``;
* ``max_weight``: a buy would make the asset's value exceed ``max_weight`` of the account value;
* ``buying_power``: a buy's estimated cost (reference price, the env's buy cost rate and minimum fee)
  exceeds the buying power left after the bar's earlier orders (sells add their estimated proceeds).

The reference price is the price the env's order sizing used (the fill bar's price in replay, the
latest close live).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

#: relative slack of the buying-power check: the env's own cash arithmetic may differ by rounding
BP_SLACK = 1e-9


@dataclass(frozen=True)
class RiskLimits:
    """``None`` disables a check."""

    max_order_notional: float | None = None
    max_weight: float | None = None
    daily_loss_limit: float | None = None
    check_calendar: bool = True

    def as_dict(self) -> dict:
        return {"max_order_notional": self.max_order_notional, "max_weight": self.max_weight,
                "daily_loss_limit": self.daily_loss_limit, "check_calendar": self.check_calendar}


@dataclass(frozen=True)
class Refusal:
    check: str
    message: str
    symbol: str | None = None

    def line(self) -> str:
        return f"refused [{self.check}] {self.message}"


def check_bar(time, prev_time, close_row, open_row, tickers, sessions: set | None) -> Refusal | None:
    """The bar checks (see module doc); None when the bar can be traded."""
    ts = pd.Timestamp(time)
    if prev_time is not None and ts <= pd.Timestamp(prev_time):
        return Refusal("stale_data", f"bar {ts} is not newer than the last processed bar {pd.Timestamp(prev_time)}; "
                                     f"skipping it (the feed returned no new bar)")
    for name, row in (("close", close_row), ("open", open_row)):
        if row is None:
            continue
        bad = ~(np.isfinite(row) & (row > 0))
        if bad.any():
            j = int(np.flatnonzero(bad)[0])
            return Refusal("missing_data", f"bar {ts}: {name} of {tickers[j]} is {row[j]!r} ({int(bad.sum())} "
                                           f"asset(s) without a price); skipping the bar", tickers[j])
    if sessions is not None and ts.normalize().tz_localize(None) not in sessions:
        return Refusal("market_closed", f"bar {ts}: the market is closed ({ts.day_name()} is not a session of "
                                        f"its calendar); skipping the bar")
    return None


def check_daily_loss(value: float, day_start: float | None, limit: float | None, time) -> Refusal | None:
    if limit is None or day_start is None or not day_start > 0:
        return None
    loss = (day_start - value) / day_start
    if loss > limit:
        return Refusal("daily_loss", f"bar {pd.Timestamp(time)}: value {value:,.2f} is {loss:.2%} below the day's "
                                     f"start {day_start:,.2f}, over the daily loss limit {limit:.2%}; trading stopped")
    return None


def check_orders(orders: list[dict], ref_price: dict[str, float], value: float, positions: dict[str, float],
                 buying_power: float, limits: RiskLimits, buy_rate, sell_rate, min_fee: float,
                 tickers: list[str]) -> tuple[list[dict], list[tuple[dict, Refusal]]]:
    """Split ``orders`` (sells first, then buys; dicts with symbol, side, qty) into (accepted,
    [(refused order, its refusal)])."""
    ok: list[dict] = []
    refused: list[tuple[dict, Refusal]] = []
    idx = {s: j for j, s in enumerate(tickers)}
    rb = np.broadcast_to(np.asarray(buy_rate, dtype=np.float64), (len(tickers),))
    rs = np.broadcast_to(np.asarray(sell_rate, dtype=np.float64), (len(tickers),))
    bp = float(buying_power)
    for o in orders:
        s, q = o["symbol"], float(o["qty"])
        p = float(ref_price[s])
        notional = q * p
        if limits.max_order_notional is not None and notional > limits.max_order_notional:
            refused.append((o, Refusal("max_order_notional", f"{o['side']} {q:g} {s} = {notional:,.2f} > limit "
                                                         f"{limits.max_order_notional:,.2f}", s)))
            continue
        j = idx[s]
        if o["side"] == "sell":
            bp += notional * (1.0 - rs[j]) - (min_fee if min_fee > 0 else 0.0)
            ok.append(o)
            continue
        if limits.max_weight is not None and value > 0:
            w = (positions.get(s, 0.0) + q) * p / value
            if w > limits.max_weight:
                refused.append((o, Refusal("max_weight", f"buy {q:g} {s} would make it {w:.2%} of the account, over the "
                                                     f"limit {limits.max_weight:.2%}", s)))
                continue
        cost = notional * (1.0 + rb[j]) if min_fee <= 0 else notional + max(notional * rb[j], min_fee)
        if cost > bp * (1.0 + BP_SLACK) + 1e-9:
            refused.append((o, Refusal("buying_power", f"buy {q:g} {s} costs about {cost:,.2f}, buying power left "
                                                   f"{max(bp, 0.0):,.2f}", s)))
            continue
        bp -= cost
        ok.append(o)
    return ok, refused


def sessions_between(calendar: str | None, start, end, freq: str = "1d") -> set | None:
    """The calendar's session dates in [start, end] (tz-naive midnight Timestamps); None when the
    calendar is unknown or 24/7 (every day open)."""
    if not calendar or str(calendar) in ("24/7",):
        return None
    from data_processors.calendars import calendar_times
    from finmeta.errors import ConfigError

    try:
        times = calendar_times(str(calendar), pd.Timestamp(start).normalize(), pd.Timestamp(end).normalize(), "1d")
    except ConfigError:  # a calendar exchange-calendars does not know is not checked (docs/trade.md)
        return None
    idx = pd.DatetimeIndex(times)
    if idx.tz is not None:
        idx = idx.tz_localize(None)
    return set(idx.normalize())


def finite(x) -> bool:
    return x is not None and math.isfinite(float(x))
