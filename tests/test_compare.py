"""``finmeta compare RUN_A RUN_B`` (benchmarks/compare.py): known answers under a simulated truth,
the tables' own Sharpe definition, and one clear error for runs that cannot be compared."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from benchmarks.compare import compare_markdown, compare_rows, compare_rows_markdown, compare_runs, seed_bootstrap_diff
from benchmarks.metrics import RunDirError, compute_metrics
from benchmarks.report import save_account_values
from finmeta.cli import main

DATES = pd.bdate_range("2020-01-01", periods=400)


def _run(tmp_path, name, agent, drifts, *, vol=0.01, seed=0, dates=DATES, dataset="d" * 64, ppy=252,
         repeat=None):
    """A run directory with ``values/<agent>_seed<k>.csv`` for each drift (one seed each: daily
    returns N(drift, vol)) and a manifest naming the dataset and periods a year."""
    run = tmp_path / name
    rng = np.random.default_rng(seed)
    rows = []
    for k, mu in enumerate(drifts):
        r = rng.normal(mu, vol, len(dates) - 1)
        v = pd.Series(1e6 * np.concatenate([[1.0], np.cumprod(1 + r)]), index=dates)
        save_account_values(run, agent, v, seed=k)
        rows.append({"agent": agent, "seed": k, "sharpe": 0.0, "action_repeat": repeat if repeat is not None else 0.1 * k})
    (run / "manifest.json").write_text(json.dumps({"dataset_hash": dataset, "periods_per_year": ppy}))
    pd.DataFrame(rows).to_csv(run / "table_seeds.csv", index=False)
    return run


def test_a_real_edge_is_found_and_its_size_is_right(tmp_path):
    """B's daily drift 0.002 against A's 0 at vol 0.01: annualised Sharpe 0 against
    0.002 / 0.01 * sqrt(252) = 3.17. The difference's interval covers the truth and excludes 0,
    the paired test rejects, every B seed beats every A seed."""
    a = _run(tmp_path, "a", "ppo", [0.0] * 5, seed=1)
    b = _run(tmp_path, "b", "ppo", [0.002] * 5, seed=2)
    res = compare_runs(a, b)
    row = res["table"].iloc[0]
    truth = 0.002 / 0.01 * np.sqrt(252)
    # standard error of a 5-seed mean of annualised Sharpes on 399 returns (Lo 2002: sqrt((1 + SR^2/2) / T))
    se = np.sqrt((1 + 0.2 ** 2 / 2) / 399) * np.sqrt(252) / np.sqrt(5)
    assert row["agent"] == "ppo" and row["seeds_a"] == 5 and row["seeds_b"] == 5 and row["n_returns"] == 399
    assert abs(row["sharpe_a"]) < 4 * se and abs(row["sharpe_b"] - truth) < 4 * se
    assert 0 < row["diff_lo"] < row["diff"] < row["diff_hi"] and abs(row["diff"] - truth) < 4 * np.sqrt(2) * se
    assert row["paired_p"] < 1e-3 and row["paired_diff"] == pytest.approx(row["diff"])
    assert row["p_improvement"] == 1.0


def test_the_same_paths_differ_by_nothing(tmp_path):
    a = _run(tmp_path, "a", "sac", [0.0005, 0.0, 0.001], seed=3)
    b = _run(tmp_path, "b", "sac", [0.0005, 0.0, 0.001], seed=3)
    row = compare_runs(a, b)["table"].iloc[0]
    assert row["diff"] == 0.0 and row["diff_lo"] < 0 < row["diff_hi"]
    assert row["paired_diff"] == pytest.approx(0.0, abs=1e-12)
    assert row["p_improvement"] == 0.5


def test_sharpe_per_run_is_the_tables_sharpe(tmp_path):
    """Each run's Sharpe is the mean over its seeds of benchmarks.metrics' Sharpe (the tables')."""
    a = _run(tmp_path, "a", "a2c", [0.0003, 0.0008, -0.0002], seed=4)
    b = _run(tmp_path, "b", "a2c", [0.001, 0.0], seed=5)
    row = compare_runs(a, b)["table"].iloc[0]
    for run, col in ((a, "sharpe_a"), (b, "sharpe_b")):
        sharpes = [compute_metrics(pd.read_csv(f)["account_value"].to_numpy(), 252)["sharpe"]
                   for f in sorted((run / "values").glob("a2c_seed*.csv"))]
        assert row[col] == pytest.approx(np.mean(sharpes), rel=1e-9)
    assert row["action_repeat_a"] == pytest.approx(0.1) and row["action_repeat_b"] == pytest.approx(0.05)
    # an unseeded row (values/<agent>.csv) takes the agent's diagnostics whatever their seed
    for run in (a, b):
        for f in (run / "values").glob("a2c_seed*.csv"):
            f.rename(run / "values" / f"a2c_s{f.stem[-1]}.csv")
    (a / "values" / "a2c_s0.csv").rename(a / "values" / "a2c.csv")
    (b / "values" / "a2c_s0.csv").rename(b / "values" / "a2c.csv")
    row = compare_runs(a, b, ["a2c"])["table"].iloc[0]
    assert row["seeds_a"] == 1 and row["action_repeat_a"] == pytest.approx(0.1)


def test_only_the_dates_both_runs_traded_count(tmp_path):
    a = _run(tmp_path, "a", "td3", [0.0, 0.001], seed=6)
    b = _run(tmp_path, "b", "td3", [0.0, 0.001], seed=7, dates=DATES[100:])
    row = compare_runs(a, b)["table"].iloc[0]
    assert row["n_returns"] == 299  # returns from one common date to the next: DATES[100:] has 300


def test_a_run_missing_days_is_compared_on_the_same_spans(tmp_path):
    """B is A's very paths with every other day missing: lined up on the common dates first, the two
    are the same paths, so they differ by nothing (computing each run's returns on its own dates
    first would compare 2-day returns with 1-day returns)."""
    a = _run(tmp_path, "a", "ppo", [0.0005, 0.001, 0.0], seed=8)
    b = tmp_path / "b"
    for f in sorted((a / "values").glob("*.csv")):
        frame = pd.read_csv(f)
        save_account_values(b, "ppo", pd.Series(frame["account_value"].to_numpy(),
                                                index=pd.DatetimeIndex(frame["date"]))[::2],
                            seed=int(f.stem.rsplit("seed", 1)[1]))
    (b / "manifest.json").write_text((a / "manifest.json").read_text())
    row = compare_runs(a, b)["table"].iloc[0]
    assert row["n_returns"] == 199 and row["diff"] == pytest.approx(0.0, abs=1e-12)
    assert row["paired_diff"] == pytest.approx(0.0, abs=1e-12)


def test_seeds_of_different_lengths_are_cut_to_the_dates_all_have(tmp_path):
    a = _run(tmp_path, "a", "ppo", [0.0005, 0.001], seed=8)
    b = _run(tmp_path, "b", "ppo", [0.0005, 0.001], seed=9)
    short = pd.read_csv(b / "values" / "ppo_seed1.csv").iloc[:-30]
    short.to_csv(b / "values" / "ppo_seed1.csv", index=False)
    row = compare_runs(a, b)["table"].iloc[0]
    assert row["n_returns"] == 369 and np.isfinite([row["sharpe_b"], row["diff"], row["diff_lo"], row["paired_p"]]).all()


def test_one_seed_a_side_or_a_flat_seed_gives_no_interval(tmp_path):
    a = _run(tmp_path, "a", "sac", [0.0005], seed=1)
    b = _run(tmp_path, "b", "sac", [0.001], seed=2)
    row = compare_runs(a, b)["table"].iloc[0]
    assert np.isfinite(row["diff"]) and np.isnan(row["diff_lo"]) and np.isnan(row["diff_hi"])
    assert row["p_improvement"] in (0.0, 1.0)
    c = _run(tmp_path, "c", "sac", [0.0005, 0.0], seed=3, vol=0.01)
    flat = pd.read_csv(c / "values" / "sac_seed1.csv")
    flat["account_value"] = 1e6  # all cash: no Sharpe
    flat.to_csv(c / "values" / "sac_seed1.csv", index=False)
    d = _run(tmp_path, "d", "sac", [0.0005, 0.001], seed=4)
    row = compare_runs(c, d)["table"].iloc[0]
    assert np.isnan(row["sharpe_a"]) and np.isnan(row["diff_lo"]) and np.isnan(row["p_improvement"])
    assert "| sac | 2 / 2 | 399 | – |" in compare_markdown(compare_runs(c, d))


def test_seed_bootstrap_interval_covers_at_its_nominal_rate():
    """Coverage under a known truth: 300 simulated pairs of 20 seed scores each, N(0, 1) against
    N(0.5, 1); the 95 % interval of mean(b) - mean(a) should cover 0.5 in about 95 % of them
    (percentile intervals under-cover slightly at small n)."""
    rng = np.random.default_rng(12)
    hits = 0
    for i in range(300):
        _, lo, hi = seed_bootstrap_diff(rng.normal(0, 1, 20), rng.normal(0.5, 1, 20), reps=500, seed=i)
        hits += lo <= 0.5 <= hi
    assert 0.89 <= hits / 300 <= 0.99


def test_seed_bootstrap_interval_undercovers_with_three_seeds():
    """The figure docs/metrics.md gives: with 3 seeds a side the nominal 95 % percentile interval
    covers the true difference far less often (about 80 %; binomial sd over 400 pairs 2 %), with 7
    more often than with 3. Seeds N(0, 0.2) against N(0.1, 0.2), as Sharpes of three trainings."""
    rng = np.random.default_rng(0)
    rate = {}
    for n in (3, 7):
        hits = 0
        for i in range(400):
            _, lo, hi = seed_bootstrap_diff(rng.normal(0, 0.2, n), rng.normal(0.1, 0.2, n), reps=1000, seed=i)
            hits += lo <= 0.1 <= hi
        rate[n] = hits / 400
    assert 0.74 <= rate[3] <= 0.86 and rate[7] > rate[3] + 0.04


def test_same_seed_same_numbers_and_one_score_is_degenerate():
    x, y = [0.1, 0.5, 0.3], [0.7, 0.2]
    assert seed_bootstrap_diff(x, y, seed=3) == seed_bootstrap_diff(x, y, seed=3)
    assert seed_bootstrap_diff([0.2], [0.5]) == pytest.approx((0.3, 0.3, 0.3))
    with pytest.raises(ValueError):
        seed_bootstrap_diff([], [1.0])


def test_runs_that_cannot_be_compared_get_one_clear_error(tmp_path):
    a = _run(tmp_path, "a", "ppo", [0.0, 0.001])
    other = _run(tmp_path, "other", "ppo", [0.0, 0.001], dataset="e" * 64)
    with pytest.raises(RunDirError, match="different datasets"):
        compare_runs(a, other)
    assert len(compare_runs(a, other, any_data=True)["table"]) == 1
    hourly = _run(tmp_path, "hourly", "ppo", [0.0, 0.001], ppy=8760)
    with pytest.raises(RunDirError, match="periods_per_year 252 against 8760"):
        compare_runs(a, hourly)
    b = _run(tmp_path, "b", "sac", [0.0])
    with pytest.raises(RunDirError, match="no learned agent in both"):
        compare_runs(a, b)
    rule_a, rule_b = _run(tmp_path, "ra", "equal_weight", [0.0]), _run(tmp_path, "rb", "equal_weight", [0.0])
    with pytest.raises(RunDirError, match="no learned agent in both"):
        compare_runs(rule_a, rule_b)
    assert list(compare_runs(rule_a, rule_b, ["equal_weight"])["table"]["agent"]) == ["equal_weight"]
    with pytest.raises(RunDirError, match=r"b: no values for agent 'ppo' \(it has: sac\)"):
        compare_runs(a, b, ["ppo"])
    short = _run(tmp_path, "short", "ppo", [0.0], dates=DATES[-10:])
    with pytest.raises(RunDirError, match="agent 'ppo': 9 returns on the dates common"):
        compare_runs(a, short)
    (short / "manifest.json").write_text(json.dumps({"periods_per_year": 252}))
    with pytest.raises(RunDirError, match=r"short: no dataset_hash in its manifest\.json"):
        compare_runs(a, short)


def test_markdown_names_the_runs_and_columns(tmp_path):
    a = _run(tmp_path, "a", "ppo", [0.0, 0.0005])
    b = _run(tmp_path, "b", "ppo", [0.001, 0.0015], seed=9)
    md = compare_markdown(compare_runs(a, b), "sb3", "torch")
    assert "| agent | seeds sb3 / torch | returns |" in md and "torch − sb3" in md and "| ppo | 2 / 2 | 399 |" in md
    assert str(a) in md and str(b) in md


def _cli(capsys, *args):
    try:
        rc = main(list(args))
    except SystemExit as exc:  # typer's standalone mode
        rc = exc.code
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_compare_command_json_and_errors(tmp_path, capsys):
    a = _run(tmp_path, "a", "ppo", [0.0, 0.0005, 0.0])
    b = _run(tmp_path, "b", "ppo", [0.001, 0.0015, 0.001], seed=9)
    rc, out, err = _cli(capsys, "compare", str(a), str(b), "--json", "--label-a", "sb3", "--label-b", "torch")
    assert rc == 0, err
    payload = json.loads(out)
    assert payload["labels"] == ["sb3", "torch"] and payload["periods_per_year"] == 252
    row = payload["rows"][0]
    assert row["agent"] == "ppo" and row["diff_lo"] <= row["diff"] <= row["diff_hi"]
    rc, out, _ = _cli(capsys, "compare", str(a), str(b), "--agents", "ppo")
    assert rc == 0 and "| ppo | 3 / 3 |" in out
    rc, _, err = _cli(capsys, "compare", str(a), str(tmp_path / "nope"))
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1 and re.search("run directory not found", err)
    rc, out, _ = _cli(capsys, "compare", "--help")
    assert rc == 0 and "Examples: finmeta compare" in out and "--row" in out


def test_action_repeat_comes_from_the_stored_actions(tmp_path):
    """A row that table_seeds.csv lacks (a later invocation named other agents) still gets its
    action repeat, from actions/<agent>_seed<k>.csv; a seed with a file takes the file's figure
    over the table's."""
    a = _run(tmp_path, "a", "ppo", [0.0, 0.0], seed=8, repeat=0.9)
    b = _run(tmp_path, "b", "ppo", [0.0, 0.0], seed=9, repeat=0.9)
    pd.DataFrame({"agent": ["sac"], "seed": [0], "sharpe": [0.0], "action_repeat": [0.5]}).to_csv(
        b / "table_seeds.csv", index=False)  # b's last invocation ran only sac
    (b / "actions").mkdir()
    # seed 0: 10 rows, 3 of the 9 consecutive pairs equal -> 1/3; seed 1: constant -> 1.0; last row NaN
    s0 = np.array([[0.1, 0.2], [0.1, 0.2], [0.3, 0.2], [0.3, 0.2], [0.4, 0.0], [0.5, 0.0], [0.6, 0.1],
                   [0.6, 0.1], [0.7, 0.1], [0.8, 0.1], [np.nan, np.nan]])
    s1 = np.vstack([np.full((10, 2), 0.25), [[np.nan, np.nan]]])
    for k, acts in enumerate((s0, s1)):
        pd.DataFrame(acts, index=DATES[:11], columns=["X", "Y"]).rename_axis("date").to_csv(
            b / "actions" / f"ppo_seed{k}.csv")
    row = compare_runs(a, b)["table"].iloc[0]
    assert row["action_repeat_a"] == pytest.approx(0.9)
    assert row["action_repeat_b"] == pytest.approx((3 / 9 + 1.0) / 2)
    (b / "actions" / "ppo_seed1.csv").unlink()  # no file, no table row: that seed has no figure
    assert compare_runs(a, b)["table"].iloc[0]["action_repeat_b"] == pytest.approx(3 / 9)


def _rows_run(tmp_path):
    """One run directory with three seeded rows and the index: moe (daily drift 0.002), an
    ablation (drift 0) and equal_weight (one path, the same under every seed), vol 0.01."""
    run = tmp_path / "run"
    rng = np.random.default_rng(11)
    for agent, drifts in (("moe", [0.002] * 4), ("moe_single", [0.0] * 4)):
        for k, mu in enumerate(drifts):
            r = rng.normal(mu, 0.01, len(DATES) - 1)
            save_account_values(run, agent, pd.Series(1e6 * np.concatenate([[1.0], np.cumprod(1 + r)]), index=DATES), seed=k)
    ew = pd.Series(1e6 * np.concatenate([[1.0], np.cumprod(1 + rng.normal(0.0005, 0.01, len(DATES) - 1))]), index=DATES)
    for k in range(4):
        save_account_values(run, "equal_weight", ew, seed=k)
    save_account_values(run, "index", ew * 1.0)
    save_account_values(run, "index_CSI_300", ew * 1.0)
    (run / "manifest.json").write_text(json.dumps({"dataset_hash": "d" * 64, "periods_per_year": 252}))
    return run


def test_a_row_against_the_other_rows_of_its_run(tmp_path):
    """moe's drift 0.002 against the ablation's 0: Sharpe difference 3.17 a year, found with the
    right size; moe is above on every seed; the numbers are compare_runs' on the same paths; the
    index (unseeded) has no seed to pair with."""
    run = _rows_run(tmp_path)
    res = compare_rows(run, "moe")
    t = res["table"].set_index("against")
    assert list(t.index) == ["equal_weight", "moe_single", "index", "index_CSI_300"]  # every other row, the indices last
    single = t.loc["moe_single"]
    truth = 0.002 / 0.01 * np.sqrt(252)
    se = np.sqrt((1 + 0.2 ** 2 / 2) / 399) * np.sqrt(252) / np.sqrt(4)
    assert abs(single["diff"] - truth) < 4 * np.sqrt(2) * se and 0 < single["diff_lo"] < single["diff_hi"]
    assert single["paired_p"] < 1e-3 and single["p_improvement"] == 1.0
    assert (single["seeds_below"], single["seeds_common"]) == (0, 4) and single["n_returns"] == 399
    assert t.loc["index", "seeds_common"] == 0 and t.loc["index", "seeds_against"] == 1
    # equal_weight's four identical seeds: the same Sharpe as the index, and the same difference
    assert t.loc["equal_weight", "sharpe_against"] == pytest.approx(t.loc["index", "sharpe_against"])
    assert t.loc["equal_weight", "paired_diff"] == pytest.approx(t.loc["index", "paired_diff"])
    # the same paths split into two runs give compare_runs' numbers (B = moe, A = the ablation)
    a, b = tmp_path / "a", tmp_path / "b"
    for dst, src in ((a, "moe_single"), (b, "moe")):
        for k in range(4):
            f = run / "values" / f"{src}_seed{k}.csv"
            save_account_values(dst, "ppo", pd.read_csv(f, index_col=0, parse_dates=True)["account_value"], seed=k)
        (dst / "manifest.json").write_text(json.dumps({"dataset_hash": "d" * 64, "periods_per_year": 252}))
    two = compare_runs(a, b)["table"].iloc[0]
    for col in ("diff", "diff_lo", "diff_hi", "paired_diff", "paired_se", "paired_p", "p_improvement"):
        assert single[col] == pytest.approx(two[col], rel=1e-9), col
    # a row below on some seeds is counted; the asked order is kept
    res = compare_rows(run, "moe_single", ["moe", "equal_weight"])
    t = res["table"]
    assert list(t["against"]) == ["moe", "equal_weight"] and t.iloc[0]["seeds_below"] == 4
    md = compare_rows_markdown(res)
    assert "| moe_single minus |" in md and "| moe | 4 / 4 | 399 |" in md and "4 of 4" in md


def test_compare_rows_errors_and_command(tmp_path, capsys):
    run = _rows_run(tmp_path)
    with pytest.raises(RunDirError, match=r"no values for row 'moe_x' \(it has: equal_weight, index, index_CSI_300, moe, moe_single\)"):
        compare_rows(run, "moe_x")
    with pytest.raises(RunDirError, match="no values for row 'sac'"):
        compare_rows(run, "moe", ["sac"])
    with pytest.raises(RunDirError, match="cannot be compared with itself"):
        compare_rows(run, "moe", ["moe"])
    rc, out, err = _cli(capsys, "compare", str(run), "--row", "moe", "--agents", "moe_single", "--json")
    assert rc == 0, err
    payload = json.loads(out)
    assert payload["row"] == "moe" and [r["against"] for r in payload["rows"]] == ["moe_single"]
    rc, out, _ = _cli(capsys, "compare", str(run), "--row", "moe")
    assert rc == 0 and "| moe minus |" in out and "| index |" in out
    rc, _, err = _cli(capsys, "compare", str(run), str(run), "--row", "moe")
    assert rc == 2 and err.startswith("error: ") and "RUN_A only" in err
    rc, _, err = _cli(capsys, "compare", str(run))
    assert rc == 2 and "or one with --row" in err
