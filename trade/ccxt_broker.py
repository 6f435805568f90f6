"""The ccxt broker of the trade stage: a crypto exchange's spot account through ccxt, sandbox by default.

Configuration (docs/trade_brokers.md):

* ``exchange`` is a ccxt exchange id (default ``binance``). ``sandbox=True`` (default) calls ccxt's
  ``set_sandbox_mode(True)`` (Binance: the spot testnet ``testnet.binance.vision``); an exchange
  without a sandbox is a :class:`~trade.broker.BrokerError`, never a silent switch to live trading.
  ``base_url`` points every API url of the exchange at another host (the tests use 127.0.0.1).
* keys from the environment only: ``CCXT_API_KEY``, ``CCXT_SECRET`` (and ``CCXT_PASSWORD`` for the
  exchanges that need a passphrase); a missing one is a BrokerError naming the variable. The keys
  go into ccxt's request signing only (Binance: ``X-MBX-APIKEY`` header + HMAC-SHA256 ``signature``);
  this module never logs or stores them and scrubs them from every error it raises.
* ``quote`` (default ``USDT``) is the cash currency: its balance is the account's cash, every other
  non-zero currency balance is a position (base currency), valued at the exchange's last price of
  ``BASE/quote`` for the equity.
* ``symbols``: the loop's tickers (the universe). Binance needs the symbol to look an order up, so
  :meth:`CcxtBroker.get_order` tries the symbol this process submitted the id with, then each
  universe ticker; with a universe, :meth:`positions` reports only its base currencies (testnet
  accounts hold dozens of coins) under the universe's ticker names.

Symbols: the binance data source's tickers are ``BTCUSDT`` (``BASE`` + ``QUOTE``); ``BTC/USDT`` and
``BTC-USDT`` are read too, and the Yahoo-style ``BTC-USD`` goes to ``BTC/<quote>`` when the exchange
has no ``BTC/USD`` market. Positions come back as ``BASE + quote`` (``BTCUSDT``) or the universe's
own spelling.

Orders: market orders with ccxt's unified ``clientOrderId`` param (ccxt's binance sends it as
``newClientOrderId``; lookups send ``origClientOrderId``), amounts cut to the market's lot size by
ccxt. ``fee`` is the sum of the fills' commissions paid in the quote currency or in the base currency
(times the average price); a commission in a third currency (BNB) is not converted and reads 0;
fills come only in the order reply, so an order looked up later reports the fee this process saw.

Errors: an order the exchange refuses (insufficient balance, amount below the lot size, an invalid
order) comes back as an :class:`Order` with ``status="rejected"`` and the exchange's message; every
other failure (authentication, network, an unknown symbol) raises one-line BrokerError
``ccxt <exchange> <call>: ...``.
"""

from __future__ import annotations

import logging
import os
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pandas as pd

from trade._errors import describe
from trade.broker import Account, BrokerError, Clock, Order, OrderRequest, Status

KEY_ENV = "CCXT_API_KEY"
SECRET_ENV = "CCXT_SECRET"
PASSWORD_ENV = "CCXT_PASSWORD"

#: ccxt's unified order status -> ours (``open`` is ``new`` or ``partially_filled`` by the fills)
_STATUS: dict[str, Status] = {"closed": "filled", "canceled": "canceled", "expired": "canceled",
                              "rejected": "rejected"}
_FINAL = ("filled", "canceled", "rejected")


def split_ticker(ticker: str) -> tuple[str, str]:
    """``BTCUSDT`` / ``BTC/USDT`` / ``BTC-USDT`` -> (``BTC``, ``USDT``) (the binance source's rule)."""
    from data_processors.sources.binance import split_pair

    try:
        return split_pair(ticker)
    except ValueError as exc:
        raise BrokerError(f"ccxt: {exc}") from None


def redirect_urls(urls: Any, base_url: str) -> Any:
    """Every url string in ccxt's ``urls['api']`` (a str or a nested dict) with its scheme and host
    replaced by ``base_url``'s, the path kept (``https://testnet.binance.vision/api/v3`` ->
    ``http://127.0.0.1:8000/api/v3``)."""
    base = urlsplit(base_url)
    if isinstance(urls, dict):
        return {k: redirect_urls(v, base_url) for k, v in urls.items()}
    if isinstance(urls, str) and "://" in urls:
        u = urlsplit(urls)
        return urlunsplit((base.scheme, base.netloc, (base.path.rstrip("/") + u.path), u.query, u.fragment))
    return urls


