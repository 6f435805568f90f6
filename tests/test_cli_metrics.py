"""``finmeta metrics`` and ``finmeta report`` through the real entry point (finmeta.cli.main)."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from benchmarks.metrics import FIGURES, chain_windows, compute_metrics
from benchmarks.report import save_account_values
from finmeta.cli import main


def _run(capsys, *args: str) -> tuple[int, str, str]:
    rc = main(list(args))
    out = capsys.readouterr()
    return rc, out.out, out.err


def _icaif_chain_csv(shared_data, tmp_path):
    folder = shared_data / "fixtures" / "icaif2020_ensemble_account_values"
    files = sorted(folder.glob("account_value_trade_ensemble_*.csv"),
                   key=lambda f: int(re.search(r"_(\d+)\.csv$", f.name).group(1)))
    values = chain_windows([pd.read_csv(f, index_col=0).iloc[:, 0].to_numpy() for f in files])
    path = tmp_path / "ensemble.csv"
    pd.Series(values).to_csv(path)  # same shape as the source files: unnamed index + one column
    return path, values


def test_metrics_json_on_icaif_chain(shared_data, tmp_path, capsys):
    path, values = _icaif_chain_csv(shared_data, tmp_path)
    rc, out, err = _run(capsys, "metrics", str(path), "--json")
    assert rc == 0, err
    payload = json.loads(out)
    expected = compute_metrics(values)
    for k in FIGURES:
        assert payload[k] == pytest.approx(expected[k], rel=1e-12)
    assert round(payload["sharpe"], 4) == 1.6043 and round(payload["max_drawdown"], 4) == -0.0577
    assert payload["n_values"] == 1117 and payload["periods_per_year"] == 252


def test_metrics_text_states_periods_and_dates(tmp_path, capsys):
    path = tmp_path / "btc.csv"
    dates = pd.date_range("2020-01-01", periods=6, freq="D")
    pd.DataFrame({"date": dates, "value": [100.0, 101.0, 99.0, 103.0, 102.0, 104.0]}).to_csv(path, index=False)
    rc, out, _ = _run(capsys, "metrics", str(path))
    assert rc == 0
    assert "periods per year: 252 (default: daily stocks; not inferred from dates)" in out
    assert "2020-01-01 -> 2020-01-06" in out
    rc, out365, _ = _run(capsys, "metrics", str(path), "--periods-per-year", "365")
    m = compute_metrics([100.0, 101.0, 99.0, 103.0, 102.0, 104.0], periods_per_year=365)
    assert f"sharpe             {m['sharpe']:.4f}" in out365
    assert "periods per year: 365 (given)" in out365


def test_metrics_reads_dated_series_files(tmp_path, capsys):
    s = pd.Series([100.0, 102.0, 101.0], index=pd.bdate_range("2021-01-04", periods=3), name="equity")
    s.to_csv(tmp_path / "s.csv.gz")  # unnamed index column of dates
    s.to_frame().to_parquet(tmp_path / "s.parquet")  # DatetimeIndex stored as the parquet index
    for name in ("s.csv.gz", "s.parquet"):
        rc, out, _ = _run(capsys, "metrics", str(tmp_path / name))
        assert rc == 0 and "3 values, 2021-01-04 -> 2021-01-06" in out, out


def test_metrics_parquet_with_column(tmp_path, capsys):
    path = tmp_path / "v.parquet"
    pd.DataFrame({"cash": [1.0, 2.0, 3.0], "total": [10.0, 12.0, 11.0]}).to_parquet(path)
    rc, _, err = _run(capsys, "metrics", str(path))
    assert rc == 2 and err.count("\n") == 1 and "--column" in err
    rc, out, _ = _run(capsys, "metrics", str(path), "--column", "total", "--json")
    assert rc == 0 and json.loads(out)["cumulative_return"] == pytest.approx(0.1)


def test_metrics_constant_path_prints_nan_json_null(tmp_path, capsys):
    path = tmp_path / "flat.csv"
    pd.DataFrame({"account_value": [5.0] * 4}).to_csv(path, index=False)
    rc, out, _ = _run(capsys, "metrics", str(path), "--json")
    assert rc == 0 and json.loads(out)["sharpe"] is None


@pytest.mark.parametrize(
    "content, pattern",
    [
        (None, r"missing\.csv: file not found"),
        ("a,b\nx,y\n", "no numeric column"),
        ("account_value\n1.0\n", "at least 2 account values"),
        ("account_value\n1.0\n2.0\n\n", None),  # blank trailing line is fine
        ("account_value\n1.0\n2.0\nnan\n4.0\n", "NaN account value at row 2"),
    ],
)
def test_metrics_user_errors_exit_2_with_one_line(tmp_path, capsys, content, pattern):
    path = tmp_path / "missing.csv"
    if content is not None:
        path.write_text(content)
    rc, _, err = _run(capsys, "metrics", str(path))
    if pattern is None:
        assert rc == 0
        return
    assert rc == 2
    assert err.startswith("error: ") and err.count("\n") == 1
    assert re.search(pattern, err), err


def test_every_command_help_shows_an_example(capsys):
    for cmd in ("metrics", "report"):
        rc, out, _ = _run(capsys, cmd, "--help")
        assert rc == 0 and f"Example: finmeta {cmd}" in out


def test_report_command_rebuilds_a_run(tmp_path, capsys):
    rng = np.random.default_rng(5)
    for seed in range(2):
        save_account_values(tmp_path, "ppo", 1e6 * np.cumprod(1 + rng.normal(0.001, 0.01, 50)), seed=seed)
    save_account_values(tmp_path, "index", 1e6 * np.cumprod(1 + rng.normal(0.0, 0.01, 50)))
    rc, out, err = _run(capsys, "report", str(tmp_path), "--no-tearsheets", "--periods-per-year", "365")
    assert rc == 0, err
    assert "periods per year: 365 (--periods-per-year)" in out and "| ppo |" in out
    table = pd.read_csv(tmp_path / "table.csv")
    assert list(table["agent"]) == ["index", "ppo"] and "sharpe_ci95" in table.columns
    rc, _, err = _run(capsys, "report", str(tmp_path / "nope"))
    assert rc == 2 and "run directory not found" in err


def test_metrics_prints_the_probabilistic_sharpe_ratio(tmp_path, capsys):
    """``psr`` = Z[SR sqrt(n - 1) / sqrt(1 - g3 SR + (g4 - 1)/4 SR^2)] on the file's daily returns
    (Bailey & López de Prado 2012), computed here straight from scipy's moments."""
    from scipy import stats

    rng = np.random.default_rng(8)
    r = rng.normal(0.0004, 0.01, 400)
    path = tmp_path / "v.csv"
    pd.DataFrame({"account_value": 1e6 * np.cumprod(np.r_[1.0, 1 + r])}).to_csv(path, index=False)
    rc, out, err = _run(capsys, "metrics", str(path), "--json")
    assert rc == 0, err
    sr = r.mean() / r.std(ddof=1)
    g3, g4 = stats.skew(r), stats.kurtosis(r, fisher=False)
    expected = stats.norm.cdf(sr * np.sqrt(399) / np.sqrt(1 - g3 * sr + (g4 - 1) / 4 * sr**2))
    assert json.loads(out)["psr"] == pytest.approx(expected, rel=1e-9)
    rc, out, _ = _run(capsys, "metrics", str(path))
    assert rc == 0 and re.search(r"^psr\s+0\.\d{4}$", out, re.M)


def test_report_command_prints_the_statistics(tmp_path, capsys):
    rng = np.random.default_rng(6)
    dates = pd.bdate_range("2021-01-04", periods=120)
    for seed in range(2):
        save_account_values(tmp_path, "ppo", pd.Series(1e6 * np.cumprod(1 + rng.normal(0.001, 0.01, 120)), index=dates),
                            seed=seed)
    save_account_values(tmp_path, "index", pd.Series(1e6 * np.cumprod(1 + rng.normal(0.0, 0.01, 120)), index=dates))
    save_account_values(tmp_path, "min_variance", pd.Series(1e6 * np.cumprod(1 + rng.normal(0.0, 0.005, 120)),
                                                            index=dates))
    rc, out, err = _run(capsys, "report", str(tmp_path), "--no-tearsheets")
    assert rc == 0, err
    assert "## Statistics" in out and "ΔSR vs index" in out and "ΔSR vs min_variance" in out
    assert "trials N = 3" in out and "PBO (CSCV" in out and "SPA p-value (learned rows ppo vs index)" in out
    assert "stats.json" in out
