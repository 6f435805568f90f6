"""The trade stage (issue 16): replay parity with the backtest, risk checks, status, bad input."""

from __future__ import annotations

import copy
import json
import sqlite3
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _trade_runs import trade_run

from benchmarks.loop import WalkForward
from finmeta.cli import main
from finmeta.errors import ConfigError, FinMetaError
from trade.brokers import broker_class, make_broker
from trade.engine import TradingHalted, open_engine
from trade.risk import RiskLimits


@pytest.fixture(scope="session")
def runs_root(tmp_path_factory):
    return tmp_path_factory.mktemp("trade_runs")


@pytest.fixture(scope="session")
def stock(runs_root):
    return trade_run("stock_trading", runs_root)


@pytest.fixture(scope="session")
def ashare(runs_root):
    return trade_run("ashare", runs_root)


def _backtest(run, agent="a2c"):
    run_dir, cfg, arrays = run
    return WalkForward(arrays, copy.deepcopy(cfg), run_dir).run_chain(agent, 0)  # from its checkpoints


def _db(folder: Path, sql: str):
    con = sqlite3.connect(str(folder))
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _replayed(folder: Path, n_assets: int):
    rows = _db(folder / "trade.sqlite", "SELECT time, value, action FROM bars ORDER BY bar")
    times = pd.DatetimeIndex([r[0] for r in rows])
    values = np.array([r[1] for r in rows])
    actions = np.array([json.loads(r[2]) if r[2] else [np.nan] * n_assets for r in rows])
    return times, values, actions


def _check_parity(run, folder: Path, agent="a2c"):
    ch = _backtest(run, agent)
    times, values, actions = _replayed(folder, ch.actions.shape[1])
    assert len(times) == len(ch.times) > 100
    assert (times == pd.DatetimeIndex(ch.times)).all()
    np.testing.assert_allclose(values, ch.values, rtol=1e-9, atol=0)
    np.testing.assert_allclose(actions, ch.actions, rtol=0, atol=1e-9)  # NaN on the last bar in both
    # something happened: orders were sent and filled, the value moved
    fills = _db(folder / "trade.sqlite", "SELECT side, qty FROM fills")
    assert len(fills) > 20 and {s for s, _ in fills} == {"buy", "sell"}
    assert np.ptp(values) > 100
    return fills


def test_replay_parity_stock_trading_through_the_cli(stock, tmp_path, capsys):
    folder = tmp_path / "tf"
    rc = main(["trade", str(stock[0]), "--broker", "paper", "--replay", "run", "--out", str(folder)])
    assert rc == 0
    err = capsys.readouterr().err.splitlines()
    # one status line per bar
    assert sum(" value " in line and " orders sent " in line for line in err) == len(_backtest(stock).times)
    _check_parity(stock, folder)


def test_replay_parity_ashare_lots_t1_limits_slippage_sampled(ashare, tmp_path):
    run_dir, cfg, arrays = ashare
    eng = open_engine(run_dir, broker="paper", replay="run", agent="a2c", out=tmp_path / "tf", echo=None,
                      arrays=arrays)
    try:
        eng.run()
    finally:
        eng.close()
    with pytest.raises(sqlite3.ProgrammingError):  # close() closed the broker's book too
        eng.broker.db.execute("SELECT 1")
    fills = _check_parity(ashare, tmp_path / "tf")
    assert all(q % 100 == 0 for side, q in fills if side == "buy")  # lots
    # the +-1% limits bind on many bars of the trade period (so parity covers blocked orders)
    from benchmarks.loop import build_env

    ws = WalkForward(arrays, copy.deepcopy(cfg), run_dir).windows
    md = build_env(arrays, {k: v for k, v in cfg["env"].items() if k != "turbulence_quantile"}).kernel.md
    lo, hi = ws[0].trade[0], ws[-1].trade[1]
    assert (~md.buy_ok[lo:hi]).sum() > 20 and (~md.sell_ok[lo:hi]).sum() > 20


# ------------------------------------------------------------------------------------------------ risk
def _short(run, tmp_path, *, limits=None, echo=None, start="2018-09-04", end="2018-09-21", **kw):
    run_dir, _, arrays = run
    return open_engine(run_dir, broker="paper", replay="run", start=start, end=end, out=tmp_path / "tf",
                       echo=echo, limits=limits, arrays=arrays, **kw)