class _KeyFreeLogger:
    """ccxt's request logger (``ccxt.base.exchange``, DEBUG) with the keys cut out: ccxt logs every
    request's headers, and Binance's carry ``X-MBX-APIKEY``."""

    def __init__(self, secrets: tuple[str, ...]) -> None:
        self._log = logging.getLogger("ccxt.base.exchange")
        self._secrets = secrets

    def _emit(self, level: int, msg: str, *args: Any, **kwargs: Any) -> None:
        if self._log.isEnabledFor(level):
            text = str(msg) % args if args else str(msg)
            for s in self._secrets:
                text = text.replace(s, "***")
            self._log.log(level, "%s", text, **kwargs)

    def debug(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self._emit(logging.DEBUG, msg, *args, **kwargs)

    def info(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self._emit(logging.INFO, msg, *args, **kwargs)

    def warning(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self._emit(logging.WARNING, msg, *args, **kwargs)

    def error(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self._emit(logging.ERROR, msg, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._log, name)


def _env(name: str, required: bool = True) -> str | None:
    value = os.environ.get(name, "").strip()
    if not value and required:
        raise BrokerError(f"ccxt: environment variable {name} is not set; export the exchange's sandbox "
                          f"key pair as {KEY_ENV} / {SECRET_ENV}")
    return value or None


class CcxtBroker:
    """A :class:`~trade.broker.Broker` on a ccxt exchange's spot account (sandbox by default)."""

    name = "ccxt"

    def __init__(self, exchange: str = "binance", *, sandbox: bool = True, quote: str = "USDT",
                 symbols: list[str] | None = None, base_url: str | None = None, timeout_s: float = 10.0,
                 options: dict[str, Any] | None = None) -> None:
        try:
            import ccxt
        except ImportError:
            raise BrokerError("ccxt: the ccxt package is not installed (pip install 'finmeta[sources]' "
                              "or pip install ccxt)") from None

        self.exchange_id = exchange
        self.sandbox = sandbox
        self.quote = quote.upper()
        self.symbols = list(symbols or [])
        key, secret, password = _env(KEY_ENV), _env(SECRET_ENV), _env(PASSWORD_ENV, required=False)
        self._secrets = tuple(s for s in (key, secret, password) if s)
        cls = getattr(ccxt, exchange, None)
        if not (isinstance(cls, type) and issubclass(cls, ccxt.Exchange)):
            raise BrokerError(f"ccxt: unknown exchange id {exchange!r} (see ccxt.exchanges)")
        opts: dict[str, Any] = {"defaultType": "spot"}
        if issubclass(cls, ccxt.binance):
            # spot only: load_markets reads /api/v3/exchangeInfo alone (no futures, margin or sapi calls)
            opts.update({"fetchMarkets": {"types": ["spot"]}, "fetchMargins": False, "fetchCurrencies": False})
        opts.update(options or {})
        config: dict[str, Any] = {"apiKey": key, "secret": secret, "enableRateLimit": True,
                                  "timeout": int(timeout_s * 1000), "options": opts, "verbose": False,
                                  "logger": _KeyFreeLogger(self._secrets)}
        if password:
            config["password"] = password
        self._ex = cls(config)
        if sandbox:
            if not self._ex.urls.get("test"):
                raise BrokerError(f"ccxt {exchange}: the exchange has no sandbox in ccxt; pass sandbox=False "
                                  f"only for a live account")
            try:
                self._ex.set_sandbox_mode(True)
            except Exception as exc:
                raise BrokerError(f"ccxt {exchange} set_sandbox_mode: {self._describe(exc)}; "
                                  f"pass sandbox=False only for a live account") from None
        if base_url:
            self._ex.urls["api"] = redirect_urls(self._ex.urls["api"], base_url)
        # client order id -> (our ticker, ccxt symbol), fee seen in the submit reply
        self._orders: dict[str, tuple[str, str]] = {}
        self._fees: dict[str, float] = {}

    def __repr__(self) -> str:
        return f"CcxtBroker(exchange={self.exchange_id!r}, sandbox={self.sandbox})"

    # ------------------------------------------------------------------ errors
    def _describe(self, exc: BaseException) -> str:
        return describe(exc, self._secrets)

    def _error(self, call: str, exc: BaseException) -> BrokerError:
        return BrokerError(f"ccxt {self.exchange_id} {call}: {self._describe(exc)}")

    def _call(self, call: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except BrokerError:
            raise
        except Exception as exc:
            raise self._error(call, exc) from None

    # ------------------------------------------------------------------ symbols
    def _markets(self) -> dict[str, Any]:
        if not self._ex.markets:
            self._call("load_markets", self._ex.load_markets)
        return self._ex.markets

    def market_symbol(self, ticker: str) -> str:
        """Our ticker -> the exchange's unified symbol (``BTCUSDT`` -> ``BTC/USDT``)."""
        base, quote = split_ticker(ticker)
        markets = self._markets()
        tried = [f"{base}/{quote}"]
        if quote == "USD" and self.quote != "USD":
            tried.append(f"{base}/{self.quote}")
        for s in tried:
            if s in markets:
                return s
        raise BrokerError(f"ccxt {self.exchange_id}: no spot market for ticker {ticker!r} (tried {', '.join(tried)})")

    def _ticker_of(self, market_symbol: str) -> str:
        """The exchange's symbol -> our ticker: the universe's spelling if it maps there, else BASE+QUOTE."""
        for t in self.symbols:
            try:
                if self.market_symbol(t) == market_symbol:
                    return t
            except BrokerError:
                continue
        base, quote = market_symbol.split(":")[0].split("/")
        return base + quote

    # ------------------------------------------------------------------ conversions
    def _order(self, o: dict[str, Any], ticker: str | None = None) -> Order:
        cid = o.get("clientOrderId") or ""
        filled = float(o.get("filled") or 0.0)
        amount = float(o.get("amount") or 0.0)
        raw = o.get("status")
        status: Status = _STATUS.get(raw) or ("partially_filled" if filled > 0 else "new")
        price = o.get("average") or (o.get("price") if filled > 0 else None)
        msym = o.get("symbol") or ""
        fee = self._fee(o, msym, float(price) if price else None)
        if fee is not None:
            self._fees[cid] = fee
        info = o.get("info") or {}
        return Order(
            client_order_id=cid,
            symbol=ticker or self._ticker_of(msym),
            side=o.get("side"),  # type: ignore[arg-type]
            qty=amount,
            status=status,
            filled_qty=filled,
            filled_avg_price=float(price) if price and filled > 0 else None,
            fee=self._fees.get(cid, 0.0),
            broker_order_id=None if o.get("id") is None else str(o["id"]),
            submitted_at=pd.Timestamp(o["timestamp"], unit="ms", tz="UTC") if o.get("timestamp") else None,
            reason=None if raw in (None, "open", "closed", "canceled") else str(info.get("status") or raw),
        )

    @staticmethod
    def _fee(o: dict[str, Any], market_symbol: str, avg: float | None) -> float | None:
        fees = o.get("fees") or ([o["fee"]] if o.get("fee") else [])
        fees = [f for f in fees if f and f.get("cost") is not None]
        if not fees or "/" not in market_symbol:
            return None
        base, quote = market_symbol.split(":")[0].split("/")
        total = 0.0
        for f in fees:
            if f.get("currency") == quote:
                total += float(f["cost"])
            elif f.get("currency") == base and avg:
                total += float(f["cost"]) * avg
        return total

    # ------------------------------------------------------------------ lookups
    def _fetch(self, client_order_id: str, market_symbol: str, ticker: str | None) -> Order | None:
        import ccxt

        try:
            o = self._ex.fetch_order(None, market_symbol, {"clientOrderId": client_order_id})
        except ccxt.OrderNotFound:
            return None
        except Exception as exc:
            raise self._error("fetch_order", exc) from None
        self._orders[client_order_id] = (ticker or self._ticker_of(market_symbol), market_symbol)
        return self._order(o, self._orders[client_order_id][0])

    def get_order(self, client_order_id: str) -> Order | None:
        if client_order_id in self._orders:
            ticker, msym = self._orders[client_order_id]
            return self._fetch(client_order_id, msym, ticker)
        if not self.symbols:
            raise BrokerError(f"ccxt {self.exchange_id} fetch_order: the order {client_order_id} was not sent "
                              f"by this process and {self.exchange_id} needs its symbol: pass symbols=[...]")
        seen = set()
        for t in self.symbols:
            msym = self.market_symbol(t)
            if msym in seen:
                continue
            seen.add(msym)
            found = self._fetch(client_order_id, msym, t)
            if found is not None:
                return found
        return None

    # ------------------------------------------------------------------ Broker
    def _balance(self) -> dict[str, Any]:
        return self._call("fetch_balance", self._ex.fetch_balance)

    def _holdings(self, balance: dict[str, Any]) -> dict[str, tuple[str, float]]:
        """``{ticker: (market symbol, quantity)}`` of the non-zero base currencies."""
        totals = {c: float(v) for c, v in (balance.get("total") or {}).items() if v}
        out: dict[str, tuple[str, float]] = {}
        if self.symbols:
            for t in self.symbols:
                msym = self.market_symbol(t)
                base = msym.split("/")[0]
                if base != self.quote and totals.get(base):
                    out.setdefault(t, (msym, totals[base]))
            return out
        markets = self._markets()
        for cur, qty in totals.items():
            msym = f"{cur}/{self.quote}"
            if cur != self.quote and msym in markets:
                out[cur + self.quote] = (msym, qty)
        return out

    def positions(self) -> dict[str, float]:
        return {t: q for t, (_, q) in self._holdings(self._balance()).items()}

    def account(self) -> Account:
        balance = self._balance()
        free = (balance.get("free") or {}).get(self.quote) or 0.0
        cash = float((balance.get("total") or {}).get(self.quote) or 0.0)
        held = self._holdings(balance)
        value = 0.0
        if held:
            prices = self._last_prices(sorted({m for m, _ in held.values()}))
            for t, (msym, qty) in held.items():
                if msym not in prices:
                    raise BrokerError(f"ccxt {self.exchange_id} account: no last price for {msym} ({t})")
                value += qty * prices[msym]
        return Account(cash=cash, buying_power=float(free), equity=cash + value, currency=self.quote,
                       extra={"exchange": self.exchange_id, "sandbox": self.sandbox})

    def _last_prices(self, market_symbols: list[str]) -> dict[str, float]:
        if self._ex.has.get("fetchLastPrices"):
            raw = self._call("fetch_last_prices", self._ex.fetch_last_prices, market_symbols)
            return {s: float(v["price"]) for s, v in raw.items() if v and v.get("price") is not None}
        raw = self._call("fetch_tickers", self._ex.fetch_tickers, market_symbols)
        return {s: float(v["last"]) for s, v in raw.items() if v and v.get("last") is not None}

    def submit(self, order: OrderRequest) -> Order:
        import ccxt

        msym = self.market_symbol(order.symbol)
        known = self._fetch(order.client_order_id, msym, order.symbol)
        if known is not None:
            return known
        if order.side not in ("buy", "sell"):
            raise BrokerError(f"ccxt {self.exchange_id} create_order: side {order.side!r} of "
                              f"{order.client_order_id} is not buy/sell")
        if not float(order.qty) > 0:
            raise BrokerError(f"ccxt {self.exchange_id} create_order: qty {order.qty!r} of "
                              f"{order.client_order_id} must be > 0")
        self._orders[order.client_order_id] = (order.symbol, msym)
        try:
            o = self._ex.create_order(msym, "market", order.side, float(order.qty), None,
                                      {"clientOrderId": order.client_order_id})
        except (ccxt.InvalidOrder, ccxt.InsufficientFunds) as exc:
            reason = self._describe(exc)
            known = self._fetch(order.client_order_id, msym, order.symbol)  # a duplicate id: that order
            if known is not None:
                return known
            return Order(client_order_id=order.client_order_id, symbol=order.symbol, side=order.side,
                         qty=float(order.qty), status="rejected", reason=reason)
        except Exception as exc:
            raise self._error("create_order", exc) from None
        if not o.get("clientOrderId"):
            o["clientOrderId"] = order.client_order_id
        return self._order(o, order.symbol)

    def cancel(self, client_order_id: str) -> None:
        import ccxt

        o = self.get_order(client_order_id)
        if o is None:
            raise BrokerError(f"ccxt {self.exchange_id} cancel_order: no order with client order id {client_order_id}")
        if o.status in _FINAL:
            return
        msym = self._orders[client_order_id][1]
        try:
            self._ex.cancel_order(o.broker_order_id, msym)
        except (ccxt.OrderNotFound, ccxt.OperationRejected) as exc:
            after = self.get_order(client_order_id)  # filled or canceled meanwhile: nothing to do
            if after is not None and after.status in _FINAL:
                return
            raise self._error("cancel_order", exc) from None
        except Exception as exc:
            raise self._error("cancel_order", exc) from None

    def clock(self) -> Clock:
        ms = self._call("fetch_time", self._ex.fetch_time)
        return Clock(timestamp=pd.Timestamp(int(ms), unit="ms", tz="UTC"), is_open=True)  # crypto: 24/7

    def close(self) -> None:
        try:
            self._ex.close()
        except Exception:
            pass
