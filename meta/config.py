"""Env configuration: one dataclass, and the five families as presets of it.

A *family* is nothing but a set of defaults for :class:`EnvConfig`; every family runs on the same
kernel (``meta/kernel.py``). User overrides win over family defaults.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, NoReturn, Sequence

from finmeta.errors import ConfigError

FILLS = ("open", "close")
REWARDS = ("asset_change", "log_return", "diff_sharpe", "drawdown_penalised")
SIZINGS = ("shares", "fraction", "weights")
SLIPPAGES = ("none", "fixed", "volume")
CALENDARS = ("equity", "ashare", "crypto", "forex")


@dataclass(frozen=True)
class EnvConfig:
    """Every knob of the market kernel (see ``docs/env.md`` for the meaning of each).

    Money is in the quote currency of the data; quantities in shares / base units.
    """

    family: str = "stock_trading"
    # account ---------------------------------------------------------------------------
    initial_cash: float = 1_000_000.0
    initial_holdings: Sequence[float] | None = None  # FinRL's num_stock_shares, (N,)
    # action scheme -----------------------------------------------------------------------
    sizing: str = "shares"          # shares: a*hmax shares | fraction: of cash/position | weights
    hmax: float = 100               # shares per unit action (sizing="shares")
    lot_size: float = 1.0           # buy quantities are multiples of it (0: continuous)
    sell_lot_size: float | None = None  # sells: multiples of it, or the whole sellable position
    action_scheme: str = "softmax"  # portfolio: "softmax" (scores) | "weights" (target weights)
    include_cash: bool = False      # portfolio: one more action entry, the cash weight (last)
    softmax_temperature: float = 1.0
    allow_short: bool = False       # stock_trading only; see margin_requirement
    margin_requirement: float = 0.5  # short market value <= equity / margin_requirement
    # costs --------------------------------------------------------------------------------
    buy_cost_pct: float | Sequence[float] = 0.001
    sell_cost_pct: float | Sequence[float] = 0.001
    fee_bps: float | None = None    # if set: buy_cost_pct = sell_cost_pct = fee_bps / 1e4
    min_fee: float = 0.0            # minimum commission per order (A-share: 5 CNY)
    stamp_duty: float | str | None = None  # sells only; "cn" = 0.1% (0.05% from 2023-08-28)
    # market rules -------------------------------------------------------------------------
    t_plus_1: bool = False          # shares bought on a trading day cannot be sold that day
    price_limits: bool = False      # A-share limit up / down (needs preclose; else derived)
    limit_pct: float | None = None  # override the board-dependent limit (fraction, e.g. 0.1)
    turbulence_threshold: float | None = None
    # timing -------------------------------------------------------------------------------
    fill: str = "open"              # "open": next bar's open | "close": same bar close (FinRL)
    finrl_quirks: bool | None = None  # None: on iff fill == "close" (see docs/env.md)
    sort_kind: str = "default"      # buy priority ties: "default" (numpy's, FinRL) | "stable"
    # slippage / impact --------------------------------------------------------------------
    slippage: str = "none"          # none | fixed (slippage_bps) | volume (impact_coef)
    slippage_bps: float = 0.0
    impact_coef: float = 0.1        # price impact = impact_coef * sqrt(qty / bar volume)
    max_participation: float | None = None  # cap qty at this fraction of the fill bar's volume
    # reward -------------------------------------------------------------------------------
    reward: str = "asset_change"
    reward_scaling: float = 1e-4    # asset_change only (FinRL)
    diff_sharpe_eta: float = 0.01
    drawdown_penalty: float = 0.5
    # observation --------------------------------------------------------------------------
    lookback: int = 1
    normalize_obs: bool = False
    # normalize_obs only: features are z-scored with the mean / std of the first obs_fit_bars bars of
    # the arrays (the training range, frozen; clipped to +-obs_clip); None: causal expanding z-scores
    obs_fit_bars: int | None = None
    obs_clip: float = 10.0
    # episodes -----------------------------------------------------------------------------
    episode_length: int | tuple[int, int] | None = None  # None: to the end of the data
    random_start: bool = False
    # annualisation ------------------------------------------------------------------------
    calendar: str = "equity"  # "auto": the data's (MarketArrays.meta["calendar"], calendars.env_calendar)
    bars_per_year: float | None = None  # None: inferred from the bar spacing and calendar
    # numerics / vector --------------------------------------------------------------------
    dtype: str = "float64"
    autoreset_mode: str = "same_step"  # vector env: "same_step" (the only mode implemented)
    extra: dict = field(default_factory=dict)

    # ------------------------------------------------------------------------------------
    def validate(self) -> "EnvConfig":
        """Raise one :class:`ConfigError` naming the first bad key; return self."""
        def bad(key: str, why: str) -> NoReturn:
            raise ConfigError(f"EnvConfig.{key}: {why} (got {getattr(self, key)!r})")

        if self.family not in FAMILIES:
            bad("family", f"must be one of {sorted(FAMILIES)}")
        if self.fill not in FILLS:
            bad("fill", f"must be one of {FILLS}")
        if self.reward not in REWARDS:
            bad("reward", f"must be one of {REWARDS}")
        if self.sizing not in SIZINGS:
            bad("sizing", f"must be one of {SIZINGS}")
        if self.slippage not in SLIPPAGES:
            bad("slippage", f"must be one of {SLIPPAGES}")
        if self.calendar not in CALENDARS and self.calendar != "auto":
            bad("calendar", f"must be one of {CALENDARS} or 'auto' (the data's calendar)")
        if self.action_scheme not in ("softmax", "weights"):
            bad("action_scheme", "must be 'softmax' or 'weights'")
        if self.sort_kind not in ("default", "stable"):
            bad("sort_kind", "must be 'default' or 'stable'")
        if self.autoreset_mode != "same_step":
            bad("autoreset_mode", "only 'same_step' autoreset is implemented")
        if self.sizing == "weights" and self.min_fee > 0:
            bad("min_fee", "a minimum fee is not supported for the portfolio (weights) family")
        if not self.initial_cash >= 0:
            bad("initial_cash", "must be >= 0")
        if not self.hmax > 0:
            bad("hmax", "must be > 0")
        if self.lot_size < 0:
            bad("lot_size", "must be >= 0")
        if int(self.lookback) != self.lookback or self.lookback < 1:
            bad("lookback", "must be an integer >= 1")
        if self.min_fee < 0:
            bad("min_fee", "must be >= 0")
        if self.obs_fit_bars is not None and (int(self.obs_fit_bars) != self.obs_fit_bars or self.obs_fit_bars < 1):
            bad("obs_fit_bars", "must be None or an integer >= 1 (the number of leading bars to fit on)")
        if not self.obs_clip > 0:
            bad("obs_clip", "must be > 0")
        if self.fee_bps is not None and not 0 <= self.fee_bps < 1e4:
            bad("fee_bps", "must be in [0, 10000)")
        if self.allow_short and self.sizing != "shares":
            bad("allow_short", "short selling is supported for share sizing (stock_trading) only")
        if self.allow_short and self.t_plus_1:
            bad("allow_short", "A-share rules (t_plus_1) do not allow short selling")
        if not self.margin_requirement > 0:
            bad("margin_requirement", "must be > 0")
        if self.sizing == "weights" and self.slippage == "volume":
            bad("slippage", "volume impact is not supported for the portfolio (weights) family")
        if self.slippage_bps < 0:
            bad("slippage_bps", "must be >= 0")
        if self.max_participation is not None and not self.max_participation > 0:
            bad("max_participation", "must be > 0")
        if self.episode_length is not None:
            el = self.episode_length
            lo, hi = (el, el) if isinstance(el, (int,)) else tuple(el)
            if int(lo) != lo or int(hi) != hi or lo < 1 or hi < lo:
                bad("episode_length", "must be an int >= 1 or a (min, max) pair of ints")
        if self.stamp_duty is not None and not (self.stamp_duty == "cn" or
                                                (isinstance(self.stamp_duty, (int, float))
                                                 and 0 <= self.stamp_duty < 1)):
            bad("stamp_duty", "must be None, 'cn' or a rate in [0, 1)")
        if not self.softmax_temperature > 0:
            bad("softmax_temperature", "must be > 0")
        return self

    @property
    def quirks(self) -> bool:
        """FinRL's idiosyncrasies (turbulence 0 on the first step, the feature-1 == 1 lock)."""
        return (self.fill == "close") if self.finrl_quirks is None else bool(self.finrl_quirks)

    @property
    def fill_label(self) -> str:
        return "next_open" if self.fill == "open" else "close (FinRL parity)"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def for_family(cls, family: str = "stock_trading", **overrides: Any) -> "EnvConfig":
        """Family defaults updated by ``overrides`` (unknown keys raise :class:`ConfigError`)."""
        if family not in FAMILIES:
            raise ConfigError(f"family must be one of {sorted(FAMILIES)}, got {family!r}")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ConfigError(f"unknown env option(s) {unknown}; known: {sorted(names)}")
        cfg = replace(cls(), family=family, **FAMILIES[family])
        return replace(cfg, **overrides).validate()