def _consistent(eng):
    """The trade state's book equals the broker's, and no refused or skipped order reached the broker."""
    st, br = eng.state, eng.broker
    assert st.positions() == br.positions()
    assert st.account()["cash"] == br.account().cash
    sent = {c for c, _ in br.submit_log()}
    refused = {r["client_order_id"] for r in st.orders(("refused",))}
    assert not sent & refused
    assert max(Counter(c for c, _ in br.submit_log()).values(), default=1) == 1


@pytest.mark.parametrize("limits, check", [
    (RiskLimits(max_order_notional=500.0), "max_order_notional"),
    (RiskLimits(max_weight=0.01), "max_weight"),
])
def test_order_risk_checks_refuse_with_one_line_and_keep_the_state(stock, tmp_path, limits, check):
    lines: list[str] = []
    eng = _short(stock, tmp_path, limits=limits, echo=lines.append)
    try:
        eng.run()
        refused = eng.state.orders(("refused",))
        assert refused and all(r["reason"].startswith(f"refused [{check}] ") for r in refused)
        assert all("\n" not in r["reason"] for r in refused)
        assert sum(line.startswith(f"refused [{check}]") for line in lines) == len(refused)
        _consistent(eng)
        # nothing above the limit was ever sent
        px = dict(zip(eng.tickers, np.asarray(stock[2].close[eng.plan.last_bar], float)))
        for o in eng.state.orders(("new", "filled")):
            if check == "max_order_notional":
                assert o["qty"] * (o["avg_price"] or px[o["symbol"]]) <= 500.0 * 1.2
    finally:
        eng.close()


def test_buying_power_check_refuses_buys_beyond_the_account(stock, tmp_path, monkeypatch):
    lines: list[str] = []
    eng = _short(stock, tmp_path, echo=lines.append)
    real = eng.broker.account

    def poor():
        a = real()
        a.buying_power = 300.0  # the broker says: 300 of buying power (the buys cost ~500-700)
        return a

    monkeypatch.setattr(eng.broker, "account", poor)
    try:
        eng.run()
        refused = eng.state.orders(("refused",))
        assert refused and all(r["reason"].startswith("refused [buying_power] buy ") for r in refused)
        assert all(r["side"] == "buy" for r in refused)
        _consistent(eng)
        assert any(line.startswith("refused [buying_power]") for line in lines)
    finally:
        eng.close()


def test_daily_loss_limit_stops_trading_says_why_and_resumes_only_when_cleared(stock, tmp_path):
    lines: list[str] = []
    eng = _short(stock, tmp_path, limits=RiskLimits(daily_loss_limit=1e-6), echo=lines.append)
    with pytest.raises(TradingHalted, match=r"refused \[daily_loss\] .* below the day's start .* trading stopped"):
        eng.run()
    halted_at = eng.state.last_bar()
    row = eng.state.bar_row(halted_at)
    assert row["skipped"].startswith("refused [daily_loss]") and row["sent"] == 0
    assert not [o for o in eng.state.orders() if o["bar"] == halted_at]  # no order at the halted bar
    _consistent(eng)
    eng.close()
    with pytest.raises(TradingHalted, match="--clear-halt"):
        _short(stock, tmp_path, limits=RiskLimits(daily_loss_limit=1e-6))
    eng = _short(stock, tmp_path, limits=RiskLimits(daily_loss_limit=1e-6), clear_halt=True)
    try:
        eng.process(eng.next_bar())  # trades again from the next bar
        assert eng.state.last_bar() == halted_at + 1
    finally:
        eng.close()


@pytest.mark.parametrize("glitch, check", [("stale", "stale_data"), ("nan", "missing_data"),
                                           ("weekend", "market_closed")])
def test_bad_bars_are_skipped_with_one_line_and_no_orders(stock, tmp_path, glitch, check):
    lines: list[str] = []
    eng = _short(stock, tmp_path, echo=lines.append)
    real = eng.feed.bar
    bad = eng.plan.first_bar + 3

    def feed(i):
        t, c, o = real(i)
        if i != bad:
            return t, c, o
        if glitch == "stale":
            return real(i - 1)[0], c, o  # the feed returned the previous bar again
        if glitch == "nan":
            c = c.copy()
            c[1] = np.nan
            return t, c, o
        return pd.Timestamp("2018-09-08"), c, o  # a Saturday

    eng.feed.bar = feed
    try:
        eng.run()
        row = eng.state.bar_row(bad)
        assert row["skipped"].startswith(f"refused [{check}] ") and row["sent"] == 0 and row["action"] is None
        assert sum(line.startswith(f"refused [{check}]") for line in lines) == 1
        assert not [o for o in eng.state.orders() if o["bar"] == bad]
        assert eng.state.bar_row(bad + 1)["skipped"] is None  # the next bar trades
        _consistent(eng)
    finally:
        eng.close()


