"""benchmarks.report: value files, run directories, tables, plots, tearsheets, manifests."""

from __future__ import annotations

import re

import json
import math

import numpy as np
import pandas as pd
import pytest

from benchmarks import report as rp
from benchmarks.metrics import FIGURES, InvalidValuesError, RunDirError, ValueFileError, compute_metrics
from finmeta.errors import FinMetaError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _path(seed: int, n: int = 120, drift: float = 0.0004, dated: bool = True) -> pd.Series:
    rng = np.random.default_rng(seed)
    v = 1e6 * np.cumprod(np.r_[1.0, 1.0 + rng.normal(drift, 0.01, n - 1)])
    index = pd.bdate_range("2021-01-04", periods=n) if dated else pd.RangeIndex(n)
    return pd.Series(v, index=index)


# ---------------------------------------------------------------- reading value files


def test_reads_the_icaif_window_file(shared_data):
    f = shared_data / "fixtures" / "icaif2020_ensemble_account_values" / "account_value_trade_ensemble_126.csv"
    frame = rp.read_account_values(f)  # unnamed index column + one value column "0"
    assert list(frame.columns) == ["account_value"] and len(frame) == 63
    assert frame["account_value"].iloc[0] == 1_000_000.0
    assert isinstance(frame.index, pd.RangeIndex)


def test_dated_csv_and_column_choice(tmp_path):
    f = tmp_path / "v.csv"
    pd.DataFrame({"date": ["2020-01-02", "2020-01-03", "2020-01-06"], "cash": [1.0, 2.0, 3.0],
                  "total": [10.0, 11.0, 12.0]}).to_csv(f, index=False)
    with pytest.raises(ValueFileError, match=r"several numeric columns \['cash', 'total'\].*--column"):
        rp.read_account_values(f)
    frame = rp.read_account_values(f, column="total")
    assert isinstance(frame.index, pd.DatetimeIndex) and frame.index[-1] == pd.Timestamp("2020-01-06")
    assert frame["account_value"].tolist() == [10.0, 11.0, 12.0]
    with pytest.raises(ValueFileError, match="no column 'nope'"):
        rp.read_account_values(f, column="nope")
    g = tmp_path / "w.csv"
    pd.DataFrame({"equity": [10.0, 11.0, 12.0], "turnover": [0.0, 0.1, 0.2], "cost": [0.0, 1.0, 1.0]}).to_csv(g)
    frame = rp.read_account_values(g)  # turnover/cost are recognised, "equity" is the only candidate
    assert list(frame.columns) == ["account_value", "turnover", "cost"] and frame["account_value"].iloc[-1] == 12.0


@pytest.mark.parametrize(
    "content, pattern",
    [
        ("name,label\na,b\nc,d\n", "no numeric column"),
        ("", "cannot read as CSV"),
        ("value\n", "no rows"),
    ],
)
def test_bad_value_files(tmp_path, content, pattern):
    f = tmp_path / "bad.csv"
    f.write_text(content)
    with pytest.raises(ValueFileError, match=pattern) as info:
        rp.read_account_values(f)
    assert isinstance(info.value, FinMetaError) and str(f) in str(info.value)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ValueFileError, match="file not found"):
        rp.read_account_values(tmp_path / "nope.csv")
    with pytest.raises(ValueFileError, match="is a directory"):
        rp.read_account_values(tmp_path)


def test_nan_in_file_names_file_and_row(tmp_path):
    f = tmp_path / "ppo.csv"
    pd.DataFrame({"account_value": [1.0, 2.0, np.nan, 4.0]}).to_csv(f, index=False)
    frame = rp.read_account_values(f)
    with pytest.raises(InvalidValuesError, match=rf"{f}: NaN account value at row 2"):
        rp.metrics_of_frame(frame, 252, name=str(f))


