"""The walk-forward loop: windows, no peeking past a window, determinism, resume."""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from benchmarks import loop as loop_mod
from benchmarks.loop import WalkForward
from benchmarks.run import build_arrays, run_benchmark
from benchmarks.windows import make_windows, window_seed
from finmeta.errors import ConfigError

CONFIG = {
    "name": "tiny",
    "data": {"source": "synthetic", "tickers": 4, "start": "2016-01-01", "end": "2019-07-01", "seed": 3},
    "features": {"engine": "stockstats", "indicators": ["macd", "rsi_30"], "turbulence": True},
    "env": {"family": "stock_trading", "initial_cash": 100_000, "hmax": 50, "turbulence_quantile": 0.99},
    "windows": {"train_start": "2016-01-01", "trade_start": "2018-07-02", "trade_end": "2019-07-01",
                "rebalance": 63, "validation": 42},
    "agents": {"a2c": {"total_timesteps": 120, "n_steps": 5}, "buy_and_hold": {}, "equal_weight": {},
               "min_variance": {"window": 60}},
    "index": {"price_weighted": True},
    "seeds": [0],
}


@pytest.fixture(scope="module")
def arrays():
    a, _ = build_arrays(copy.deepcopy(CONFIG))
    return a


# ------------------------------------------------------------------------------------- windows


def test_windows_follow_the_icaif_scheme():
    t = pd.bdate_range("2009-01-01", "2017-01-01")
    ws = make_windows(t, train_start="2009-01-01", trade_start="2016-01-04", rebalance=63, validation=63)
    first = ws[0]
    assert t[first.trade[0]] == pd.Timestamp("2016-01-04")
    assert first.validation == (first.trade[0] - 63, first.trade[0])
    assert first.train == (0, first.trade[0] - 63)
    for a, b in zip(ws, ws[1:]):
        assert b.trade[0] == a.trade[1]  # contiguous trading
        assert b.train[0] == 0 and b.train[1] == b.validation[0]  # expanding
        assert b.trade[1] - b.trade[0] <= 63
    assert ws[-1].trade[1] == len(t)


def test_rolling_windows_keep_their_length_and_bad_configs_raise():
    t = pd.bdate_range("2010-01-01", "2014-01-01")
    ws = make_windows(t, train_start="2010-01-01", trade_start="2013-01-02", mode="rolling", train_length=250)
    assert all(w.train[1] - w.train[0] == 250 for w in ws)
    with pytest.raises(ConfigError, match="train_length"):
        make_windows(t, train_start="2010-01-01", trade_start="2013-01-02", mode="rolling")
    with pytest.raises(ConfigError, match="after the last bar"):
        make_windows(t, train_start="2010-01-01", trade_start="2030-01-02")
    with pytest.raises(ConfigError, match="training bars"):
        make_windows(t, train_start="2012-12-20", trade_start="2013-01-02", validation=63)


def test_window_seed_depends_only_on_its_inputs():
    assert window_seed(1, 2, "a2c") == window_seed(1, 2, "a2c")
    assert len({window_seed(s, w, a) for s in range(3) for w in range(5) for a in ("a2c", "ppo")}) == 30


# ------------------------------------------------------------------------------------ the walk


def test_chain_covers_the_trading_range_without_gaps(arrays, tmp_path):
    wf = WalkForward(arrays, copy.deepcopy(CONFIG), tmp_path)
    ch = wf.run_chain("equal_weight", 0)
    lo, hi = wf.windows[0].trade[0], wf.windows[-1].trade[1]
    assert np.array_equal(ch.times, arrays.times[lo:hi])
    assert ch.values.shape == (hi - lo,) and np.all(np.isfinite(ch.values))
    assert ch.values[0] == pytest.approx(100_000)
    assert ch.actions.shape == (hi - lo, arrays.num_assets)
    assert np.isnan(ch.actions[-1]).all() and np.isfinite(ch.actions[:-1]).all()


def test_buy_and_hold_trades_only_at_the_start(arrays, tmp_path):
    wf = WalkForward(arrays, copy.deepcopy(CONFIG), tmp_path)
    ch = wf.run_chain("buy_and_hold", 0)
    traded = ch.costs > 0
    first = wf.windows[0].trade[1] - wf.windows[0].trade[0]
    # buys during the first window (hmax caps shares per step), holds in every later window
    assert traded[1] and not traded[first:].any()
    held = np.abs(np.diff(ch.values[first - 1:]))
    assert held.max() > 0  # the value still moves with prices