#: The families: defaults of :class:`EnvConfig` (see docs/env.md, "Families").
FAMILIES: dict[str, dict[str, Any]] = {
    # FinRL StockTradingEnv semantics: a * hmax integer shares, sells before buys, cash-limited buys
    "stock_trading": dict(sizing="shares", lot_size=1.0, calendar="equity"),
    # target weights on the simplex, proportional costs on turnover
    "portfolio": dict(sizing="weights", lot_size=0.0, action_scheme="softmax", reward="log_return",
                      calendar="equity"),
    # fractional quantities, 10 bps taker fee, 24/7 calendar
    "crypto": dict(sizing="fraction", lot_size=0.0, fee_bps=10.0, calendar="crypto"),
    # fractional quantities, 1 bp (spread) fee, 24/5 calendar
    "forex": dict(sizing="fraction", lot_size=0.0, fee_bps=1.0, calendar="forex"),
    # China A-shares: 100-share lots, T+1, limit up/down, stamp duty, 0.03% commission min 5 CNY
    "ashare": dict(sizing="shares", hmax=1000, lot_size=100.0, sell_lot_size=100.0,
                   buy_cost_pct=0.0003, sell_cost_pct=0.0003, min_fee=5.0, stamp_duty="cn",
                   t_plus_1=True, price_limits=True, calendar="ashare"),
}