def test_save_and_load_roundtrip_csv_and_parquet(tmp_path):
    s = _path(1)
    p1 = rp.save_account_values(tmp_path, "ppo", s, seed=3, turnover=np.r_[0.0, np.full(len(s) - 1, 0.02)], costs=np.full(len(s), 2.0))
    p2 = rp.save_account_values(tmp_path, "buy_and_hold", _path(2, dated=False), fmt="parquet")
    assert p1.name == "ppo_seed3.csv" and p2.name == "buy_and_hold.parquet"
    loaded = rp.load_run_values(tmp_path)
    assert set(loaded) == {("ppo", 3), ("buy_and_hold", None)}
    ppo = loaded[("ppo", 3)]
    assert list(ppo.columns) == ["account_value", "turnover", "cost"]
    assert isinstance(ppo.index, pd.DatetimeIndex)
    np.testing.assert_allclose(ppo["account_value"].to_numpy(), s.to_numpy(), rtol=1e-15)
    figs = rp.metrics_of_frame(ppo, 252)
    assert figs["costs_paid"] == pytest.approx(2.0 * len(s))
    assert figs["turnover"] == pytest.approx(0.02)
    with pytest.raises(RunDirError, match="must not end in _seed|not end in _seed"):
        rp.save_account_values(tmp_path, "ppo_seed1", s)


def test_load_run_errors(tmp_path):
    with pytest.raises(RunDirError, match="run directory not found"):
        rp.load_run_values(tmp_path / "missing")
    with pytest.raises(RunDirError, match="no values/ folder"):
        rp.load_run_values(tmp_path)
    (tmp_path / "values").mkdir()
    with pytest.raises(RunDirError, match="no account-value files"):
        rp.load_run_values(tmp_path)


# ---------------------------------------------------------------- tables


def _seeded_run(tmp_path):
    for seed in range(3):
        rp.save_account_values(tmp_path, "ppo", _path(10 + seed), seed=seed)
        rp.save_account_values(tmp_path, "a2c", _path(20 + seed, drift=0.0), seed=seed)
    rp.save_account_values(tmp_path, "buy_and_hold", _path(30))
    rp.write_manifest(tmp_path, rp.build_manifest(config={"market": "dow30"}, seeds=[0, 1, 2], periods_per_year=252))


def test_build_report_tables_match_per_seed_metrics(tmp_path):
    _seeded_run(tmp_path)
    res = rp.build_report(tmp_path, tearsheets=False)
    assert res["periods_source"] == "manifest.json"
    table = pd.read_csv(tmp_path / "table.csv")
    assert list(table["agent"]) == ["a2c", "buy_and_hold", "ppo"]
    assert list(table.columns[: 1 + len(FIGURES)]) == ["agent", *FIGURES]
    assert {f"{f}_std" for f in FIGURES} | {f"{f}_ci95" for f in FIGURES} <= set(table.columns)
    ppo_sharpes = [compute_metrics(_path(10 + s))["sharpe"] for s in range(3)]
    row = table.set_index("agent").loc["ppo"]
    assert row["sharpe"] == pytest.approx(np.mean(ppo_sharpes), rel=1e-9)
    assert row["sharpe_std"] == pytest.approx(np.std(ppo_sharpes, ddof=1), rel=1e-9)
    assert row["n_seeds"] == 3
    assert math.isnan(table.set_index("agent").loc["buy_and_hold", "sharpe_std"])
    seeds = pd.read_csv(tmp_path / "table_seeds.csv")
    assert len(seeds) == 7 and seeds.loc[seeds["agent"] == "ppo", "seed"].tolist() == [0, 1, 2]

    md = (tmp_path / "table.md").read_text()
    assert "| agent | Cumulative return |" in md
    assert f"{row['sharpe']:.4f} ± {row['sharpe_std']:.4f}" in md
    tex = (tmp_path / "table.tex").read_text()
    assert r"\begin{tabular}" in tex and r"buy\_and\_hold" in tex and r"$\pm$" in tex
    for png in ("equity.png", "drawdown.png"):
        assert (tmp_path / png).read_bytes()[:8] == PNG_MAGIC
    assert not (tmp_path / "tearsheets").exists()
    # the manifest written by the loop is left alone
    assert json.loads((tmp_path / "manifest.json").read_text())["config"] == {"market": "dow30"}


