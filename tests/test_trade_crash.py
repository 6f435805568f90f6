"""Crash safety of the trade loop: SIGKILL at named points and at random times, then restart.

Each trial forks a trade process (the parent has the libraries imported, so a trial costs its bars,
not an interpreter start), kills it -- by a fault point (``FINMETA_TRADE_FAULT``, see
:mod:`trade.faults`), including ``after_submit`` (an order reached the broker, the bar's transaction
is not committed), or by a SIGKILL from outside at a random moment -- then restarts it to the end.
The final book must equal an uninterrupted run's, bar values and orders included, and the paper
broker's log must show every client order id submitted exactly once.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
import traceback
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from _trade_runs import trade_run

from benchmarks.loop import WalkForward


@pytest.fixture(scope="session")
def runs_root(tmp_path_factory):
    return tmp_path_factory.mktemp("trade_runs_crash")


def _span(run) -> tuple[str, str]:
    """A dozen bars around the first window boundary (the model changes mid-span)."""
    run_dir, cfg, arrays = run
    lo1 = WalkForward(arrays, dict(cfg), run_dir).windows[1].trade[0]
    t = pd.DatetimeIndex(arrays.times)
    return str(t[lo1 - 6].date()), str(t[lo1 + 6].date())


def _fork_trade(run, folder: Path, fault: str | None) -> int:
    pid = os.fork()
    if pid:
        return pid
    code = 0
    try:  # the child: one trade process
        import torch

        torch.set_num_threads(1)
        from trade import faults
        from trade.engine import open_engine

        faults._seen.clear()
        if fault:
            os.environ["FINMETA_TRADE_FAULT"] = fault
        else:
            os.environ.pop("FINMETA_TRADE_FAULT", None)
        start, end = _span(run)
        eng = open_engine(run[0], broker="paper", replay="run", agent="a2c", start=start, end=end, out=folder,
                          echo=None, arrays=run[2])
        eng.run()
        eng.close()
    except BaseException:
        traceback.print_exc()
        code = 3
    finally:
        os._exit(code)


def _wait(pid: int, timeout: float = 120.0) -> int:
    t0 = time.time()
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        if time.time() - t0 > timeout:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError(f"trade process {pid} hung")
        time.sleep(0.01)


def _book(folder: Path) -> dict:
    out = {}
    con = sqlite3.connect(str(folder / "trade.sqlite"))
    try:
        out["bars"] = con.execute("SELECT bar, time, value, cash, action, sent, filled FROM bars ORDER BY bar").fetchall()
        out["positions"] = dict(con.execute("SELECT symbol, qty FROM positions"))
        out["cash"] = con.execute("SELECT cash FROM account").fetchone()[0]
        out["orders"] = sorted(con.execute("SELECT client_order_id, symbol, side, qty, status, filled_qty, avg_price, "
                                           "fee FROM orders").fetchall())
    finally:
        con.close()
    con = sqlite3.connect(str(folder / "paper.sqlite"))
    try:
        out["broker_positions"] = dict(con.execute("SELECT symbol, qty FROM positions"))
        out["broker_cash"] = con.execute("SELECT cash FROM account").fetchone()[0]
        out["submits"] = [r[0] for r in con.execute("SELECT client_order_id FROM submits ORDER BY seq")]
    finally:
        con.close()
    return out


@pytest.fixture(scope="module")
def references(runs_root, tmp_path_factory):
    refs = {}
    for family in ("stock_trading", "ashare"):
        run = trade_run(family, runs_root)
        folder = tmp_path_factory.mktemp(f"ref_{family}")
        t0 = time.perf_counter()
        assert _wait(_fork_trade(run, folder, None)) == 0
        book = _book(folder)
        book["seconds"] = time.perf_counter() - t0  # the random kills below are timed relative to it
        assert len(book["submits"]) >= 13  # the span trades (every after_submit trial below kills)
        refs[family] = (run, book)
    return refs


# points x occurrences: every point, early and late in the span; after_submit and before_commit
# (between "order sent" and "state committed") the most
TRIALS = [("after_submit", n) for n in (1, 2, 3, 4, 5, 6, 8, 10, 12, 13)] + \
         [("before_commit", n) for n in (1, 3, 5, 7, 9, 11)] + \
         [("after_advance", 3), ("after_advance", 9), ("after_reconcile", 2), ("after_reconcile", 10),
          ("bar_start", 2), ("bar_start", 8), ("after_commit", 1), ("after_commit", 6)]


def _same_as_reference(book: dict, ref: dict) -> None:
    assert book["positions"] == ref["positions"] == book["broker_positions"]
    assert book["cash"] == ref["cash"] == book["broker_cash"]
    assert book["bars"] == ref["bars"]
    assert book["orders"] == ref["orders"]
    counts = Counter(book["submits"])
    assert max(counts.values()) == 1, [c for c, n in counts.items() if n > 1]  # no id submitted twice
    assert set(counts) == set(ref["submits"])


def test_sigkill_at_fault_points_then_restart_equals_an_uninterrupted_run(references, tmp_path):
    killed = 0
    for k, (point, n) in enumerate(TRIALS):
        family = ("stock_trading", "ashare")[k % 2]
        run, ref = references[family]
        folder = tmp_path / f"trial{k}"
        rc = _wait(_fork_trade(run, folder, f"{point}:{n}"))
        assert rc in (-signal.SIGKILL, 0), (point, n, rc)
        killed += rc == -signal.SIGKILL
        assert _wait(_fork_trade(run, folder, None)) == 0
        _same_as_reference(_book(folder), ref)
    assert killed == len(TRIALS) >= 24  # every point is reached in the span: each trial was a kill


def test_sigkill_at_random_times_then_restart_equals_an_uninterrupted_run(references, tmp_path):
    rnd = random.Random(16)
    killed = 0
    for k in range(6):
        family = ("stock_trading", "ashare")[k % 2]
        run, ref = references[family]
        folder = tmp_path / f"trial{k}"
        # two kills per trial, then the rest runs through; the moments are fractions of this machine's
        # uninterrupted run (fixed seconds would all land after the end on a fast, idle machine)
        for lo, hi in ((0.2, 0.7), (0.1, 0.4)):
            pid = _fork_trade(run, folder, None)
            time.sleep(rnd.uniform(lo, hi) * ref["seconds"])
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            killed += _wait(pid) == -signal.SIGKILL
        assert _wait(_fork_trade(run, folder, None)) == 0
        _same_as_reference(_book(folder), ref)
    assert killed >= 6, killed


def test_the_cli_process_killed_after_an_order_was_sent_resumes_without_sending_it_again(references, tmp_path):
    run, ref = references["stock_trading"]
    start, end = _span(run)
    folder = tmp_path / "cli"
    args = [sys.executable, "-m", "finmeta", "trade", str(run[0]), "--broker", "paper", "--replay", "run",
            "--start", start, "--end", end, "--out", str(folder), "--quiet"]
    env = {**os.environ, "FINMETA_TRADE_FAULT": "after_submit:4"}
    p = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
    env.pop("FINMETA_TRADE_FAULT")
    p = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert p.returncode == 0, p.stderr[-2000:]
    _same_as_reference(_book(folder), ref)
