"""The broker interface of the trade stage (``finmeta trade``).

A broker is the account the trade loop sends orders to: ``paper`` (built in, offline),
``alpaca`` (alpaca-py, paper endpoint by default) and ``ccxt`` (an exchange's sandbox). The loop
only talks to this interface, so a model that backtested trades the same way on each of them.

The interface is small on purpose (Gymnasium-style): account, positions, submit with a client
order id, order status by client order id, cancel, clock. Quantities are signed-free: ``side``
says buy or sell and ``qty`` is a positive number of shares / coins (fractional where the
family allows it). Prices are in the account currency.

Idempotency is the broker's duty too: ``submit`` with a client order id the broker already knows
returns that order and sends nothing (the loop also looks the id up first, after a crash).

Keys come from the environment only (``APCA_API_KEY_ID`` / ``APCA_API_SECRET_KEY``, ``CCXT_API_KEY``
/ ``CCXT_SECRET``); no broker writes or prints them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import pandas as pd

from finmeta.errors import FinMetaError

Side = Literal["buy", "sell"]
#: ``new`` accepted, not filled yet; ``filled`` fully filled; ``partially_filled``; ``canceled``;
#: ``rejected`` (refused by the broker, ``reason`` says why)
Status = Literal["new", "partially_filled", "filled", "canceled", "rejected"]


class BrokerError(FinMetaError):
    """A broker call failed (network, authentication, refused request): one line naming the broker
    and the call, never a key."""


@dataclass(frozen=True)
class OrderRequest:
    """One order the loop wants: ``symbol`` (the dataset's ticker), ``side``, ``qty`` > 0,
    ``client_order_id`` (deterministic per (bar, asset), see ``trade.ids``), market order."""

    symbol: str
    side: Side
    qty: float
    client_order_id: str


@dataclass
class Order:
    """An order as the broker knows it. ``filled_qty`` and ``filled_avg_price`` (None before any
    fill) and ``fee`` (account currency, 0 if the broker does not report one) describe its fills."""

    client_order_id: str
    symbol: str
    side: Side
    qty: float
    status: Status
    filled_qty: float = 0.0
    filled_avg_price: float | None = None
    fee: float = 0.0
    broker_order_id: str | None = None
    submitted_at: pd.Timestamp | None = None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["submitted_at"] = None if self.submitted_at is None else str(self.submitted_at)
        return d


@dataclass
class Account:
    """Cash, buying power and equity (cash + positions at the broker's last prices)."""

    cash: float
    buying_power: float
    equity: float
    currency: str = "USD"
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Clock:
    """The broker's time and whether its market is open now."""

    timestamp: pd.Timestamp
    is_open: bool


@runtime_checkable
class Broker(Protocol):
    """What the trade loop needs from an account."""

    #: registry name: ``paper`` | ``alpaca`` | ``ccxt``
    name: str

    def account(self) -> Account:
        """Cash, buying power, equity."""

    def positions(self) -> dict[str, float]:
        """``{symbol: quantity}`` of every non-zero position (long > 0)."""

    def submit(self, order: OrderRequest) -> Order:
        """Send a market order; a known ``client_order_id`` returns the existing order, sends nothing."""

    def get_order(self, client_order_id: str) -> Order | None:
        """The order with that client order id, or None if the broker never received it."""

    def cancel(self, client_order_id: str) -> None:
        """Cancel an open order (no-op if it is already final)."""

    def clock(self) -> Clock:
        """The broker's clock."""

    def close(self) -> None:
        """Release connections / files."""
