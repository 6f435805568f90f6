"""The market kernel: E environments x N assets stepped at once, on numpy or torch arrays.

State (backend arrays): ``cash (E,)``, ``holdings (E, N)``, ``value (E,)`` (at the last close),
``t (E,)`` (bar index of the current observation), ``t0 / t_end (E,)`` (episode start / last bar),
``costs_total (E,)``, and for T+1 ``locked (E, N)`` (shares bought on ``lock_day (E,)``).

One ``step(action)``:

1. fill bar ``f = t + 1`` (``fill="open"``: the next bar's open) or ``f = t`` (``fill="close"``:
   FinRL's same-bar close);
2. the action scheme turns actions into sell requests and buy requests (or target weights);
3. sells first (holdings / T+1 / lots / limit-down / suspension / margin rules), proceeds to cash;
4. buys in priority order (largest action first, FinRL's order), each limited by the cash left
   (FinRL's sequential rule, one vectorised step per priority rank over the cash-limited envs);
5. the day advances to ``t + 1``; value = cash + holdings . close[t + 1]; the reward scheme turns
   (previous value, new value) into the reward; the observation builder reads bars <= t + 1.

The code below is the only implementation: numpy and torch run the same lines through a tiny
backend object (``meta/backend.py``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from data_processors.arrays import MarketArrays

from .backend import Array, Backend, DType, get_backend
from .config import EnvConfig
from .market import MarketData, per_asset, prepare, resolve_calendar
from .schemes import REWARD_SCHEMES, ObservationBuilder, Slippage


MAX_SHARES = float(2**53)
"""Largest share request a step passes on (exact in float64); larger requests are cut to it."""


class MarketKernel:
    """E vectorised market environments on one :class:`MarketArrays`.

    Args:
        arrays: the market data (T bars, N assets, K features).
        cfg: a validated :class:`EnvConfig`.
        num_envs: E.
        backend / device: ``"numpy"`` (CPU) or ``"torch"`` (any device).

    Every array attribute is an array of :attr:`B` (a :class:`~meta.backend.Backend`: numpy
    arrays or torch tensors on one device); shapes use E envs, N assets, T bars, D observation
    width, A action width (N, or N + 1 with a cash weight).
    """

    # -- fixed for the kernel's life ----------------------------------------------------------------
    B: Backend                 # the array backend every step runs through
    cfg: EnvConfig
    arrays: MarketArrays
    md: MarketData             # the numpy tables of meta/market.py (before they move to B)
    E: int
    T: int
    N: int
    bars_per_year: float       # annualisation constant (env info / metadata)
    close: Array               # (T, N) valuation prices
    fill_px: Array             # (T, N) fill prices (``close`` itself under fill="close")
    volume: Array | None       # (T, N)
    buy_ok: Array | None       # (T, N) bool: a buy can fill at bar t
    sell_ok: Array | None      # (T, N) bool: a sell can fill at bar t
    quirk_lock: Array | None   # (T, N) bool: FinRL's feature lock (parity mode)
    turb_hit: Array | None     # (T,) bool: turbulence stop on at bar t
    day_id: Array | None       # (T,) int: trading day of bar t (T+1 locks)
    stamp: Array | None        # (T, 1) sell-side stamp duty rate
    rb: float | Array          # buy cost rate: a float or (N,)
    rs: float | Array          # sell cost rate: a float or (N,)
    rowoff: Array              # (E, 1) int flat offsets of the rows of an (E, N) array
    init_h: Array              # (N,) initial holdings
    # -- state (rebound, never written in place: info dicts of earlier steps keep references) ------
    t: Array                   # (E,) int bar of the current observation
    t0: Array                  # (E,) int episode start bar
    t_end: Array               # (E,) int last bar of the episode window
    cash: Array                # (E,)
    h: Array                   # (E, N) holdings
    value: Array               # (E,) portfolio value at the last close
    costs_total: Array         # (E,)
    locked: Array | None       # (E, N) shares bought on lock_day (T+1)
    lock_day: Array | None     # (E,) int

    def __init__(self, arrays: MarketArrays, cfg: EnvConfig, num_envs: int = 1,
                 backend: str = "numpy", device: str = "cpu") -> None:
        cfg = resolve_calendar(cfg, arrays)  # "auto": the data's calendar picks the env's
        self.cfg = cfg
        self.arrays = arrays
        self.B = B = get_backend(backend, cfg.dtype, device)
        self.E = E = int(num_envs)
        md: MarketData = prepare(arrays, cfg)
        self.md = md
        self.T, self.N = T, N = md.T, md.N
        self.times = arrays.times
        self.bars_per_year = md.bars_per_year
        f = B.float

        def put(a: np.ndarray | None, dtype: DType | None = None) -> Array | None:
            """A numpy table of ``md`` as a contiguous backend array (None stays None)."""
            return None if a is None else B.asarray(np.ascontiguousarray(a), dtype)

        self.close = put(md.close, f)
        self.fill_px = self.close if cfg.fill == "close" else put(md.fill_px, f)
        self.volume = put(md.volume, f)
        self.buy_ok = put(md.buy_ok)
        self.sell_ok = put(md.sell_ok)
        self.quirk_lock = put(md.quirk_lock)
        self.turb_hit = put(md.turb_hit)
        self.turb_hit0 = bool(cfg.turbulence_threshold is not None and 0.0 >= cfg.turbulence_threshold)
        self.day_id = put(md.day_id)
        self.fill_offset = 1 if cfg.fill == "open" else 0

        # costs: rates are floats or (N,) arrays (broadcast over E)
        if cfg.fee_bps is not None:
            rb = rs = float(cfg.fee_bps) / 1e4
        else:
            rb = per_asset(cfg.buy_cost_pct, N, "buy_cost_pct")
            rs = per_asset(cfg.sell_cost_pct, N, "sell_cost_pct")
        self.rb = rb if isinstance(rb, float) else B.asarray(rb, f)
        self.rs = rs if isinstance(rs, float) else B.asarray(rs, f)
        self.stamp = None if md.stamp is None else B.asarray(md.stamp[:, None], f)  # (T, 1)
        self.min_fee = float(cfg.min_fee)
        self.lot = float(cfg.lot_size)
        self.sell_lot = float(cfg.sell_lot_size if cfg.sell_lot_size is not None else
                              (cfg.lot_size if cfg.sizing == "shares" else 0.0))
        self.hmax = cfg.hmax if float(cfg.hmax) != int(cfg.hmax) else int(cfg.hmax)
        self.stable_sort = cfg.sort_kind == "stable"
        # portfolio fixed point: error shrinks by the cost rate per iteration; stop below 1e-13
        top = float(np.max(np.concatenate([np.ravel(rb), np.ravel(rs)]))) + cfg.slippage_bps / 1e4 \
            + (0.001 if cfg.stamp_duty is not None else 0.0)
        self.fp_iters = 1 if top <= 0 else int(min(40, max(2, np.ceil(-13.0 / np.log10(min(top, 0.5))))))
        # flat proportional costs: step sums instead of per-asset fee arrays (same arithmetic)
        self.scalar_rates = (isinstance(self.rb, float) and isinstance(self.rs, float)
                             and self.min_fee == 0 and self.stamp is None)

        self.obs_builder = ObservationBuilder(arrays, cfg, B)
        self.obs_dim = self.obs_builder.dim
        self.reward_scheme = REWARD_SCHEMES[cfg.reward](cfg, B, E)
        self.slippage = Slippage(cfg, B)
        self.action_dim = N + (1 if (cfg.sizing == "weights" and cfg.include_cash) else 0)

        self.rowoff = B.arange(E)[:, None] * N          # (E, 1) flat offsets of the rows
        init_h = np.zeros(N) if cfg.initial_holdings is None else np.asarray(cfg.initial_holdings, np.float64)
        if init_h.shape != (N,):
            from finmeta.errors import ConfigError
            raise ConfigError(f"EnvConfig.initial_holdings: expected {N} values, got shape {init_h.shape}")
        self.init_h = B.asarray(init_h, f)
        # state
        self.t = B.zeros(E, B.int)
        self.t0 = B.zeros(E, B.int)
        self.t_end = B.full(E, T - 1, B.int)
        self.cash = B.full(E, float(cfg.initial_cash))
        self.h = B.zeros((E, N)) + self.init_h
        self.value = B.zeros(E)
        self.costs_total = B.zeros(E)
        self.locked = B.zeros((E, N)) if cfg.t_plus_1 else None
        self.lock_day = B.full(E, -1, B.int) if cfg.t_plus_1 else None

    # ------------------------------------------------------------------------------------------
    def reset(self, idx: Any = None, start: Any = None, end: Any = None, cash: Any = None,
              holdings: Any = None) -> Array:
        """Reset envs ``idx`` (int array; None = all) to bars ``start``..``end`` (int arrays).

        ``cash`` (len(idx),) / ``holdings`` (len(idx), N): continue from a previous state (FinRL's
        ``initial=False``); default: ``initial_cash`` and ``initial_holdings``.
        Returns the observations of those envs, (len(idx), D).
        """
        B = self.B
        if idx is None:
            idx = B.arange(self.E)
        else:
            idx = B.asarray(idx, B.int)
        n = int(idx.shape[0])
        start = B.zeros(n, B.int) if start is None else B.asarray(start, B.int)
        end = B.full(n, self.T - 1, B.int) if end is None else B.asarray(end, B.int)
        # rebind (copy) before writing: info dicts of earlier steps hold references to the state
        self.t, self.t0, self.t_end = B.copy(self.t), B.copy(self.t0), B.copy(self.t_end)
        self.cash, self.h, self.value = B.copy(self.cash), B.copy(self.h), B.copy(self.value)
        self.costs_total = B.copy(self.costs_total)
        self.t[idx] = start
        self.t0[idx] = start
        self.t_end[idx] = end
        self.cash[idx] = float(self.cfg.initial_cash) if cash is None else B.asarray(cash, B.float)
        self.h[idx] = (B.zeros((n, self.N)) + self.init_h) if holdings is None else B.asarray(holdings, B.float)
        self.costs_total[idx] = 0.0
        if self.locked is not None:
            self.locked[idx] = 0.0
            self.lock_day[idx] = -1
        pc = self.close[start]
        v = self.cash[idx] + (self.h[idx] * pc).sum(1)
        self.value[idx] = v
        self.reward_scheme.reset(idx, v)
        return self.obs_builder(start, self.cash[idx], self.h[idx], v, pc)

    def observe(self, idx: Any = None) -> Array:
        """Current observations (E, D) (or of envs ``idx``)."""
        if idx is None:
            t = self.t
            return self.obs_builder(t, self.cash, self.h, self.value, self.close[t])
        t = self.t[idx]
        return self.obs_builder(t, self.cash[idx], self.h[idx], self.value[idx], self.close[t])

    # ------------------------------------------------------------------------------------------
    def _buy_cost(self, v: Array, q: Array, rb: float | Array) -> Array:
        """Total cash out (price + fees) for buy value v (E, N) of quantity q."""
        if self.min_fee > 0:
            return v + self.B.where(q > 0, self.B.maximum(v * rb, self.min_fee), 0.0)
        return v * (1.0 + rb)

    def _affordable(self, R: Array, bp: Array, rb: float | Array, lot: float) -> Array:
        """Largest buy quantity (multiple of ``lot``; 0 = continuous) whose total cost <= R."""
        B = self.B
        u = bp * (1.0 + rb)
        if lot > 0:
            q = B.floordiv(R, u * lot) * lot if lot != 1 else B.floordiv(R, u)
            if self.min_fee > 0:
                q = B.minimum(q, B.floordiv(R - self.min_fee, bp * lot) * lot)
        else:
            q = R / u
            if self.min_fee > 0:
                q = B.minimum(q, (R - self.min_fee) / bp)
        return B.maximum(q, 0.0)

    def _greedy_buys(self, want: Array, bp: Array, full: Array, prio: Array, cash: Array,
                     spend: Array) -> tuple[Array, Array]:
        """Fill buy requests in descending ``prio`` order, each limited by the cash left (FinRL).

        FinRL buys asset after asset: ``n = min(cash // (p (1 + c)), request)``, then
        ``cash -= p n (1 + c)``. Here: only the rows whose requests exceed their cash (the others
        fill in full), sorted by priority once, then one vectorised step per priority rank (over
        all those rows at once), up to the largest number of buy requests in a row. The arithmetic
        is FinRL's, in FinRL's order. E == 1 on numpy runs the same rule as a plain loop
        (:meth:`_greedy_one`).

        Args: want (E, N) >= 0 requested quantities; bp (E, N) buy prices; full (E, N) total cost
        of each request; prio (E, N) priority keys; cash (E,); spend (E,) total cost of all
        requests. Returns (filled (E, N), spent (E,)).
        """
        B, rb = self.B, self.rb
        if want.shape[0] == 1 and B.name == "numpy":
            return self._greedy_one(want, bp, prio, cash)
        # only the rows whose requests exceed their cash need rationing (the others fill in full)
        rows_b = B.nonzero(spend > cash)
        E, N = rows_b.shape[0], want.shape[1]
        order = B.flip(B.argsort(prio[rows_b], self.stable_sort))
        # flat indices into the (E_all, N) arrays, rank-major: rank j of every rationed row is one
        # contiguous vector of the (N, E) tables
        flat = B.tcopy(order + rows_b[:, None] * N).reshape(-1)
        wsT = want.reshape(-1)[flat].reshape(N, E)
        psT = bp.reshape(-1)[flat].reshape(N, E)
        rbT = None if isinstance(rb, float) else B.tcopy(rb[order])
        cash = cash[rows_b]
        ranks = B.to_numpy(B.nonzero(B.rsum(wsT > 0) > 0)).tolist()  # ranks with a request somewhere
        gotT, R = self._ration(wsT, psT, rbT, cash, ranks, guard=False)
        bad = R < 0  # a last-ulp overshoot (cost rounding): redo those rows with the guarded rule
        if B.any(bad):
            rb_rows = B.nonzero(bad)
            g2, R2 = self._ration(wsT[:, rb_rows], psT[:, rb_rows], None if rbT is None else rbT[:, rb_rows],
                                  cash[rb_rows], ranks, guard=True)
            gotT[:, rb_rows] = g2
            R[rb_rows] = R2
        filled, spent = B.copy(want), B.copy(spend)
        filled.reshape(-1)[flat] = gotT.reshape(-1)
        spent[rows_b] = cash - R
        return filled, spent

    def _ration(self, wsT: Array, psT: Array, rbT: Array | None, cash: Array, ranks: list[int],
                guard: bool) -> tuple[Array, Array]:
        """The rank loop of :meth:`_greedy_buys` on (N, E') rank-major tables -> (filled (N, E'), cash left).

        FinRL's case (lot 1, no minimum fee): ``n = min(R // u, request)``, cost ``p n (1 + c)``;
        ``R // u`` is computed as ``floor(R / u)``, exact unless ``R`` lies within an ulp of a
        multiple of ``u`` (then numpy's slower exact floor division is used for those rows).
        ``guard=False`` skips the per-rank "cost <= cash" check (the caller re-runs the few rows that
        end below 0 with ``guard=True``).
        """
        B, lot, rb = self.B, self.lot, self.rb
        N, E = wsT.shape
        R = cash
        gotT = B.zeros((N, E))
        finrl = lot == 1 and self.min_fee == 0
        if finrl:
            g = 1.0 + (rb if rbT is None else rbT)
            uT = psT * g
        for j in ranks:
            w, p = wsT[j], psT[j]
            r = rb if rbT is None else rbT[j]
            if finrl:
                u = uT[j]
                n = B.floor(R / u)  # == R // u except within an ulp of a multiple of u: redo those
                near = R - n * u <= R * 2.3e-16
                if B.any(near):
                    n = B.where(near, B.floordiv(R, u), n)  # exact (and 8x slower) floor division
                n = B.maximum(B.minimum(n, w), 0.0)
                cost = p * n * (g if rbT is None else g[j])
            else:
                n = B.minimum(self._affordable(R, p, r, lot), w)
                cost = self._buy_cost(p * n, n, r)
            if guard:
                over = cost > R  # never spend more than the cash left
                if B.any(over):
                    n = B.where(over, B.maximum(n - lot, 0.0) if lot > 0 else n * (1.0 - 1e-12), n)
                    cost = self._buy_cost(p * n, n, r)
            gotT[j] = n
            R = R - cost
        return gotT, R

    def _greedy_one(self, want: Array, bp: Array, prio: Array, cash: Array) -> tuple[Array, Array]:
        """E == 1 on numpy: the same rule as one plain loop over the buy requests.

        A single env pays ~0.5 us per numpy call on (1, N) arrays, so the rank loop of
        :meth:`_greedy_buys` costs more than walking the few buy requests with Python floats
        (IEEE doubles: the same arithmetic as FinRL's loop, cash subtracted one order at a time).
        Tested against the vectorised rank loop and a FinRL-rule reference.
        """
        B = self.B
        N = want.shape[1]
        order = B.flip(B.argsort(prio, self.stable_sort))[0].tolist()
        w, p = want[0].tolist(), bp[0].tolist()
        rb = self.rb
        rates = [rb] * N if isinstance(rb, float) else rb.tolist()
        lot, m = self.lot, self.min_fee
        c0 = float(cash[0])
        R = c0
        got = [0.0] * N
        for j in order:
            q = w[j]
            if q <= 0:
                continue
            r, pj = rates[j], p[j]
            u = pj * (1.0 + r)
            if lot > 0:
                a = R // u if lot == 1 else (R // (u * lot)) * lot
                if m > 0:
                    a = min(a, ((R - m) // (pj * lot)) * lot)
            else:
                a = R / u
                if m > 0:
                    a = min(a, (R - m) / pj)
            n = min(a, q)
            if n <= 0:
                continue
            v = pj * n
            cost = v * (1.0 + r) if m == 0 else v + max(v * r, m)
            if cost > R:  # rounding guard: never spend more than the cash left
                n = max(n - lot, 0.0) if lot > 0 else n * (1.0 - 1e-12)
                v = pj * n
                cost = 0.0 if n <= 0 else (v * (1.0 + r) if m == 0 else v + max(v * r, m))
            got[j] = n
            R -= cost
        return B.asarray([got], B.float), B.asarray([c0 - R], B.float)

    def _lot_down(self, q: Array, lot: float) -> Array:
        return self.B.floor(q / lot) * lot if lot > 0 else q

    # ------------------------------------------------------------------------------------------
    def step(self, action: Array) -> tuple[Array, Array, dict[str, Array]]:
        """Advance every env one bar.

        Args:
            action: (E, A) actions (backend array; float32 like a policy's output for FinRL parity).
        Returns:
            obs (E, D) float32, reward (E,), info dict of backend arrays (E,) / (E, N) with
            ``portfolio_value cash holdings weights trades costs costs_total turnover t fill_t``.
            Episode flags: :meth:`flags`.
        """
        B, cfg = self.B, self.cfg
        rows = B.rows
        t = self.t
        f = t + self.fill_offset if self.fill_offset else t
        px = rows(self.fill_px, f)
        h = self.h
        cash = self.cash

        # tradability of the fill bar ---------------------------------------------------------
        buy_ok = None if self.buy_ok is None else rows(self.buy_ok, f)
        sell_ok = None if self.sell_ok is None else rows(self.sell_ok, f)
        hit = None
        if self.turb_hit is not None:
            hit = rows(self.turb_hit, t)
            if cfg.quirks:  # FinRL resets its turbulence to 0: no liquidation on an episode's first step
                first = t == self.t0
                hit = (hit & ~first) | (first & self.turb_hit0)
        if self.quirk_lock is not None:  # FinRL: feature_1 == 1 locks the asset (not on turbulence)
            unlocked = ~rows(self.quirk_lock, f)
            if hit is not None:
                unlocked = unlocked | hit[:, None]
            sell_ok = unlocked if sell_ok is None else (sell_ok & unlocked)
            buy_ok = unlocked if buy_ok is None else (buy_ok & unlocked)

        day = None
        if self.locked is not None:  # T+1: locks expire when the fill bar is on a new trading day
            day = rows(self.day_id, f)
            self.locked = self.locked * (day == self.lock_day)[:, None]
            long_sellable = B.maximum(h - self.locked, 0.0)
        elif cfg.allow_short:
            long_sellable = B.maximum(h, 0.0)
        else:
            long_sellable = h  # long-only: holdings are >= 0

        if cfg.sizing == "weights":
            return self._finish(*self._rebalance(action, px, buy_ok, sell_ok, hit, f), f)

        # action scheme: requests ----------------------------------------------------------------
        if cfg.sizing == "shares":
            # FinRL: (a * hmax).astype(int), computed in the action's dtype; trunc == astype(int)
            q = B.astype(B.trunc(action * self.hmax), B.float)
            # a huge finite action overflows a * hmax to +-inf (float32); requests beyond 2**53 shares
            # are cut by cash / positions anyway, so bound them: inf * 0 would poison the margin rule
            q = B.minimum(B.maximum(q, -MAX_SHARES), MAX_SHARES)
            sell_req = B.maximum(-q, 0.0)
            buy_req = B.maximum(q, 0.0)
        else:  # fraction of the position (sells) / of the cash after sells (buys)
            a = B.astype(action, B.float)
            sell_req = B.maximum(-a, 0.0) * long_sellable
            buy_frac = B.maximum(a, 0.0)
            buy_req = None
        if hit is not None:
            sell_req = B.where(hit[:, None], long_sellable, sell_req)

        # sells --------------------------------------------------------------------------------
        sell_n = B.minimum(sell_req, long_sellable)
        if self.sell_lot > 0 and self.sell_lot != 1:  # lots, or the whole (odd-lot) position
            sell_n = B.where(sell_n >= long_sellable, long_sellable, self._lot_down(sell_n, self.sell_lot))
        if cfg.allow_short:  # margin rule: short value after the trade <= equity / margin_requirement
            extra = sell_req - sell_n
            if sell_ok is not None:
                extra = B.where(sell_ok, extra, 0.0)
            equity = cash + B.rsum(h * px)
            short_now = B.rsum(B.maximum(-h, 0.0) * px)
            room = B.maximum(equity / cfg.margin_requirement - short_now, 0.0)
            want_val = B.rsum(extra * px)
            scale = B.where(want_val > room, room / B.maximum(want_val, 1e-300), 1.0)
            sell_n = sell_n + B.floor(extra * scale[:, None])
        vol = None
        if self.volume is not None:
            vol = rows(self.volume, f)
            if cfg.max_participation is not None:
                sell_n = B.minimum(sell_n, self._lot_down(cfg.max_participation * vol, self.sell_lot))
        if sell_ok is not None:
            sell_n = B.where(sell_ok, sell_n, 0.0)
        if self.slippage.kind == "none":
            bp = sp = px
        elif self.slippage.kind == "volume" and buy_req is None:  # impact on the requested quantity
            q_est = buy_frac * (cash / B.maximum(B.rsum(buy_frac), 1.0))[:, None] / px
            bp, sp = self.slippage.prices(px, q_est, sell_n, vol)
        else:
            bp, sp = self.slippage.prices(px, buy_req, sell_n, vol)

        sv = sp * sell_n
        if self.min_fee > 0:
            fee_s = B.where(sell_n > 0, B.maximum(sv * self.rs, self.min_fee), 0.0)
            if self.stamp is not None:
                fee_s = fee_s + sv * rows(self.stamp, f)
            keep = sv >= fee_s  # a sell whose value does not cover its fees is not executed
            sell_n = B.where(keep, sell_n, 0.0)
            sv = B.where(keep, sv, 0.0)
            fee_s = B.where(keep, fee_s, 0.0)
            cash = cash + B.rsum(sv - fee_s)
        elif self.scalar_rates:  # the same sums, fewer (E, N) passes
            sv_sum = B.rsum(sv)
            cash = cash + sv_sum * (1.0 - self.rs)   # FinRL: price * n * (1 - sell_cost_pct)
        else:
            rs = self.rs if self.stamp is None else self.rs + rows(self.stamp, f)
            cash = cash + B.rsum(sv * (1.0 - rs))
            fee_s = sv * rs
        h = h - sell_n

        # buys ---------------------------------------------------------------------------------
        if buy_req is None:
            budget = buy_frac * (cash * (1.0 - 1e-9) / B.maximum(B.rsum(buy_frac), 1.0))[:, None]
            buy_req = self._affordable(budget, bp, self.rb, self.lot)
        elif self.lot > 1:
            buy_req = self._lot_down(buy_req, self.lot)
        if hit is not None:
            buy_req = B.where(hit[:, None], 0.0, buy_req)
        if buy_ok is not None:
            buy_req = B.where(buy_ok, buy_req, 0.0)
        if vol is not None and cfg.max_participation is not None:
            buy_req = B.minimum(buy_req, self._lot_down(cfg.max_participation * vol, self.lot))
        bv = bp * buy_req
        if self.scalar_rates:
            bv_sum = B.rsum(bv)
            spend = bv_sum * (1.0 + self.rb)
            full = None
        else:
            full = self._buy_cost(bv, buy_req, self.rb)
            spend = B.rsum(full)
        if cfg.sizing == "shares" and B.any(spend > cash):  # cash-limited: FinRL's greedy order
            if full is None:
                full = bv * (1.0 + self.rb)
            # priority: FinRL argsorts the int64 share requests (same ties as FinRL's sort)
            buy_n, spend = self._greedy_buys(buy_req, bp, full, B.astype(q, B.int), cash, spend)
            bv = bp * buy_n
            if self.scalar_rates:
                bv_sum = B.rsum(bv)
        else:  # every request fits (fraction budgets always fit)
            buy_n = buy_req
        cash = cash - spend
        h = h + buy_n
        if day is not None:
            self.locked = self.locked + buy_n
            self.lock_day = day
        self.h = h
        self.cash = cash
        if self.scalar_rates:
            return self._finish(buy_n - sell_n, sv_sum * self.rs + bv_sum * self.rb, sv_sum + bv_sum, f)
        if self.min_fee > 0:
            fee = fee_s + B.where(buy_n > 0, B.maximum(bv * self.rb, self.min_fee), 0.0)
        else:
            fee = fee_s + bv * self.rb
        return self._finish(buy_n - sell_n, B.rsum(fee), B.rsum(sv + bv), f)

    # ------------------------------------------------------------------------------------------
    def _weights(self, action: Array) -> tuple[Array, Array]:
        """Action -> (asset weights (E, N), cash weight (E,)) on the simplex."""
        B, cfg, N = self.B, self.cfg, self.N
        a = B.astype(action, B.float)
        if cfg.action_scheme == "softmax":
            w = B.exp_softmax(a / cfg.softmax_temperature)
        else:
            w = B.maximum(a, 0.0)
            s = w.sum(1)
            w = w / B.where(s > 0, s, 1.0)[:, None]
        if cfg.include_cash:
            return w[:, :N], w[:, N]
        return w, B.zeros(w.shape[0])

    def _rebalance(self, action: Array, px: Array, buy_ok: Array | None, sell_ok: Array | None,
                   hit: Array | None, f: Array) -> tuple[Array, Array, Array]:
        """Portfolio family: trade to target weights at the fill price, costs on turnover.

        The post-cost value V' solves V' = V - cost(V') (fixed point, contraction factor = cost
        rate); a 1e-9 V headroom keeps cash >= 0 exactly. Assets that cannot trade at the fill
        bar keep their holdings; the other weights are renormalised over the rest.
        """
        B = self.B
        w, wc = self._weights(action)
        h, cash = self.h, self.cash
        if hit is not None:
            w = B.where(hit[:, None], 0.0, w)
            wc = B.where(hit, 1.0, wc)
        free = None
        if buy_ok is not None:
            free = buy_ok & sell_ok
        cur = h * px
        V = cash + B.rsum(cur)
        if free is not None:
            fixed = B.rsum(B.where(free, 0.0, cur))
            w = B.where(free, w, 0.0)
        else:
            fixed = B.zeros(V.shape[0])
        s = B.rsum(w) + wc
        valid = s > 0
        sden = B.where(valid, s, 1.0)
        w = w / sden[:, None]
        rb = self.rb + self.slippage.bps
        rs = self.rs + self.slippage.bps
        if self.stamp is not None:
            rs = rs + B.rows(self.stamp, f)
        Vp = V
        for _ in range(self.fp_iters):
            d = w * (Vp - fixed)[:, None] - cur
            if free is not None:
                d = B.where(free, d, 0.0)
            Vp = V - B.rsum(B.maximum(d, 0.0) * rb + B.maximum(-d, 0.0) * rs)
        Vp = Vp - 1e-9 * B.abs(V)
        d = w * (Vp - fixed)[:, None] - cur
        keep = valid[:, None] if free is None else (valid[:, None] & free)
        d = B.where(keep, d, 0.0)
        cost_vec = B.maximum(d, 0.0) * rb + B.maximum(-d, 0.0) * rs
        costs = B.rsum(cost_vec)
        trades = d / px
        self.h = B.where(keep, B.maximum(h + trades, 0.0), h)
        self.cash = cash - B.rsum(d) - costs
        traded = B.rsum(B.abs(d))
        return trades, costs, traded

    def _finish(self, trades: Array, costs: Array, traded: Array, f: Array) -> tuple[Array, Array, dict[str, Array]]:
        """Advance the day, value the books at the new close, reward, observation, info."""
        B = self.B
        tn = f if self.fill_offset else self.t + 1
        pn = B.rows(self.close, tn)
        h, cash = self.h, self.cash
        hv = h * pn
        value = cash + B.rsum(hv)
        v_prev = self.value
        reward = self.reward_scheme(v_prev, value)
        self.value = value
        self.t = tn
        self.costs_total = ct = self.costs_total + costs
        obs = self.obs_builder(tn, cash, h, value, pn)
        info = {
            "portfolio_value": value,
            "cash": cash,
            "holdings": h,
            "weights": hv / value[:, None],
            "trades": trades,
            "costs": costs,
            "costs_total": ct,
            "turnover": traded / v_prev,
            "t": tn,
            "fill_t": f,
        }
        return obs, reward, info

    def flags(self) -> tuple[Array, Array]:
        """(terminated, truncated) (E,) bool after a step: the data's last bar (or ruin: value <= 0)
        terminates; the episode window's last bar (``episode_length``) truncates."""
        term = (self.t >= self.T - 1) | (self.value <= 0)
        return term, (self.t >= self.t_end) & ~term

    # ------------------------------------------------------------------------------------------
    def metadata(self) -> dict[str, Any]:
        return {
            "family": self.cfg.family,
            "fill": self.cfg.fill_label,
            "bars_per_year": self.bars_per_year,
            "bar_seconds": self.md.bar_seconds,
            "calendar": self.cfg.calendar,
            "tickers": tuple(self.arrays.tickers),
            "feature_names": tuple(self.arrays.feature_names),
            "backend": self.B.name,
            "obs_scaling": dict(self.obs_builder.scaling),
        }
