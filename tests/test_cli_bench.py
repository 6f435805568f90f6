"""``finmeta bench`` through the real entry point (finmeta.cli.main): table, run directory, manifest."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

from finmeta.cli import main
from finmeta.errors import ConfigError

TINY = {
    "name": "tiny_cli",
    "data": {"source": "synthetic", "tickers": 3, "start": "2017-01-01", "end": "2019-01-01", "seed": 5},
    "features": {"engine": "stockstats", "indicators": ["macd"], "turbulence": False},
    "env": {"family": "stock_trading", "initial_cash": 100_000, "hmax": 50},
    "windows": {"train_start": "2017-01-01", "trade_start": "2018-07-02", "trade_end": "2019-01-01",
                "rebalance": 63, "validation": 21},
    "agents": {"equal_weight": {}, "buy_and_hold": {}},
    "index": {"price_weighted": True},
    "seeds": [0],
}


def test_bench_prints_the_table_and_records_the_command_and_machine(tmp_path, capsys):
    cfg = tmp_path / "tiny_cli.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    out_dir = tmp_path / "run"
    rc = main(["bench", str(cfg), "--seeds", "0", "--out", str(out_dir), "--no-tearsheets", "--json"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    rows = json.loads(captured.out)
    assert sorted(r["agent"] for r in rows) == ["buy_and_hold", "equal_weight", "index"]
    table = pd.read_csv(out_dir / "table.csv")
    assert table.set_index("agent").loc["equal_weight", "sharpe"] == pytest.approx(
        next(r["sharpe"] for r in rows if r["agent"] == "equal_weight"), rel=1e-13)
    manifest = json.loads((out_dir / "manifest.json").read_text())
    assert manifest["command"].startswith("finmeta bench ") and str(cfg) in manifest["command"]
    assert manifest["machine"]["cpus"] >= 1 and manifest["machine"]["memory_gib"] > 0
    assert manifest["seeds"] == [0] and manifest["dataset_hash"]


def test_bench_unknown_config_is_one_line_and_exit_2(tmp_path, capsys):
    rc = main(["bench", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert rc == 2
    assert "nope.yaml" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()  # nothing half-written


def test_results_entry_is_the_run_table_with_its_provenance(tmp_path, capsys):
    from benchmarks.results_md import results_entry

    cfg = tmp_path / "tiny_cli.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    assert main(["bench", str(cfg), "--seeds", "0,1", "--out", str(tmp_path / "run"), "--no-tearsheets"]) == 0
    capsys.readouterr()
    text = results_entry(tmp_path / "run", ["sharpe", "max_drawdown"])
    table = pd.read_csv(tmp_path / "run" / "table.csv").set_index("agent")
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert f"`{manifest['command']}`" in text and manifest["dataset_hash"][:16] in text
    assert "Seeds: 0, 1" in text
    row = next(line for line in text.splitlines() if line.startswith("| equal_weight |"))
    # deterministic baseline: two seeds, std 0, printed as the value alone
    assert row == (f"| equal_weight | rule | {table.loc['equal_weight', 'sharpe']:.3f} | "
                   f"{table.loc['equal_weight', 'max_drawdown']:.3f} | 2 |")


def test_train_ignores_the_loop_only_keys_of_an_agent_config(tmp_path, capsys):
    """``warm_start``/``retrain_timesteps`` steer the walk-forward loop; ``finmeta train`` (one
    training run) must not hand them to the agent."""
    cfg = dict(TINY, agents={"moe": {"total_timesteps": 30, "warm_start": True, "retrain_timesteps": 10,
                                     "lookback": 3, "d_model": 8, "feat_dim": 8, "hidden": 16,
                                     "learning_starts": 10, "batch_size": 8, "segment": 2, "router_every": 2}})
    path = tmp_path / "tiny_moe.yaml"
    path.write_text(yaml.safe_dump(cfg))
    rc = main(["train", str(path), "--agent", "moe", "--out", str(tmp_path / "moe.zip")])
    assert rc == 0, capsys.readouterr().err
    assert (tmp_path / "moe.zip").is_file()


def test_results_entry_sets_the_configs_published_figures_beside_ours(tmp_path, capsys):
    from benchmarks.results_md import published_rows, results_entry

    pub = {"source": "Some paper, Table 1", "rows": {"equal_weight": {"sharpe": 1.25}, "index": {"sharpe": 0.5,
                                                                                            "max_drawdown": -0.3}}}
    cfg = tmp_path / "tiny_pub.yaml"
    cfg.write_text(yaml.safe_dump(dict(TINY, published=pub)))
    assert main(["bench", str(cfg), "--seeds", "0", "--out", str(tmp_path / "run"), "--no-tearsheets"]) == 0
    capsys.readouterr()
    lines = results_entry(tmp_path / "run", ["sharpe", "max_drawdown"]).splitlines()
    assert any("published (Some paper, Table 1): Sharpe / max DD" in line for line in lines)
    assert next(x for x in lines if x.startswith("| equal_weight |")).endswith("| 1.250 / – |")
    assert next(x for x in lines if x.startswith("| index |")).endswith("| 0.500 / -0.300 |")
    # a malformed section is one clear error naming where it is and the agent
    with pytest.raises(ConfigError, match=r"bad\.yaml: published\.rows\.ppo: unknown metrics \['sharp'\]"):
        published_rows({"published": {"rows": {"ppo": {"sharp": 1.0}}}}, "bad.yaml")
    with pytest.raises(ConfigError, match="published.rows.ppo: every value must be a number"):
        published_rows({"published": {"rows": {"ppo": {"sharpe": "high"}}}}, "bad.yaml")


def test_results_entry_says_which_backend_trained_each_row():
    from benchmarks.results_md import row_backend

    cfg = {"agents": {"a2c": {}, "ppo": {"backend": "torch"}, "sac": {"backend": "elegantrl"},
                      "ensemble": {"members": ["a2c", "ppo"]}}}
    assert [row_backend(cfg, a) for a in ("a2c", "ppo", "sac", "ddpg", "torch_td3", "ensemble", "moe_single",
                                          "equal_weight", "index", "index_gated")] == [
        "sb3", "torch", "elegantrl", "sb3", "torch", "sb3+torch", "finmeta", "rule", "rule", "rule"]
    assert row_backend({"agents": {"ensemble": {}}}, "ensemble") == "sb3"  # the paper's members, SB3


def test_every_shipped_configs_published_section_is_well_formed():
    from benchmarks.results_md import published_rows
    from benchmarks.run import CONFIG_DIR, load_config

    found = {p.stem: published_rows(load_config(p.stem), str(p))[1] for p in CONFIG_DIR.glob("*.yaml")}
    assert found["icaif2020_dow30"]["ensemble"]["sharpe"] == 1.30
    assert found["finrl2023_dow30"]["a2c"] == {"cumulative_return": 0.102}


def test_out_on_a_users_folder_is_refused_and_a_failed_run_leaves_nothing_that_blocks_the_fix(tmp_path, capsys):
    cfg = tmp_path / "tiny_cli.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    mine = tmp_path / "my_results"
    mine.mkdir()
    (mine / "table.csv").write_text("my,own\n1,2\n")
    rc = main(["bench", str(cfg), "--out", str(mine), "--no-tearsheets"])
    err = capsys.readouterr().err
    assert rc == 2 and "not a FinMeta run directory" in err and len(err.strip().splitlines()) == 1
    assert (mine / "table.csv").read_text() == "my,own\n1,2\n"  # untouched

    # a config that fails in its first window ...
    broken = dict(TINY, agents={"equalweight": {}})  # a typo: fails in the chain, after the fingerprint
    cfg.write_text(yaml.safe_dump(broken))
    run = tmp_path / "run"
    rc = main(["bench", str(cfg), "--out", str(run), "--no-tearsheets"])
    capsys.readouterr()
    assert rc != 0
    assert not run.exists()  # nothing half-written
    # ... and a run directory left behind by a failure before this fix (fingerprint only) is taken over
    run.mkdir()
    (run / "fingerprint.json").write_text(json.dumps({"fingerprint": "f" * 64}))
    cfg.write_text(yaml.safe_dump(TINY))
    rc = main(["bench", str(cfg), "--out", str(run), "--no-tearsheets"])
    assert rc == 0, capsys.readouterr().err
    assert (run / "table.csv").exists()
    # a run directory with checkpoints of another config is still refused
    cfg.write_text(yaml.safe_dump(dict(TINY, env={**TINY["env"], "hmax": 60})))
    rc = main(["bench", str(cfg), "--out", str(run), "--no-tearsheets"])
    assert rc == 2 and "different config" in capsys.readouterr().err


def test_an_agent_typo_is_refused_before_any_data_or_training_work(tmp_path, capsys, monkeypatch):
    """``--agents ppo,equalweight`` used to train ppo first and reject the typo afterwards (issue 18)."""
    import benchmarks.dataset as dataset

    def no_data(*a, **k):  # any data work before the check would be the bug
        raise AssertionError("data was loaded before the agent names were checked")

    monkeypatch.setattr(dataset, "load_frame", no_data)
    cfg = tmp_path / "tiny_cli.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    rc = main(["bench", str(cfg), "--agents", "equal_weight,equalweight", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert "'equalweight'" in err and "did you mean ['equal_weight'" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("section,key", [("windows", "trade_start"), ("data", "end")])
def test_a_non_iso_date_in_a_config_is_one_error_naming_its_key(tmp_path, capsys, section, key):
    """``05-06-2020`` was read silently as May 6 (US order); dates in configs are ISO only (issue 18)."""
    config = yaml.safe_load(yaml.safe_dump(TINY))
    config[section][key] = "07-02-2018"
    cfg = tmp_path / "tiny_cli.yaml"
    cfg.write_text(yaml.safe_dump(config))
    rc = main(["bench", str(cfg), "--out", str(tmp_path / "run"), "--no-tearsheets"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert f"{section}.{key}: '07-02-2018' is not an ISO date" in err


def test_version_and_bare_invocation(capsys):
    from finmeta import __version__

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == __version__
    assert main(["--debug"]) == 0
    assert "Usage" in capsys.readouterr().out


def test_piped_table_is_whole_and_says_what_was_traded_and_a_rerun_keeps_the_first_wall_time(tmp_path, capsys):
    """Piped output (capsys is not a terminal) is the Markdown table with every column uncut, under a
    caption naming the trade period, data, fill and seeds; a resumed rerun says so on stderr and the
    manifest keeps both invocations' wall times instead of overwriting the first (issue 18)."""
    cfg = tmp_path / "tiny_cli.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    out_dir = tmp_path / "run"
    assert main(["bench", str(cfg), "--out", str(out_dir), "--no-tearsheets"]) == 0
    first = capsys.readouterr()
    lines = first.out.splitlines()
    assert lines[0].startswith("trade 2018-07-02 -> 2018-12-31 (126 bars, 2 windows) | data: source synthetic, 3 "
                               "tickers, hash ") and "fill: next bar's open | seeds: 0" in lines[0]
    assert lines[1].startswith("| agent | Cumulative return |") and "| Turnover | Costs paid |" in lines[1]
    assert "…" not in first.out
    assert (out_dir / "table.md").read_text() in first.out  # the same table as the run directory's
    wall_first = json.loads((out_dir / "manifest.json").read_text())["wall_time_s"]
    assert main(["bench", str(cfg), "--out", str(out_dir), "--no-tearsheets"]) == 0
    assert f"resuming {out_dir}" in capsys.readouterr().err
    manifest = json.loads((out_dir / "manifest.json").read_text())
    runs = manifest["invocations"]
    assert len(runs) == 2 and runs[0]["wall_time_s"] == wall_first
    assert runs[1]["wall_time_s"] == manifest["wall_time_s"] and runs[1]["command"].startswith("finmeta bench ")


