"""Rule-based baselines: buy-and-hold, equal weight, minimum variance and the market index.

No look-ahead rule
------------------
A baseline is given the whole ``(T, N)`` close-price array once (at construction, with
:meth:`Baseline.bind`, or taken from the env's ``MarketArrays`` in :meth:`Baseline.learn`), but it
reads prices **only** through :meth:`Baseline.history` which returns ``close[: t + 1]`` -- the
bars up to and including the current bar ``t``. ``t`` comes from the env (``info["t"]``) when
acting, or from the loop in :meth:`Baseline.account_values`. The weights chosen at bar ``t``
therefore cannot depend on any price after ``t`` (``tests/test_agents.py`` changes every price
after ``t`` and checks that the weights at ``t`` do not move).

Two ways to use a baseline
--------------------------
* In an env, like any agent: ``action = baseline.act(obs, info=info)``. The target weights
  ``(N,)`` become the env action: with the portfolio family's ``action_scheme="weights"`` the
  action is the weight vector (plus a zero cash weight when the action has N+1 entries); with the
  share-based families (stock_trading, crypto, ...) it is the share trade that moves the holdings
  to the target, ``clip((w * V / p_t - h) / hmax, -1, 1)``, from ``info["portfolio_value"]``,
  ``info["holdings"]`` and ``close[t]``.
* Stand-alone, in NumPy (one vector operation over the assets per bar):
  :meth:`Baseline.account_values` gives the account-value path
  ``(T - start,)`` when rebalancing at each bar's close to the weights decided at that close, with
  a proportional cost on the traded value. :class:`IndexBaseline` only has this form (an index
  is not tradable): ``initial_cash * index[t] / index[start]``.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from agents.base import Agent, AgentError
from finmeta.errors import ConfigError

__all__ = ["Baseline", "BuyAndHold", "EqualWeight", "HoldCurrent", "MinVariance", "IndexBaseline", "weights_to_action"]


def _arrays_of(env: Any):
    """The ``MarketArrays`` behind an env (``env.arrays``, ``env.unwrapped.arrays``), or None."""
    for obj in (env, getattr(env, "unwrapped", None)):
        if obj is not None and getattr(obj, "arrays", None) is not None:
            return obj.arrays
    get = getattr(env, "get_wrapper_attr", None)
    if get is not None:
        try:
            return get("arrays")
        except AttributeError:
            return None
    return None


def _env_setting(env: Any, key: str, default: Any = None) -> Any:
    """``env.config.<key>`` (or ``env.unwrapped.config``, or an attribute of that name), else default."""
    for obj in (env, getattr(env, "unwrapped", None)):
        if obj is None:
            continue
        cfg = getattr(obj, "config", None)
        if cfg is not None:
            v = cfg.get(key, None) if isinstance(cfg, dict) else getattr(cfg, key, None)
            if v is not None:
                return v
        v = getattr(obj, key, None)
        if v is not None and not callable(v):
            return v
    return default


def weights_to_action(
    weights: np.ndarray,
    *,
    scheme: str,
    action_dim: int,
    info: dict | None = None,
    price: np.ndarray | None = None,
    hmax: float | None = None,
    cash_slot: str = "last",
    temperature: float = 1.0,
    cost_pct: float = 0.0,
) -> np.ndarray:
    """Turn long-only target weights ``(N,)`` into an env action ``(action_dim,)``.

    * ``"weights"`` (portfolio family, ``action_scheme="weights"``): the weights, with a zero cash
      weight at ``cash_slot`` when ``action_dim == N + 1``.
    * ``"softmax"`` (portfolio family, ``action_scheme="softmax"``): scores
      ``temperature * log(w)``, which the env's softmax maps back to ``w``.
    * ``"shares"`` (stock_trading, ashare): ``clip((w * V / p - h) / hmax, -1, 1)`` with
      ``V = info["portfolio_value"]``, ``h = info["holdings"]`` ``(N,)``, ``p = price`` ``(N,)``.
    * ``"fraction"`` (crypto, forex): sells as a fraction of the position, buys as a fraction of
      the cash after the sells (``info["cash"]`` needed).

    ``price`` is the current bar's close; with the default next-open fill the executed quantities
    differ slightly (the price moves overnight and quantities are rounded by the env).
    """
    w = np.clip(np.asarray(weights, dtype=np.float64), 0.0, None)
    n = w.shape[0]
    if scheme in ("weights", "softmax"):
        if action_dim == n:
            full = w
        elif action_dim == n + 1:
            full = np.concatenate([[0.0], w]) if cash_slot == "first" else np.concatenate([w, [0.0]])
        else:
            raise AgentError(f"{scheme} action: env action has {action_dim} entries for {n} assets")
        if scheme == "softmax":
            full = float(temperature) * np.log(np.maximum(full, 1e-12))
        return full.astype(np.float32)
    if scheme in ("shares", "fraction"):
        need = ("portfolio_value", "holdings") + (("cash",) if scheme == "fraction" else ())
        if info is None or any(k not in info for k in need):
            raise AgentError(f"baseline needs info keys {list(need)} to trade in a '{scheme}' env")
        value = float(np.asarray(info["portfolio_value"]).reshape(-1)[0])
        hold = np.asarray(info["holdings"], dtype=np.float64).reshape(-1)[:n]
        p = np.asarray(price, dtype=np.float64)
        target = w * value / p
        if scheme == "shares":
            if not hmax:
                raise AgentError("baseline needs hmax (shares per unit action) to trade shares")
            return np.clip((target - hold) / float(hmax), -1.0, 1.0).astype(np.float32)
        sell = np.where((target < hold) & (hold > 0), (hold - target) / np.where(hold > 0, hold, 1.0), 0.0)
        cash_after = float(np.asarray(info["cash"]).reshape(-1)[0]) + \
            float(((hold - target).clip(0) * p).sum()) * (1.0 - cost_pct)
        buy_val = (target - hold).clip(0) * p * (1.0 + cost_pct)
        buy = buy_val / cash_after if cash_after > 0 else np.zeros(n)
        if buy.sum() > 1.0:
            buy = buy / buy.sum()
        return np.clip(buy - sell, -1.0, 1.0).astype(np.float32)
    raise ConfigError(f"action_scheme must be 'weights', 'softmax', 'shares' or 'fraction', got {scheme!r}")


class Baseline(Agent):
    """A rule-based agent that sees prices only up to the current bar.

    Config keys: ``action_scheme`` (``None`` = from the env's config: ``"weights"`` or
    ``"softmax"`` for the portfolio family, ``"fraction"`` for crypto/forex, else ``"shares"``;
    see :func:`weights_to_action`), ``hmax`` (None = the env's),
    ``cash_slot`` (``"last"``), ``cost_pct`` (0.001, for :meth:`account_values`).
    """

    defaults: ClassVar[dict[str, Any]] = {"action_scheme": None, "hmax": None, "cash_slot": "last",
                                          "cost_pct": 0.001}
    #: a rule: not trained per window, bound to the trading window's env (see :attr:`Agent.learned`)
    learned: ClassVar[bool] = False
    #: True for the gated variants (``*_gated``): the walk-forward loop trades them under the
    #: window's turbulence stop, like the RL agents (sell everything and buy nothing while
    #: turbulence >= threshold; the rule re-enters when the stop lifts).
    trades_under_stop: ClassVar[bool] = False

    def __init__(self, prices: np.ndarray | None = None, **overrides: Any) -> None:
        super().__init__(**overrides)
        self._close: np.ndarray | None = None
        self._start = 0  # first bar of the current episode
        self._episodes: dict[int, list[int]] = {}  # sub-env -> [episode start, last bar seen]
        self._cache: dict[int, np.ndarray] = {}  # bar -> solved weights (depends on t only)
        if prices is not None:
            self.bind(prices)

    # -- price access (the only one) -------------------------------------------------------------

    def bind(self, prices: np.ndarray) -> "Baseline":
        """Give the baseline the ``(T, N)`` close prices it will read up to the current bar."""
        p = np.asarray(prices, dtype=np.float64)
        if p.ndim == 1:
            p = p[:, None]
        if p.ndim != 2 or p.shape[0] == 0:
            raise ConfigError(f"{self.name}: prices must be (T, N), got shape {p.shape}")
        if not np.all(np.isfinite(p)) or np.any(p <= 0):
            bad = np.argwhere(~np.isfinite(p) | (p <= 0))[0]
            raise ConfigError(f"{self.name}: non-positive or non-finite price at row {bad[0]}, asset {bad[1]}")
        self._close = p
        self._close.setflags(write=False)
        self._cache = {}
        self._episodes = {}
        return self

    def history(self, t: int) -> np.ndarray:
        """``close[: t + 1]`` ``(t + 1, N)``: every price the baseline may use at bar ``t``."""
        if self._close is None:
            raise AgentError(f"{self.name}: no prices bound; call learn(env) or bind(prices) first")
        t = int(t)
        if not 0 <= t < self._close.shape[0]:
            raise AgentError(f"{self.name}: bar t={t} outside the bound prices (T={self._close.shape[0]})")
        return self._close[: t + 1]

    # -- the rule --------------------------------------------------------------------------------

    def target_weights(self, t: int) -> np.ndarray:
        """Long-only target weights ``(N,)`` (sum 1) at bar ``t``, from :meth:`history` only."""
        raise NotImplementedError

    def reset(self, start: int = 0) -> None:
        """Start a new episode at bar ``start`` (buy-and-hold buys there; rebalancing counts from it)."""
        self._start = int(start)

    def _episode_start(self, env_index: int, t: int) -> int:
        """Track episodes from the bars seen in ``act``: a bar that is neither the last one seen
        nor the next one starts a new episode (the env moves one bar per step)."""
        ep = self._episodes.get(env_index)
        if ep is None or not ep[1] <= t <= ep[1] + 1:
            ep = self._episodes[env_index] = [t, t]
        ep[1] = t
        return ep[0]

    # -- Agent interface ---------------------------------------------------------------------------

    def learn(self, env, total_timesteps: int = 0, seed: int = 0) -> "Baseline":
        """No training: bind the env's spaces, close prices and action settings."""
        self._set_spaces(env)
        arrays = _arrays_of(env)
        if arrays is not None:
            self.bind(arrays.close)
        if self.config.get("action_scheme") is None:
            sizing = _env_setting(env, "sizing", "shares")
            if sizing == "weights":
                scheme = "weights" if _env_setting(env, "action_scheme") == "weights" else "softmax"
                self.config["temperature"] = float(_env_setting(env, "softmax_temperature", 1.0))
            else:
                scheme = "fraction" if sizing == "fraction" else "shares"
            self.config["action_scheme"] = scheme
        if self.config.get("hmax") is None:
            hmax = _env_setting(env, "hmax")
            self.config["hmax"] = None if hmax is None else float(hmax)
        cost = _env_setting(env, "buy_cost_pct")
        if isinstance(cost, (int, float)) and "env_cost_pct" not in self.config:
            self.config["env_cost_pct"] = float(cost)
        self.seed = int(seed)
        self.reset(0)
        return self

    def act(self, obs: np.ndarray, deterministic: bool = True, info: dict | None = None) -> np.ndarray:
        """The env action that moves the portfolio to :meth:`target_weights` at ``info["t"]``."""
        if info is None or "t" not in info:
            raise AgentError(f"{self.name}: act() needs the env's info dict with 't' (the current bar)")
        t_arr = np.asarray(info["t"]).reshape(-1)
        if self.action_space is None:
            raise AgentError(f"{self.name}: call learn(env) or load(path, env) before act()")
        act_dim = int(np.prod(self.action_space.shape))
        rows = []
        for e, t in enumerate(t_arr):  # E sub-envs of a vector env (usually 1)
            t = int(t)
            sub = info if t_arr.size == 1 else {k: (np.asarray(v)[e] if np.ndim(v) else v)
                                                 for k, v in info.items() if not k.startswith("_")}
            self.reset(self._episode_start(e, t))
            w = self.target_weights(t)
            rows.append(weights_to_action(
                w, scheme=self.config.get("action_scheme") or "shares", action_dim=act_dim, info=sub,
                price=self.history(int(t))[-1], hmax=self.config.get("hmax"),
                cash_slot=self.config.get("cash_slot", "last"),
                temperature=float(self.config.get("temperature", 1.0)),
                cost_pct=float(self.config.get("env_cost_pct", 0.0))))
        return rows[0] if t_arr.size == 1 and np.ndim(info["t"]) == 0 else np.stack(rows)

    def account_values(self, initial_cash: float = 1_000_000.0, start: int = 0,
                       cost_pct: float | None = None) -> np.ndarray:
        """Account value ``(T - start,)`` trading at each bar's close to that bar's target weights.

        Bar ``start``: buy the target weights with ``initial_cash`` (paying ``cost_pct`` of the
        traded value); each later bar: mark to market, then rebalance when the weights changed.
        The fee is ``cost_pct`` times the traded value computed before the fee (a first-order
        approximation of the exact post-cost rebalance).
        """
        close = self.history(self._close.shape[0] - 1)
        cost = float(self.config.get("cost_pct", 0.001) if cost_pct is None else cost_pct)
        self.reset(start)
        T = close.shape[0]
        values = np.empty(T - start)
        shares = np.zeros(close.shape[1])
        cash = float(initial_cash)
        for k, t in enumerate(range(start, T)):
            p = close[t]
            value = cash + shares @ p
            w = self.target_weights(t)
            target = w * value / p
            traded = np.abs(target - shares) @ p
            if traded > 1e-9 * value:
                fee = traded * cost
                # rebalance so that the fee is paid from the new portfolio
                target = w * (value - fee) / p
                cash = value - fee - target @ p
                shares = target
            values[k] = cash + shares @ p
        return values

    # -- save / load -------------------------------------------------------------------------------

    def _save(self, path: Path) -> None:
        import zipfile

        with zipfile.ZipFile(path, "w") as zf:  # no weights: the rule and its config are the agent
            zf.writestr("baseline.txt", f"{type(self).__name__}: {type(self).__doc__.splitlines()[0]}\n")

    def _load(self, path: Path, manifest: dict, env: Any) -> None:
        if env is not None:  # without an env: call learn(env) or bind(prices) before acting
            self.learn(env, seed=self.seed or 0)


class BuyAndHold(Baseline):
    """Equal weights bought at the episode's first bar, then held (weights drift with prices)."""

    name = "buy_and_hold"

    def target_weights(self, t: int) -> np.ndarray:
        start = min(self._start, int(t))
        hist = self.history(t)
        n = hist.shape[1]
        grown = hist[-1] / hist[start] / n  # value of 1/N bought at `start`
        return grown / grown.sum()

    def carry_over(self, state: dict | None) -> "BuyAndHold | HoldCurrent":
        """Itself in the first window (it buys equal weights at the first bar); in every later
        window of a walk-forward chain a :class:`HoldCurrent` that keeps the portfolio it carries
        over (bought in the first window, held ever since)."""
        return self if state is None else HoldCurrent(self)


class HoldCurrent:
    """Acts so that the portfolio keeps its current (drifted) weights: no trades in share families.

    Buy-and-hold buys equal weights at the first bar of the first trading window only; in later
    windows of the chain it must hold what it carries over instead of buying equal weights again
    (:meth:`BuyAndHold.carry_over`). Reads the bound baseline's prices up to bar ``info["t"]`` only.
    """

    def __init__(self, baseline: Baseline) -> None:
        self.baseline = baseline

    def act(self, obs, deterministic: bool = True, info: dict | None = None):
        b = self.baseline
        price = b.history(int(info["t"]))[-1]
        value = float(info["portfolio_value"])
        hold = np.asarray(info["holdings"], dtype=np.float64)
        w = hold * price / value if value > 0 else np.zeros_like(hold)
        return weights_to_action(w, scheme=b.config.get("action_scheme") or "shares",
                                 action_dim=int(np.prod(b.action_space.shape)), info=info, price=price,
                                 hmax=b.config.get("hmax"), cash_slot=b.config.get("cash_slot", "last"),
                                 temperature=float(b.config.get("temperature", 1.0)))


class EqualWeight(Baseline):
    """Equal weights, rebalanced every ``rebalance_every`` bars (1 = every bar)."""

    name = "equal_weight"
    defaults = {**Baseline.defaults, "rebalance_every": 1}

    def target_weights(self, t: int) -> np.ndarray:
        k = int(self.config.get("rebalance_every", 1))
        if k < 1:
            raise ConfigError(f"equal_weight: rebalance_every must be >= 1, got {k}")
        start = min(self._start, int(t))
        hist = self.history(t)
        n = hist.shape[1]
        last = start + ((t - start) // k) * k  # the latest rebalancing bar <= t
        grown = hist[-1] / hist[last] / n
        return grown / grown.sum()


class EqualWeightGated(EqualWeight):
    """Equal weights (as ``equal_weight``) traded under the turbulence stop: flat while it is on.

    What the stop alone earns: the ICAIF 2020 rule without any learning.
    """

    name = "equal_weight_gated"
    trades_under_stop = True


class MinVariance(Baseline):
    """Long-only minimum variance on a trailing covariance window (PyPortfolioOpt).

    At bar ``t`` the sample covariance of daily returns of ``close[t - window : t + 1]`` is fed to
    ``pypfopt.EfficientFrontier(None, S, weight_bounds=(0, 1)).min_volatility()``. With fewer than
    ``min_history`` returns the weights are equal. Rebalanced every ``rebalance_every`` bars
    (weights drift in between).
    """

    name = "min_variance"
    defaults = {**Baseline.defaults, "window": 252, "min_history": 20, "rebalance_every": 1}

    def _solve(self, t: int) -> np.ndarray:
        cache = self._cache
        if t in cache:
            return cache[t]
        hist = self.history(t)
        window = int(self.config.get("window", 252))
        prices = hist[max(0, hist.shape[0] - window - 1):]
        n = hist.shape[1]
        rets = np.diff(np.log(prices), axis=0)
        if rets.shape[0] < int(self.config.get("min_history", 20)) or n == 1:
            w = np.full(n, 1.0 / n)
        else:
            from pypfopt import EfficientFrontier

            cov = np.cov(rets, rowvar=False) * 252
            cov = cov + np.eye(n) * 1e-10 * np.trace(cov) / n  # keep it positive definite
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    ef = EfficientFrontier(None, cov, weight_bounds=(0, 1))
                    raw = ef.min_volatility()
                w = np.clip(np.array([raw[i] for i in range(n)], dtype=np.float64), 0, None)
                w = w / w.sum()
            except Exception as exc:  # solver failure: name the bar
                raise AgentError(f"min_variance: optimiser failed at bar t={t}: {exc}") from exc
        cache[t] = w
        return w

    def target_weights(self, t: int) -> np.ndarray:
        k = int(self.config.get("rebalance_every", 1))
        if k < 1:
            raise ConfigError(f"min_variance: rebalance_every must be >= 1, got {k}")
        start = min(self._start, int(t))
        last = start + ((t - start) // k) * k
        w0 = self._solve(last)
        hist = self.history(t)
        grown = w0 * hist[-1] / hist[last]
        return grown / grown.sum()


class IndexBaseline(Baseline):
    """The market index (DJIA, CSI 300, BTC, ...) bought and held: an account-value path only.

    Give the index prices ``(T,)`` as ``index_prices=...`` (or ``prices=...``), or name a column
    of the bound close prices with ``ticker`` plus ``tickers`` (the column names).
    """

    name = "index"
    defaults = {**Baseline.defaults, "ticker": None, "tickers": None}

    def __init__(self, index_prices: np.ndarray | None = None, prices: np.ndarray | None = None,
                 **overrides: Any) -> None:
        super().__init__(prices=index_prices if index_prices is not None else prices, **overrides)

    def bind(self, prices: np.ndarray) -> "IndexBaseline":
        p = np.asarray(prices, dtype=np.float64)
        ticker, tickers = self.config.get("ticker"), self.config.get("tickers")
        if p.ndim == 2 and p.shape[1] > 1:
            if ticker is None or tickers is None or ticker not in list(tickers):
                raise ConfigError(f"index: prices have {p.shape[1]} columns; give ticker= and tickers= "
                                  f"to pick the index column (ticker={ticker!r})")
            p = p[:, list(tickers).index(ticker)]
        super().bind(p)
        return self

    def learn(self, env, total_timesteps: int = 0, seed: int = 0) -> "IndexBaseline":
        self._set_spaces(env)
        arrays = _arrays_of(env)
        if self._close is None and arrays is not None and self.config.get("ticker") in arrays.tickers:
            self.config["tickers"] = list(arrays.tickers)
            self.bind(arrays.close)
        self.seed = int(seed)
        return self

    def target_weights(self, t: int) -> np.ndarray:
        hist = self.history(t)
        return np.ones(hist.shape[1])

    def act(self, obs: np.ndarray, deterministic: bool = True, info: dict | None = None) -> np.ndarray:
        raise AgentError("index: the market index is not tradable in the env; use account_values()")

    def account_values(self, initial_cash: float = 1_000_000.0, start: int = 0,
                       cost_pct: float | None = None) -> np.ndarray:
        """``initial_cash * index[t] / index[start]`` for ``t >= start`` ``(T - start,)`` (no costs)."""
        p = self.history(self._close.shape[0] - 1)[:, 0]
        return float(initial_cash) * p[start:] / p[start]