def _spy_envs(monkeypatch):
    built = []
    real = loop_mod.build_env

    def spy(arrays, env_cfg, **kw):
        built.append(arrays.times[-1])
        return real(arrays, env_cfg, **kw)

    monkeypatch.setattr(loop_mod, "build_env", spy)
    return built


def test_no_stage_builds_an_env_past_its_range(arrays, tmp_path, monkeypatch):
    built = _spy_envs(monkeypatch)
    wf = WalkForward(arrays, copy.deepcopy(CONFIG), tmp_path)
    w = wf.windows[1]
    part, record = wf._run_window("a2c", w, 0, {"cash": 100_000.0, "holdings": [0.0] * arrays.num_assets})
    # train env, validation env, trade env -- in that order, each ending where its stage ends
    assert built == [arrays.times[w.train[1] - 1], arrays.times[w.validation[1] - 1], arrays.times[w.trade[1] - 1]]
    assert np.isfinite(record["validation_sharpe"]) or np.isnan(record["validation_sharpe"])


def _perturb_after(a, cut: int, seed: int = 9):
    """A copy of the arrays whose bars from ``cut`` on are replaced by random values."""
    rng = np.random.default_rng(seed)

    def noisy(x):
        if x is None:
            return None
        y = np.array(x, copy=True)
        if y.dtype == bool:
            return y
        y[cut:] = rng.uniform(1.0, 500.0, size=y[cut:].shape).astype(y.dtype)
        return y

    return replace(a, close=noisy(a.close), open=noisy(a.open), high=noisy(a.high), low=noisy(a.low),
                   volume=noisy(a.volume), features=noisy(a.features), turbulence=noisy(a.turbulence))


@pytest.mark.parametrize("agent", ["a2c", "min_variance"])
def test_results_of_a_window_ignore_every_bar_after_it(arrays, tmp_path, agent):
    """Training, validation and trading of windows 0..1 never read a bar after window 1's end."""
    cfg = copy.deepcopy(CONFIG)
    wf = WalkForward(arrays, cfg, tmp_path / "a")
    cut = wf.windows[1].trade[1]
    wf_p = WalkForward(_perturb_after(arrays, cut), cfg, tmp_path / "b")
    state_a = state_b = None
    for w in wf.windows[:2]:
        pa, ra = wf._run_window(agent, w, 0, state_a)
        pb, rb = wf_p._run_window(agent, w, 0, state_b)
        assert np.array_equal(pa["values"], pb["values"])
        assert np.array_equal(pa["actions"], pb["actions"], equal_nan=True)
        assert ra.get("validation_sharpe") == rb.get("validation_sharpe")
        state_a, state_b = pa["state"], pb["state"]
    # and the perturbation is real: a later window does see it
    w2 = wf.windows[2]
    pa, _ = wf._run_window(agent, w2, 0, state_a)
    pb, _ = wf_p._run_window(agent, w2, 0, state_b)
    assert not np.array_equal(pa["values"], pb["values"])


# ------------------------------------------------------------------------ determinism, resume


def test_same_config_and_seed_give_the_same_table_byte_for_byte(tmp_path):
    cfg = copy.deepcopy(CONFIG)
    t1, d1 = run_benchmark(cfg, agents=["a2c", "buy_and_hold", "index"], seeds=[0, 1], out=tmp_path / "r1",
                           progress=False, tearsheets=False)
    t2, d2 = run_benchmark(cfg, agents=["a2c", "buy_and_hold", "index"], seeds=[0, 1], out=tmp_path / "r2",
                           progress=False, tearsheets=False)
    assert (d1 / "table.csv").read_bytes() == (d2 / "table.csv").read_bytes()
    for name in ("a2c_seed0", "a2c_seed1", "buy_and_hold_seed0"):
        assert (d1 / "values" / f"{name}.csv").read_bytes() == (d2 / "values" / f"{name}.csv").read_bytes()
    table = pd.read_csv(d1 / "table.csv")
    assert set(table["agent"]) == {"a2c", "buy_and_hold", "index"}
    for col in ("cumulative_return", "annual_return", "annual_volatility", "sharpe", "sortino", "calmar",
                "max_drawdown", "sharpe_std", "sharpe_ci95"):
        assert col in table.columns
    # different seeds really differ for the learning agent
    v0 = pd.read_csv(d1 / "values" / "a2c_seed0.csv")["account_value"].to_numpy()
    v1 = pd.read_csv(d1 / "values" / "a2c_seed1.csv")["account_value"].to_numpy()
    assert not np.array_equal(v0, v1)