# ------------------------------------------------------------------------------------- status / input
def test_trade_status_shows_positions_cash_pnl_and_last_bars(stock, tmp_path, capsys):
    run_dir = stock[0]
    out = tmp_path / "tf"
    assert main(["trade", str(run_dir), "--replay", "run", "--start", "2018-09-04", "--end", "2018-09-21",
                 "--out", str(out), "--quiet", "--max-bars", "6"]) == 0
    capsys.readouterr()
    assert main(["trade", "status", str(out)]) == 0
    text = capsys.readouterr().out
    eng = _short(stock, tmp_path)
    try:
        pos, cash = eng.state.positions(), eng.state.account()["cash"]
        assert eng.state.last_bar() == eng.plan.first_bar + 5
    finally:
        eng.close()
    assert "a2c seed 0 on paper, 6 bars" in text and "P&L" in text and f"cash {cash:,.2f}" in text
    for s, q in pos.items():
        assert f"{s} {q:g}" in text
    assert len([line for line in text.splitlines() if line.startswith("  2018-09")]) == 5  # the last 5 bars
    assert main(["trade", "status", str(out), "--json"]) == 0
    js = json.loads(capsys.readouterr().out)[0]
    assert js["positions"] == pos and js["bars_processed"] == 6 and js["halted"] is None


def test_bad_input_fails_with_one_line_before_heavy_work(stock, tmp_path, capsys):
    run_dir = stock[0]
    cases = [
        (["trade", str(tmp_path / "nope"), "--replay", "run"], "no such run directory"),
        (["trade", str(run_dir), "--broker", "nasdaq", "--replay", "run"], "unknown broker"),
        (["trade", str(run_dir), "--replay", "run", "--start", "2010-01-01"], "outside the trade period"),
        (["trade", str(run_dir)], "--broker paper trades offline"),
        (["trade", str(run_dir), "--broker", "alpaca", "--replay", "run"], "--replay trades with --broker paper"),
        (["trade", str(run_dir), "--replay", "run", "--agent", "ppo"], "no saved models for agent ppo"),
        (["trade", "status", str(tmp_path)], "no trade folder"),
    ]
    for args, msg in cases:
        assert main(args) == 2, args
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and msg in err[0], (args, err)


def test_a_model_that_does_not_match_the_run_is_refused(stock, tmp_path):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(stock[0], run_dir, ignore=shutil.ignore_patterns("trade"))
    model = run_dir / "models" / "a2c_seed0" / "window_001.zip"
    model.write_bytes(model.read_bytes() + b"x")  # replaced / damaged
    with pytest.raises(ConfigError, match=r"window_001.zip: not this run's model \(checksum mismatch"):
        open_engine(run_dir, replay="run", arrays=stock[2], echo=None)


def test_a_trade_folder_is_not_reused_for_another_plan_nor_traded_twice_at_once(stock, tmp_path):
    eng = _short(stock, tmp_path)
    with pytest.raises(FinMetaError, match="another finmeta trade process is trading this folder"):
        _short(stock, tmp_path)
    eng.close()
    with pytest.raises(FinMetaError, match="trade folder of another run, model or broker"):
        _short(stock, tmp_path, end="2018-09-28")


def test_broker_registry_is_lazy_and_names_what_is_missing(monkeypatch):
    import sys

    import subprocess

    assert broker_class("paper").__name__ == "PaperBroker"
    probe = ("import sys, trade.brokers, trade.engine; "
             "print(sorted(m for m in ('alpaca', 'ccxt', 'trade.alpaca_broker', 'trade.ccxt_broker') if m in sys.modules))")
    got = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip()
    assert got == "[]"  # the registry and the engine import no vendor library
    monkeypatch.setitem(sys.modules, "trade.alpaca_broker", None)  # as if the module were absent
    with pytest.raises(FinMetaError, match="broker alpaca"):
        make_broker("alpaca")
    with pytest.raises(ConfigError, match="unknown broker"):
        make_broker("ib")


