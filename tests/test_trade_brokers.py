"""The Alpaca and ccxt brokers of the trade stage against local emulations of the vendors' REST APIs.

The real SDK code paths run (alpaca-py ``TradingClient``, ccxt ``binance``): only their base url points
at a threaded stdlib HTTP server on 127.0.0.1 that answers with the JSON shapes of the Alpaca Trading
API v2 and the Binance spot (testnet) API, keeps the orders and balances, and records every request.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pandas as pd
import pytest

from trade.alpaca_broker import AlpacaBroker, from_alpaca, to_alpaca
from trade.broker import Broker, BrokerError, OrderRequest
from trade.ccxt_broker import CcxtBroker, redirect_urls

APCA_KEY = "PKLOCALTESTKEY" + uuid.uuid4().hex[:10].upper()
APCA_SECRET = "apcaLocalSecret" + uuid.uuid4().hex
CCXT_KEY = "binanceLocalKey" + uuid.uuid4().hex
CCXT_SECRET = "binanceLocalSecret" + uuid.uuid4().hex
ALL_SECRETS = (APCA_KEY, APCA_SECRET, CCXT_KEY, CCXT_SECRET)


# ---------------------------------------------------------------------------------------------- server
class Recorded:
    def __init__(self, method, path, raw_query, headers, body):
        self.method, self.path, self.raw_query, self.headers, self.body = method, path, raw_query, headers, body
        self.query = dict(parse_qsl(raw_query, keep_blank_values=True))

    def __repr__(self) -> str:
        return f"{self.method} {self.path} {self.query}"


class LocalServer:
    """A threaded HTTP server on 127.0.0.1 that hands each request to ``app(req) -> (status, json|None)``
    and records it."""

    def __init__(self, app) -> None:
        self.app = app
        self.requests: list[Recorded] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self):
                parts = urlsplit(self.path)
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n).decode() if n else ""
                headers = {k.lower(): v for k, v in self.headers.items()}
                req = Recorded(self.command, parts.path, parts.query, headers, body)
                outer.requests.append(req)
                status, payload = outer.app(req)
                data = b"" if payload is None else json.dumps(payload).encode()
                self.send_response(status)
                if payload is not None:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = _handle

            def log_message(self, *args):  # quiet
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)

    def calls(self, method: str | None = None, path: str | None = None) -> list[Recorded]:
        return [r for r in self.requests if (method is None or r.method == method)
                and (path is None or r.path == path)]


def _iso(ts: pd.Timestamp) -> str:
    return ts.isoformat().replace("+00:00", "Z")


# ------------------------------------------------------------------------------------- Alpaca emulation
class AlpacaApp:
    """Alpaca Trading API v2 (paper): /v2/account, /v2/positions, /v2/orders (POST),
    /v2/orders:by_client_order_id, /v2/orders/{id} (DELETE), /v2/clock. Market orders fill at
    ``prices[symbol]`` when ``fill`` is True, else stay ``accepted``; ``status_override`` makes every
    reply report that status (to test the mapping); ``fail`` = (status, body) answers every request."""

    def __init__(self) -> None:
        self.cash = 100_000.0
        self.prices = {"AAPL": 190.0, "BRK.B": 410.0, "MSFT": 420.0}
        self.positions: dict[str, float] = {"AAPL": 10.0, "BRK.B": 2.5}
        self.orders: dict[str, dict] = {}  # by client_order_id
        self.fill = True
        self.status_override: str | None = None
        self.fail: tuple[int, dict | None] | None = None
        self.now = pd.Timestamp("2026-12-04 15:30:00", tz="UTC")

    def __call__(self, req: Recorded):
        if self.fail:
            return self.fail
        if req.headers.get("apca-api-key-id") != APCA_KEY or req.headers.get("apca-api-secret-key") != APCA_SECRET:
            return 401, {"code": 40110000, "message": "request is not authorized"}
        p = req.path
        if req.method == "GET" and p == "/v2/account":
            return 200, self.account()
        if req.method == "GET" and p == "/v2/positions":
            return 200, [self.position(s, q) for s, q in self.positions.items() if q]
        if req.method == "GET" and p == "/v2/clock":
            et = self.now.tz_convert("America/New_York")
            return 200, {"timestamp": et.isoformat(), "is_open": True,
                         "next_open": (et + pd.Timedelta(hours=18)).isoformat(),
                         "next_close": (et + pd.Timedelta(minutes=30)).isoformat()}
        if req.method == "GET" and p == "/v2/orders:by_client_order_id":
            cid = req.query.get("client_order_id")
            if cid not in self.orders:
                return 404, {"code": 40410000, "message": "order not found"}
            return 200, self.view(self.orders[cid])
        if req.method == "POST" and p == "/v2/orders":
            return self.post_order(json.loads(req.body))
        if req.method == "DELETE" and p.startswith("/v2/orders/"):
            oid = p.rsplit("/", 1)[1]
            order = next((o for o in self.orders.values() if o["id"] == oid), None)
            if order is None:
                return 404, {"code": 40410000, "message": "order not found"}
            if order["status"] in ("filled", "canceled", "expired", "rejected"):
                return 422, {"code": 42210000, "message": "order is not cancelable"}
            order.update(status="canceled", canceled_at=_iso(self.now))
            return 204, None
        return 404, {"code": 40410000, "message": f"endpoint not found {req.method} {p}"}

    def view(self, order: dict) -> dict:
        return dict(order, status=self.status_override) if self.status_override else order

    def account(self) -> dict:
        long_value = sum(q * self.prices[s] for s, q in self.positions.items())
        equity = self.cash + long_value
        return {
            "id": "904837e3-3b76-47ec-b432-046db621571b", "account_number": "PA3TESTLOCAL",
            "status": "ACTIVE", "crypto_status": "ACTIVE", "currency": "USD",
            "buying_power": f"{2 * self.cash:.2f}", "regt_buying_power": f"{2 * self.cash:.2f}",
            "non_marginable_buying_power": f"{self.cash:.2f}", "cash": f"{self.cash:.2f}",
            "accrued_fees": "0", "pending_transfer_in": "0", "portfolio_value": f"{equity:.2f}",
            "pattern_day_trader": False, "trading_blocked": False, "transfers_blocked": False,
            "account_blocked": False, "created_at": "2024-01-06T19:07:45.396183Z",
            "trade_suspended_by_user": False, "multiplier": "2", "shorting_enabled": True,
            "equity": f"{equity:.2f}", "last_equity": f"{equity:.2f}", "long_market_value": f"{long_value:.2f}",
            "short_market_value": "0", "initial_margin": "0", "maintenance_margin": "0",
            "last_maintenance_margin": "0", "sma": "0", "daytrade_count": 0, "options_buying_power": "0",
            "options_approved_level": 0, "options_trading_level": 0,
        }

    def position(self, symbol: str, qty: float) -> dict:
        price = self.prices[symbol]
        return {
            "asset_id": str(uuid.uuid5(uuid.NAMESPACE_URL, symbol)), "symbol": symbol, "exchange": "NYSE",
            "asset_class": "us_equity", "asset_marginable": True, "avg_entry_price": f"{price:.2f}",
            "qty": f"{qty}", "side": "long" if qty > 0 else "short", "market_value": f"{qty * price:.2f}",
            "cost_basis": f"{qty * price:.2f}", "unrealized_pl": "0", "unrealized_plpc": "0",
            "unrealized_intraday_pl": "0", "unrealized_intraday_plpc": "0", "current_price": f"{price:.2f}",
            "lastday_price": f"{price:.2f}", "change_today": "0", "qty_available": f"{qty}",
        }

    def post_order(self, body: dict):
        cid, symbol, side = body.get("client_order_id"), body.get("symbol"), body.get("side")
        if cid in self.orders:
            return 422, {"code": 40010001, "message": "client_order_id must be unique"}
        if symbol not in self.prices:
            return 422, {"code": 40010001, "message": f"asset \"{symbol}\" not found"}
        qty = float(body["qty"])
        price = self.prices[symbol]
        if side == "buy" and qty * price > self.cash:
            return 403, {"code": 40310000, "message": "insufficient buying power"}
        now = _iso(self.now)
        order = {
            "id": str(uuid.uuid4()), "client_order_id": cid, "created_at": now, "updated_at": now,
            "submitted_at": now, "filled_at": None, "expired_at": None, "canceled_at": None, "failed_at": None,
            "replaced_at": None, "replaced_by": None, "replaces": None,
            "asset_id": str(uuid.uuid5(uuid.NAMESPACE_URL, symbol)), "symbol": symbol, "asset_class": "us_equity",
            "notional": None, "qty": str(body["qty"]), "filled_qty": "0", "filled_avg_price": None,
            "order_class": "", "order_type": "market", "type": "market", "side": side,
            "position_intent": "buy_to_open" if side == "buy" else "sell_to_close",
            "time_in_force": body.get("time_in_force"), "limit_price": None, "stop_price": None,
            "status": "accepted", "extended_hours": False, "legs": None, "trail_percent": None,
            "trail_price": None, "hwm": None, "subtag": None, "source": None, "expires_at": None,
        }
        if self.fill:
            sign = 1 if side == "buy" else -1
            self.cash -= sign * qty * price
            self.positions[symbol] = self.positions.get(symbol, 0.0) + sign * qty
            order.update(status="filled", filled_qty=str(body["qty"]), filled_avg_price=f"{price:.2f}", filled_at=now)
        self.orders[cid] = order
        return 200, self.view(order)


# ------------------------------------------------------------------------------------ Binance emulation
def _binance_market(symbol: str, base: str, quote: str) -> dict:
    return {
        "symbol": symbol, "status": "TRADING", "baseAsset": base, "baseAssetPrecision": 8, "quoteAsset": quote,
        "quotePrecision": 8, "quoteAssetPrecision": 8, "baseCommissionPrecision": 8, "quoteCommissionPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS", "STOP_LOSS_LIMIT", "TAKE_PROFIT",
                       "TAKE_PROFIT_LIMIT"],
        "icebergAllowed": True, "ocoAllowed": True, "otoAllowed": True, "quoteOrderQtyMarketAllowed": True,
        "allowTrailingStop": True, "cancelReplaceAllowed": True, "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": "0.01000000", "maxPrice": "1000000.00000000",
             "tickSize": "0.01000000"},
            {"filterType": "LOT_SIZE", "minQty": "0.00001000", "maxQty": "9000.00000000", "stepSize": "0.00001000"},
            {"filterType": "MARKET_LOT_SIZE", "minQty": "0.00000000", "maxQty": "100.00000000",
             "stepSize": "0.00000000"},
            {"filterType": "NOTIONAL", "minNotional": "5.00000000", "applyMinToMarket": True,
             "maxNotional": "9000000.00000000", "applyMaxToMarket": False, "avgPriceMins": 5},
        ],
        "permissions": [], "permissionSets": [["SPOT"]], "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
        "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
    }


class BinanceApp:
    """Binance spot (testnet) REST API: /api/v3/time, /api/v3/exchangeInfo, /api/v3/ticker/price
    (public); /api/v3/account, /api/v3/order POST/GET/DELETE (signed: X-MBX-APIKEY header and an
    HMAC-SHA256 ``signature`` of the query, both checked). Market orders fill at ``prices`` with a
    0.1 % commission in the asset received when ``fill`` is True, else stay NEW."""

    MARKETS = {"BTCUSDT": ("BTC", "USDT"), "ETHUSDT": ("ETH", "USDT"), "LTCUSDT": ("LTC", "USDT")}

    def __init__(self) -> None:
        self.prices = {"BTCUSDT": 50_000.0, "ETHUSDT": 3_000.0, "LTCUSDT": 80.0}
        self.balances = {"USDT": 10_000.0, "BTC": 0.5, "ETH": 2.0, "LTC": 3.0, "BNB": 0.0}
        self.orders: dict[str, dict] = {}  # by clientOrderId
        self.next_id = 1000
        self.fill = True
        self.fail: tuple[int, dict] | None = None
        self.status_override: tuple[str, str, str] | None = None
        self.server_time = 1_764_950_000_123

    def __call__(self, req: Recorded):
        if self.fail:
            return self.fail
        p, q = req.path, dict(req.query)
        if req.method == "GET" and p == "/api/v3/time":
            return 200, {"serverTime": self.server_time}
        if req.method == "GET" and p == "/api/v3/exchangeInfo":
            return 200, {"timezone": "UTC", "serverTime": self.server_time, "rateLimits": [], "exchangeFilters": [],
                         "symbols": [_binance_market(s, b, qt) for s, (b, qt) in self.MARKETS.items()]}
        if req.method == "GET" and p == "/api/v3/ticker/price":
            rows = [{"symbol": s, "price": f"{v:.8f}"} for s, v in self.prices.items()]
            if "symbol" in q:
                return 200, next(r for r in rows if r["symbol"] == q["symbol"])
            return 200, rows
        # signed endpoints
        if req.headers.get("x-mbx-apikey") != CCXT_KEY:
            return 401, {"code": -2015, "msg": "Invalid API-key, IP, or permissions for action."}
        params = dict(q)
        params.update(dict(parse_qsl(req.body, keep_blank_values=True)))
        signed, _, signature = (req.body or req.raw_query).rpartition("&signature=")
        want = hmac.new(CCXT_SECRET.encode(), signed.encode(), hashlib.sha256).hexdigest()
        if signature != want:
            return 400, {"code": -1022, "msg": "Signature for this request is not valid."}
        if req.method == "GET" and p == "/api/v3/account":
            return 200, self.account()
        if p == "/api/v3/order" and req.method == "POST":
            return self.new_order(params)
        if p == "/api/v3/order" and req.method == "GET":
            o = self.orders.get(params.get("origClientOrderId", ""))
            if o is None or o["symbol"] != params.get("symbol"):
                return 400, {"code": -2013, "msg": "Order does not exist."}
            return 200, self.view(o)
        if p == "/api/v3/order" and req.method == "DELETE":
            o = next((o for o in self.orders.values() if str(o["orderId"]) == params.get("orderId")
                      and o["symbol"] == params.get("symbol")), None)
            if o is None or o["status"] != "NEW":
                return 400, {"code": -2011, "msg": "Unknown order sent."}
            o["status"] = "CANCELED"
            return 200, dict(self.view(o), origClientOrderId=o["clientOrderId"], transactTime=self.server_time)
        return 404, {"code": -1, "msg": f"no route {req.method} {p}"}

    def account(self) -> dict:
        return {
            "makerCommission": 10, "takerCommission": 10, "buyerCommission": 0, "sellerCommission": 0,
            "commissionRates": {"maker": "0.00100000", "taker": "0.00100000", "buyer": "0.00000000",
                                "seller": "0.00000000"},
            "canTrade": True, "canWithdraw": True, "canDeposit": True, "brokered": False,
            "requireSelfTradePrevention": False, "preventSor": False, "updateTime": self.server_time,
            "accountType": "SPOT",
            "balances": [{"asset": a, "free": f"{v:.8f}", "locked": "0.00000000"} for a, v in self.balances.items()],
            "permissions": ["SPOT"], "uid": 354937868,
        }

    def view(self, o: dict) -> dict:
        out = {k: v for k, v in o.items() if k != "fills"}
        if self.status_override:  # (status, executedQty, cummulativeQuoteQty) of every order read back
            status, executed, quote_qty = self.status_override
            out.update(status=status, executedQty=executed, cummulativeQuoteQty=quote_qty)
        return out

    def new_order(self, params: dict):
        symbol, side, cid = params.get("symbol"), params.get("side"), params.get("newClientOrderId")
        if symbol not in self.MARKETS:
            return 400, {"code": -1121, "msg": "Invalid symbol."}
        if cid in self.orders:
            return 400, {"code": -2010, "msg": "Duplicate order sent."}
        qty = float(params["quantity"])
        if qty < 0.00001:
            return 400, {"code": -1013, "msg": "Filter failure: LOT_SIZE"}
        base, quote = self.MARKETS[symbol]
        price = self.prices[symbol]
        if (side == "BUY" and qty * price > self.balances[quote]) or (side == "SELL" and qty > self.balances[base]):
            return 400, {"code": -2010, "msg": "Account has insufficient balance for requested action."}
        self.next_id += 1
        o = {"symbol": symbol, "orderId": self.next_id, "orderListId": -1, "clientOrderId": cid,
             "transactTime": self.server_time, "price": "0.00000000", "origQty": f"{qty:.8f}",
             "executedQty": "0.00000000", "origQuoteOrderQty": "0.00000000", "cummulativeQuoteQty": "0.00000000",
             "status": "NEW", "timeInForce": "GTC", "type": "MARKET", "side": side, "stopPrice": "0.00000000",
             "icebergQty": "0.00000000", "time": self.server_time, "updateTime": self.server_time,
             "isWorking": True, "workingTime": self.server_time, "selfTradePreventionMode": "EXPIRE_MAKER",
             "fills": []}
        if self.fill:
            cost = qty * price
            if side == "BUY":
                commission, asset = qty * 0.001, base
                self.balances[base] += qty - commission
                self.balances[quote] -= cost
            else:
                commission, asset = cost * 0.001, quote
                self.balances[base] -= qty
                self.balances[quote] += cost - commission
            o.update(status="FILLED", executedQty=f"{qty:.8f}", cummulativeQuoteQty=f"{cost:.8f}",
                     fills=[{"price": f"{price:.8f}", "qty": f"{qty:.8f}", "commission": f"{commission:.8f}",
                             "commissionAsset": asset, "tradeId": self.next_id * 10}])
        self.orders[cid] = o
        return 200, o  # newOrderRespType=FULL: the order with its fills


# ---------------------------------------------------------------------------------------------- fixtures
@pytest.fixture
def keys(monkeypatch):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("APCA_API_KEY_ID", APCA_KEY)
    monkeypatch.setenv("APCA_API_SECRET_KEY", APCA_SECRET)
    monkeypatch.setenv("CCXT_API_KEY", CCXT_KEY)
    monkeypatch.setenv("CCXT_SECRET", CCXT_SECRET)
    monkeypatch.delenv("CCXT_PASSWORD", raising=False)


@pytest.fixture
def alpaca(keys):
    """(broker, app, server): an AlpacaBroker on the local Alpaca emulation."""
    app = AlpacaApp()
    with LocalServer(app) as server:
        broker = AlpacaBroker(base_url=server.url)
        yield broker, app, server
        broker.close()


@pytest.fixture
def binance(keys):
    """(broker, app, server): a CcxtBroker (binance, sandbox) on the local Binance emulation."""
    app = BinanceApp()
    with LocalServer(app) as server:
        broker = CcxtBroker("binance", base_url=server.url, symbols=["BTCUSDT", "ETHUSDT"])
        yield broker, app, server
        broker.close()


def _one_line_without_secrets(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text
    chain = [exc]
    while chain[-1].__cause__ is not None or chain[-1].__context__ is not None:
        chain.append(chain[-1].__cause__ or chain[-1].__context__)
    for e in chain:
        for s in ALL_SECRETS:
            assert s not in str(e) and s not in repr(e)
    return text


# ---------------------------------------------------------------------------------------------- Alpaca
@pytest.mark.parametrize("missing", ["APCA_API_KEY_ID", "APCA_API_SECRET_KEY"])
def test_alpaca_missing_key_names_the_variable(keys, monkeypatch, missing):
    monkeypatch.delenv(missing)
    with pytest.raises(BrokerError, match=missing) as err:
        AlpacaBroker(base_url="http://127.0.0.1:9")
    _one_line_without_secrets(err.value)


def test_alpaca_paper_endpoint_by_default(keys):
    broker = AlpacaBroker()
    assert getattr(broker._client._base_url, "value", None) == "https://paper-api.alpaca.markets"
    live = AlpacaBroker(paper=False)
    assert getattr(live._client._base_url, "value", None) == "https://api.alpaca.markets"
    assert isinstance(broker, Broker) and broker.name == "alpaca"
    assert APCA_KEY not in repr(broker) and APCA_SECRET not in repr(broker)


def test_alpaca_symbol_mapping():
    assert to_alpaca("BRK-B") == "BRK.B" and to_alpaca("aapl") == "AAPL"
    assert from_alpaca("BRK.B") == "BRK-B" and from_alpaca("AAPL") == "AAPL"
    m = {"GOOG_C": "GOOG"}
    assert to_alpaca("GOOG_C", m) == "GOOG" and from_alpaca("GOOG", m) == "GOOG_C"


def test_alpaca_account_positions_clock(alpaca):
    broker, _app, server = alpaca
    acct = broker.account()
    equity = 100_000 + 10 * 190 + 2.5 * 410
    assert (acct.cash, acct.buying_power, acct.equity, acct.currency) == (100_000.0, 200_000.0, equity, "USD")
    assert acct.extra["status"] == "ACTIVE" and acct.extra["paper"] is True
    assert broker.positions() == {"AAPL": 10.0, "BRK-B": 2.5}
    clock = broker.clock()
    assert clock.timestamp == pd.Timestamp("2026-12-04 15:30:00", tz="UTC") and str(clock.timestamp.tz) == "UTC"
    assert clock.is_open is True
    assert [(r.method, r.path) for r in server.requests] == [
        ("GET", "/v2/account"), ("GET", "/v2/positions"), ("GET", "/v2/clock")]
    for r in server.requests:  # the keys travel in the auth headers, and only there
        assert r.headers["apca-api-key-id"] == APCA_KEY and r.headers["apca-api-secret-key"] == APCA_SECRET


def test_alpaca_submit_sends_a_fractional_day_market_order(alpaca):
    broker, app, server = alpaca
    order = broker.submit(OrderRequest("BRK-B", "buy", 0.5, "bar7-BRK-B"))
    posts = server.calls("POST", "/v2/orders")
    assert len(posts) == 1
    assert json.loads(posts[0].body) == {"symbol": "BRK.B", "qty": 0.5, "side": "buy", "type": "market",
                                         "time_in_force": "day", "client_order_id": "bar7-BRK-B"}
    assert order.symbol == "BRK-B" and order.side == "buy" and order.qty == 0.5
    assert order.status == "filled" and order.filled_qty == 0.5 and order.filled_avg_price == 410.0
    assert order.fee == 0.0 and order.client_order_id == "bar7-BRK-B"
    assert order.broker_order_id == app.orders["bar7-BRK-B"]["id"]
    assert order.submitted_at == pd.Timestamp("2026-12-04 15:30:00", tz="UTC")
    assert broker.positions()["BRK-B"] == 3.0
    sell = broker.submit(OrderRequest("AAPL", "sell", 1.0 / 3.0, "bar7-AAPL"))
    body = json.loads(server.calls("POST", "/v2/orders")[1].body)
    assert body["side"] == "sell" and body["qty"] == 0.333333333  # Alpaca takes at most 9 decimals
    assert sell.status == "filled" and sell.side == "sell"


def test_alpaca_submit_is_idempotent_on_client_order_id(alpaca):
    broker, app, server = alpaca
    first = broker.submit(OrderRequest("AAPL", "buy", 2, "cid-1"))
    again = broker.submit(OrderRequest("AAPL", "buy", 2, "cid-1"))
    assert len(server.calls("POST", "/v2/orders")) == 1
    assert again.broker_order_id == first.broker_order_id and again.status == "filled"
    lookups = server.calls("GET", "/v2/orders:by_client_order_id")
    assert [r.query for r in lookups] == [{"client_order_id": "cid-1"}] * 2
    assert app.positions["AAPL"] == 12.0


def test_alpaca_duplicate_race_returns_the_existing_order(alpaca, monkeypatch):
    broker, app, server = alpaca
    broker.submit(OrderRequest("AAPL", "buy", 1, "cid-race"))
    calls = []
    real = broker.get_order

    def first_lookup_misses(cid):  # another process sent it between our lookup and our POST
        calls.append(cid)
        return None if len(calls) == 1 else real(cid)

    monkeypatch.setattr(broker, "get_order", first_lookup_misses)
    order = broker.submit(OrderRequest("AAPL", "buy", 1, "cid-race"))
    assert len(server.calls("POST", "/v2/orders")) == 2  # the second POST got 422 "must be unique"
    assert order.status == "filled" and order.broker_order_id == app.orders["cid-race"]["id"]
    assert app.positions["AAPL"] == 11.0


def test_alpaca_unknown_order_is_none(alpaca):
    broker, _app, server = alpaca
    assert broker.get_order("never-sent") is None
    assert server.calls("GET", "/v2/orders:by_client_order_id")[0].query == {"client_order_id": "never-sent"}


def test_alpaca_open_order_cancel(alpaca):
    broker, app, server = alpaca
    app.fill = False
    order = broker.submit(OrderRequest("MSFT", "buy", 3, "cid-open"))
    assert order.status == "new" and order.filled_qty == 0 and order.filled_avg_price is None
    broker.cancel("cid-open")
    deletes = server.calls("DELETE")
    assert [r.path for r in deletes] == [f"/v2/orders/{order.broker_order_id}"]
    assert broker.get_order("cid-open").status == "canceled"
    broker.cancel("cid-open")  # already final: no second DELETE
    assert len(server.calls("DELETE")) == 1
    with pytest.raises(BrokerError, match="no order with client_order_id nope"):
        broker.cancel("nope")


@pytest.mark.parametrize("raw, ours", [
    ("accepted", "new"), ("pending_new", "new"), ("held", "new"), ("done_for_day", "new"),
    ("partially_filled", "partially_filled"), ("filled", "filled"), ("canceled", "canceled"),
    ("expired", "canceled"), ("replaced", "canceled"), ("rejected", "rejected"),
])
def test_alpaca_status_mapping(alpaca, raw, ours):
    broker, app, _server = alpaca
    app.fill = raw in ("filled", "partially_filled")
    app.status_override = raw
    order = broker.submit(OrderRequest("AAPL", "buy", 1, f"cid-{raw}"))
    assert order.status == ours
    assert order.reason == (raw if raw in ("expired", "replaced", "rejected") else None)


def test_alpaca_refused_order_comes_back_rejected(alpaca):
    broker, _app, _server = alpaca
    order = broker.submit(OrderRequest("AAPL", "buy", 10_000, "cid-big"))
    assert order.status == "rejected" and order.filled_qty == 0
    assert order.reason == "HTTP 403: insufficient buying power"
    unknown = broker.submit(OrderRequest("ZZZZ", "buy", 1, "cid-zzzz"))
    assert unknown.status == "rejected" and 'asset "ZZZZ" not found' in unknown.reason


@pytest.mark.parametrize("call", ["account", "positions", "clock", "submit", "get_order"])
def test_alpaca_unauthorized_is_one_line_without_keys(alpaca, call):
    broker, app, _server = alpaca
    app.fail = (401, {"code": 40110000, "message": "request is not authorized"})
    args = {"submit": (OrderRequest("AAPL", "buy", 1, "c1"),), "get_order": ("c1",)}.get(call, ())
    with pytest.raises(BrokerError) as err:
        getattr(broker, call)(*args)
    text = _one_line_without_secrets(err.value)
    assert text.startswith("alpaca ") and "HTTP 401: request is not authorized" in text


def test_alpaca_server_error_and_unreachable(alpaca):
    broker, app, _server = alpaca
    app.fail = (500, {"code": 50010000, "message": "internal server error"})
    with pytest.raises(BrokerError, match=r"^alpaca get_account: HTTP 500: internal server error$"):
        broker.account()
    with pytest.raises(BrokerError, match=r"^alpaca submit_order: HTTP 500: internal server error$"):
        app.fail = None
        app.orders.clear()
        original = app.post_order
        app.post_order = lambda body: (500, {"code": 50010000, "message": "internal server error"})
        try:
            broker.submit(OrderRequest("AAPL", "buy", 1, "c500"))
        finally:
            app.post_order = original
    app.fail = None
    closed = LocalServer(app)  # bound, never served: nothing answers on this port after close
    url = closed.url
    closed.httpd.server_close()
    down = AlpacaBroker(base_url=url)
    with pytest.raises(BrokerError, match=r"^alpaca get_account: ConnectionError") as err:
        down.account()
    _one_line_without_secrets(err.value)


def test_alpaca_non_loopback_is_refused_by_the_test_guard(keys):
    broker = AlpacaBroker(base_url="http://192.0.2.1:80")  # TEST-NET-1: the conftest guard refuses it
    with pytest.raises(BrokerError, match=r"^alpaca get_clock: ConnectionError.*must not touch the network"):
        broker.clock()


# ---------------------------------------------------------------------------------------------- ccxt
def _signed_params(r: Recorded) -> dict:
    params = dict(r.query)
    params.update(dict(parse_qsl(r.body, keep_blank_values=True)))
    return params


@pytest.mark.parametrize("missing", ["CCXT_API_KEY", "CCXT_SECRET"])
def test_ccxt_missing_key_names_the_variable(keys, monkeypatch, missing):
    monkeypatch.delenv(missing)
    with pytest.raises(BrokerError, match=missing) as err:
        CcxtBroker("binance")
    _one_line_without_secrets(err.value)


def test_ccxt_sandbox_by_default(keys):
    broker = CcxtBroker("binance")
    assert broker._ex.urls["api"]["public"] == "https://testnet.binance.vision/api/v3"
    assert broker._ex.urls["api"]["private"] == "https://testnet.binance.vision/api/v3"
    assert isinstance(broker, Broker) and broker.name == "ccxt"
    assert CCXT_KEY not in repr(broker) and CCXT_SECRET not in repr(broker)
    live = CcxtBroker("binance", sandbox=False)
    assert live._ex.urls["api"]["private"] == "https://api.binance.com/api/v3"
    with pytest.raises(BrokerError, match="kraken: the exchange has no sandbox"):
        CcxtBroker("kraken")
    with pytest.raises(BrokerError, match="unknown exchange id 'nosuchexchange'"):
        CcxtBroker("nosuchexchange")


def test_ccxt_redirect_urls_keeps_paths():
    urls = {"public": "https://testnet.binance.vision/api/v3", "v1": "https://testnet.binance.vision/api/v1",
            "fapiPublic": "https://testnet.binancefuture.com/fapi/v1"}
    assert redirect_urls(urls, "http://127.0.0.1:8123") == {
        "public": "http://127.0.0.1:8123/api/v3", "v1": "http://127.0.0.1:8123/api/v1",
        "fapiPublic": "http://127.0.0.1:8123/fapi/v1"}


def test_ccxt_symbol_mapping(binance):
    broker, _app, server = binance
    assert broker.market_symbol("BTCUSDT") == "BTC/USDT"
    assert broker.market_symbol("ETH-USDT") == "ETH/USDT"
    assert broker.market_symbol("btc/usdt") == "BTC/USDT"
    assert broker.market_symbol("BTC-USD") == "BTC/USDT"  # Yahoo-style crypto ticker -> the USDT market
    with pytest.raises(BrokerError, match="no spot market for ticker 'DOGEUSDT'"):
        broker.market_symbol("DOGEUSDT")
    # markets were loaded once, from exchangeInfo alone (no futures / margin / sapi endpoints)
    assert [(r.method, r.path) for r in server.requests] == [("GET", "/api/v3/exchangeInfo")]


def test_ccxt_clock_is_exchange_time_and_always_open(binance):
    broker, app, server = binance
    clock = broker.clock()
    assert clock.timestamp == pd.Timestamp(app.server_time, unit="ms", tz="UTC") and clock.is_open is True
    assert server.calls("GET", "/api/v3/time")


def test_ccxt_account_and_positions(binance):
    broker, _app, server = binance
    assert broker.positions() == {"BTCUSDT": 0.5, "ETHUSDT": 2.0}  # the universe only: LTC is not in it
    acct = broker.account()
    assert acct.cash == 10_000.0 and acct.buying_power == 10_000.0 and acct.currency == "USDT"
    assert acct.equity == pytest.approx(10_000 + 0.5 * 50_000 + 2.0 * 3_000)
    assert acct.extra == {"exchange": "binance", "sandbox": True}
    for r in server.calls("GET", "/api/v3/account"):
        assert r.headers["x-mbx-apikey"] == CCXT_KEY and "signature" in r.query and "timestamp" in r.query
    everything = CcxtBroker("binance", base_url=server.url)  # no universe: every coin with a USDT market
    assert everything.positions() == {"BTCUSDT": 0.5, "ETHUSDT": 2.0, "LTCUSDT": 3.0}
    yahoo = CcxtBroker("binance", base_url=server.url, symbols=["BTC-USD"])
    assert yahoo.positions() == {"BTC-USD": 0.5}  # reported under the universe's own spelling


def test_ccxt_submit_market_buy_with_client_order_id(binance):
    broker, app, server = binance
    order = broker.submit(OrderRequest("BTCUSDT", "buy", 0.012, "bar3-BTCUSDT"))
    posts = server.calls("POST", "/api/v3/order")
    assert len(posts) == 1
    sent = _signed_params(posts[0])
    assert {k: sent[k] for k in ("symbol", "side", "type", "quantity", "newClientOrderId", "newOrderRespType")} == {
        "symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.012",
        "newClientOrderId": "bar3-BTCUSDT", "newOrderRespType": "FULL"}
    assert posts[0].headers["x-mbx-apikey"] == CCXT_KEY
    assert order.symbol == "BTCUSDT" and order.side == "buy" and order.qty == 0.012
    assert order.status == "filled" and order.filled_qty == 0.012 and order.filled_avg_price == 50_000.0
    assert order.fee == pytest.approx(0.012 * 0.001 * 50_000)  # commission in BTC, valued in USDT
    assert order.client_order_id == "bar3-BTCUSDT" and order.broker_order_id == "1001"
    assert order.submitted_at == pd.Timestamp(app.server_time, unit="ms", tz="UTC")
    assert broker.positions()["BTCUSDT"] == pytest.approx(0.5 + 0.012 * 0.999)
    sell = broker.submit(OrderRequest("ETH-USDT", "sell", 1.5, "bar3-ETH"))
    assert _signed_params(server.calls("POST", "/api/v3/order")[1])["side"] == "SELL"
    assert sell.symbol == "ETH-USDT" and sell.fee == pytest.approx(1.5 * 3_000 * 0.001)  # paid in USDT


def test_ccxt_amount_is_cut_to_the_lot_size(binance):
    broker, _app, server = binance
    broker.submit(OrderRequest("BTCUSDT", "buy", 0.0123456789, "cid-lot"))
    assert _signed_params(server.calls("POST", "/api/v3/order")[0])["quantity"] == "0.01234"


def test_ccxt_submit_is_idempotent_on_client_order_id(binance):
    broker, _app, server = binance
    first = broker.submit(OrderRequest("BTCUSDT", "buy", 0.01, "cid-1"))
    again = broker.submit(OrderRequest("BTCUSDT", "buy", 0.01, "cid-1"))
    assert len(server.calls("POST", "/api/v3/order")) == 1
    assert again.broker_order_id == first.broker_order_id and again.status == "filled"
    assert again.fee == first.fee  # fills come only in the submit reply; this process remembers them
    lookups = server.calls("GET", "/api/v3/order")
    assert [(_signed_params(r)["symbol"], _signed_params(r)["origClientOrderId"]) for r in lookups] == [
        ("BTCUSDT", "cid-1")] * 2
    # a fresh process (after a crash) finds it through the universe, without a second POST
    restarted = CcxtBroker("binance", base_url=server.url, symbols=["ETHUSDT", "BTCUSDT"])
    found = restarted.submit(OrderRequest("BTCUSDT", "buy", 0.01, "cid-1"))
    assert found.broker_order_id == first.broker_order_id and len(server.calls("POST", "/api/v3/order")) == 1
    assert restarted.get_order("cid-1").symbol == "BTCUSDT"


def test_ccxt_get_order_unknown(binance):
    broker, _app, server = binance
    assert broker.get_order("never-sent") is None
    looked = [_signed_params(r)["symbol"] for r in server.calls("GET", "/api/v3/order")]
    assert looked == ["BTCUSDT", "ETHUSDT"]  # each universe market once (Binance needs the symbol)
    bare = CcxtBroker("binance", base_url=server.url)
    with pytest.raises(BrokerError, match="needs its symbol: pass symbols="):
        bare.get_order("never-sent")


def test_ccxt_open_order_cancel(binance):
    broker, app, server = binance
    app.fill = False
    order = broker.submit(OrderRequest("ETHUSDT", "buy", 0.5, "cid-open"))
    assert order.status == "new" and order.filled_qty == 0 and order.filled_avg_price is None
    broker.cancel("cid-open")
    deletes = server.calls("DELETE", "/api/v3/order")
    assert len(deletes) == 1
    assert {k: _signed_params(deletes[0])[k] for k in ("symbol", "orderId")} == {
        "symbol": "ETHUSDT", "orderId": order.broker_order_id}
    assert broker.get_order("cid-open").status == "canceled"
    broker.cancel("cid-open")  # final: no second DELETE
    assert len(server.calls("DELETE")) == 1
    with pytest.raises(BrokerError, match="no order with client order id nope"):
        broker.cancel("nope")


@pytest.mark.parametrize("raw, executed, ours, reason", [
    ("NEW", "0.00000000", "new", None), ("PARTIALLY_FILLED", "0.40000000", "partially_filled", None),
    ("FILLED", "1.00000000", "filled", None), ("CANCELED", "0.00000000", "canceled", None),
    ("EXPIRED", "0.40000000", "canceled", "EXPIRED"), ("REJECTED", "0.00000000", "rejected", "REJECTED"),
])
def test_ccxt_status_mapping(binance, raw, executed, ours, reason):
    broker, app, _server = binance
    app.fill = False
    broker.submit(OrderRequest("ETHUSDT", "buy", 1.0, f"cid-{raw}"))
    app.status_override = (raw, executed, f"{float(executed) * 3000:.8f}")
    order = broker.get_order(f"cid-{raw}")  # ccxt parses Binance's GET /api/v3/order reply
    assert order.status == ours and order.reason == reason
    assert order.filled_qty == float(executed) and order.qty == 1.0
    assert order.filled_avg_price == (3000.0 if float(executed) else None)


def test_ccxt_refused_orders_come_back_rejected(binance):
    broker, _app, server = binance
    poor = broker.submit(OrderRequest("BTCUSDT", "buy", 1.0, "cid-poor"))  # 50 000 USDT > 10 000
    assert poor.status == "rejected" and "insufficient balance" in poor.reason
    assert poor.reason.startswith("InsufficientFunds: binance Account has insufficient balance")
    tiny = broker.submit(OrderRequest("BTCUSDT", "buy", 0.000001, "cid-tiny"))  # below the lot size
    assert tiny.status == "rejected" and "InvalidOrder" in tiny.reason
    assert [_signed_params(r)["newClientOrderId"] for r in server.calls("POST", "/api/v3/order")] == ["cid-poor"]


@pytest.mark.parametrize("call", ["account", "positions", "submit", "get_order"])
def test_ccxt_unauthorized_is_one_line_without_keys(binance, call):
    broker, app, _server = binance
    broker.market_symbol("BTCUSDT")  # markets are public
    app.fail = (401, {"code": -2015, "msg": "Invalid API-key, IP, or permissions for action."})
    args = {"submit": (OrderRequest("BTCUSDT", "buy", 0.01, "c1"),), "get_order": ("c1",)}.get(call, ())
    with pytest.raises(BrokerError) as err:
        getattr(broker, call)(*args)
    text = _one_line_without_secrets(err.value)
    assert text.startswith("ccxt binance ") and "AuthenticationError" in text
    assert "Invalid API-key" in text


def test_ccxt_bad_signature_is_an_error(binance, monkeypatch):
    broker, _app, _server = binance
    broker._ex.secret = "not-the-secret"
    with pytest.raises(BrokerError, match="Signature for this request is not valid") as err:
        broker.positions()
    _one_line_without_secrets(err.value)


def test_ccxt_non_loopback_is_refused_by_the_test_guard(keys):
    broker = CcxtBroker("binance", base_url="http://192.0.2.1:80")
    with pytest.raises(BrokerError, match=r"^ccxt binance fetch_time: .*must not touch the network"):
        broker.clock()


# ---------------------------------------------------------------------------------------------- keys
def test_keys_travel_only_in_the_auth_headers(keys, tmp_path, caplog, capsys, _isolated_home):
    """A whole session on both brokers, errors included, with DEBUG logging: the keys appear in no
    log record, no output, no error, no written file, no URL / query / body sent; Alpaca's pair
    only in its two auth headers, the ccxt key only in X-MBX-APIKEY (the ccxt secret never leaves
    this process: it only signs)."""
    caplog.set_level(logging.DEBUG)
    errors: list[str] = []
    records: list[dict] = []
    alpaca_app, binance_app = AlpacaApp(), BinanceApp()
    with LocalServer(alpaca_app) as a_srv, LocalServer(binance_app) as b_srv:
        a = AlpacaBroker(base_url=a_srv.url)
        c = CcxtBroker("binance", base_url=b_srv.url, symbols=["BTCUSDT"])
        for broker, sym, qty in ((a, "AAPL", 1.0), (c, "BTCUSDT", 0.01)):
            records.append(broker.account().__dict__)
            records.append(broker.positions())
            records.append(broker.submit(OrderRequest(sym, "buy", qty, f"leak-{broker.name}")).to_dict())
            records.append(broker.get_order(f"leak-{broker.name}").to_dict())
            records.append({"clock": str(broker.clock().timestamp)})
            errors.append(str(broker.submit(OrderRequest(sym, "buy", 1e6, f"big-{broker.name}")).reason))
        alpaca_app.fail = (401, {"code": 40110000, "message": "request is not authorized"})
        binance_app.fail = (401, {"code": -2015, "msg": "Invalid API-key, IP, or permissions for action."})
        for broker in (a, c):
            with pytest.raises(BrokerError) as err:
                broker.account()
            errors.append(_one_line_without_secrets(err.value))
            errors.append(repr(broker))
        a.close()
        c.close()
    # what a loop would persist
    (tmp_path / "state.json").write_text(json.dumps(records, default=str))
    (tmp_path / "errors.log").write_text("\n".join(errors))
    out = capsys.readouterr()
    texts = [out.out, out.err, caplog.text, *errors, *(r.getMessage() for r in caplog.records)]
    files = [p for root in (tmp_path, _isolated_home) for p in Path(root).rglob("*") if p.is_file()]
    texts += [p.read_bytes().decode("utf-8", "replace") for p in files]
    assert any("127.0.0.1" in r.getMessage() for r in caplog.records)  # DEBUG logging was on
    assert len(files) >= 2
    for secret in ALL_SECRETS:
        for text in texts:
            assert secret not in text
    assert len(a_srv.requests) >= 6 and len(b_srv.requests) >= 6
    for r in a_srv.requests:
        assert r.headers["apca-api-key-id"] == APCA_KEY and r.headers["apca-api-secret-key"] == APCA_SECRET
        carried = [r.path, r.raw_query, r.body] + [v for k, v in r.headers.items() if not k.startswith("apca-api-")]
        assert not any(s in x for s in ALL_SECRETS for x in carried)
    private = [r for r in b_srv.requests if "signature" in r.raw_query + r.body]
    assert private
    for r in b_srv.requests:
        carried = [r.path, r.raw_query, r.body] + [v for k, v in r.headers.items() if k != "x-mbx-apikey"]
        assert not any(s in x for s in ALL_SECRETS for x in carried)
        assert r.headers.get("x-mbx-apikey") in (None, CCXT_KEY)
    assert all(r.headers["x-mbx-apikey"] == CCXT_KEY for r in private)


# ---------------------------------------------------------------------------------------------- misc
@pytest.mark.parametrize("module, make, package", [
    ("alpaca.trading.client", lambda: AlpacaBroker(), "alpaca-py"),
    ("ccxt", lambda: CcxtBroker(), "ccxt"),
])
def test_missing_sdk_is_a_broker_error(keys, monkeypatch, module, make, package):
    monkeypatch.setitem(__import__("sys").modules, module, None)  # import of it raises ImportError
    with pytest.raises(BrokerError, match=f"the {package} package is not installed"):
        make()


def test_alpaca_rate_limit_is_retried_once(alpaca):
    broker, app, server = alpaca
    real, answers = app.__call__, [(429, {"code": 42910000, "message": "rate limit exceeded"})]

    class Once:
        def __call__(self, req):
            return answers.pop() if answers else real(req)

    server.app = Once()
    t0 = time.monotonic()
    assert broker.positions() == {"AAPL": 10.0, "BRK-B": 2.5}
    assert len(server.calls("GET", "/v2/positions")) == 2 and time.monotonic() - t0 < 2.5
    answers[:] = [(429, {"code": 42910000, "message": "rate limit exceeded"})] * 2
    with pytest.raises(BrokerError, match=r"^alpaca get_all_positions: HTTP 429: rate limit exceeded$"):
        broker.positions()


def test_ccxt_adjust_for_time_difference_option(keys):
    """A drifting local clock: with ``options={"adjustForTimeDifference": True}`` ccxt signs with the
    exchange's time (Binance refuses timestamps off by more than recvWindow)."""
    app = BinanceApp()
    app.server_time = int(time.time() * 1000) - 3_600_000  # the exchange is an hour behind this machine
    with LocalServer(app) as server:
        broker = CcxtBroker("binance", base_url=server.url, symbols=["BTCUSDT"],
                            options={"adjustForTimeDifference": True})
        assert broker.positions() == {"BTCUSDT": 0.5}
        signed = int(server.calls("GET", "/api/v3/account")[0].query["timestamp"])
        assert abs(signed - app.server_time) < 60_000
        plain = CcxtBroker("binance", base_url=server.url, symbols=["BTCUSDT"])
        plain.positions()
        assert int(server.calls("GET", "/api/v3/account")[1].query["timestamp"]) - app.server_time > 3_000_000