def test_backtest_is_the_bench_code_path(tmp_path, capsys):
    """`finmeta backtest` used to trade one env over the whole range under the turbulence stop and
    disagree with bench on a rule baseline (equal weight 0.2993 vs 0.3776), accept `--agent sac
    --model ppo.zip`, and write a thinner run folder (issue 18)."""
    config = yaml.safe_load(yaml.safe_dump(TINY))
    config["features"]["turbulence"] = True  # a stop for learned agents, none for rule baselines
    config["env"]["turbulence_quantile"] = 0.8
    config["agents"]["ppo"] = {"total_timesteps": 64, "n_steps": 32, "batch_size": 32, "n_epochs": 1}
    cfg = tmp_path / "tiny_cli.yaml"
    cfg.write_text(yaml.safe_dump(config))
    assert main(["bench", str(cfg), "--agents", "equal_weight", "--out", str(tmp_path / "bench"),
                 "--no-tearsheets", "--json"]) == 0
    bench = {r["agent"]: r for r in json.loads(capsys.readouterr().out)}
    assert main(["backtest", str(cfg), "--agent", "equal_weight", "--out", str(tmp_path / "bt"),
                 "--no-tearsheets", "--json"]) == 0
    bt = {r["agent"]: r for r in json.loads(capsys.readouterr().out)}
    for figure in ("cumulative_return", "sharpe", "turnover", "costs_paid"):
        assert bt["equal_weight"][figure] == bench["equal_weight"][figure]
    assert (tmp_path / "bt" / "actions" / "equal_weight_seed0.csv").is_file()
    assert {"account_value", "turnover", "cost"} <= set(pd.read_csv(tmp_path / "bt" / "values" /
                                                                   "equal_weight_seed0.csv").columns)
    manifest = json.loads((tmp_path / "bt" / "manifest.json").read_text())
    assert manifest["command"].startswith("finmeta backtest ") and manifest["dataset_hash"]

    assert main(["backtest", str(cfg), "--agent", "ppo", "--out", str(tmp_path / "x")]) == 2
    assert "backtest --agent ppo needs --model" in capsys.readouterr().err
    assert main(["train", str(cfg), "--agent", "ppo", "--out", str(tmp_path / "ppo.zip")]) == 0
    capsys.readouterr()
    assert main(["backtest", str(cfg), "--agent", "sac", "--model", str(tmp_path / "ppo.zip"),
                 "--out", str(tmp_path / "x")]) == 2
    assert "holds a 'ppo' agent, not 'sac'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    argv = ["backtest", str(cfg), "--agent", "ppo", "--model", str(tmp_path / "ppo.zip"), "--out",
            str(tmp_path / "bt_ppo"), "--no-tearsheets", "--json"]
    assert main(argv) == 0
    first = json.loads(capsys.readouterr().out)
    windows = json.loads((tmp_path / "bt_ppo" / "manifest.json").read_text())["windows"]["ppo_seed0"]
    assert [w["threshold"] is not None for w in windows] == [True, True]  # learned: under the stop
    assert main(argv) == 0  # resumes from the checkpoints bound to this model: the same table
    assert json.loads(capsys.readouterr().out) == first