def test_single_seed_tables_have_no_std(tmp_path):
    table = pd.DataFrame([{"agent": "ppo", **compute_metrics(_path(1))}])
    paths = rp.write_tables(tmp_path, table)
    csv = pd.read_csv(paths["csv"])
    assert not [c for c in csv.columns if c.endswith(("_std", "_ci95"))]
    assert "±" not in paths["md"].read_text()
    with pytest.raises(RunDirError, match="'agent' column"):
        rp.write_tables(tmp_path, table.drop(columns=["agent"]))


# ---------------------------------------------------------------- tearsheets


def test_write_report_with_quantstats_tearsheet_offline(tmp_path):
    curves = {"ppo": _path(1)}
    table = pd.DataFrame([{"agent": k, **compute_metrics(v)} for k, v in curves.items()])
    manifest = rp.build_manifest(config={"k": np.int64(3)}, dataset_hash="abc", seeds=[0], wall_time_s=1.25)
    bench = _path(2, drift=0.0002).rename("dji_benchmark")  # a series: quantstats must not download one
    res = rp.write_report(tmp_path, curves, table, manifest=manifest, benchmark=bench)
    info = res["tearsheets"]["ppo"]
    assert info["fallback"] is False, info
    html = (tmp_path / "tearsheets" / "ppo.html").read_text()
    assert "FinMeta: ppo" in html and "<table" in html and "dji_benchmark" in html
    assert ">Strategy<" not in html and "<th>ppo</th>" in html  # the agent's name, not quantstats' "Strategy"
    m = json.loads((tmp_path / "manifest.json").read_text())
    assert m["config"] == {"k": 3} and m["dataset_hash"] == "abc" and m["wall_time_s"] == 1.25
    assert m["libraries"]["numpy"] == np.__version__ and "created_utc" in m
    with pytest.raises(RunDirError, match="benchmark agent 'dji'"):
        rp.write_report(tmp_path, curves, table, benchmark="dji", tearsheets=False)


def test_tearsheet_falls_back_when_quantstats_fails(tmp_path, monkeypatch):
    import quantstats as qs

    def boom(*args, **kwargs):
        raise RuntimeError("simulated quantstats failure")

    monkeypatch.setattr(qs.reports, "html", boom)
    info = rp.write_tearsheet(_path(3, dated=False).rename("sac"), tmp_path / "sac.html")
    assert info["fallback"] is True and "simulated quantstats failure" in info["error"]
    assert info["synthetic_dates"] is True
    html = (tmp_path / "sac.html").read_text()
    assert "quantstats failed" in html and "sharpe" in html


def test_manifest_git_commit_and_versions():
    m = rp.build_manifest(periods_per_year=365, note="x")
    assert m["periods_per_year"] == 365 and m["note"] == "x"
    assert m["git_commit"] is None or re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", m["git_commit"])
    assert set(rp.MANIFEST_LIBRARIES) == set(m["libraries"])


