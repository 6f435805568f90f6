"""The broker registry: ``make_broker(name, **kw)`` by name, vendor brokers imported lazily.

``paper`` is built in (:mod:`trade.paper`); ``alpaca`` and ``ccxt`` live in their own modules and
are imported only when asked for, so that neither alpaca-py nor ccxt is needed to replay or paper
trade. Every entry is a ``"module:Class"`` string; the class implements :class:`trade.broker.Broker`.
"""

from __future__ import annotations

import importlib
from typing import Any

from finmeta.errors import ConfigError

from .broker import Broker, BrokerError

#: name -> "module:Class" (imported on first use)
BROKERS: dict[str, str] = {
    "paper": "trade.paper:PaperBroker",
    "alpaca": "trade.alpaca_broker:AlpacaBroker",
    "ccxt": "trade.ccxt_broker:CcxtBroker",
}


def broker_names() -> list[str]:
    return sorted(BROKERS)


def broker_class(name: str) -> type:
    """The class registered as ``name``; one clear error for an unknown name or a missing module."""
    if name not in BROKERS:
        raise ConfigError(f"--broker {name!r}: unknown broker; choose one of {', '.join(broker_names())}")
    module, _, cls = BROKERS[name].partition(":")
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name == module:
            raise BrokerError(f"broker {name}: its module {module} is not installed in this checkout") from None
        raise BrokerError(f"broker {name}: needs the package {exc.name!r} (pip install {exc.name})") from None
    try:
        return getattr(mod, cls)
    except AttributeError:
        raise BrokerError(f"broker {name}: {module} has no class {cls}") from None


def make_broker(name: str, **kw: Any) -> Broker:
    """An instance of the broker registered as ``name`` (keyword arguments go to its constructor)."""
    return broker_class(name)(**kw)
