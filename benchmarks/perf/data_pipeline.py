"""Data-pipeline speed: FinMeta's clean + features vs FinRL 0.3.7's ``FeatureEngineer``, same frame.

Data (``$FINMETA_DATA_DIR``): Dow 30 daily (``us_equities/dow30_daily.csv.gz``) restricted to
2009-01-01 .. 2022-12-30 (30 tickers, DOW listed 2019-03-20) and ``^VIX`` from
``us_equities/indices_dji_vix_daily.csv.gz``. Both pipelines start from the same in-memory raw
frame (reading the CSV is not timed for either) and read the VIX file inside their VIX stage.

* ``finmeta``: ``clean(df, "XNYS", late_start="drop")`` (drops DOW like FinRL's ``clean_data``),
  then ``add_features`` with the 8 default indicators (stockstats engine, or ``--engine talib``),
  ``vix=<file>`` and ``turbulence=True`` (252-day window). Stage times come from the cleaner call
  and ``add_features``' own per-stage timer; ``total`` is the wall time of clean + add_features.
  Repeated ``--repeat`` times; the median run is reported.
* ``finrl``: ``FeatureEngineer(tech_indicator_list=<same 8>, use_vix=True, use_turbulence=True)
  .preprocess_data`` from ``finrl/meta/preprocessor/preprocessors.py`` loaded by file path
  (:mod:`benchmarks.peers.finrl_features`); its Yahoo download of ``^VIX`` is replaced by a reader
  of the same VIX file (yfinance's end-exclusive window kept). Run once (it is slow).

The LAST line printed is a JSON list of records ``{"impl": "finmeta"|"finrl", "stage":
"total"|"clean"|"indicators"|"vix"|"turbulence", "seconds": x}`` followed by ratio records
``{"ratio": "finrl/finmeta", "stage": s, "value": x}``.

Usage: ``FINMETA_DATA_DIR=/path/to/shared/data python benchmarks/perf/data_pipeline.py``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import pandas as pd

from data_processors.schema import DEFAULT_INDICATORS

START, END = "2009-01-01", "2022-12-30"
STAGES = ("clean", "indicators", "vix", "turbulence")


def _data_dir() -> Path:
    value = os.environ.get("FINMETA_DATA_DIR")
    if not value or not Path(value).is_dir():
        sys.exit("set FINMETA_DATA_DIR to the shared data folder")
    return Path(value)


def read_raw(data: Path) -> pd.DataFrame:
    """Dow 30 raw canonical frame (through the yahoo source's file reader), START..END."""
    from data_processors.sources import get_source

    df = get_source("yahoo").read_file(data / "us_equities" / "dow30_daily.csv.gz")
    df = df[(df["time"] >= START) & (df["time"] <= END)]
    return df.drop(columns=[c for c in ("adjcp",) if c in df.columns]).reset_index(drop=True)


def run_finmeta(raw: pd.DataFrame, vix_path: Path, engine: str) -> dict[str, float]:
    from data_processors.clean import clean
    from data_processors.features import add_features

    t0 = time.perf_counter()
    panel, _ = clean(raw, calendar="XNYS", late_start="drop")
    t1 = time.perf_counter()
    out = add_features(panel, indicators=DEFAULT_INDICATORS, engine=engine, vix=vix_path, turbulence=True)
    t2 = time.perf_counter()
    sec = {"clean": t1 - t0, **{k: v for k, v in out.attrs["feature_seconds"].items() if k in STAGES}}
    sec["total"] = t2 - t0
    return sec


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, help="finmeta runs (median reported)")
    ap.add_argument("--engine", default="stockstats", choices=("stockstats", "talib"))
    ap.add_argument("--skip-finrl", action="store_true", help="time finmeta only")
    args = ap.parse_args(argv)

    data = _data_dir()
    vix_path = data / "us_equities" / "indices_dji_vix_daily.csv.gz"
    raw = read_raw(data)
    print(f"frame: {len(raw)} rows, {raw['tic'].nunique()} tickers, {START}..{END}; engine={args.engine}",
          file=sys.stderr)

    runs = [run_finmeta(raw, vix_path, args.engine) for _ in range(max(1, args.repeat))]
    records: list[dict] = []
    ours = {k: statistics.median(r[k] for r in runs) for k in ("total", *STAGES)}
    for k in ("total", *STAGES):
        records.append({"impl": "finmeta", "stage": k, "seconds": round(ours[k], 4)})
    print(f"finmeta runs (total s): {[round(r['total'], 3) for r in runs]}", file=sys.stderr)

    if not args.skip_finrl:
        from benchmarks.peers.finrl_features import run_feature_engineer, to_finrl_frame

        frame = to_finrl_frame(raw)
        _, theirs = run_feature_engineer(frame, list(DEFAULT_INDICATORS), vix_path)
        for k in ("total", *STAGES):
            records.append({"impl": "finrl", "stage": k, "seconds": round(theirs[k], 4)})
        for k in ("total", *STAGES):
            if ours[k] > 0:
                records.append({"ratio": "finrl/finmeta", "stage": k, "value": round(theirs[k] / ours[k], 2)})
        print(f"finrl/finmeta total ratio: {theirs['total'] / ours['total']:.1f}x "
              f"(finrl {theirs['total']:.2f} s, finmeta {ours['total']:.3f} s)")
    print(json.dumps(records))
    return records


if __name__ == "__main__":
    main()