def test_write_report_from_the_loop_then_rebuild_gives_the_same_table(tmp_path):
    """The loop's call: keys <agent>_seed<k>, per-seed table, actions; `report` rebuilds it."""
    from benchmarks.metrics import aggregate_seeds

    p0, p1 = _path(40), _path(41)
    turn0, cost0 = np.r_[0.0, np.full(119, 0.01)], np.r_[0.0, np.full(119, 3.0)]
    values = {
        # a frame saves turnover/cost next to the values ...
        "ppo_seed0": pd.DataFrame({"account_value": p0, "turnover": turn0, "cost": cost0}),
        "ppo_seed1": p1,  # ... a bare series does not: a rebuild carries them over from table_seeds.csv
        "index": _path(50, drift=0.0001),
    }
    per_seed = pd.DataFrame([
        {"agent": "ppo", "seed": 0, **compute_metrics(p0, turnover=turn0, costs=cost0)},
        {"agent": "ppo", "seed": 1, **compute_metrics(p1, turnover=0.03 * 119, costs=7.0)},
        {"agent": "index", "seed": 0, **compute_metrics(values["index"])},
    ])
    table = aggregate_seeds(per_seed)
    assert table.set_index("agent").loc["ppo", "turnover"] == pytest.approx(0.02)
    acts = {"ppo_seed0": pd.DataFrame(np.zeros((120, 2)), index=p0.index, columns=["AAPL", "MSFT"])}
    res = rp.write_report(tmp_path, values, table, {"seeds": [0, 1]}, per_seed=per_seed, actions=acts,
                          periods_per_year=252, tearsheets=False)
    assert sorted(p.name for p in (tmp_path / "values").iterdir()) == ["index.csv", "ppo_seed0.csv", "ppo_seed1.csv"]
    assert (tmp_path / "actions" / "ppo_seed0.csv").read_text().startswith("date,AAPL,MSFT")
    assert len(pd.read_csv(tmp_path / "table_seeds.csv")) == 3
    assert res["manifest"] is not None and res["equity"].is_file()
    before = pd.read_csv(tmp_path / "table.csv").set_index("agent").sort_index()
    rebuilt = rp.build_report(tmp_path, tearsheets=False)["table"].set_index("agent").sort_index()
    assert "turnover" in before.columns and "costs_paid_ci95" in before.columns
    pd.testing.assert_frame_equal(before, rebuilt[before.columns], rtol=1e-12, check_dtype=False)
    assert pd.read_csv(tmp_path / "values" / "ppo_seed0.csv").columns.tolist() == ["date", "account_value",
                                                                                  "turnover", "cost"]
    assert rp.split_key("buy_and_hold_seed12") == ("buy_and_hold", 12) and rp.split_key("index") == ("index", None)


# ---------------------------------------------------------------- statistics (issue 15)


def test_report_adds_the_statistics_and_keeps_the_figures(tmp_path):
    """The statistics columns come after the figures (which do not move), the Markdown and LaTeX
    tables get a statistics section, the manifest a ``statistics`` key (its config untouched),
    and a rebuild (same values, seeded bootstraps) gives the same numbers."""
    from benchmarks.stats import ROW_COLUMNS, SEED_COLUMNS

    _seeded_run(tmp_path)
    rp.save_account_values(tmp_path, "index", _path(60, drift=0.0))
    res = rp.build_report(tmp_path, tearsheets=False)
    table = pd.read_csv(tmp_path / "table.csv").set_index("agent")
    seeds = pd.read_csv(tmp_path / "table_seeds.csv")
    ppo_sharpes = seeds.loc[seeds["agent"] == "ppo", "sharpe"]
    assert table.loc["ppo", "sharpe"] == pytest.approx(ppo_sharpes.mean(), rel=1e-12)
    assert set(ROW_COLUMNS) | set(SEED_COLUMNS) <= set(table.columns)
    cols = list(table.columns)
    assert cols.index("sharpe_lo") > cols.index("n_seeds")
    assert table.loc["ppo", "sharpe_lo"] < table.loc["ppo", "sharpe"] < table.loc["ppo", "sharpe_hi"]
    assert math.isnan(table.loc["index", "p_index"]) and 0 < table.loc["ppo", "p_index"] <= 1
    assert math.isnan(table.loc["buy_and_hold", "p_rule"])  # the only rule row is the best rule
    md = (tmp_path / "table.md").read_text()
    assert md.startswith("| agent | Cumulative return |") and "## Statistics" in md
    assert "ΔSR vs buy_and_hold" in md and "- PBO (CSCV, S = 16 blocks, 3 strategies)" in md
    assert r"$\Delta$SR vs index" in (tmp_path / "table.tex").read_text()
    man = json.loads((tmp_path / "manifest.json").read_text())
    assert man["config"] == {"market": "dow30"}
    st = man["statistics"]
    assert st["n_trials"] == 7 and st["best_rule"] == "buy_and_hold" and st["index_row"] == "index"
    assert st["sharpe_variance"] > 0 and 0 <= st["pbo"] <= 1 and 0 <= st["spa_pvalue"] <= 1
    assert json.loads((tmp_path / "stats.json").read_text())["improvement_matrix"]["agents"] == [
        "a2c", "buy_and_hold", "index", "ppo"]
    for png in ("sharpe_intervals.png", "improvement.png"):
        assert (tmp_path / png).read_bytes()[:8] == PNG_MAGIC
    again = rp.build_report(tmp_path, tearsheets=False)["table"].set_index("agent")
    pd.testing.assert_frame_equal(res["table"].set_index("agent"), again)