class _Interrupted(RuntimeError):
    pass


def test_an_interrupted_run_resumes_and_ends_with_the_same_result(arrays, tmp_path, monkeypatch):
    cfg = copy.deepcopy(CONFIG)
    full = WalkForward(arrays, cfg, tmp_path / "full").run_chain("a2c", 0)

    calls = []
    interrupted = []
    real = WalkForward._run_window

    def flaky(self, name, w, seed, state):
        calls.append(w.index)
        if w.index == 2 and not interrupted:
            interrupted.append(True)
            raise _Interrupted("simulated interruption (a killed process)")
        return real(self, name, w, seed, state)

    monkeypatch.setattr(WalkForward, "_run_window", flaky)
    wf = WalkForward(arrays, cfg, tmp_path / "resumed")
    with pytest.raises(_Interrupted):
        wf.run_chain("a2c", 0)
    assert calls == [0, 1, 2]
    calls.clear()
    resumed = WalkForward(arrays, cfg, tmp_path / "resumed").run_chain("a2c", 0)
    assert calls == list(range(2, len(wf.windows)))  # finished windows are not redone
    assert np.array_equal(resumed.values, full.values)
    assert np.array_equal(resumed.actions, full.actions, equal_nan=True)


def test_rule_baselines_trade_without_the_turbulence_stop_unless_asked(arrays, tmp_path):
    """The turbulence stop liquidates; a buy-and-hold row under it would sit in cash for every later
    window. Baselines trade without it by default (``baseline_turbulence: true`` restores it)."""
    cfg = copy.deepcopy(CONFIG)
    cfg["env"]["turbulence_quantile"] = 0.3  # a low threshold: the stop fires in every window
    free = WalkForward(arrays, cfg, tmp_path / "free").run_chain("buy_and_hold", 0)
    stopped = WalkForward(arrays, dict(cfg, baseline_turbulence=True), tmp_path / "stopped").run_chain("buy_and_hold", 0)
    last = slice(-40, None)
    assert np.ptp(stopped.values[last]) == 0.0  # liquidated earlier, all cash since
    assert np.ptp(free.values[last]) > 0.0  # still holding
    assert all(r["threshold"] is None for r in free.windows)
    assert all(r["threshold"] is not None for r in stopped.windows)
    a2c = WalkForward(arrays, cfg, tmp_path / "a2c")._run_window("a2c", WalkForward(arrays, cfg, tmp_path).windows[0], 0, None)
    assert a2c[1]["threshold"] is not None  # RL agents keep the ICAIF stop


def test_a_baseline_checkpoint_saved_under_the_stop_is_recomputed_on_resume(arrays, tmp_path, monkeypatch):
    """Run directories from before the change hold baseline windows traded under the stop; resuming
    one recomputes those windows instead of mixing the two rules."""
    cfg = copy.deepcopy(CONFIG)
    cfg["env"]["turbulence_quantile"] = 0.3
    fresh = WalkForward(arrays, cfg, tmp_path / "fresh").run_chain("buy_and_hold", 0)
    with monkeypatch.context() as m:  # an "old" run: the baseline under the stop, same fingerprint
        m.setattr(WalkForward, "_baseline_turbulence", lambda self: True)
        old = WalkForward(arrays, cfg, tmp_path / "old").run_chain("buy_and_hold", 0)
    assert not np.array_equal(old.values, fresh.values)
    resumed = WalkForward(arrays, cfg, tmp_path / "old").run_chain("buy_and_hold", 0)
    assert np.array_equal(resumed.values, fresh.values)


