"""The Alpaca broker of the trade stage: alpaca-py's ``TradingClient``, paper endpoint by default.

Configuration (docs/trade_brokers.md):

* keys from the environment only: ``APCA_API_KEY_ID`` and ``APCA_API_SECRET_KEY``; a missing one is a
  :class:`~trade.broker.BrokerError` naming the variable (never a value). The keys travel only in the
  ``APCA-API-KEY-ID`` / ``APCA-API-SECRET-KEY`` headers alpaca-py sends; this module never logs,
  prints or stores them, and scrubs them from every error message it raises.
* ``paper=True`` (default) talks to ``https://paper-api.alpaca.markets``; ``paper=False`` to the live
  endpoint. ``base_url`` overrides both (alpaca-py's ``url_override``; the tests point it at
  127.0.0.1).

Orders are market orders, ``time_in_force=day`` (Alpaca's only choice for fractional equity orders),
``qty`` rounded to 9 decimals (Alpaca's limit), with the loop's ``client_order_id``. Submit first looks
the client order id up (``GET /v2/orders:by_client_order_id``) and returns a known order without a
second POST; a 422 "client_order_id must be unique" race is resolved the same way.

Symbols: the datasets use Yahoo-style share-class tickers (``BRK-B``); Alpaca writes them with a dot
(``BRK.B``). :func:`to_alpaca` / :func:`from_alpaca` translate (``-`` <-> ``.``); ``symbol_map``
(ours -> Alpaca's) overrides single tickers. Alpaca crypto (``BTC/USD``, ``gtc`` only) is out of scope:
trade crypto with the ccxt broker.

Errors: an order the broker refuses (HTTP 403 "insufficient buying power", 422 invalid qty / symbol)
comes back as an :class:`Order` with ``status="rejected"`` and the broker's message in ``reason``, so
the loop records it and goes on; every other failure (401, 5xx, network, an unexpected reply) raises
one-line :class:`BrokerError` ``alpaca <call>: ...``.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pandas as pd

from trade._errors import describe, one_line
from trade.broker import Account, BrokerError, Clock, Order, OrderRequest, Status

KEY_ENV = "APCA_API_KEY_ID"
SECRET_ENV = "APCA_API_SECRET_KEY"
KEY_ID_HINT = f"{KEY_ENV} / {SECRET_ENV}"

#: Alpaca statuses that end an order, mapped to ours (everything else is ``new`` or
#: ``partially_filled`` by its filled quantity: accepted, pending_new, held, done_for_day, ...)
_FINAL_STATUS: dict[str, Status] = {
    "filled": "filled",
    "canceled": "canceled",
    "expired": "canceled",
    "replaced": "canceled",
    "rejected": "rejected",
}
#: HTTP codes of a POST /v2/orders that mean "this order is refused", not "the call failed"
_REFUSED = (403, 422)


def to_alpaca(symbol: str, symbol_map: dict[str, str] | None = None) -> str:
    """Our ticker -> Alpaca's: ``symbol_map`` first, else upper case with ``-`` -> ``.`` (``BRK-B`` -> ``BRK.B``)."""
    if symbol_map and symbol in symbol_map:
        return symbol_map[symbol]
    return symbol.strip().upper().replace("-", ".")


def from_alpaca(symbol: str, symbol_map: dict[str, str] | None = None) -> str:
    """Alpaca's ticker -> ours (the inverse of :func:`to_alpaca`)."""
    if symbol_map:
        for ours, theirs in symbol_map.items():
            if theirs == symbol:
                return ours
    return symbol.replace(".", "-")


def _env_keys(*names: str) -> list[str]:
    values = []
    for name in names:
        value = os.environ.get(name, "")
        if not value.strip():
            raise BrokerError(f"alpaca: environment variable {name} is not set; export the Alpaca "
                              f"paper key pair as {KEY_ID_HINT}")
        values.append(value.strip())
    return values


def _float(value: Any, default: float | None = 0.0) -> float | None:
    if value is None or value == "":
        return default
    return float(value)


