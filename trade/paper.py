"""``paper``: the built-in, offline broker. Fills at the env's fill bar with the env's own costs.

It behaves like a remote account: its book (cash, positions, orders, every submit call) lives in
its OWN SQLite file (``paper.sqlite`` beside the trade database), committed inside each call, so it
survives the trade process being killed and knows every order it accepted.

Execution model (the kernel's, :mod:`meta.kernel`): an order submitted while the broker's clock
is at bar ``t`` fills at bar ``f = t + 1``'s open (``fill: open``, the default) or at bar ``t``'s
close (``fill: close``), at the price of the env's slippage scheme, paying the env's cost rates,
minimum fee and stamp duty; the fill is booked when the clock moves past ``t``
(:meth:`PaperBroker.advance`), sells before buys (the kernel's order). Prices, rates and tables come
from a :class:`meta.kernel.MarketKernel` built on the same arrays and env config, so they are the
env's own numbers. A sell whose value does not cover its fees, a sell of more than the position and
a buy that costs more than the cash are rejected (``status="rejected"`` with the reason).

Idempotent: a client order id it already knows returns the existing order and books nothing.
``submits`` records every call to :meth:`submit` (``new = 1`` when the call created the order):
the crash tests read it to prove no id was ever sent twice.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd

from data_processors.arrays import MarketArrays

from .broker import Account, BrokerError, Clock, Order, OrderRequest

_SCHEMA = """
CREATE TABLE IF NOT EXISTS account (id INTEGER PRIMARY KEY CHECK (id = 1), cash REAL NOT NULL, now INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS positions (symbol TEXT PRIMARY KEY, qty REAL NOT NULL);
CREATE TABLE IF NOT EXISTS orders (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, client_order_id TEXT UNIQUE NOT NULL, symbol TEXT NOT NULL,
    side TEXT NOT NULL, qty REAL NOT NULL, status TEXT NOT NULL, filled_qty REAL NOT NULL DEFAULT 0,
    price REAL, fee REAL NOT NULL DEFAULT 0, submit_bar INTEGER NOT NULL, fill_bar INTEGER NOT NULL, reason TEXT);
CREATE TABLE IF NOT EXISTS submits (seq INTEGER PRIMARY KEY AUTOINCREMENT, client_order_id TEXT NOT NULL,
    new INTEGER NOT NULL);
"""

#: rounding slack of the cash and position checks (the env's own arithmetic may differ in the last bits)
_SLACK = 1e-9


class PaperBroker:
    """The offline broker of replay and paper trading.

    Args:
        path: its SQLite file (created with ``initial_cash`` and ``initial_positions`` if new).
        arrays: the market it trades (the replay's data); ``env_config``: the env's
            :class:`meta.config.EnvConfig` (costs, slippage, fill, lots).
        initial_cash / initial_positions: the account at creation.
    """

    name = "paper"

    def __init__(self, path: str | Path, arrays: MarketArrays, env_config, initial_cash: float,
                 initial_positions: dict[str, float] | None = None, **_ignored) -> None:
        from meta.kernel import MarketKernel

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.arrays = arrays
        self.k = k = MarketKernel(arrays, env_config, num_envs=1, backend="numpy")
        self.cfg = env_config
        self.tickers = list(arrays.tickers)
        self.index = {s: j for j, s in enumerate(self.tickers)}
        self.times = pd.DatetimeIndex(arrays.times)
        self.fill_px = np.asarray(k.fill_px, dtype=np.float64)
        self.close_px = np.asarray(k.close, dtype=np.float64)
        N = len(self.tickers)
        self.rb = np.broadcast_to(np.asarray(k.rb, dtype=np.float64), (N,))
        self.rs = np.broadcast_to(np.asarray(k.rs, dtype=np.float64), (N,))
        self.stamp = None if k.stamp is None else np.asarray(k.stamp, dtype=np.float64)[:, 0]
        self.volume = None if k.volume is None else np.asarray(k.volume, dtype=np.float64)
        self.offset = k.fill_offset
        self.db = sqlite3.connect(str(self.path), isolation_level=None, timeout=30)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(_SCHEMA)
        if self.db.execute("SELECT count(*) FROM account").fetchone()[0] == 0:
            with self._txn():
                self.db.execute("INSERT INTO account(id, cash, now) VALUES (1, ?, 0)", (float(initial_cash),))
                for s, q in (initial_positions or {}).items():
                    if q:
                        self.db.execute("INSERT INTO positions VALUES (?, ?)", (s, float(q)))

    # -- helpers -----------------------------------------------------------------------------------
    def _txn(self):
        db = self.db

        class _T:
            def __enter__(self_):
                db.execute("BEGIN IMMEDIATE")

            def __exit__(self_, et, ev, tb):
                db.execute("ROLLBACK" if et else "COMMIT")
                return False

        return _T()

    def _now(self) -> int:
        return int(self.db.execute("SELECT now FROM account WHERE id = 1").fetchone()[0])

    def _order(self, row) -> Order:
        (seq, cid, sym, side, qty, status, fq, price, fee, sb, _fill_bar, reason) = row
        return Order(client_order_id=cid, symbol=sym, side=side, qty=float(qty), status=status, filled_qty=float(fq),
                     filled_avg_price=None if price is None else float(price), fee=float(fee),
                     broker_order_id=f"paper-{seq}", submitted_at=self.times[int(sb)], reason=reason)

    def _execution(self, side: str, j: int, f: int, qty: float) -> tuple[float, float, float]:
        """(price, fee, cash delta) of one fill of ``qty`` of asset ``j`` at bar ``f``: the kernel's rules."""
        px = self.fill_px[f, j]
        sl = self.k.slippage
        weights = self.cfg.sizing == "weights"
        if weights or sl.kind == "none":
            p = px
        elif sl.kind == "fixed":
            p = px * (1.0 + sl.bps) if side == "buy" else px * (1.0 - sl.bps)
        else:  # volume impact on the order's quantity
            vol = max(self.volume[f, j], 1e-12)
            imp = min(sl.coef * np.sqrt(qty / vol), 0.5)
            p = px * (1.0 + sl.bps + imp) if side == "buy" else px * (1.0 - sl.bps - imp)
        v = p * qty
        m = self.k.min_fee
        if side == "buy":
            r = self.rb[j] + (sl.bps if weights else 0.0)
            if m > 0:
                fee = max(v * r, m)
                return p, fee, -(v + fee)
            return p, v * r, -(v * (1.0 + r))
        r = self.rs[j] + (sl.bps if weights else 0.0)
        st = 0.0 if self.stamp is None else self.stamp[f]
        if m > 0:
            fee = max(v * r, m) + v * st
            return p, fee, v - fee
        return p, v * (r + st), v * (1.0 - (r + st))

    # -- the interface -----------------------------------------------------------------------------
    def advance(self, bar: int) -> int:
        """Move the clock to ``bar`` and book every order submitted before it (sells, then buys, in
        submit order), in one transaction. Returns the number of orders filled or rejected."""
        done = 0
        with self._txn():
            now = self._now()
            if bar < now:
                raise BrokerError(f"paper: clock cannot go back from bar {now} to {bar}")
            rows = self.db.execute(
                "SELECT seq, symbol, side, qty, fill_bar FROM orders WHERE status = 'new' AND submit_bar < ? "
                "ORDER BY CASE side WHEN 'sell' THEN 0 ELSE 1 END, seq", (bar,)).fetchall()
            cash = float(self.db.execute("SELECT cash FROM account WHERE id = 1").fetchone()[0])
            pos = dict(self.db.execute("SELECT symbol, qty FROM positions").fetchall())
            for seq, sym, side, qty, f in rows:
                j = self.index[sym]
                p, fee, delta = self._execution(side, j, int(f), float(qty))
                have = float(pos.get(sym, 0.0))
                reason = None
                if side == "sell" and qty > have + _SLACK * max(1.0, abs(have)) and not self.cfg.allow_short:
                    reason = f"sell {qty:g} {sym}: position is {have:g}"
                elif side == "sell" and delta < 0:
                    reason = f"sell {qty:g} {sym}: value {p * qty:.2f} does not cover the fees {fee:.2f}"
                elif side == "buy" and -delta > cash + _SLACK * max(1.0, abs(cash)):
                    reason = f"buy {qty:g} {sym}: costs {-delta:,.2f}, cash is {cash:,.2f}"
                if reason:
                    self.db.execute("UPDATE orders SET status = 'rejected', reason = ? WHERE seq = ?", (reason, seq))
                else:
                    cash += delta
                    pos[sym] = have + (qty if side == "buy" else -qty)
                    self.db.execute("UPDATE orders SET status = 'filled', filled_qty = qty, price = ?, fee = ? "
                                    "WHERE seq = ?", (float(p), float(fee), seq))
                done += 1
            self.db.execute("UPDATE account SET cash = ?, now = ? WHERE id = 1", (cash, int(bar)))
            self.db.execute("DELETE FROM positions")
            self.db.executemany("INSERT INTO positions VALUES (?, ?)", [(s, q) for s, q in pos.items() if q != 0])
        return done

    def account(self) -> Account:
        cash = float(self.db.execute("SELECT cash FROM account WHERE id = 1").fetchone()[0])
        now = self._now()
        eq = cash + sum(q * self.close_px[now, self.index[s]] for s, q in self.positions().items())
        return Account(cash=cash, buying_power=cash, equity=float(eq), currency=str(self.arrays.meta.get("currency", "USD")))

    def positions(self) -> dict[str, float]:
        return {s: float(q) for s, q in self.db.execute("SELECT symbol, qty FROM positions ORDER BY symbol") if q != 0}

    def submit(self, order: OrderRequest) -> Order:
        if order.symbol not in self.index:
            raise BrokerError(f"paper: unknown symbol {order.symbol!r}")
        if not order.qty > 0 or order.side not in ("buy", "sell"):
            raise BrokerError(f"paper: bad order {order.side} {order.qty} {order.symbol}")
        with self._txn():
            row = self.db.execute("SELECT * FROM orders WHERE client_order_id = ?", (order.client_order_id,)).fetchone()
            self.db.execute("INSERT INTO submits(client_order_id, new) VALUES (?, ?)",
                            (order.client_order_id, int(row is None)))
            if row is None:
                now = self._now()
                f = now + self.offset
                if f >= len(self.times):
                    raise BrokerError(f"paper: no bar to fill {order.client_order_id} (bar {now} is the data's last)")
                self.db.execute("INSERT INTO orders(client_order_id, symbol, side, qty, status, submit_bar, fill_bar) "
                                "VALUES (?, ?, ?, ?, 'new', ?, ?)",
                                (order.client_order_id, order.symbol, order.side, float(order.qty), now, f))
                row = self.db.execute("SELECT * FROM orders WHERE client_order_id = ?",
                                      (order.client_order_id,)).fetchone()
        return self._order(row)

    def get_order(self, client_order_id: str) -> Order | None:
        row = self.db.execute("SELECT * FROM orders WHERE client_order_id = ?", (client_order_id,)).fetchone()
        return None if row is None else self._order(row)

    def cancel(self, client_order_id: str) -> None:
        self.db.execute("UPDATE orders SET status = 'canceled' WHERE client_order_id = ? AND status = 'new'",
                        (client_order_id,))

    def clock(self) -> Clock:
        return Clock(timestamp=self.times[self._now()], is_open=True)

    def close(self) -> None:
        self.db.close()

    # -- for tests and status ----------------------------------------------------------------------
    def submit_log(self) -> list[tuple[str, int]]:
        """Every :meth:`submit` call: (client order id, 1 if it created the order)."""
        return [(c, int(n)) for c, n in self.db.execute("SELECT client_order_id, new FROM submits ORDER BY seq")]
