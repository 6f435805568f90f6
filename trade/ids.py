"""Deterministic client order ids: one per (trade folder, bar, asset, side).

``fm<tag>-<YYYYmmddHHMM>-<symbol>-<b|s>``, where ``tag`` is 8 hex digits of the trade folder's
identity (config hash, agent, seed, broker). The same bar and asset always give the same id, so an
order sent before a crash is found at the broker after the restart instead of being sent again.
At most 36 characters for symbols up to 10 characters (Binance's limit for ``clientOrderId``);
characters outside ``[A-Za-z0-9._-]`` are dropped from the symbol (``BTC/USDT`` -> ``BTCUSDT``).
"""

from __future__ import annotations

import re

import pandas as pd


def client_order_id(tag: str, time, symbol: str, side: str) -> str:
    stamp = pd.Timestamp(time).strftime("%Y%m%d%H%M")
    sym = re.sub(r"[^A-Za-z0-9._-]", "", str(symbol))
    return f"fm{tag[:8]}-{stamp}-{sym}-{'b' if side == 'buy' else 's'}"