# ---------------------------------------------------------------- what a reader sees (issue 18, item 6)


def _described_run():
    """Curves of learned agents, rule baselines and index rows, the run's manifest and windows frame."""
    curves = {"a2c": _path(60), "ensemble": _path(60), "ppo": _path(61), "equal_weight": _path(62),
              "min_variance": _path(63), "index": _path(64, drift=0.0001), "index_gated": _path(65)}
    rows = [{"agent": k, **compute_metrics(v, turnover=None if k.startswith("index") else 0.01,
                                           costs=None if k.startswith("index") else 5.0)} for k, v in curves.items()]
    table = pd.DataFrame(rows)
    manifest = {"config": {"name": "tiny_plots", "data": {"source": "synthetic"}}, "dataset": {"tickers": ["A", "B"]},
                "dataset_hash": "f" * 64, "fill": "open", "seeds": [0, 1]}
    windows = pd.DataFrame({"trade_start": ["2021-01-04", "2021-04-01"], "trade_end": ["2021-03-31", "2021-06-18"],
                            "trade_bars": [62, 58]})
    return curves, table, manifest, windows


def test_table_tex_has_caption_and_label_and_missing_figures_are_dashes(tmp_path):
    curves, table, manifest, windows = _described_run()
    assert table.set_index("agent").loc["index", ["turnover", "costs_paid"]].isna().all()
    rp.write_report(tmp_path, curves, table, manifest, windows=windows, tearsheets=False)
    tex = (tmp_path / "table.tex").read_text()
    assert r"\caption{tiny\_plots: trade 2021-01-04--2021-06-18 (120 bars, 2 windows); data: source synthetic" in tex
    assert "fill: next bar's open; seeds: 0,1}" in tex and r"\label{tab:tiny_plots}" in tex
    assert tex.index(r"\caption") < tex.index(r"\begin{tabular}")
    assert "nan" not in tex.lower() and r"index & " in tex and " & -- & --" in tex
    md = (tmp_path / "table.md").read_text()
    assert "nan" not in md and "| – | – |" in md
    files = {"config": {"data": {"files": [{"file": "${FINMETA_DATA_DIR}/us/dow30.csv.gz", "format": "yahoo"},
                                           "/x/former.csv"]}}, "fill": "close", "seeds": [0]}
    assert "data: files dow30.csv.gz, former.csv, 0 tickers" in rp.run_caption(files)  # names, not dicts
    # a table without a run around it still gets a caption and a label
    tex = rp.table_latex(table, caption="x", label="tab:a b")
    assert r"\label{tab:a-b}" in tex and r"\caption{x}" in tex


def test_plots_style_agents_by_kind_shade_the_turbulence_stop_and_name_the_run():
    curves, _, manifest, windows = _described_run()
    stop = pd.Series(False, index=curves["a2c"].index)
    stop.iloc[30:36] = True
    stop.iloc[80] = True
    assert rp.stop_spans(stop) == [(stop.index[30], stop.index[36]), (stop.index[80], stop.index[81])]
    caption = rp.run_caption(manifest, windows)
    fig = rp.curves_figure(curves, title="tiny_plots: account value", caption=caption, stop=stop)
    try:
        ax = fig.axes[0]
        shaded = [p for p in ax.patches if p.get_label().lstrip("_") == "turbulence stop"]
        assert len(shaded) == 2  # one span per run of stop days
        import matplotlib.dates as mdates

        x0 = shaded[0].get_path().transformed(shaded[0].get_patch_transform()).vertices[:, 0].min()
        assert x0 == pytest.approx(mdates.date2num(stop.index[30]))
        assert "turbulence stop" in [t.get_text() for t in ax.get_legend().get_texts()]
        lines = {ln.get_label(): ln for ln in ax.get_lines()}
        assert {lines[a].get_linestyle() for a in ("a2c", "ppo", "ensemble")} == {"-"}
        assert all(lines[a].get_linestyle() != "-" for a in ("equal_weight", "min_variance", "index", "index_gated"))
        assert len({lines[a].get_color() for a in ("a2c", "ppo")}) == 2
        assert lines["ensemble"].get_linewidth() > lines["a2c"].get_linewidth()  # a band under its member
        assert lines["ensemble"].get_zorder() < lines["a2c"].get_zorder()
        fig.canvas.draw()
        assert ax.yaxis.get_offset_text().get_text() == ""  # no "1e6" offset
        assert any("," in t.get_text() for t in ax.get_yticklabels())  # 1,000,000
        title = ax.get_title(loc="left")
        for part in ("tiny_plots", "2021-01-04", "next bar's open", "seeds: 0,1", "source synthetic"):
            assert part in title
    finally:
        rp._pyplot().close(fig)
    styles = rp.line_styles([f"agent{k}" for k in range(12)])
    assert len({s["color"] for s in styles.values()}) == 12  # a dozen learned agents, a dozen colours


