"""The trade loop: bar by bar, the backtest's observation, agent and order rules, against a broker.

Per bar ``i`` (one SQLite transaction, :class:`trade.state.TradeState`):

1. the paper broker's clock moves to ``i`` (it books the previous bar's orders at their fill bar);
2. **reconcile**: every open order of the state is looked up at the broker (status, fills), and
   cash and positions are read from the broker;
3. **value** at bar ``i``'s close, the kernel's formula (``cash + sum(holdings * close)``);
4. **bar checks** (stale / missing data, market closed: the bar is skipped) and the **daily loss
   limit** (trading stops), :mod:`trade.risk`;
5. **observation**: the env of the bar's window is built exactly as the backtest's trade stage builds
   it (:meth:`benchmarks.loop.WalkForward._stage_env`: bars from the window's training start, the
   window's turbulence threshold, observation scaling fitted on the training range) but on the bars
   up to ``i`` only, plus the fill bar (used by the kernel's order sizing, never by the observation);
   its kernel is set to the reconciled book and observes bar ``i``;
6. **action**: the window's saved model (deterministic or sampled as in the backtest, the sampled
   stream seeded by the window's trade seed and carried across bars and restarts);
7. **orders**: a dry run of the kernel's step from the reconciled book gives the share deltas the
   family's rules allow (lots, T+1, price limits, minimum fee, cash-limited buys); they become sell
   then buy orders with deterministic client order ids (:mod:`trade.ids`);
8. **order risk checks**, then **submit** (an id the broker already knows is not sent again);
9. the book, orders and the bar's row are committed together; one status line goes to stderr.

Parity: a replay of a run's trade period with the paper broker takes the same actions and ends each
bar at the same value as the backtest's trade stage (``tests/test_trade.py``). Crash safety: see
docs/trade.md.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks import rundir
from data_processors.arrays import MarketArrays
from finmeta.errors import ConfigError, FinMetaError

from . import faults
from .broker import Broker, OrderRequest
from .feed import LiveFeed, ReplayFeed
from .ids import client_order_id
from .risk import (
    RiskLimits,
    check_bar,
    check_daily_loss,
    check_orders,
    sessions_between,
)
from .state import OPEN_STATUSES, StateError, TradeState

#: ``TradePlan.last_bar`` of live trading (no last bar)
LIVE_LAST = 2**62


class TradingHalted(FinMetaError):
    """A risk check stopped trading (the reason is stored in the trade folder)."""


# ------------------------------------------------------------------------------------------------
# what trades: a run directory's models per window, or one model file with its config
# ------------------------------------------------------------------------------------------------
@dataclass
class TradePlan:
    config: dict
    arrays: MarketArrays
    wf: Any  # benchmarks.loop.WalkForward
    agent: str
    seed: int
    models: dict[int, Path]  # window index -> saved model
    model_sha: dict[int, str]
    deterministic: dict[int, bool]  # window index -> deterministic actions (else sampled)
    first_bar: int
    last_bar: int  # inclusive: the last bar whose value is recorded
    run_dir: Path | None = None
    model_file: Path | None = None
    replay: str | None = None
    config_hash: str = ""
    windows: list = field(default_factory=list)

    @property
    def tickers(self) -> list[str]:
        return list(self.arrays.tickers)

    def window_of(self, bar: int):
        """The window whose model decides at ``bar`` (window k > 0 decides from bar ``lo - 1``, the
        previous window's last bar, as in the backtest)."""
        chosen = self.windows[0]
        for w in self.windows:
            if bar >= self.episode_start(w):
                chosen = w
        return chosen

    @staticmethod
    def episode_start(w) -> int:
        """The bar the backtest's trade episode of window ``w`` starts at (its first trade bar for
        window 0, the previous window's last bar after it)."""
        return w.trade[0] - (1 if w.index > 0 else 0)


def _run_agents(run_dir: Path, manifest: dict) -> list[tuple[str, int]]:
    """(agent, seed) pairs a run directory can trade: those with saved models, and the ensemble's
    chains (each window trades the member its validation chose, from the manifest)."""
    out = []
    for d in sorted((run_dir / rundir.MODELS).glob("*_seed*")):
        if d.is_dir() and any(d.glob("window_*.zip")):
            name, _, s = d.name.rpartition("_seed")
            if s.isdigit():
                out.append((name, int(s)))
    for key in sorted((manifest.get("windows") or {})):
        name, _, s = key.rpartition("_seed")
        if name == "ensemble" and s.isdigit():
            out.append((name, int(s)))
    return out


def _date_index(times: pd.DatetimeIndex, when, what: str, lo: int, hi: int) -> int:
    from finmeta.timeparse import parse_date

    ts = pd.Timestamp(parse_date(str(when), what))
    if times.tz is not None and ts.tz is None:
        ts = ts.tz_localize(times.tz)
    i = int(times.searchsorted(ts, side="left"))
    if not lo <= i <= hi:
        raise ConfigError(f"{what} {when}: outside the trade period {times[lo].date()} .. {times[hi - 1].date()}")
    return i


def plan_trade(target: str | Path, *, config: str | dict | None = None, agent: str | None = None,
               seed: int | None = None, replay: str | None = "run", start=None, end=None,
               arrays: MarketArrays | None = None) -> TradePlan:
    """Resolve what trades, on which bars, before any heavy work where possible.

    ``target``: a run directory (``finmeta bench``/``backtest``: each window trades its own saved
    model) or a model file (``finmeta train``; needs ``config``; every window trades it).
    ``replay``: ``"run"`` (the run's own data), a stored dataset name, or None (live).
    ``arrays``: use these instead of building them (tests).
    """
    from benchmarks.dataset import build_arrays
    from benchmarks.loop import (
        CheckpointRejected,
        WalkForward,
        _check_model,
        learns,
    )
    from benchmarks.spec import fingerprint_body, load_config

    p = Path(target)
    if not p.exists():
        raise ConfigError(f"{target}: no such run directory or model file")
    manifest: dict = {}
    model_file = None
    run_dir = None
    if p.is_dir():
        if not (p / rundir.MANIFEST).is_file():
            raise ConfigError(f"{p}: not a FinMeta run directory (no {rundir.MANIFEST}); pass a run directory of "
                              f"`finmeta bench` or a model file of `finmeta train` with --config")
        if config is not None:
            raise ConfigError(f"{p}: a run directory trades with its own config; drop --config")
        manifest = rundir.read_manifest(p)
        cfg = dict(manifest.get("config") or {})
        run_dir = p
        held = _run_agents(p, manifest)
        if agent is not None:
            held = [h for h in held if h[0] == agent]
        if seed is not None:
            held = [h for h in held if h[1] == int(seed)]
        if not held:
            have = ", ".join(f"{a} seed {s}" for a, s in _run_agents(p, manifest)) or "none"
            raise ConfigError(f"{p}: no saved models for agent {agent or 'any'} seed "
                              f"{'any' if seed is None else seed} (models held: {have}); finmeta trade trades "
                              f"learned agents' saved models")
        if len(held) > 1:
            raise ConfigError(f"{p}: holds models of {', '.join(f'{a} seed {s}' for a, s in held)}; choose one with "
                              f"--agent and --seed")
        agent, seed = held[0]
    else:
        from agents.base import read_manifest

        if config is None:
            raise ConfigError(f"{p}: a single model file trades with the config it was trained for: pass --config")
        cfg = load_config(config) if not isinstance(config, dict) else dict(config)
        model_file = p
        held_name = read_manifest(p).get("name")
        if agent is not None and agent != held_name:
            raise ConfigError(f"{p} holds a {held_name!r} agent, not {agent!r}")
        agent = str(held_name)
        seed = int(seed or 0)
    if agent == "ensemble" and model_file is not None:
        raise ConfigError(f"{p}: the ensemble trades its members' models per window: pass its run directory")
    if not learns(agent):
        raise ConfigError(f"agent {agent!r}: finmeta trade trades a learned agent's saved models (a2c, ppo, ddpg, "
                          f"td3, sac, moe, the ensemble's members)")

    if arrays is None:
        if replay in (None, "run"):
            arrays, prov = build_arrays(cfg)
        else:
            from data_processors.store import dataset_info

            dataset_info(replay, verify=False)  # an unknown dataset fails here, with its one line
            data = {k: v for k, v in (cfg.get("data") or {}).items() if k in ("clean", "calendar", "start", "end")}
            arrays, prov = build_arrays({**cfg, "data": {**data, "dataset": replay}})
        want = manifest.get("dataset_hash")
        if replay == "run" and want and prov["dataset_hash"] != want:
            raise ConfigError(f"{run_dir}: its data changed since the run (dataset hash {prov['dataset_hash'][:12]} "
                              f"!= {want[:12]}): the models would see other observations")
    wf = WalkForward(arrays, cfg, run_dir or p.parent, models={agent: p} if model_file else None)
    windows = wf.windows
    times = pd.DatetimeIndex(arrays.times)
    lo0, hi = windows[0].trade[0], windows[-1].trade[1]
    if replay is None:  # live: the latest window's model trades every new bar
        if start is not None or end is not None:
            raise ConfigError("--start/--end choose a replay's bars; live trading trades each new bar")
        first, last = len(times) - 1, LIVE_LAST
        used = [windows[-1]]
    else:
        first = lo0 if start is None else _date_index(times, start, "--start", lo0, hi - 1)
        stop = hi if end is None else _date_index(times, end, "--end", lo0 + 1, hi)
        if stop - first < 2:
            raise ConfigError(f"--start {start} / --end {end}: fewer than two bars to trade")
        last = stop - 1
        used = [w for w in windows if w.trade[1] > first and w.trade[0] - 1 <= last]

    models: dict[int, Path] = {}
    shas: dict[int, str] = {}
    from data_processors.store import file_sha256

    if model_file is not None:
        sha = file_sha256(model_file)
        for w in used:
            models[w.index], shas[w.index] = model_file, sha
    else:
        fp = rundir.read_fingerprint(run_dir)
        if fp is None:
            raise ConfigError(f"{run_dir}: no fingerprint.json; the models cannot be tied to the run")
        chosen = {}
        if agent == "ensemble":  # each window: the member its validation chose (the backtest's record)
            records = (manifest.get("windows") or {}).get(f"ensemble_seed{seed}") or []
            chosen = {int(r["window"]): r.get("chosen") for r in records}
        for w in used:
            member = chosen.get(w.index) if agent == "ensemble" else agent
            if not member:
                raise ConfigError(f"{run_dir}: the manifest names no chosen member for ensemble seed {seed} window "
                                  f"{w.index}")
            path = wf._model_path(member, w, seed)
            if not path.is_file():
                raise ConfigError(f"{run_dir}: no model for {member} seed {seed} window {w.index} ({path})")
            try:
                identity = _check_model(path, {"agent": member, "seed": int(seed), "window": int(w.index),
                                               "fingerprint": fp})
            except CheckpointRejected as exc:
                raise ConfigError(f"{path}: not this run's model ({exc})") from None
            models[w.index], shas[w.index] = path, identity["sha256"]
    # sampled or deterministic actions: the trading model's own loop option (the ensemble's chosen member's)
    deterministic = {}
    for w in used:
        name = models[w.index].parent.name.rpartition("_seed")[0] if agent == "ensemble" else agent
        deterministic[w.index] = wf.spec.agent_options(name).loop.deterministic
    body = fingerprint_body(cfg)  # the config fields that decide results, as the backtest's fingerprint
    body.update(agent=agent, seed=int(seed), replay=replay, models=shas)
    if replay is not None:  # a replay is bound to its bars and data; a live folder keeps trading new ones
        body.update(first=first, last=last, dataset_hash=arrays.meta.get("dataset_hash"))
    chash = hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()
    return TradePlan(config=cfg, arrays=arrays, wf=wf, agent=agent, seed=int(seed), models=models, model_sha=shas,
                     deterministic=deterministic, first_bar=first, last_bar=last, run_dir=run_dir,
                     model_file=model_file, replay=replay, config_hash=chash, windows=used)


def default_trade_dir(plan: TradePlan, broker: str) -> Path:
    suffix = f"{broker}_replay" if plan.replay else broker
    if plan.run_dir is not None:
        return plan.run_dir / "trade" / f"{plan.agent}_seed{plan.seed}_{suffix}"
    return plan.model_file.parent / f"{plan.model_file.stem}_trade" / suffix


# ------------------------------------------------------------------------------------------------
# the engine
# ------------------------------------------------------------------------------------------------
def _rng_state() -> bytes:
    import random

    import torch

    return pickle.dumps((random.getstate(), np.random.get_state(), torch.get_rng_state()))


def _set_rng_state(blob: bytes) -> None:
    import random

    import torch

    py, npy, tor = pickle.loads(blob)
    random.setstate(py)
    np.random.set_state(npy)
    torch.set_rng_state(tor)


def _lock_folder(folder: Path):
    """An exclusive, non-blocking ``flock`` on ``<folder>/trade.lock`` held by the open file returned
    (the OS releases it when the process dies); a second trade process on the folder is refused."""
    folder.mkdir(parents=True, exist_ok=True)
    fh = open(folder / "trade.lock", "a+b")  # noqa: SIM115 - held open for the engine's life
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no lock
        return fh
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        raise StateError(f"{folder}: another finmeta trade process is trading this folder") from None
    return fh


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class TradeEngine:
    """The per-bar loop of one trade folder (see the module doc).

    Args:
        plan: :func:`plan_trade`'s result; ``broker``: any :class:`trade.broker.Broker`
        (the paper broker's ``advance`` is called at each bar); ``folder``: the trade folder
        (``trade.sqlite`` is created there); ``limits``: the risk limits; ``echo``: where the
        one-line statuses go (stderr).
    """

    def __init__(self, plan: TradePlan, broker: Broker, folder: str | Path, *, limits: RiskLimits | None = None,
                 feed: ReplayFeed | None = None, echo: Callable[[str], None] | None = _stderr,
                 clear_halt: bool = False) -> None:
        self.plan = plan
        self.broker = broker
        self.folder = Path(folder)
        self.limits = limits or RiskLimits()
        self.live = plan.replay is None
        self.feed = feed or (LiveFeed(plan.config, plan.arrays) if self.live else ReplayFeed(plan.arrays))
        self.echo = echo or (lambda s: None)
        self._lock = _lock_folder(self.folder)  # one trade process per folder
        self.state = TradeState(self.folder / "trade.sqlite")
        self.tickers = plan.tickers
        self.N = len(self.tickers)
        self.tag = hashlib.sha256(f"{plan.config_hash}|{broker.name}".encode()).hexdigest()[:8]
        self._agents: dict[int, Any] = {}
        self._rng_window: int | None = None
        try:
            self._claim(clear_halt)
        except BaseException:
            self.state.close()
            self._lock.close()
            raise
        self.sessions = None
        t = self.feed.times
        self.daily = len(t) < 2 or (t[1] - t[0]) >= pd.Timedelta(hours=20)
        self.calendar = plan.arrays.meta.get("calendar") if (self.limits.check_calendar and self.daily) else None
        if self.calendar and not self.live:
            self.sessions = sessions_between(self.calendar, t[plan.first_bar], t[plan.last_bar])

    # -- identity of the folder -----------------------------------------------------------------
    def _claim(self, clear_halt: bool) -> None:
        st, p = self.state, self.plan
        mine = {"config_hash": p.config_hash, "agent": p.agent, "seed": p.seed, "broker": self.broker.name,
                "models": {str(k): v for k, v in p.model_sha.items()}}
        theirs = st.get("identity")
        if theirs is None:
            with st.bar():
                st.set("identity", mine)
                st.set("initial_cash", float(p.wf.spec.env_config.initial_cash))
                st.set("first_bar", p.first_bar)
                st.set("last_bar", p.last_bar)
                st.set("limits", self.limits.as_dict())
                st.set("created_utc", pd.Timestamp.now(tz="UTC").isoformat())
                st.set("source", str(p.run_dir or p.model_file))
        elif theirs != mine:
            diff = ", ".join(k for k in mine if theirs.get(k) != mine[k])
            raise StateError(f"{self.folder}: trade folder of another run, model or broker (differs in {diff}); "
                             f"use another --out")
        halted = st.get("halted")
        if halted:
            if not clear_halt:
                raise TradingHalted(f"{self.folder}: trading is halted ({halted}); rerun with --clear-halt to resume")
            st.delete("halted")

    # -- the loop --------------------------------------------------------------------------------
    def next_bar(self) -> int:
        last = self.state.last_bar()
        return self.plan.first_bar if last is None else last + 1

    def run(self, max_bars: int | None = None) -> dict:
        """Process every unprocessed bar of the plan (or ``max_bars`` of them); returns a summary."""
        n = 0
        while self.next_bar() <= self.plan.last_bar and (max_bars is None or n < max_bars):
            self.process(self.next_bar())
            n += 1
        return self.summary()

    def run_live(self, max_bars: int | None = None, *, poll_seconds: float = 60.0, stale_after=None,
                 sleep: Callable[[float], None] | None = None, now: Callable[[], pd.Timestamp] | None = None,
                 max_polls: int | None = None) -> dict:
        """Live: poll the feed, process each new bar (at most ``max_bars``; ``max_polls`` polls).

        A poll that brings no new bar waits ``poll_seconds``; a newest bar older than ``stale_after``
        (default: 4 days for daily bars, 3 bar intervals intraday) is skipped with a ``stale_data``
        line (the feed is behind: trading on it would act on old prices).
        """
        import time as _time

        sleep = sleep or _time.sleep
        now = now or (lambda: pd.Timestamp.now(tz="UTC"))
        n = polls = 0
        while (max_bars is None or n < max_bars) and (max_polls is None or polls < max_polls):
            polls += 1
            self.feed.refresh()
            t = self.feed.times
            i = len(t) - 1
            last = self.state.last_bar()
            last_time = None if last is None else pd.Timestamp(self.state.bar_row(last)["time"])
            if last_time is not None and (i <= last or t[i] <= last_time):
                sleep(poll_seconds)  # no new bar yet
                continue
            limit = stale_after
            if limit is None:
                step = (t[-1] - t[-2]) if len(t) > 1 else pd.Timedelta(days=1)
                limit = pd.Timedelta(days=4) if self.daily else 3 * step
            ts, clock = t[i], now()
            if ts.tz is None and clock.tz is not None:
                clock = clock.tz_convert(None)
            self._stale = None
            if clock - ts > pd.Timedelta(limit):
                self._stale = f"bar {ts} is {clock - ts} old (more than {pd.Timedelta(limit)}): the feed is behind"
            if self.calendar:
                self.sessions = sessions_between(self.calendar, ts, ts)
            self.process(i)
            n += 1
        return self.summary()

    def summary(self) -> dict:
        bars = self.state.bars()
        return {"bars": len(bars), "last_bar": self.state.last_bar(), "positions": self.state.positions(),
                "cash": (self.state.account() or {}).get("cash"), "value": bars[-1]["value"] if bars else None,
                "halted": self.state.get("halted")}

    def _agent(self, w, env):
        if w.index not in self._agents:
            from agents import load_agent

            self._agents[w.index] = load_agent(self.plan.models[w.index], env)
        return self._agents[w.index]

    def _env(self, w, i: int):
        from benchmarks.loop import build_env

        base = w.train[0]
        env = build_env(self.feed.upto(base, i), self.plan.wf._env_overrides(w))
        return env, base

    def _day_start_value(self, time: pd.Timestamp) -> float | None:
        row = self.state.db.execute("SELECT value FROM bars WHERE substr(time, 1, 10) < ? AND value IS NOT NULL "
                                    "ORDER BY bar DESC LIMIT 1", (str(time)[:10],)).fetchone()
        return None if row is None else float(row[0])

    def process(self, i: int) -> dict:
        """One bar, one transaction (see the module doc)."""
        plan, st, br = self.plan, self.state, self.broker
        faults.hit("bar_start")
        time, close_row, open_row = self.feed.bar(i)
        if hasattr(br, "advance"):
            br.advance(i)
            faults.hit("after_advance")
        stamp = str(time)
        halted = None
        out: dict[str, Any] = {"bar": i, "time": time, "sent": 0, "filled": 0, "refused": 0, "skipped": None}
        with st.bar():
            # 1. reconcile the open orders; cash and positions from the broker --------------------
            prev_bar = st.last_bar()
            acc = st.account()
            filled_buys = np.zeros(self.N)
            for o in st.orders(OPEN_STATUSES):
                bo = br.get_order(o["client_order_id"])
                if bo is None:  # recorded as sent, unknown to the broker: keep it visible
                    st.db.execute("UPDATE orders SET status = 'rejected', reason = 'unknown to the broker' "
                                  "WHERE client_order_id = ?", (o["client_order_id"],))
                    continue
                if bo.status in OPEN_STATUSES:
                    # a market order still open a bar after it was sent (a live broker that did not
                    # fill it): cancel it, so that the bar's new orders do not stack on it
                    br.cancel(bo.client_order_id)
                    bo = br.get_order(bo.client_order_id) or bo
                    self.echo(f"canceled {bo.client_order_id}: still {bo.status} a bar after it was sent "
                              f"(filled {bo.filled_qty:g} of {bo.qty:g})")
                d = bo.to_dict()
                st.put_order(o["bar"], o["time"], d)
                if bo.status in ("filled", "partially_filled", "canceled", "rejected") and bo.filled_qty > 0:
                    st.put_fill(o["bar"], d)
                if bo.status == "filled":
                    out["filled"] += 1
                    if bo.side == "buy" and o["bar"] == prev_bar:
                        filled_buys[self.tickers.index(bo.symbol)] += bo.filled_qty
            faults.hit("after_reconcile")
            pos = br.positions()
            cash = float(br.account().cash)
            h = np.array([float(pos.get(s, 0.0)) for s in self.tickers], dtype=np.float64)
            locked = lock_day = None
            if acc and acc.get("locked") is not None:
                locked = (np.asarray(acc["locked"], np.float64) + filled_buys).tolist()
                lock_day = acc["lock_day"]
            px = np.where(np.isfinite(close_row), close_row, 0.0)
            value = float(cash + np.add.reduce(h * px))
            out.update(value=value, cash=cash)
            prev = st.bar_row(prev_bar) if prev_bar is not None else None

            def finish(skipped=None, action=None, window=None, rng=None, locks=(locked, lock_day)):
                # the book is the broker's; the locks carry this bar's intended buys (booked with
                # their actual fills at the next bar)
                st.put_book(cash, {s: q for s, q in zip(self.tickers, h.tolist())}, *locks)
                st.put_bar(i, stamp, value=value, cash=cash, action=action, sent=out["sent"], filled=out["filled"],
                           refused=out["refused"], skipped=skipped, window=window, rng=rng)
                faults.hit("before_commit")

            # 2. bar checks, daily loss -------------------------------------------------------------
            ref = check_bar(time, None if prev is None else prev["time"], close_row, open_row, self.tickers,
                            self.sessions)
            if ref is None and getattr(self, "_stale", None):
                from .risk import Refusal

                ref = Refusal("stale_data", f"{self._stale}; skipping it")
            if ref is None and getattr(br, "name", "paper") != "paper":
                clk = br.clock()
                if not clk.is_open:
                    from .risk import Refusal

                    ref = Refusal("market_closed", f"bar {time}: the broker's clock says the market is closed "
                                                   f"({clk.timestamp}); skipping the bar")
            if ref is not None:
                out["skipped"] = ref.line()
                self.echo(ref.line())
                finish(skipped=ref.line())
            else:
                loss = check_daily_loss(value, self._day_start_value(time), self.limits.daily_loss_limit, time)
                if loss is not None:
                    halted = loss.line()
                    out["skipped"] = halted
                    st.set("halted", halted)
                    finish(skipped=halted)
                elif i >= plan.last_bar:  # the last bar: valued, no decision (no bar to fill at)
                    finish()
                else:
                    finish(**self._decide(i, time, cash, h, value, locked, lock_day, out))
        faults.hit("after_commit")
        self.echo(f"{time} bar {i} value {value:,.2f} cash {cash:,.2f} orders sent {out['sent']} filled "
                  f"{out['filled']} refused {out['refused']}" + (" (skipped)" if out["skipped"] else ""))
        if halted:
            self.echo(halted)
            raise TradingHalted(halted)
        return out

    def _decide(self, i, time, cash, h, value, locked, lock_day, out) -> dict:
        """Observation, action, orders, risk checks, submits of bar ``i``; returns what the bar's
        row records (action, window, generator state, locks)."""
        from agents.base import seed_everything
        from benchmarks.windows import window_seed
        from meta.envs import check_actions

        plan, st, br = self.plan, self.state, self.broker
        w = plan.window_of(i)
        env, base = self._env(w, i)
        agent = self._agent(w, env)
        k = env.kernel
        ti = i - base

        def one(x, dt=np.float64):
            return np.array([x], dtype=dt)

        k.t, k.t0, k.t_end = one(ti, np.int64), one(plan.episode_start(w) - base, np.int64), one(k.T - 1, np.int64)
        k.cash, k.h = one(cash), h[None, :].copy()
        k.value = k.cash + k.B.rsum(k.h * k.close[k.t])
        k.costs_total = one(0.0)
        k.reward_scheme.reset(np.arange(1), k.value)
        if k.locked is not None:
            k.locked = (np.zeros((1, self.N)) if locked is None else np.asarray(locked, np.float64)[None, :])
            k.lock_day = one(-1 if lock_day is None else lock_day, np.int64)
        obs = k.observe()[0]
        info = {"portfolio_value": float(k.value[0]), "cash": cash, "holdings": h.copy(), "t": ti,
                "date": time}
        rng = None
        det = plan.deterministic[w.index]
        if not det:
            if self._rng_window != w.index:
                prev = st.bar_row(i - 1)
                if prev is not None and prev.get("window") == w.index and prev.get("rng"):
                    _set_rng_state(prev["rng"])  # resume a sampled stream mid-window
                else:
                    seed_everything(int(window_seed(plan.seed, w.index, "trade")))
                self._rng_window = w.index
        action = agent.act(obs, deterministic=det, info=info)
        if not det:
            rng = _rng_state()
        a = check_actions(action, 1, k.action_dim, tuple(self.tickers), vector=False)
        _, _, kinfo = k.step(a)
        trades = np.asarray(kinfo["trades"][0], dtype=np.float64)
        f = int(kinfo["fill_t"][0])
        ref_px = np.asarray(k.fill_px[f], dtype=np.float64)
        new_locked, new_day = locked, lock_day
        if k.locked is not None:
            new_locked = (np.asarray(k.locked[0], np.float64) - np.maximum(trades, 0.0)).tolist()
            new_day = int(k.lock_day[0])
        orders = [{"symbol": self.tickers[j], "side": "sell", "qty": float(-trades[j])}
                  for j in range(self.N) if trades[j] < 0]
        orders += [{"symbol": self.tickers[j], "side": "buy", "qty": float(trades[j])}
                   for j in range(self.N) if trades[j] > 0]
        acct = br.account()
        bp = min(float(acct.buying_power), cash) if np.isfinite(acct.buying_power) else cash
        ok, refusals = check_orders(orders, {s: ref_px[j] for j, s in enumerate(self.tickers)}, value,
                                    {s: q for s, q in zip(self.tickers, h.tolist())}, bp, self.limits,
                                    k.rb, k.rs, k.min_fee, self.tickers)
        stamp = str(time)
        for o, r in refusals:
            cid = client_order_id(self.tag, time, o["symbol"], o["side"])
            st.put_order(i, stamp, {**o, "client_order_id": cid, "status": "refused", "reason": r.line()})
            self.echo(r.line())
            out["refused"] += 1
        for o in ok:
            cid = client_order_id(self.tag, time, o["symbol"], o["side"])
            bo = br.get_order(cid)  # sent before a crash: found, not sent again
            if bo is None:
                bo = br.submit(OrderRequest(symbol=o["symbol"], side=o["side"], qty=o["qty"], client_order_id=cid))
                faults.hit("after_submit")
            out["sent"] += 1
            st.put_order(i, stamp, bo.to_dict())
        out["action"] = np.asarray(action, dtype=np.float64).reshape(-1)
        return {"action": out["action"], "window": w.index, "rng": rng, "locks": (new_locked, new_day)}

    def close(self) -> None:
        self.state.close()
        if self._lock is not None:
            self._lock.close()  # releases the folder's flock
            self._lock = None
        try:
            self.broker.close()
        except Exception as exc:  # the state is committed: a broker that fails to close loses nothing
            self.echo(f"broker {self.broker.name}: close failed ({type(exc).__name__})")


def _peek_config(target, config) -> dict:
    p = Path(target)
    if p.is_dir() and (p / rundir.MANIFEST).is_file():
        return dict((rundir.read_manifest(p) or {}).get("config") or {})
    if config is not None and not isinstance(config, dict):
        from benchmarks.spec import load_config

        return load_config(config)
    return dict(config or {})


def make_env_config(plan: TradePlan):
    """The env config of the plan's first window (costs, slippage, fill, lots) for the paper broker."""
    from benchmarks.loop import build_env

    w = plan.windows[0]
    return build_env(plan.arrays.slice(w.train[0], w.trade[1]), plan.wf._env_overrides(w)).config


def open_engine(target, *, broker: str = "paper", replay: str | None = "run", start=None, end=None,
                config=None, agent=None, seed=None, out=None, limits: RiskLimits | None = None,
                broker_options: dict | None = None, echo=_stderr, clear_halt: bool = False,
                arrays: MarketArrays | None = None) -> TradeEngine:
    """Plan, open the trade folder and the broker, and return the engine (the CLI's path)."""
    from .brokers import BROKERS, broker_class

    if broker not in BROKERS:
        broker_class(broker)  # the unknown-broker line, before any data work
    if replay is not None and broker != "paper":
        raise ConfigError(f"--replay trades with --broker paper (a replay is offline); got --broker {broker}")
    if replay is None and broker == "paper":
        raise ConfigError("--broker paper trades offline: give --replay DATASET (or --replay run for the run's data)")
    if replay is None and arrays is None:
        LiveFeed.check_config(_peek_config(target, config))
    cls = broker_class(broker)
    plan = plan_trade(target, config=config, agent=agent, seed=seed, replay=replay, start=start, end=end,
                      arrays=arrays)
    folder = Path(out) if out else default_trade_dir(plan, broker)
    if broker == "paper":
        env_cfg = make_env_config(plan)
        init_h = env_cfg.initial_holdings
        br = cls(path=folder / "paper.sqlite", arrays=plan.arrays, env_config=env_cfg,
                 initial_cash=float(env_cfg.initial_cash),
                 initial_positions=None if init_h is None else dict(zip(plan.tickers, map(float, init_h))))
    else:  # pragma: no cover - vendor brokers are tested in their own modules
        import inspect

        kw = dict(broker_options or {})
        if "symbols" in inspect.signature(cls).parameters:
            kw.setdefault("symbols", plan.tickers)
        br = cls(**kw)
    return TradeEngine(plan, br, folder, limits=limits, echo=echo, clear_halt=clear_halt)