def test_moe_runs_in_the_loop_and_reports_diversity(arrays, tmp_path):
    cfg = copy.deepcopy(CONFIG)
    cfg["agents"]["moe"] = {"total_timesteps": 100}
    wf = WalkForward(arrays, cfg, tmp_path)
    part, record = wf._run_window("moe", wf.windows[0], 0, None)
    assert np.all(np.isfinite(part["values"]))
    assert 0.0 <= record["diversity"]["diversity"] <= 1.0
    assert record["diversity"]["router_entropy"] >= 0.0


MOE_TINY = {"lookback": 3, "d_model": 8, "feat_dim": 8, "hidden": 16, "learning_starts": 20, "batch_size": 16,
            "segment": 2, "router_every": 4}


def test_warm_start_continues_from_the_previous_window_with_lora_only_encoder_updates(arrays, tmp_path):
    """``warm_start``: window k fine-tunes window k-1's saved agent for ``retrain_timesteps``; the
    encoder's base weights stay frozen (LoRA), the adapters move. Without it every window is new."""
    import agents.moe  # noqa: F401
    from agents import load_agent

    def encoder(path):
        enc = load_agent(path).core.encoder.state_dict()
        base = {k: v for k, v in enc.items() if "lora_" not in k}
        lora = {k: v for k, v in enc.items() if "lora_" in k}
        return base, lora

    runs = {}
    for warm in (True, False):
        cfg = copy.deepcopy(CONFIG)
        cfg["agents"] = {"moe": {"total_timesteps": 80, "retrain_timesteps": 40, "warm_start": warm, **MOE_TINY}}
        wf = WalkForward(arrays, cfg, tmp_path / str(warm))
        agent = wf._train("moe", wf.windows[1], 0)  # window 0 is trained first, on demand
        models = tmp_path / str(warm) / "models" / "moe_seed0"
        assert sorted(p.name for p in models.glob("*.zip")) == (["window_000.zip", "window_001.zip"] if warm
                                                           else ["window_001.zip"])
        runs[warm] = agent
    b0, l0 = encoder(tmp_path / "True" / "models" / "moe_seed0" / "window_000.zip")
    b1, l1 = encoder(tmp_path / "True" / "models" / "moe_seed0" / "window_001.zip")
    assert all(torch.equal(b0[k], b1[k]) for k in b0)  # base weights: frozen in the retrain
    assert any(not torch.equal(l0[k], l1[k]) for k in l0)  # adapters: trained
    cold = runs[False].core.encoder.state_dict()
    assert any(not torch.equal(cold[k], b1[k]) for k in b1)  # a cold window-1 agent is another model


def test_warm_start_is_refused_for_agents_that_always_start_fresh(arrays, tmp_path):
    cfg = copy.deepcopy(CONFIG)
    cfg["agents"]["a2c"]["warm_start"] = True
    wf = WalkForward(arrays, cfg, tmp_path)
    with pytest.raises(ConfigError, match="warm_start"):
        wf._train("a2c", wf.windows[0], 0)


def test_training_progress_and_tensorboard_do_not_change_results(arrays, tmp_path):
    pytest.importorskip("tensorboard")
    cfg = copy.deepcopy(CONFIG)
    plain = WalkForward(arrays, cfg, tmp_path / "plain")._run_window("a2c", WalkForward(arrays, cfg, tmp_path).windows[0], 0, None)
    seen = []
    cfg_tb = dict(cfg, tensorboard=True)
    wf = WalkForward(arrays, cfg_tb, tmp_path / "tb", on_train=lambda label, done, n: seen.append((label, done, n)))
    logged = wf._run_window("a2c", wf.windows[0], 0, None)
    assert np.array_equal(plain[0]["values"], logged[0]["values"])
    assert seen and seen[-1] == ("a2c window 0", 120, 120)
    assert list((tmp_path / "tb" / "tensorboard" / "a2c_seed0").rglob("events.out.tfevents.*"))