def test_stop_days_round_trip_through_windows_csv(tmp_path):
    from benchmarks.report import stop_span_cells

    curves, table, manifest, windows = _described_run()
    index = curves["a2c"].index
    stop = pd.Series(False, index=index)
    stop.iloc[[5, 6, 7, 70]] = True
    cells = stop_span_cells(windows.assign(trade_start=[index[0].date(), index[62].date()],
                                           trade_end=[index[61].date(), index[-1].date()]), stop)
    assert cells == [f"{index[5].date()}/{index[7].date()}", f"{index[70].date()}/{index[70].date()}"]
    back = rp.stop_from_windows(windows.assign(stop_spans=cells), index)
    assert back.equals(stop)
    hourly = pd.date_range("2022-01-01", periods=72, freq="h")  # crypto bars: spans keep their hours
    stop = pd.Series(False, index=hourly)
    stop.iloc[[3, 4, 30, 71]] = True
    frame = pd.DataFrame({"trade_start": ["2022-01-01", "2022-01-02"], "trade_end": ["2022-01-01", "2022-01-03"]})
    cells = stop_span_cells(frame, stop)
    assert cells == ["2022-01-01T03:00:00/2022-01-01T04:00:00", "2022-01-02T06:00:00/2022-01-02T06:00:00 "
                     "2022-01-03T23:00:00/2022-01-03T23:00:00"]
    assert rp.stop_from_windows(frame.assign(stop_spans=cells), hourly).equals(stop)


def test_tearsheet_landing_page_links_every_agent_and_the_index_row_keeps_its_own_sheet(tmp_path, monkeypatch):
    import quantstats as qs

    calls = {}

    def fake_html(returns, benchmark=None, output=None, **kw):  # quantstats takes seconds a sheet
        calls[kw["strategy_title"]] = kw
        Path(output).write_text(f"tearsheet of {kw['strategy_title']}")

    from pathlib import Path

    monkeypatch.setattr(qs.reports, "html", fake_html)
    curves, table, manifest, windows = _described_run()
    res = rp.write_report(tmp_path, curves, table, manifest, windows=windows, save_values=False)
    folder = tmp_path / "tearsheets"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["index.html", "index_benchmark.html"] + [f"{a}.html" for a in curves if a != "index"])
    assert (folder / "index_benchmark.html").read_text() == "tearsheet of index"  # not overwritten
    assert (folder / "a2c.html").read_text() == "tearsheet of a2c"
    landing = (folder / "index.html").read_text()
    assert res["tearsheet_index"] == folder / "index.html"
    assert "tiny_plots" in landing and "2021-01-04 -&gt; 2021-06-18" in landing and "seeds: 0,1" in landing
    for agent in curves:
        assert f"<a href='{rp.tearsheet_file(agent)}'>{agent}</a>" in landing
    assert "../equity.png" in landing
    # the strategy and the benchmark carry their names, not quantstats' "Strategy" / "Benchmark"
    assert calls["ppo"]["benchmark_title"] == "index" and calls["index"]["benchmark_title"] is None