@pytest.mark.parametrize("argv", [["bench", "--help"], ["backtest", "--help"], ["data", "features", "--help"]])
def test_help_screens_are_plain_and_whole(argv, capsys):
    """Help showed rich `<bool>` labels on flags, `{file}` argument labels and defaults cut with `…`."""
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "…" not in out and "--json <bool>" not in out and "<bool>" not in out
    assert "CONFIG" in out or "NAME" in out
    if argv[:2] == ["data", "features"]:
        assert "close_60_sma" in out  # the whole default list of indicators


def test_every_file_of_a_run_directory_is_named_by_rundir(tmp_path):
    """benchmarks/rundir.py is the one owner of the layout: a run writes nothing it does not name,
    and its CSV writer gives the bytes of pandas' own (issue 12)."""
    from benchmarks import rundir

    cfg = tmp_path / "tiny_cli.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    run = tmp_path / "run"
    assert main(["bench", str(cfg), "--seeds", "0", "--out", str(run), "--no-tearsheets"]) == 0
    named = {rundir.FINGERPRINT, rundir.MANIFEST, rundir.WINDOWS, rundir.TABLE_SEEDS, rundir.STATS,
             *(p.name for p in rundir.table_paths(run).values()),
             rundir.VALUES, rundir.ACTIONS, rundir.CHECKPOINTS, rundir.MODELS, rundir.TEARSHEETS, rundir.REPORT_LOCK}
    top = {p.name for p in run.iterdir()}
    assert top - named <= {"equity.png", "drawdown.png", "sharpe_intervals.png", "improvement.png"}, top - named
    assert rundir.checkpoint_path(run, "equal_weight", 0, 0).is_file()
    assert not list(run.rglob(".*.tmp"))  # no temporary file left behind
    frame = pd.read_csv(run / "table.csv")
    out = rundir.write_csv(tmp_path / "t.csv", frame, index=False)
    assert out.read_bytes() == frame.to_csv(index=False).encode()