class AlpacaBroker:
    """A :class:`~trade.broker.Broker` on Alpaca's Trading API v2 (alpaca-py ``TradingClient``)."""

    name = "alpaca"

    def __init__(self, *, paper: bool = True, base_url: str | None = None,
                 symbol_map: dict[str, str] | None = None) -> None:
        try:
            from alpaca.trading.client import TradingClient
        except ImportError:
            raise BrokerError("alpaca: the alpaca-py package is not installed (pip install 'finmeta[sources]' "
                              "or pip install alpaca-py)") from None

        key, secret = _env_keys(KEY_ENV, SECRET_ENV)
        self._secrets = (key, secret)
        self.paper = paper
        self.symbol_map = dict(symbol_map or {})
        try:
            self._client = TradingClient(api_key=key, secret_key=secret, paper=paper,
                                         url_override=base_url.rstrip("/") if base_url else None)
        except Exception as exc:  # alpaca-py validates the credentials' presence only
            raise self._error("connect", exc) from None
        # an order must not wait 3 x 3 s on a rate limit inside one loop step: one retry after 1 s
        self._client._retry = 1
        self._client._retry_wait = 1

    def __repr__(self) -> str:
        return f"AlpacaBroker(paper={self.paper})"

    # ------------------------------------------------------------------ errors
    def _error(self, call: str, exc: BaseException) -> BrokerError:
        return BrokerError(f"alpaca {call}: {self._describe(exc)}")

    def _describe(self, exc: BaseException) -> str:
        from alpaca.common.exceptions import APIError

        if isinstance(exc, APIError):
            status = exc.status_code
            message = str(exc)
            try:
                body = json.loads(message)
                if isinstance(body, dict) and "message" in body:
                    message = str(body["message"])
            except (TypeError, ValueError):
                pass
            return one_line(f"HTTP {status}: {message}" if status else message, self._secrets)
        return describe(exc, self._secrets)

    @staticmethod
    def _status_code(exc: BaseException) -> int | None:
        from alpaca.common.exceptions import APIError

        return exc.status_code if isinstance(exc, APIError) else None

    def _call(self, call: str, fn, *args):
        try:
            return fn(*args)
        except BrokerError:
            raise
        except Exception as exc:
            raise self._error(call, exc) from None

    # ------------------------------------------------------------------ conversions
    def _order(self, o) -> Order:
        raw = o.status.value if hasattr(o.status, "value") else str(o.status)
        filled = _float(o.filled_qty) or 0.0
        status: Status = _FINAL_STATUS.get(raw) or ("partially_filled" if filled > 0 else "new")
        side = o.side.value if hasattr(o.side, "value") else str(o.side)
        price = _float(o.filled_avg_price, None)
        return Order(
            client_order_id=o.client_order_id,
            symbol=from_alpaca(o.symbol or "", self.symbol_map),
            side=side,  # type: ignore[arg-type]
            qty=_float(o.qty) or 0.0,
            status=status,
            filled_qty=filled,
            filled_avg_price=price if filled > 0 else None,
            fee=0.0,  # Alpaca equities are commission-free; regulatory fees are account activities
            broker_order_id=str(o.id),
            submitted_at=pd.Timestamp(o.submitted_at).tz_convert("UTC") if o.submitted_at else None,
            reason=None if raw in ("canceled", "filled") or raw not in _FINAL_STATUS else raw,
        )

    # ------------------------------------------------------------------ Broker
    def account(self) -> Account:
        a = self._call("get_account", self._client.get_account)
        cash = _float(a.cash) or 0.0
        equity = _float(a.equity, None)
        if equity is None:
            equity = _float(a.portfolio_value, cash)
        status = a.status.value if hasattr(a.status, "value") else str(a.status)
        return Account(cash=cash, buying_power=_float(a.buying_power, cash), equity=equity,
                       currency=a.currency or "USD",
                       extra={"status": status, "multiplier": a.multiplier, "paper": self.paper,
                              "trading_blocked": a.trading_blocked})

    def positions(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for p in self._call("get_all_positions", self._client.get_all_positions):
            qty = float(p.qty)
            side = p.side.value if hasattr(p.side, "value") else str(p.side)
            if side == "short" and qty > 0:  # Alpaca reports shorts with a negative qty already
                qty = -qty
            if qty != 0:
                out[from_alpaca(p.symbol, self.symbol_map)] = qty
        return out

    def get_order(self, client_order_id: str) -> Order | None:
        try:
            o = self._client.get_order_by_client_id(client_order_id)
        except Exception as exc:
            if self._status_code(exc) == 404:
                return None
            raise self._error("get_order_by_client_id", exc) from None
        return self._order(o)

    def submit(self, order: OrderRequest) -> Order:
        from alpaca.trading.enums import OrderSide, TimeInForce
        from alpaca.trading.requests import MarketOrderRequest

        known = self.get_order(order.client_order_id)
        if known is not None:
            return known
        if order.side not in ("buy", "sell"):
            raise BrokerError(f"alpaca submit_order: side {order.side!r} of {order.client_order_id} is not buy/sell")
        qty = round(float(order.qty), 9)
        if not qty > 0:
            raise BrokerError(f"alpaca submit_order: qty {order.qty!r} of {order.client_order_id} must be > 0")
        try:
            request = MarketOrderRequest(symbol=to_alpaca(order.symbol, self.symbol_map), qty=qty,
                                         side=OrderSide(order.side), time_in_force=TimeInForce.DAY,
                                         client_order_id=order.client_order_id)
        except Exception as exc:
            raise self._error("submit_order", exc) from None
        try:
            return self._order(self._client.submit_order(request))
        except Exception as exc:
            code = self._status_code(exc)
            if code not in _REFUSED:
                raise self._error("submit_order", exc) from None
            reason = self._describe(exc)
        if code == 422:  # "client_order_id must be unique": sent twice concurrently -> that order
            known = self.get_order(order.client_order_id)
            if known is not None:
                return known
        return Order(client_order_id=order.client_order_id, symbol=order.symbol, side=order.side,
                     qty=float(order.qty), status="rejected", reason=reason)

    def cancel(self, client_order_id: str) -> None:
        o = self.get_order(client_order_id)
        if o is None:
            raise BrokerError(f"alpaca cancel_order_by_id: no order with client_order_id {client_order_id}")
        if o.status in ("filled", "canceled", "rejected"):
            return
        try:
            self._client.cancel_order_by_id(o.broker_order_id)
        except Exception as exc:
            if self._status_code(exc) == 422:  # "order is not cancelable": it became final meanwhile
                return
            raise self._error("cancel_order_by_id", exc) from None

    def clock(self) -> Clock:
        c = self._call("get_clock", self._client.get_clock)
        return Clock(timestamp=pd.Timestamp(c.timestamp).tz_convert("UTC"), is_open=bool(c.is_open))

    def close(self) -> None:
        session = getattr(self._client, "_session", None)
        if session is not None:
            session.close()
