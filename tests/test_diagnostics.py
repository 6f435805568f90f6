"""Action diagnostics (benchmarks/diagnostics.py) and the report's static-policy flag."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from benchmarks.diagnostics import action_diagnostics, window_segments
from benchmarks.report import static_policies, write_tables


def test_window_segments_follow_the_carried_over_bar():
    # windows of 3, 4, 2 bars; window k > 0 acts first on the previous window's last row
    assert window_segments([3, 4, 2], 9) == [(0, 2), (2, 6), (6, 9)]


def test_diagnostics_of_a_static_and_a_reactive_chain():
    L, A = 9, 2
    static = np.tile([[1.0, -1.0]], (L, 1))
    static[-1] = np.nan
    d = action_diagnostics(static, [3, 4, 2], low=-1.0, high=1.0)
    assert d["action_repeat"] == 1.0 and d["action_change"] == 0.0
    assert d["static_windows"] == 3 and d["saturation"] == 1.0
    # changes only at window boundaries: repeat < 1, yet every window is static
    bounds = static.copy()
    bounds[2:6] = [0.5, 0.0]
    bounds[6:8] = [0.2, 0.1]
    d = action_diagnostics(bounds, [3, 4, 2], low=-1.0, high=1.0)
    assert d["static_windows"] == 3 and 0 < d["action_repeat"] < 1
    assert d["saturation"] == 0.25  # 2 rows of 8 at the bounds on both entries
    rng = np.random.default_rng(0)
    react = rng.uniform(-0.5, 0.5, (L, A))
    react[-1] = np.nan
    d = action_diagnostics(react, [3, 4, 2], low=-1.0, high=1.0)
    assert d["action_repeat"] == 0.0 and d["static_windows"] == 0 and d["saturation"] == 0.0
    np.testing.assert_allclose(d["action_change"], np.abs(np.diff(react[:-1], axis=0)).mean())
    # rule baselines: no saturation figure; an unbounded space: none either
    assert np.isnan(action_diagnostics(react, low=-1.0, high=1.0, learned=False)["saturation"])
    assert np.isnan(action_diagnostics(react, low=-np.inf, high=np.inf)["saturation"])


def test_report_flags_static_policies(tmp_path):
    table = pd.DataFrame({"agent": ["ppo", "sac", "equal_weight"], "sharpe": [1.0, 0.5, 0.7],
                          "action_repeat": [0.99, 0.1, 0.0], "static_windows": [2.0, 0.0, 0.0]})
    assert static_policies(table) == ["ppo"]
    paths = write_tables(tmp_path, table)
    md = paths["md"].read_text()
    assert "static policy: ppo" in md and "Action repeat" in md and "Static windows" in md
    assert "static_windows" in pd.read_csv(paths["csv"]).columns
    assert static_policies(table.drop(columns=["static_windows"])) == []


def test_bench_writes_the_diagnostics_to_the_table_and_manifest(tmp_path, capsys):
    import json

    import yaml

    from finmeta.cli import main
    from test_cli_bench import TINY

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    assert main(["bench", str(cfg), "--out", str(tmp_path / "run"), "--no-tearsheets", "--json"]) == 0
    capsys.readouterr()
    table = pd.read_csv(tmp_path / "run" / "table.csv").set_index("agent")
    for col in ("action_repeat", "action_change", "saturation", "static_windows"):
        assert col in table.columns
    assert table.loc["equal_weight", "action_repeat"] < 1 and np.isnan(table.loc["equal_weight", "saturation"])
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    d = manifest["action_diagnostics"]["equal_weight_seed0"]
    assert d["saturation"] is None and d["action_change"] == pytest.approx(table.loc["equal_weight", "action_change"])
    seeds = pd.read_csv(tmp_path / "run" / "table_seeds.csv")
    assert "action_repeat" in seeds.columns
    # a rebuild from the value files keeps them (finmeta report)
    from benchmarks.report import build_report

    again = build_report(tmp_path / "run", tearsheets=False)["table"].set_index("agent")
    assert again.loc["equal_weight", "action_change"] == pytest.approx(table.loc["equal_weight", "action_change"])


def test_a_saved_agent_records_its_observation_scaling_and_refuses_the_other_kind(tmp_path):
    from agents import AgentLoadError, load_agent, make_agent
    from meta import make_env
    from meta.testing import synthetic_arrays

    arrays = synthetic_arrays(T=40, N=3, K=2, seed=1)
    scaled = make_env(arrays, "stock_trading", normalize_obs=True, obs_fit_bars=30)
    agent = make_agent("ppo", n_steps=16, batch_size=16).learn(scaled, total_timesteps=16, seed=0)
    path = agent.save(tmp_path / "ppo.zip")
    again = load_agent(path, make_env(arrays, "stock_trading", normalize_obs=True, obs_fit_bars=30))
    assert again.obs_scaling["features"] == "fitted" and again.obs_scaling["fit_bars"] == 30
    obs, _ = scaled.reset(seed=0)
    np.testing.assert_array_equal(again.act(obs), agent.act(obs))
    with pytest.raises(AgentLoadError, match="scaled observations but the env gives raw"):
        load_agent(path, make_env(arrays, "stock_trading"))