def test_the_ensemble_reuses_its_members_training_and_matches_it(arrays, tmp_path, monkeypatch):
    """Members trained for their own chains are loaded, not retrained, and act the same."""
    cfg = copy.deepcopy(CONFIG)
    cfg["agents"]["ensemble"] = {"members": ["a2c"]}
    wf = WalkForward(arrays, cfg, tmp_path)
    a2c = wf.run_chain("a2c", 0)
    import agents

    trained = []
    real = agents.make_agent
    monkeypatch.setattr(agents, "make_agent", lambda name, **kw: trained.append(name) or real(name, **kw))
    ens = wf.run_chain("ensemble", 0)
    assert trained == []  # every member came from <run_dir>/models
    assert np.array_equal(ens.values, a2c.values)  # one member: the ensemble is that member
    assert all(r["chosen"] == "a2c" for r in ens.windows)


def test_a_model_asked_for_by_two_chains_at_once_is_trained_once(arrays, tmp_path, monkeypatch):
    """The ensemble's chain beside a member's chain (Ray): the second waits for the first's model.

    Two WalkForward objects on one run directory, as two Ray workers are, ask for the same
    (agent, window, seed) from two threads; the first trains while holding the model's lock, the
    second waits and loads the saved model.
    """
    import threading

    import agents

    started, release = threading.Event(), threading.Event()
    trained = []
    real = agents.make_agent

    def slow_make(name, **kw):
        trained.append(name)
        started.set()
        assert release.wait(30)  # keep the lock held until the other thread is waiting on it
        return real(name, **kw)

    monkeypatch.setattr(agents, "make_agent", slow_make)
    cfg = copy.deepcopy(CONFIG)
    wf1, wf2 = WalkForward(arrays, cfg, tmp_path), WalkForward(arrays, copy.deepcopy(cfg), tmp_path)
    w = wf1.windows[0]
    out = {}
    t1 = threading.Thread(target=lambda: out.setdefault(1, wf1._train("a2c", w, 0)))
    t1.start()
    assert started.wait(30)
    t2 = threading.Thread(target=lambda: out.setdefault(2, wf2._train("a2c", w, 0)))
    t2.start()
    t2.join(0.5)
    assert t2.is_alive()  # blocked on the lock, not training a second copy
    release.set()
    t1.join(60)
    t2.join(60)
    assert trained == ["a2c"]
    env = loop_mod.build_env(wf1._slice(*w.train), wf1._env_overrides(w))
    obs, _ = env.reset(seed=0)
    assert np.array_equal(out[1].act(obs, deterministic=True), out[2].act(obs, deterministic=True))


def test_a_run_directory_is_not_resumed_under_another_config(arrays, tmp_path):
    cfg = copy.deepcopy(CONFIG)
    WalkForward(arrays, cfg, tmp_path).run_chain("equal_weight", 0)
    WalkForward(arrays, copy.deepcopy(cfg), tmp_path).run_chain("equal_weight", 0)  # same config: resumes
    other = copy.deepcopy(cfg)
    other["agents"]["a2c"]["total_timesteps"] = 240
    with pytest.raises(ConfigError, match="different config"):
        WalkForward(arrays, other, tmp_path).run_chain("a2c", 0)
    # a damaged fingerprint.json cannot vouch for the checkpoints: refused the same way, not a traceback
    (tmp_path / "fingerprint.json").write_text("{not json")
    with pytest.raises(ConfigError, match="different config"):
        WalkForward(arrays, copy.deepcopy(cfg), tmp_path).run_chain("equal_weight", 0)


# ------------------------------------------------------------ checkpoints bound to their chain


def _count_calls(monkeypatch, attr: str) -> list:
    calls: list = []
    real = getattr(WalkForward, attr)

    def spy(self, name, w, seed, *rest):
        calls.append((name, w.index))
        return real(self, name, w, seed, *rest)

    monkeypatch.setattr(WalkForward, attr, spy)
    return calls