# ------------------------------------------------------------------------------------------------ live
class MemoryBroker:
    """An in-memory broker (the Broker protocol): fills market orders at a given price on submit."""

    name = "memory"

    def __init__(self, cash: float, price) -> None:
        from trade.broker import Clock

        self.cash, self.pos, self.orders, self.calls = cash, {}, {}, []
        self.price = price
        self.is_open = True
        self._clock = Clock

    def account(self):
        from trade.broker import Account

        return Account(cash=self.cash, buying_power=self.cash, equity=self.cash)

    def positions(self):
        return {s: q for s, q in self.pos.items() if q}

    def submit(self, o):
        from trade.broker import Order

        self.calls.append(o.client_order_id)
        if o.client_order_id not in self.orders:
            p = self.price(o.symbol)
            sign = 1 if o.side == "buy" else -1
            self.cash -= sign * o.qty * p
            self.pos[o.symbol] = self.pos.get(o.symbol, 0.0) + sign * o.qty
            self.orders[o.client_order_id] = Order(o.client_order_id, o.symbol, o.side, o.qty, "filled", o.qty, p)
        return self.orders[o.client_order_id]

    def get_order(self, cid):
        return self.orders.get(cid)

    def cancel(self, cid):
        pass

    def clock(self):
        return self._clock(timestamp=pd.Timestamp("2019-01-01"), is_open=self.is_open)

    def close(self):
        pass


def test_live_mode_trades_each_new_bar_with_the_latest_window_and_skips_closed_or_stale(stock, tmp_path):
    from trade.engine import TradeEngine, plan_trade
    from trade.feed import LiveFeed

    run_dir, cfg, arrays = stock
    times = pd.DatetimeIndex(arrays.times)
    k0 = int(times.searchsorted(pd.Timestamp("2019-01-02"))) + 1
    plan = plan_trade(run_dir, replay=None, arrays=arrays.slice(0, k0))
    assert [w.index for w in plan.windows] == [plan.wf.windows[-1].index]  # the latest window's model
    sizes = iter([k0, k0, k0 + 1, k0 + 2, k0 + 3, k0 + 4])
    cur = {"k": k0}

    def fetch():
        cur["k"] = next(sizes)
        return arrays.slice(0, cur["k"])

    broker = MemoryBroker(100_000.0, lambda s: float(arrays.close[cur["k"] - 1][list(arrays.tickers).index(s)]))
    lines: list[str] = []
    naps: list[float] = []
    eng = TradeEngine(plan, broker, tmp_path / "live", feed=LiveFeed(cfg, fetch=fetch), echo=lines.append)
    clock = {"now": lambda: pd.Timestamp(times[cur["k"] - 1]) + pd.Timedelta(hours=20)}
    try:
        eng.run_live(max_bars=2, sleep=naps.append, now=lambda: clock["now"]())
        assert naps == [60.0]  # the second poll brought no new bar
        bars = eng.state.bars()
        assert [b["bar"] for b in bars] == [k0 - 1, k0] and all(b["skipped"] is None for b in bars)
        assert bars[0]["sent"] > 0 and len(broker.calls) == len(set(broker.calls))
        broker.is_open = False
        eng.run_live(max_bars=1, sleep=naps.append, now=lambda: clock["now"]())
        assert eng.state.bar_row(k0 + 1)["skipped"].startswith("refused [market_closed]")
        broker.is_open = True
        clock["now"] = lambda: pd.Timestamp(times[cur["k"] - 1]) + pd.Timedelta(days=9)
        eng.run_live(max_bars=1, sleep=naps.append, now=lambda: clock["now"]())
        assert eng.state.bar_row(k0 + 2)["skipped"].startswith("refused [stale_data] ")
        assert eng.state.positions() == broker.positions()
        assert not [o for o in eng.state.orders() if o["bar"] in (k0 + 1, k0 + 2)]
        assert sum(line.startswith("refused [") for line in lines) == 2
    finally:
        eng.close()


def test_live_trading_refuses_a_config_without_a_data_source():
    from trade.feed import LiveFeed

    with pytest.raises(ConfigError, match="replay it with --replay"):
        LiveFeed.check_config({"data": {"dataset": "dow30"}})


