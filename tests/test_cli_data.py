"""``finmeta data ...`` end to end through ``finmeta.cli.main`` (return codes, stdout/stderr)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from data_processors.store import list_datasets, load_dataset
from finmeta.cli import main

INFO_KEYS = {"name", "rows", "tickers", "start", "end", "freq", "columns", "sha256"}


def _json(capsys) -> dict:
    out = capsys.readouterr().out
    return json.loads(out)


@pytest.mark.parametrize("cmd", ["download", "import", "features", "info", "list", "check"])
def test_every_command_help_has_an_example(cmd, capsys):
    assert main(["data", cmd, "--help"]) == 0
    out = capsys.readouterr().out
    assert f"Example: finmeta data {cmd}" in " ".join(out.split())


def test_import_shared_file_info_list(shared_data, capsys):
    path = shared_data / "china_a_shares/sse50_baostock_daily_unadjusted_2017-01-03_2023-02-13.csv.gz"
    assert main(["data", "import", str(path), "--format", "baostock", "--name", "sse50"]) == 0
    assert "imported dataset sse50: 70399 rows, 50 tickers, 2017-01-03 .. 2023-02-13 (1d)" in capsys.readouterr().out
    assert main(["data", "info", "sse50", "--json"]) == 0
    info = _json(capsys)
    assert INFO_KEYS <= set(info)
    assert info["rows"] == 70399 and len(info["tickers"]) == 50 and info["freq"] == "1d"
    assert info["start"] == "2017-01-03" and info["end"] == "2023-02-13" and info["integrity"] == "ok"
    assert info["source"] == "baostock" and info["params"]["calendar"] == "XSHG"
    assert info["params"]["file_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert {"preclose", "tradestatus", "is_st"} <= set(info["columns"])
    df = load_dataset("sse50")
    assert len(df) == 70399 and df["time"].is_monotonic_increasing
    assert main(["data", "list"]) == 0
    assert "sse50" in capsys.readouterr().out
    assert main(["data", "info", "sse50"]) == 0
    assert info["sha256"] in capsys.readouterr().out


def test_import_bad_file_is_one_line_error_and_stores_nothing(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("time,tic,open,high,low,close,volume\n"
                   "2020-01-02,AAA,10,11,9,10.5,100\n"
                   "2020-01-03,AAA,10,10,11,10.5,100\n")
    assert main(["data", "import", str(bad), "--format", "canonical", "--name", "bad"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert str(bad) in err and "row 1 (AAA 2020-01-03): high 10.0 < low 11.0" in err
    assert list_datasets() == []


@pytest.mark.parametrize("argv, needle", [
    (["data", "info", "missing"], "dataset 'missing' not found"),
    (["data", "import", "nofile.csv", "--format", "canonical", "--name", "x"], "nofile.csv"),
    (["data", "import", "x.csv", "--format", "nosuch", "--name", "x"], "unknown source"),
    (["data", "download", "--source", "synthetic", "--tickers", "A", "--start", "2020-01-01", "--end", "2020-02-01",
      "--name", "a/b"], "dataset name 'a/b'"),
    (["data", "features", "missing", "--out", "y"], "dataset 'missing' not found"),
])
def test_user_errors_exit_2(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and err.startswith("error:")


def test_download_synthetic_then_features(capsys):
    argv = ["data", "download", "--source", "synthetic", "--tickers", "AAA,BBB,CCC", "--start", "2020-01-01",
            "--end", "2021-01-01", "--name", "syn"]
    assert main(argv) == 0
    assert "stored dataset syn:" in capsys.readouterr().out
    raw = load_dataset("syn")
    # knock out a bar so that cleaning has to forward-fill it
    hole = (raw.tic == "BBB") & (raw.time == raw.time.unique()[100])
    from data_processors.store import save_dataset

    save_dataset("syn_holes", raw[~hole].reset_index(drop=True), source="synthetic", params={})
    argv = ["data", "features", "syn_holes", "--out", "syn_feat", "--indicators", "macd,rsi_30",
            "--turbulence", "--turbulence-window", "60"]
    assert main(argv) == 0
    capsys.readouterr()
    assert main(["data", "info", "syn_feat", "--json"]) == 0
    info = _json(capsys)
    assert {"macd", "rsi_30", "turbulence", "tradestatus"} <= set(info["columns"])
    assert info["rows"] == len(raw) and info["params"]["parent"] == "syn_holes"
    assert info["params"]["clean"]["report"]["filled"]["BBB"] == 1
    feat = load_dataset("syn_feat")
    row = feat[(feat.tic == "BBB") & (feat.time == raw.time.unique()[100])].iloc[0]
    prev = feat[(feat.tic == "BBB") & (feat.time == raw.time.unique()[99])].iloc[0]
    assert row.close == prev.close and row.tradestatus == 0 and row.volume == 0


def test_features_with_vix_file_on_dow_slice(shared_data, tmp_path, capsys):
    dow = pd.read_csv(shared_data / "us_equities/dow30_daily.csv.gz")
    dow = dow[(dow.date >= "2019-06-01") & (dow.date <= "2020-06-30") & dow.tic.isin(["AAPL", "MSFT", "JPM", "KO"])]
    src = tmp_path / "dow4.csv"
    dow.to_csv(src, index=False)
    assert main(["data", "import", str(src), "--format", "yahoo", "--name", "dow4"]) == 0
    vix_file = shared_data / "us_equities/indices_dji_vix_daily.csv.gz"
    argv = ["data", "features", "dow4", "--out", "dow4f", "--vix", str(vix_file), "--no-turbulence",
            "--calendar", "XNYS"]
    assert main(argv) == 0
    capsys.readouterr()
    feat = load_dataset("dow4f")
    assert "vix" in feat.columns and "turbulence" not in feat.columns
    for c in ("macd", "boll_ub", "boll_lb", "rsi_30", "cci_30", "dx_30", "close_30_sma", "close_60_sma"):
        assert c in feat.columns
    v = feat[feat.time == "2020-03-16"]["vix"]
    np.testing.assert_allclose(v, 82.69, rtol=1e-4)  # ^VIX close on 2020-03-16 (README)
    assert len(feat) == 4 * feat.time.nunique()


def test_features_vix_from_dataset_name(shared_data, tmp_path, capsys):
    dow = pd.read_csv(shared_data / "us_equities/dow30_daily.csv.gz")
    dow = dow[(dow.date >= "2020-01-01") & (dow.date <= "2020-12-31") & dow.tic.isin(["AAPL", "KO"])]
    src = tmp_path / "dow2.csv"
    dow.to_csv(src, index=False)
    vix_file = shared_data / "us_equities/indices_dji_vix_daily.csv.gz"
    assert main(["data", "import", str(src), "--format", "yahoo", "--name", "dow2"]) == 0
    assert main(["data", "import", str(vix_file), "--format", "yahoo", "--name", "idx"]) == 0
    assert main(["data", "features", "dow2", "--out", "f1", "--vix", "idx", "--indicators", "none",
                 "--no-turbulence"]) == 0
    assert main(["data", "features", "dow2", "--out", "f2", "--vix", str(vix_file), "--indicators", "none",
                 "--no-turbulence"]) == 0
    capsys.readouterr()
    f1, f2 = load_dataset("f1"), load_dataset("f2")
    assert "vix" in f1.columns and "macd" not in f1.columns
    np.testing.assert_array_equal(f1["vix"], f2["vix"])
    assert f1.loc[f1.time == "2020-03-16", "vix"].iloc[0] == pytest.approx(82.69, rel=1e-4)
    assert main(["data", "features", "dow2", "--out", "f3", "--vix", "dow2"]) == 2
    assert "none is ^VIX" in capsys.readouterr().err


def test_features_with_news_sentiment(shared_data, tmp_path, capsys):
    """`--news` adds the daily VADER sentiment; a headline dated day d counts for the next session."""
    dow = pd.read_csv(shared_data / "us_equities/dow30_daily.csv.gz")
    dow = dow[(dow.date >= "2022-03-01") & (dow.date <= "2022-04-30") & dow.tic.isin(["AAPL", "MSFT", "KO"])]
    src = tmp_path / "dow3.csv"
    dow.to_csv(src, index=False)
    news = pd.read_csv(shared_data / "news/corizzo_headlines_aapl_msft_tsla_2021-01-05_2022-09-20.csv.gz")
    news = news[(news.date >= "2022-03-01") & (news.date <= "2022-04-29")]
    news_file = tmp_path / "news.csv"
    news.to_csv(news_file, index=False)
    assert main(["data", "import", str(src), "--format", "yahoo", "--name", "dow3"]) == 0
    assert main(["data", "features", "dow3", "--out", "dow3s", "--indicators", "none", "--no-turbulence",
                 "--news", str(news_file)]) == 0
    capsys.readouterr()
    feat = load_dataset("dow3s")
    s = feat.pivot(index="time", columns="tic", values="sentiment")
    assert (s["KO"] == 0).all()  # no KO headlines in the file
    assert (s["AAPL"] != 0).mean() > 0.8 and (s["MSFT"] != 0).mean() > 0.8
    # the first session can only hold news from before it: 2022-03-01's headlines go to 03-02
    first = news[news.date == "2022-03-01"]
    assert len(first) and s.loc[pd.Timestamp("2022-03-01"), "AAPL"] == 0


def _store_small(name: str = "small"):
    from data_processors.store import save_dataset

    times = pd.bdate_range("2021-01-04", periods=5)
    df = pd.DataFrame({"time": times, "tic": "AAA", "open": 10.0, "high": 11.0, "low": 9.0, "close": 10.0,
                       "volume": 100.0})
    return save_dataset(name, df, source="canonical", params={})


def test_info_fails_on_a_broken_dataset_and_list_shows_it(_isolated_home, capsys):
    m = _store_small("good")
    m2 = _store_small("bad")
    folder = _isolated_home / "datasets" / "bad"
    (folder / m2["file"]).write_bytes(b"garbage")
    assert main(["data", "info", "bad"]) == 1
    assert "FAILED" in capsys.readouterr().out
    assert main(["data", "info", "bad", "--json"]) == 1
    assert _json(capsys)["integrity"].startswith("FAILED")
    assert main(["data", "info", "good"]) == 0
    capsys.readouterr()
    (folder / "manifest.json").write_text("{not json")
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    assert "[broken: dataset bad:" in " ".join(out.split()), out  # rich markup must not eat it
    assert m["sha256"]


def test_check_command_reports_removes_orphans_and_fails_on_damage(_isolated_home, capsys):
    m = _store_small("ok1")
    folder = _isolated_home / "datasets" / "ok1"
    (folder / "data-00000000000000aa.parquet").write_bytes(b"orphan")
    assert main(["data", "check", "ok1", "--keep-orphans"]) == 0
    assert "orphan kept: data-00000000000000aa.parquet" in capsys.readouterr().out
    assert main(["data", "check"]) == 0
    out = capsys.readouterr().out
    assert "orphan removed: data-00000000000000aa.parquet" in out and out.startswith("ok")
    assert not (folder / "data-00000000000000aa.parquet").exists()
    (folder / m["file"]).write_bytes(b"damaged")
    assert main(["data", "check", "ok1"]) == 1
    out = capsys.readouterr().out
    assert out.startswith("FAILED") and "truncated or was modified" in out


def _one_bar_tickers(name: str, n: int, days: list[str]) -> None:
    """A stored dataset of ``n`` tickers with ONE bar each, on ``days`` in turn (issue 19 C)."""
    from data_processors.store import save_dataset

    t = pd.to_datetime([days[i % len(days)] for i in range(n)])
    c = 10.0 + np.arange(n) % 7
    df = pd.DataFrame({"time": t, "tic": [f"T{i:05d}" for i in range(n)], "open": c, "high": c + 0.1,
                       "low": c - 0.1, "close": c, "volume": 1000.0})
    save_dataset(name, df.sort_values(["time", "tic"]).reset_index(drop=True), source="canonical",
                 params={"calendar": "XNYS"})


def test_features_on_one_bar_tickers_fails_fast_with_one_clear_error(capsys):
    """One bar per ticker cannot make a time series: one line naming why, before any indicator runs."""
    _one_bar_tickers("snap", 500, ["2020-01-02"])  # a one-day cross-section
    assert main(["data", "features", "snap", "--out", "snap_feat"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "dataset snap" in err and "1 bar (2020-01-02)" in err and "500 tickers" in err
    assert "500 of 500 tickers have a single bar" in err
    # spread over days: the late-start cut leaves one bar; the error says so and names the way out
    _one_bar_tickers("spread", 300, ["2020-01-02", "2020-01-03", "2020-01-06"])
    assert main(["data", "features", "spread", "--out", "spread_feat"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "start cut from 2020-01-02 to 2020-01-06" in err and "--late-start drop" in err
    assert list_datasets() == ["snap", "spread"]  # nothing stored
    # with --late-start drop the 100 tickers present from the first day make a 3-bar panel
    assert main(["data", "features", "spread", "--out", "spread_feat", "--late-start", "drop",
                 "--indicators", "close_30_sma"]) == 0
    out = load_dataset("spread_feat")
    assert out["tic"].nunique() == 100 and out["time"].nunique() == 3 and out["close"].notna().all()