def test_a_foreign_or_corrupt_checkpoint_is_named_and_its_window_recomputed(arrays, tmp_path, monkeypatch, caplog):
    """Another agent's checkpoint copied into a2c's slot, and a checkpoint cut short: each is refused
    with its file named, that window is recomputed, and the chain equals an untouched run."""
    import shutil

    cfg = copy.deepcopy(CONFIG)
    run = tmp_path / "run"
    ref = WalkForward(arrays, cfg, run).run_chain("a2c", 0)
    WalkForward(arrays, cfg, run).run_chain("equal_weight", 0)
    ck = run / "checkpoints"
    shutil.copy(ck / "equal_weight_seed0" / "window_001.npz", ck / "a2c_seed0" / "window_001.npz")
    bad = ck / "a2c_seed0" / "window_003.npz"
    bad.write_bytes(bad.read_bytes()[:-40])  # truncated (a crash of a copy, a full disk)
    calls = _count_calls(monkeypatch, "_run_window")
    with caplog.at_level("WARNING", logger="finmeta.loop"):
        again = WalkForward(arrays, cfg, run).run_chain("a2c", 0)
    assert calls == [("a2c", 1), ("a2c", 3)]
    text = caplog.text
    assert "a2c_seed0/window_001.npz" in text and "another chain" in text and "agent=equal_weight" in text
    assert "a2c_seed0/window_003.npz" in text and "unreadable" in text
    assert np.array_equal(again.values, ref.values)
    assert np.array_equal(again.actions, ref.actions, equal_nan=True)
    # the recomputed files are bound again: a third run recomputes nothing
    calls.clear()
    WalkForward(arrays, cfg, run).run_chain("a2c", 0)
    assert calls == []


def test_an_edited_checkpoint_or_one_from_another_run_is_refused(arrays, tmp_path):
    cfg = copy.deepcopy(CONFIG)
    wf = WalkForward(arrays, cfg, tmp_path / "a")
    wf.run_chain("equal_weight", 0)
    path = tmp_path / "a" / "checkpoints" / "equal_weight_seed0" / "window_000.npz"
    identity = wf._identity("equal_weight", 0, wf.windows[0])
    part, record = loop_mod._load_window(path, identity)
    with pytest.raises(loop_mod.CheckpointRejected, match="another chain or run.*window=0"):
        loop_mod._load_window(path, dict(identity, window=1))
    with pytest.raises(loop_mod.CheckpointRejected, match="another chain or run.*fingerprint"):
        loop_mod._load_window(path, dict(identity, fingerprint="0" * 64))
    with np.load(path) as z:  # an edited value with the old checksum kept
        entries = {k: z[k] for k in z.files}
    entries["values"] = entries["values"] * 1.01
    np.savez(path, **entries)
    with pytest.raises(loop_mod.CheckpointRejected, match="checksum"):
        loop_mod._load_window(path, identity)
    legacy = {k: entries[k] for k in ("values", "actions", "costs", "turnover", "record", "state")}
    np.savez(path, **legacy)  # the format before checkpoints were bound
    with pytest.raises(loop_mod.CheckpointRejected, match="no identity"):
        loop_mod._load_window(path, identity)