def test_replay_of_a_stored_dataset_equals_the_replay_of_the_run_data(stock, tmp_path):
    from data_processors.sources import get_source
    from data_processors.store import save_dataset

    run_dir, cfg, arrays = stock
    d = cfg["data"]
    frame = get_source("synthetic").download(d["tickers"], d["start"], d["end"], "1d", seed=d["seed"])
    save_dataset("syn_trade", frame, source="synthetic", params={"calendar": "XNYS"})
    out = {}
    for replay in ("run", "syn_trade"):
        eng = open_engine(run_dir, replay=replay, start="2018-09-20", end="2018-10-10",
                          out=tmp_path / replay, echo=None, arrays=None if replay == "syn_trade" else arrays)
        try:
            eng.run()
            out[replay] = [(b["time"], b["value"], b["action"]) for b in eng.state.bars()]
        finally:
            eng.close()
    assert len(out["run"]) == 14 and out["syn_trade"] == out["run"]
    with pytest.raises(FinMetaError, match="nope"):
        open_engine(run_dir, replay="nope", echo=None)


def test_a_model_file_of_finmeta_train_replays_like_its_finmeta_backtest(tmp_path, capsys):
    import yaml
    from _trade_runs import config

    from benchmarks.dataset import build_arrays

    cfg = config("stock_trading")
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    model = tmp_path / "a2c.zip"
    assert main(["train", str(path), "--agent", "a2c", "--timesteps", "200", "--out", str(model)]) == 0
    bt = tmp_path / "bt"
    assert main(["backtest", str(path), "--agent", "a2c", "--model", str(model), "--out", str(bt),
                 "--no-tearsheets"]) == 0
    capsys.readouterr()
    assert main(["trade", str(model), "--replay", "run"]) == 2
    assert "pass --config" in capsys.readouterr().err
    tf = tmp_path / "tf"
    assert main(["trade", str(model), "--config", str(path), "--replay", "run", "--out", str(tf), "--quiet"]) == 0
    arrays, _ = build_arrays(copy.deepcopy(cfg))
    ch = WalkForward(arrays, copy.deepcopy(cfg), bt, models={"a2c": model}).run_chain("a2c", 0)
    _, values, actions = _replayed(tf, 4)
    assert len(values) == len(ch.values) > 100
    np.testing.assert_allclose(values, ch.values, rtol=1e-9, atol=0)
    np.testing.assert_allclose(actions, ch.actions, rtol=0, atol=1e-9)


def test_an_order_still_open_a_bar_later_is_canceled_with_a_line(stock, tmp_path):
    from trade.engine import TradeEngine, plan_trade
    from trade.feed import LiveFeed

    class Sleepy(MemoryBroker):  # accepts orders, never fills them
        def submit(self, o):
            from trade.broker import Order

            self.calls.append(o.client_order_id)
            return self.orders.setdefault(o.client_order_id, Order(o.client_order_id, o.symbol, o.side, o.qty, "new"))

        def cancel(self, cid):
            self.orders[cid].status = "canceled"

    run_dir, cfg, arrays = stock
    k0 = int(pd.DatetimeIndex(arrays.times).searchsorted(pd.Timestamp("2019-01-02"))) + 1
    sizes = iter([k0, k0 + 1])
    broker = Sleepy(100_000.0, lambda s: 1.0)
    lines: list[str] = []
    eng = TradeEngine(plan_trade(run_dir, replay=None, arrays=arrays.slice(0, k0)), broker, tmp_path / "live",
                      feed=LiveFeed(cfg, fetch=lambda: arrays.slice(0, next(sizes))), echo=lines.append)
    try:
        eng.run_live(max_bars=2, now=lambda: pd.Timestamp("2019-01-04"))
        first = [o for o in eng.state.orders() if o["bar"] == k0 - 1]
        assert first and all(o["status"] == "canceled" for o in first)
        assert sum(line.startswith("canceled fm") for line in lines) == len(first)
        assert all(o["status"] == "new" for o in eng.state.orders() if o["bar"] == k0)
    finally:
        eng.close()


