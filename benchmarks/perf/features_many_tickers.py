"""``finmeta data features`` on a dataset of many tickers with one bar each (issue 19 C).

Builds synthetic canonical frames of ``N`` tickers x 1 daily bar, saves each with
``data_processors.store.save_dataset`` under a temporary ``FINMETA_HOME``, and times the CLI end
to end (a fresh ``python -m finmeta.cli data features NAME --out NAME_feat`` process, import
included) for two layouts:

* ``same``: every ticker's bar on 2020-01-02 (a one-day cross-section): the panel has 1 bar;
* ``spread``: the bars spread over the XNYS sessions of 2019-2020: the late-start cut leaves
  the last day only.

Before issue 19 C both ran the full pipeline: ``same`` spent ~6 ms per ticker in stockstats
(20k tickers: ~2 min; 200k: ~20 min) to produce indicators of a 1-bar panel, and ``spread``
stored a panel whose tickers without a bar on the last day had NaN prices. Now both stop after
cleaning with one ``DataValidationError`` line (exit code 2).

``--bars B`` gives every ticker ``B`` consecutive bars instead (``B >= 2`` builds a real panel:
the per-ticker indicator cost, linear in N, is then measured).

The LAST line printed is a JSON list of records ``{"layout", "tickers", "bars", "seconds",
"build_seconds", "rc", "message"}`` (``message``: the CLI's last stderr/stdout line, cut to 300
characters).

Usage: ``PYTHONPATH=. python benchmarks/perf/features_many_tickers.py --sizes 20000 200000``
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import pandas as pd


def build(name: str, n: int, layout: str, bars: int) -> float:
    """Save an ``n``-ticker dataset (``bars`` bars each) as ``name``; returns the seconds it took."""
    from data_processors.calendars import calendar_times
    from data_processors.store import save_dataset

    t0 = time.perf_counter()
    days = calendar_times("XNYS", pd.Timestamp("2019-01-01"), pd.Timestamp("2020-12-31"), "1d")
    i = np.arange(n)
    start = np.zeros(n, dtype=np.int64) if layout == "same" else (i % (len(days) - bars + 1))
    if layout == "same":
        start[:] = days.get_loc(pd.Timestamp("2020-01-02"))
    k = np.repeat(start, bars) + np.tile(np.arange(bars), n)
    tic = np.repeat(np.array([f"T{j:06d}" for j in range(n)], dtype=object), bars)
    close = 10.0 + (np.repeat(i, bars) % 97) / 10.0 + np.tile(np.arange(bars), n) * 0.01
    df = pd.DataFrame({"time": days[k], "tic": tic, "open": close, "high": close + 0.05,
                       "low": close - 0.05, "close": close, "volume": 1000.0})
    df = df.sort_values(["time", "tic"]).reset_index(drop=True)
    save_dataset(name, df, source="canonical", params={"calendar": "XNYS"})
    return time.perf_counter() - t0


def run_cli(name: str, timeout: float) -> tuple[float, int, str]:
    cmd = [sys.executable, "-m", "finmeta.cli", "data", "features", name, "--out", f"{name}_feat"]
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=os.environ.copy())
        rc, text = p.returncode, (p.stderr.strip() or p.stdout.strip())
    except subprocess.TimeoutExpired:
        rc, text = 124, f"timed out after {timeout:g} s"
    lines = text.splitlines()
    return time.perf_counter() - t0, rc, (lines[-1] if lines else "")[:300]


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[20_000, 200_000], help="numbers of tickers")
    ap.add_argument("--layouts", nargs="+", default=["same", "spread"], choices=("same", "spread"))
    ap.add_argument("--bars", type=int, default=1, help="bars per ticker (default 1)")
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds per CLI run")
    args = ap.parse_args(argv)

    records = []
    with tempfile.TemporaryDirectory(prefix="finmeta_perf_") as home:
        os.environ["FINMETA_HOME"] = home
        for n in args.sizes:
            for layout in args.layouts:
                name = f"many_{layout}_{n}"
                built = build(name, n, layout, args.bars)
                sec, rc, msg = run_cli(name, args.timeout)
                rec = {"layout": layout, "tickers": n, "bars": args.bars, "seconds": round(sec, 3),
                       "build_seconds": round(built, 3), "rc": rc, "message": msg}
                print(f"{layout:6s} {n:>8d} tickers x {args.bars} bar(s): {sec:8.2f} s  rc={rc}  {msg[:120]}",
                      flush=True)
                records.append(rec)
    print(json.dumps(records))
    return records


if __name__ == "__main__":
    main()
