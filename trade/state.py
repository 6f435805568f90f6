"""The trade loop's state: one SQLite database per trade folder (``trade.sqlite``).

Tables (schema version :data:`SCHEMA_VERSION`):

* ``meta(key, value)``: ``schema_version``, ``config_hash``, ``models`` (window -> sha256 of each
  model file), ``broker``, ``agent``, ``seed``, ``initial_cash``, ``halted`` (reason, when a risk
  check stopped trading), ``created_utc``;
* ``bars(bar, time, value, cash, action, sent, filled, refused, skipped, window, rng)``: one row per
  processed bar; ``max(bar)`` is the last processed bar (a restart resumes after it); ``rng`` holds
  the random generators' state after the bar's action (sampled policies resume mid-window);
* ``orders(client_order_id, bar, time, symbol, side, qty, status, filled_qty, avg_price, fee,
  reason)``: every order the loop wanted, sent (``new`` .. ``filled``) or refused by a risk check
  (``refused``, with the check's line);
* ``fills(client_order_id, bar, symbol, side, qty, price, fee)``: reconciled fills;
* ``positions(symbol, qty)`` and ``account(id = 1, cash, locked, lock_day)``: the book after the
  last processed bar, as reconciled with the broker (``locked``: T+1 shares bought on ``lock_day``).

Every bar is written in ONE transaction (:meth:`TradeState.bar`): a crash leaves the database at
the end of the previous bar, never between.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from finmeta.errors import FinMetaError

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS bars (
    bar INTEGER PRIMARY KEY, time TEXT NOT NULL, value REAL, cash REAL, action TEXT,
    sent INTEGER NOT NULL DEFAULT 0, filled INTEGER NOT NULL DEFAULT 0, refused INTEGER NOT NULL DEFAULT 0,
    skipped TEXT, window INTEGER, rng BLOB);
CREATE TABLE IF NOT EXISTS orders (
    client_order_id TEXT PRIMARY KEY, bar INTEGER NOT NULL, time TEXT NOT NULL, symbol TEXT NOT NULL,
    side TEXT NOT NULL, qty REAL NOT NULL, status TEXT NOT NULL, filled_qty REAL NOT NULL DEFAULT 0,
    avg_price REAL, fee REAL NOT NULL DEFAULT 0, reason TEXT);
CREATE TABLE IF NOT EXISTS fills (
    client_order_id TEXT PRIMARY KEY, bar INTEGER NOT NULL, symbol TEXT NOT NULL, side TEXT NOT NULL,
    qty REAL NOT NULL, price REAL, fee REAL NOT NULL);
CREATE TABLE IF NOT EXISTS positions (symbol TEXT PRIMARY KEY, qty REAL NOT NULL);
CREATE TABLE IF NOT EXISTS account (id INTEGER PRIMARY KEY CHECK (id = 1), cash REAL NOT NULL,
    locked TEXT, lock_day INTEGER);
"""

OPEN_STATUSES = ("new", "partially_filled")


class StateError(FinMetaError):
    """The trade folder's database is unusable or belongs to another run."""


class TradeState:
    """The SQLite state of one trade folder."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(str(self.path), isolation_level=None, timeout=30)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise StateError(f"{self.path}: not a usable trade database ({exc})") from None
        v = self.get("schema_version")
        if v is None:
            self.set("schema_version", SCHEMA_VERSION)
        elif int(v) != SCHEMA_VERSION:
            raise StateError(f"{self.path}: schema version {v}, this FinMeta reads {SCHEMA_VERSION}")

    def close(self) -> None:
        self.db.close()

    # -- meta ------------------------------------------------------------------------------------
    def get(self, key: str, default: Any = None) -> Any:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def set(self, key: str, value: Any) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, json.dumps(value)))

    def delete(self, key: str) -> None:
        self.db.execute("DELETE FROM meta WHERE key = ?", (key,))

    # -- the per-bar transaction ---------------------------------------------------------------
    @contextmanager
    def bar(self) -> Iterator[sqlite3.Connection]:
        """One transaction: everything written inside commits together, or not at all."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # -- reads -----------------------------------------------------------------------------------
    def last_bar(self) -> int | None:
        row = self.db.execute("SELECT max(bar) FROM bars").fetchone()
        return None if row[0] is None else int(row[0])

    def bar_row(self, bar: int) -> dict | None:
        cur = self.db.execute("SELECT * FROM bars WHERE bar = ?", (bar,))
        row = cur.fetchone()
        return None if row is None else dict(zip([d[0] for d in cur.description], row))

    def bars(self, last: int | None = None) -> list[dict]:
        q = "SELECT bar, time, value, cash, action, sent, filled, refused, skipped, window FROM bars ORDER BY bar"
        cur = self.db.execute(q)
        cols = [d[0] for d in cur.description]
        rows = [dict(zip(cols, r)) for r in cur.fetchall()]
        return rows if last is None else rows[-last:]

    def positions(self) -> dict[str, float]:
        return {s: float(q) for s, q in self.db.execute("SELECT symbol, qty FROM positions ORDER BY symbol")}

    def account(self) -> dict | None:
        row = self.db.execute("SELECT cash, locked, lock_day FROM account WHERE id = 1").fetchone()
        if row is None:
            return None
        return {"cash": float(row[0]), "locked": None if row[1] is None else json.loads(row[1]),
                "lock_day": None if row[2] is None else int(row[2])}

    def orders(self, statuses: tuple[str, ...] | None = None) -> list[dict]:
        q = "SELECT * FROM orders"
        args: tuple = ()
        if statuses:
            q += f" WHERE status IN ({','.join('?' * len(statuses))})"
            args = statuses
        cur = self.db.execute(q + " ORDER BY bar, rowid", args)
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r)) for r in cur.fetchall()]

    # -- writes (inside :meth:`bar`) -------------------------------------------------------------
    def put_book(self, cash: float, positions: dict[str, float], locked: list | None, lock_day: int | None) -> None:
        self.db.execute("DELETE FROM positions")
        self.db.executemany("INSERT INTO positions(symbol, qty) VALUES (?, ?)",
                            [(s, float(q)) for s, q in positions.items() if q != 0])
        self.db.execute("INSERT OR REPLACE INTO account(id, cash, locked, lock_day) VALUES (1, ?, ?, ?)",
                        (float(cash), None if locked is None else json.dumps(locked), lock_day))

    def put_order(self, bar: int, time: str, o: dict) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO orders(client_order_id, bar, time, symbol, side, qty, status, filled_qty, "
            "avg_price, fee, reason) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (o["client_order_id"], bar, time, o["symbol"], o["side"], float(o["qty"]), o["status"],
             float(o.get("filled_qty") or 0.0), o.get("filled_avg_price"), float(o.get("fee") or 0.0),
             o.get("reason")))

    def put_fill(self, bar: int, o: dict) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO fills(client_order_id, bar, symbol, side, qty, price, fee) VALUES (?,?,?,?,?,?,?)",
            (o["client_order_id"], bar, o["symbol"], o["side"], float(o["filled_qty"]), o.get("filled_avg_price"),
             float(o.get("fee") or 0.0)))

    def put_bar(self, bar: int, time: str, *, value: float | None, cash: float | None, action=None,
                sent: int = 0, filled: int = 0, refused: int = 0, skipped: str | None = None,
                window: int | None = None, rng: bytes | None = None) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO bars(bar, time, value, cash, action, sent, filled, refused, skipped, window, rng) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (bar, time, value, cash, None if action is None else json.dumps([float(x) for x in action]),
             sent, filled, refused, skipped, window, rng))