def test_live_loop_through_alpaca_py_on_the_local_alpaca_emulation(stock, tmp_path, monkeypatch):
    """The engine against the real AlpacaBroker (alpaca-py) talking to tests/test_trade_brokers.py's
    local Alpaca emulation: orders go out with their client ids, the book is reconciled, and a bar
    whose transaction died after its orders were sent is redone without posting any id twice."""
    pytest.importorskip("alpaca")
    import test_trade_brokers as tb
    from trade import faults
    from trade.alpaca_broker import AlpacaBroker
    from trade.engine import TradeEngine, plan_trade
    from trade.feed import LiveFeed

    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("APCA_API_KEY_ID", tb.APCA_KEY)
    monkeypatch.setenv("APCA_API_SECRET_KEY", tb.APCA_SECRET)
    run_dir, cfg, arrays = stock
    tickers = list(arrays.tickers)
    k0 = int(pd.DatetimeIndex(arrays.times).searchsorted(pd.Timestamp("2019-01-02"))) + 1
    times = pd.DatetimeIndex(arrays.times)
    cur = {"k": k0}
    sizes = iter([k0, k0 + 1, k0 + 1, k0 + 2])

    def fetch():
        cur["k"] = next(sizes)
        app.prices = {s: float(arrays.close[cur["k"] - 1][j]) for j, s in enumerate(tickers)}
        return arrays.slice(0, cur["k"])

    app = tb.AlpacaApp()
    app.positions = {}
    app.cash = 100_000.0
    plan = plan_trade(run_dir, replay=None, arrays=arrays.slice(0, k0))

    def open_(server):
        return TradeEngine(plan, AlpacaBroker(base_url=server.url), tmp_path / "live",
                           feed=LiveFeed(cfg, fetch=fetch), echo=None)

    def now():
        return times[cur["k"] - 1] + pd.Timedelta(hours=20)

    with tb.LocalServer(app) as server:
        eng = open_(server)
        eng.run_live(max_bars=1, now=now)  # bar k0 - 1
        real = faults.hit

        def die(point):  # the second bar dies after sending its orders, before its commit
            if point == "before_commit":
                raise KeyboardInterrupt
            real(point)

        monkeypatch.setattr(faults, "hit", die)
        with pytest.raises(KeyboardInterrupt):
            eng.run_live(max_bars=1, now=now)  # bar k0: orders posted, transaction rolled back
        eng.close()
        monkeypatch.setattr(faults, "hit", real)
        posted = [json.loads(r.body)["client_order_id"] for r in server.calls("POST", "/v2/orders")]
        eng = open_(server)
        try:
            assert eng.state.last_bar() == k0 - 1  # the dead bar left nothing
            eng.run_live(max_bars=2, now=now)  # bar k0 again, then k0 + 1
            assert eng.state.last_bar() == k0 + 1
            after = [json.loads(r.body)["client_order_id"] for r in server.calls("POST", "/v2/orders")]
            assert len(posted) > 0 and after[: len(posted)] == posted
            assert len(after) == len(set(after))  # no client id posted twice
            redone = {o["client_order_id"] for o in eng.state.orders() if o["bar"] == k0}
            assert set(posted) & redone  # the bar's orders sent before the "crash" were found, not re-sent
            # the state's book is the broker's at the last bar's reconcile; that bar's orders (the
            # emulation fills on submit) come on top
            book = dict(eng.state.positions())
            for o in eng.state.orders():
                if o["bar"] == k0 + 1:
                    book[o["symbol"]] = book.get(o["symbol"], 0.0) + (1 if o["side"] == "buy" else -1) * o["filled_qty"]
            assert {s: q for s, q in book.items() if q} == {s: q for s, q in app.positions.items() if q}
        finally:
            eng.close()


def test_replay_parity_of_the_ensemble_trades_each_windows_chosen_member(ashare, tmp_path):
    run_dir, cfg, arrays = ashare
    with pytest.raises(ConfigError, match="choose one with --agent"):
        open_engine(run_dir, replay="run", echo=None, arrays=arrays)
    eng = open_engine(run_dir, replay="run", agent="ensemble", out=tmp_path / "tf", echo=None, arrays=arrays)
    try:
        chosen = json.loads((run_dir / "manifest.json").read_text())["windows"]["ensemble_seed0"]
        # each window's model is its chosen member's, with that member's sampling option (on the
        # development machine window 0 chose ppo and window 1 a2c: the replay switches models)
        for r in chosen:
            assert eng.plan.models[r["window"]].parent.name == f"{r['chosen']}_seed0"
            assert eng.plan.deterministic[r["window"]] == cfg["agents"][r["chosen"]].get("deterministic", True)
        eng.run()
    finally:
        eng.close()
    _check_parity(ashare, tmp_path / "tf", agent="ensemble")