def test_a_swapped_or_damaged_saved_model_is_retrained_not_loaded(arrays, tmp_path, monkeypatch, caplog):
    """models/a2c_seed0/window_000.zip replaced by seed 1's model (with its identity file), and
    window_001.zip damaged: both are refused with the file named and trained again; the chain equals
    the untouched one."""
    import shutil

    cfg = copy.deepcopy(CONFIG)
    run = tmp_path / "run"
    ref = WalkForward(arrays, cfg, run).run_chain("a2c", 0)
    WalkForward(arrays, cfg, run).run_chain("a2c", 1)
    models = run / "models"
    for suffix in (".zip", ".json"):
        shutil.copy(models / "a2c_seed1" / f"window_000{suffix}", models / "a2c_seed0" / f"window_000{suffix}")
    z1 = models / "a2c_seed0" / "window_001.zip"
    z1.write_bytes(z1.read_bytes()[: len(z1.read_bytes()) // 2])
    shutil.rmtree(run / "checkpoints" / "a2c_seed0")  # re-walk seed 0: the models are asked for again
    fits = _count_calls(monkeypatch, "_fit")
    with caplog.at_level("WARNING", logger="finmeta.loop"):
        again = WalkForward(arrays, cfg, run).run_chain("a2c", 0)
    assert fits == [("a2c", 0), ("a2c", 1)]
    assert "a2c_seed0/window_000.zip" in caplog.text and "seed=1" in caplog.text
    assert "a2c_seed0/window_001.zip" in caplog.text and "checksum" in caplog.text
    assert np.array_equal(again.values, ref.values)
    assert np.array_equal(again.actions, ref.actions, equal_nan=True)


def test_scaled_observations_saved_models_give_the_same_actions_on_resume(arrays, tmp_path):
    """normalize_obs: the statistics come from the window's training range (obs_fit_bars), so a
    resumed run that loads the saved models (no checkpoints left) acts exactly as the first run."""
    import json
    import shutil
    import zipfile

    cfg = copy.deepcopy(CONFIG)
    cfg["env"]["normalize_obs"] = True
    first = WalkForward(arrays, cfg, tmp_path / "run").run_chain("a2c", 0)
    shutil.rmtree(tmp_path / "run" / "checkpoints")
    again = WalkForward(arrays, cfg, tmp_path / "run").run_chain("a2c", 0)
    assert np.array_equal(again.actions, first.actions, equal_nan=True)
    assert np.array_equal(again.values, first.values)
    assert np.nanstd(first.actions, axis=0).max() > 0
    wf = WalkForward(arrays, cfg, tmp_path / "run")
    for w in wf.windows:
        with zipfile.ZipFile(wf._model_path("a2c", w, 0)) as z:
            rec = json.loads(z.read("finmeta.json"))["obs_scaling"]
        assert rec["features"] == "fitted" and rec["fit_bars"] == w.train[1] - w.train[0]


# ------------------------------------------------------------ the loop reads the typed spec (issue 12)


def _fingerprint_the_old_way(config: dict, dataset_hash: str) -> str:
    """What WalkForward.fingerprint hashed before the loop took a RunSpec: fingerprint_body of the dict."""
    import hashlib
    import json

    from benchmarks.spec import fingerprint_body

    body = {**fingerprint_body(config), "dataset_hash": dataset_hash}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


@pytest.mark.parametrize("name", ["quickstart", "icaif2020_original", "crypto_btc_eth"])
def test_a_shipped_configs_fingerprint_is_the_dicts_and_its_specs(name, tmp_path):
    """Existing run directories resume: the spec's fingerprint hashes the config as written (no
    defaults filled in), the same bytes as the dict's, whichever form the loop was given."""
    from types import SimpleNamespace

    from benchmarks.spec import load_config, load_spec

    arrays = SimpleNamespace(meta={"dataset_hash": "d" * 64}, times=np.array([], dtype="datetime64[ns]"),
                             turbulence=None)
    cfg = load_config(name)
    spec = load_spec(name)
    old = _fingerprint_the_old_way(cfg, "d" * 64)
    assert WalkForward(arrays, spec, tmp_path, windows=[]).fingerprint() == old
    assert WalkForward(arrays, copy.deepcopy(cfg), tmp_path, windows=[]).fingerprint() == old
    assert spec.fingerprint_body() == WalkForward(arrays, cfg, tmp_path, windows=[]).spec.fingerprint_body()
    # a dump of the spec fills in defaults: hashing it would orphan every run directory
    assert spec.model_dump()["env"] == spec.env and spec.model_dump()["data"] != cfg["data"]


def test_the_loop_reads_the_spec_not_the_dict(arrays, tmp_path):
    """WalkForward validates a dict at the door (one ConfigError naming section.key) and then reads
    only the spec's typed views; a later change to the caller's dict changes nothing."""
    import inspect

    from benchmarks.spec import RunSpec, TurbulenceRule

    cfg = copy.deepcopy(CONFIG)
    wf = WalkForward(arrays, cfg, tmp_path)
    assert isinstance(wf.spec, RunSpec) and wf.spec.turbulence == TurbulenceRule(quantile=0.99)
    before = wf.fingerprint()
    cfg["env"]["turbulence_quantile"] = 0.5
    assert wf.fingerprint() == before and wf.spec.turbulence.quantile == 0.99
    source = inspect.getsource(WalkForward)
    assert not [m for m in ("self.config", "env_cfg", "agent_cfg", "config.get(") if m in source]
    bad = copy.deepcopy(CONFIG)
    bad["agents"]["a2c"]["deterministic"] = "no"
    with pytest.raises(ConfigError, match=r"agents\.a2c\.deterministic: 'no'; use true or false"):
        WalkForward(arrays, bad, tmp_path / "bad")
    bad = copy.deepcopy(CONFIG)
    bad["env"]["turbulence_lookback"] = 0
    with pytest.raises(ConfigError, match=r"env\.turbulence_lookback: 0"):
        WalkForward(arrays, bad, tmp_path / "bad")