def test_two_invocations_writing_one_run_directory_at_once_both_keep_their_record(tmp_path, monkeypatch):
    """Two `finmeta bench` into one run directory (one per agent, as a queue of workers runs them)
    used to read the manifest's invocations, then write the report: when both read before either
    wrote, one record was lost. The report stage now runs under the run directory's report lock.
    Here both invocations reach the report stage together (a barrier) and the report is slowed, so
    without the lock the second would read the manifest before the first had written it."""
    import threading
    import time

    from benchmarks import report, rundir
    from benchmarks.run import run_benchmark

    barrier = threading.Barrier(2, timeout=60)
    build, write = rundir.build_manifest, report.write_report

    def build_together(*args, **kwargs):
        barrier.wait()
        return build(*args, **kwargs)

    def slow_write(*args, **kwargs):
        time.sleep(0.5)
        return write(*args, **kwargs)

    monkeypatch.setattr(rundir, "build_manifest", build_together)
    monkeypatch.setattr(report, "write_report", slow_write)
    run, errors = tmp_path / "run", []

    def bench(agent):
        try:
            run_benchmark(TINY, agents=[agent], out=run, progress=False, tearsheets=False, command=f"bench {agent}")
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=bench, args=(a,)) for a in ("equal_weight", "buy_and_hold")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    records = json.loads((run / "manifest.json").read_text())["invocations"]
    assert sorted(r["command"] for r in records) == ["bench buy_and_hold", "bench equal_weight"]
    assert sorted(r["agents"][0] for r in records) == ["buy_and_hold", "equal_weight"]
    # the table is one writer's whole table, not a mix: the last writer's agent and the index
    table = pd.read_csv(run / "table.csv")
    assert sorted(table["agent"]) == sorted([records[-1]["agents"][0], "index"])
