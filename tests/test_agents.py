"""The agent layer: registry, SB3 backends, the vector-env adapter, baselines, save/load.

Budgets are tiny (a few hundred steps); the tests check behaviour (determinism, round trips,
space checks, no look-ahead), not learning quality.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from data_processors.arrays import MarketArrays
from meta import make_env, make_vec_env

from agents import AgentError, AgentLoadError, agent_names, load_agent, make_agent
from agents.base import AGENT_REGISTRY, Agent, register_agent
from agents.baselines import BuyAndHold, EqualWeight, MinVariance, weights_to_action
from agents.sb3 import FINRL_DEFAULTS
from agents.vec_env import GymnasiumVecEnvAdapter
from finmeta.errors import ConfigError, FinMetaError

# ------------------------------------------------------------------------------------ small envs


def _prices(T: int = 40, N: int = 3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (50.0 * np.exp(np.cumsum(rng.normal(0.0005, 0.02, size=(T, N)), axis=0))).astype(np.float32)


def small_arrays(T: int = 40, N: int = 3, K: int = 2, seed: int = 0) -> MarketArrays:
    """A hand-made (T, N, K) market: random-walk closes, opens near them, K random features."""
    rng = np.random.default_rng(seed)
    close = _prices(T, N, seed)
    open_ = (close * (1 + rng.normal(0, 0.003, size=(T, N)))).astype(np.float32)
    return MarketArrays(
        times=(np.datetime64("2020-01-01") + np.arange(T)).astype("datetime64[ns]"),
        tickers=tuple(f"T{i}" for i in range(N)),
        close=close, open=open_,
        high=(np.maximum(close, open_) * 1.01).astype(np.float32),
        low=(np.minimum(close, open_) * 0.99).astype(np.float32),
        volume=np.full((T, N), 1e6, np.float32),
        features=rng.normal(size=(T, N, K)).astype(np.float32),
        feature_names=tuple(f"f{k}" for k in range(K)),
    )


def toy_env(N: int = 3, **kw) -> gym.Env:
    """meta's stock_trading env on a small hand-made market (obs 1 + 2N + 2N, action N)."""
    return make_env(small_arrays(N=N), family="stock_trading", **kw)


def toy_vec_env(E: int = 4, **kw) -> gym.vector.VectorEnv:
    return make_vec_env(small_arrays(), family="stock_trading", num_envs=E, **kw)


class _CountEnv(gym.Env):
    """Minimal env for the NEXT_STEP adapter path (meta's vector env is SAME_STEP only)."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.0, 1.0], np.float32), {}

    def step(self, action):
        self.t += 1
        return np.array([self.t, 0.0], np.float32), 1.0, self.t >= 5, False, {}


# tiny budgets / networks per algorithm
SMALL = {
    "a2c": {"n_steps": 5},
    "ppo": {"n_steps": 32, "batch_size": 32, "n_epochs": 2},
    "ddpg": {"buffer_size": 2000, "learning_starts": 20, "batch_size": 32},
    "td3": {"buffer_size": 2000, "learning_starts": 20, "batch_size": 32},
    "sac": {"buffer_size": 2000, "learning_starts": 20, "batch_size": 32},
}
NET = {"policy_kwargs": {"net_arch": [16, 16]}}
LEARNED = ["a2c", "ppo", "ddpg", "td3", "sac"]


# --------------------------------------------------------------------------------------- registry


def test_registry_has_the_required_names():
    names = set(agent_names())
    for n in ["a2c", "ppo", "ddpg", "td3", "sac", "buy_and_hold", "equal_weight", "min_variance", "index"]:
        assert n in names
    import agents.base as base

    assert "moe" in base.RESERVED_NAMES and "ensemble" in base.RESERVED_NAMES


def test_reserved_but_unregistered_name_is_a_clear_error(monkeypatch):
    import agents.base as base

    monkeypatch.setattr(base, "RESERVED_NAMES", base.RESERVED_NAMES + ("future_agent_test",))
    with pytest.raises(ConfigError, match="'future_agent_test' is reserved but not implemented"):
        make_agent("future_agent_test")
    with pytest.raises(ConfigError, match="unknown agent 'nope'"):
        make_agent("nope")


def test_registry_is_extensible(tmp_path):
    class Always(Agent):
        name = "always_one_test"

        def learn(self, env, total_timesteps, seed=0):
            self._set_spaces(env)
            return self

        def act(self, obs, deterministic=True, info=None):
            return np.ones(self.action_space.shape, np.float32)

        def _save(self, path):
            import zipfile
            with zipfile.ZipFile(path, "w") as zf:
                zf.writestr("nothing.txt", "always one")

        def _load(self, path, manifest, env):
            self._set_spaces(env)

    register_agent("always_one_test", Always)
    try:
        env = toy_env()
        a = make_agent("always_one_test").learn(env, 1)
        assert a.act(env.reset(seed=0)[0]).tolist() == [1.0, 1.0, 1.0]
        with pytest.raises(ConfigError, match="already registered"):
            register_agent("always_one_test", lambda **k: None)
        again = load_agent(a.save(tmp_path / "one.zip"), env)
        assert type(again) is Always and again.act(env.reset(seed=0)[0]).tolist() == [1.0, 1.0, 1.0]
    finally:
        AGENT_REGISTRY.pop("always_one_test")


def test_builtin_table_resolves_lazily_to_the_named_classes():
    import subprocess
    import sys

    import agents.base as base

    for name, entry in base.BUILTIN_AGENTS.items():
        cls = base.agent_class(name)
        assert isinstance(cls, type) and issubclass(cls, Agent) and cls.name == name, entry
        assert f"{cls.__module__}:" in entry
    # agents.base imports no implementation; agent_names() neither
    code = ("import sys, agents, agents.base as b; b.agent_names(); "
            "print(sorted(m for m in sys.modules if m.startswith(('agents.', 'stable_baselines3', 'torch'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['agents.base']"
    assert {"elegantrl_ppo", "torch_ppo"} <= set(agent_names())


def test_register_agent_takes_an_entry_point():
    import agents.base as base

    register_agent("bh_entry_test", "agents.baselines:BuyAndHold")
    try:
        assert isinstance(AGENT_REGISTRY["bh_entry_test"], str)  # not imported before use
        assert type(make_agent("bh_entry_test")) is BuyAndHold
        with pytest.raises(ConfigError, match="already registered"):
            register_agent("bh_entry_test", "agents.baselines:EqualWeight")
        register_agent("bad_entry_test", "agents.no_such_module:Nothing")
        with pytest.raises(ConfigError, match="bad_entry_test.*failed to import"):
            make_agent("bad_entry_test")
        with pytest.raises(ConfigError, match="module:attribute"):
            register_agent("no_colon_test", "agents.baselines.BuyAndHold")
    finally:
        AGENT_REGISTRY.pop("bh_entry_test", None)
        AGENT_REGISTRY.pop("bad_entry_test", None)
        base._OPTIONAL_ERRORS.pop("agents.no_such_module", None)


def test_agent_kind_and_loop_hooks_are_class_attributes():
    import agents.base as base
    from agents.baselines import HoldCurrent

    for name in ("buy_and_hold", "equal_weight", "equal_weight_gated", "min_variance", "index"):
        assert base.agent_class(name).learned is False
    for name in ("a2c", "ppo", "ddpg", "td3", "sac", "moe", "torch_ppo", "elegantrl_sac"):
        assert base.agent_class(name).learned is True and base.agent_class(name).trades_under_stop is False
    assert [n for n in agent_names() if base.agent_class(n).trades_under_stop] == ["equal_weight_gated"]
    env = toy_env()
    bh = make_agent("buy_and_hold").learn(env, 0)
    assert bh.carry_over(None) is bh and isinstance(bh.carry_over({"cash": 1.0, "holdings": [0, 0, 0]}), HoldCurrent)
    ew = make_agent("equal_weight").learn(env, 0)
    assert ew.carry_over({"cash": 1.0, "holdings": [0, 0, 0]}) is ew
    assert ew.window_diagnostics(env, seed=0, start=0) == {}


def test_finrl_defaults_and_overrides():
    assert make_agent("a2c").config["n_steps"] == 5
    assert make_agent("a2c").config["learning_rate"] == 7e-4
    ppo = make_agent("ppo")
    assert (ppo.config["n_steps"], ppo.config["batch_size"], ppo.config["learning_rate"]) == (2048, 64, 2.5e-4)
    assert make_agent("ddpg").config["buffer_size"] == 50_000
    assert make_agent("td3").config["batch_size"] == 100
    sac = make_agent("sac")
    assert (sac.config["ent_coef"], sac.config["learning_starts"], sac.config["learning_rate"]) == ("auto_0.1", 100, 1e-4)
    assert make_agent("ppo", learning_rate=1e-3).config["learning_rate"] == 1e-3
    assert set(FINRL_DEFAULTS) == set(LEARNED)


def test_bad_hyperparameter_is_one_config_error():
    with pytest.raises(ConfigError, match="ppo: bad hyper-parameter"):
        make_agent("ppo", not_a_param=3).learn(toy_env(), 10)
    with pytest.raises(ConfigError, match="action_noise"):
        make_agent("ppo", action_noise="normal").learn(toy_env(), 10)


# ------------------------------------------------------------------------- SB3: seed, save, load


@pytest.mark.parametrize("name", LEARNED)
def test_sb3_same_seed_same_actions_and_save_load_round_trip(name, tmp_path):
    env = toy_env()
    obs = np.stack([env.observation_space.sample() * 0.1 for _ in range(5)]).astype(np.float32)
    kw = {**SMALL[name], **NET}
    a = make_agent(name, **kw).learn(env, 120, seed=7)
    b = make_agent(name, **kw).learn(toy_env(), 120, seed=7)
    c = make_agent(name, **kw).learn(toy_env(), 120, seed=8)
    np.testing.assert_array_equal(a.act(obs), b.act(obs))
    assert not np.array_equal(a.act(obs), c.act(obs))
    assert a.act(obs[0]).shape == (3,) and a.act(obs).shape == (5, 3)
    assert a.trained_timesteps >= 120

    path = a.save(tmp_path / f"{name}.zip")
    again = load_agent(path, toy_env())
    assert type(again) is type(a)
    np.testing.assert_array_equal(again.act(obs), a.act(obs))
    assert again.config["learning_rate"] == a.config["learning_rate"]


def test_learn_leaves_no_logger_folders_in_the_temp_dir(tmp_path, monkeypatch):
    """SB3's default logger makes an empty SB3-<time> folder per learn(); ours writes nothing."""
    import tempfile

    import agents.moe  # noqa: F401  (registers moe)

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    monkeypatch.delenv("SB3_LOGDIR", raising=False)
    make_agent("a2c", **SMALL["a2c"], **NET).learn(toy_env(), 40, seed=0)
    make_agent("moe", lookback=3, d_model=8, feat_dim=8, hidden=16, learning_starts=10, batch_size=8,
               segment=2, router_every=2).learn(toy_env(), 40, seed=0)
    assert [p.name for p in scratch.iterdir() if p.name.startswith("SB3-")] == []


def test_load_refuses_other_spaces(tmp_path):
    a = make_agent("ppo", **SMALL["ppo"], **NET).learn(toy_env(), 40, seed=0)
    path = a.save(tmp_path / "ppo.zip")
    with pytest.raises(AgentLoadError, match=r"observation space Box\(shape=\(13,\).*shape=\(17,\)"):
        load_agent(path, toy_env(N=4))
    with pytest.raises(AgentLoadError, match="action space"):  # same obs size, other action bounds
        load_agent(path, make_env(small_arrays(N=3), family="portfolio", action_scheme="weights"))
    with pytest.raises(FinMetaError, match="not a FinMeta agent file"):
        (tmp_path / "junk.zip").write_bytes(b"not a zip")
        load_agent(tmp_path / "junk.zip", toy_env())
    with pytest.raises(AgentLoadError, match="no such agent file"):
        load_agent(tmp_path / "missing.zip", toy_env())


def test_act_before_learn_and_bad_obs_shape():
    with pytest.raises(AgentError, match="before act"):
        make_agent("ppo").act(np.zeros(13))
    a = make_agent("a2c", **NET).learn(toy_env(), 10, seed=0)
    with pytest.raises(AgentError, match=r"shape \(5,\), expected \(13,\)"):
        a.act(np.zeros(5))


# ------------------------------------------------------------------- the gymnasium -> SB3 adapter


def test_adapter_matches_the_vector_env_and_marks_terminal_obs():
    E = 3
    venv = toy_vec_env(E)
    ad = GymnasiumVecEnvAdapter(venv, info_keys=("t",))
    ad.seed(0)
    obs = ad.reset()
    assert obs.shape == (E, 13) and ad.num_envs == E
    ref = toy_vec_env(E)
    ref_obs, _ = ref.reset(seed=0)
    np.testing.assert_array_equal(obs, ref_obs)
    act = np.full((E, 3), 0.5, np.float32)
    dones_seen = 0
    for _ in range(45):  # episodes are 39 steps long: crosses one auto-reset
        obs, rew, done, infos = ad.step(act)
        r_obs, r_rew, r_term, r_trunc, r_info = ref.step(act)
        np.testing.assert_array_equal(obs, r_obs)
        np.testing.assert_allclose(rew, r_rew, rtol=1e-6)
        np.testing.assert_array_equal(done, r_term | r_trunc)
        if done.any():
            dones_seen += 1
            for i in np.flatnonzero(done):
                np.testing.assert_array_equal(infos[i]["terminal_observation"], r_info["final_obs"][i])
                assert infos[i]["TimeLimit.truncated"] is False
                assert infos[i]["t"] == r_info["t"][i] == 39
            assert (obs[done, 0] == 1e6).all() and (obs[done, 4:7] == 0).all()  # reset: all cash
    assert dones_seen == 1


def test_adapter_next_step_mode_resets_when_all_done():
    ad = GymnasiumVecEnvAdapter(SyncVectorEnv([_CountEnv, _CountEnv], autoreset_mode=AutoresetMode.NEXT_STEP))
    ad.reset()
    for _ in range(5):
        obs, _, done, infos = ad.step(np.zeros((2, 1), np.float32))
    assert done.all()
    np.testing.assert_array_equal(infos[0]["terminal_observation"], [5.0, 0.0])
    np.testing.assert_array_equal(obs, [[0.0, 1.0], [0.0, 1.0]])  # fresh episodes
    obs, rew, done, _ = ad.step(np.zeros((2, 1), np.float32))
    np.testing.assert_array_equal(obs[:, 0], [1.0, 1.0])  # a real step, not gymnasium's reset step
    assert not done.any() and (rew == 1.0).all()


def test_sb3_trains_on_the_vector_env_through_the_adapter():
    venv = toy_vec_env(4)
    a = make_agent("ppo", n_steps=16, batch_size=32, n_epochs=1, **NET).learn(venv, 128, seed=3)
    b = make_agent("ppo", n_steps=16, batch_size=32, n_epochs=1, **NET).learn(toy_vec_env(4), 128, seed=3)
    assert a.trained_timesteps == 128
    assert a.model.get_env().num_envs == 4
    obs, _ = venv.reset(seed=1)
    assert a.act(obs).shape == (4, 3)
    np.testing.assert_array_equal(a.act(obs), b.act(obs))
    sac = make_agent("sac", **SMALL["sac"], **NET).learn(toy_vec_env(4), 80, seed=0)
    assert sac.act(obs).shape == (4, 3)
    # episodes of different lengths end at different steps: SAME_STEP resets them one by one
    mixed = toy_vec_env(4, random_start=True, episode_length=(3, 9))
    a2c = make_agent("a2c", **NET).learn(mixed, 100, seed=0)
    ep = a2c.model.ep_info_buffer
    assert len(ep) >= 10 and {e["l"] for e in ep} - {3, 4, 5, 6, 7, 8, 9} == set()
    assert len({e["l"] for e in ep}) > 1


def test_sb3_and_baselines_on_the_torch_backend_vector_env():
    venv = toy_vec_env(4, backend="torch")
    a = make_agent("a2c", **NET).learn(venv, 60, seed=0)
    b = make_agent("a2c", **NET).learn(toy_vec_env(4), 60, seed=0)  # numpy kernel, same seed
    obs, info = venv.reset(seed=2)
    assert a.act(obs).shape == (4, 3)  # a torch tensor is accepted
    np.testing.assert_allclose(a.act(obs), b.act(np.asarray(obs)), atol=1e-6)
    ew = make_agent("equal_weight").learn(venv)
    assert ew.act(obs, info=info).shape == (4, 3)


# -------------------------------------------------------------------------------------- baselines


def test_baselines_never_look_ahead():
    p = _prices(T=60, N=4, seed=3).astype(np.float64)
    t = 35
    q = p.copy()
    q[t + 1:] *= np.random.default_rng(1).uniform(0.5, 2.0, size=q[t + 1:].shape)
    for cls, kw in [(BuyAndHold, {}), (EqualWeight, {"rebalance_every": 5}),
                    (MinVariance, {"window": 30, "min_history": 10, "rebalance_every": 5})]:
        a, b = cls(prices=p, **kw), cls(prices=q, **kw)
        a.reset(0)
        b.reset(0)
        for s in range(t + 1):
            np.testing.assert_array_equal(a.target_weights(s), b.target_weights(s))
        va, vb = a.account_values(), b.account_values()
        np.testing.assert_array_equal(va[: t + 1], vb[: t + 1])
        assert not np.array_equal(va[t + 2:], vb[t + 2:])
    with pytest.raises(AgentError, match="outside the bound prices"):
        BuyAndHold(prices=p).history(60)


def test_buy_and_hold_and_equal_weight_values():
    p = _prices(T=30, N=3, seed=4).astype(np.float64)
    bh = BuyAndHold(prices=p, cost_pct=0.0).account_values(initial_cash=300.0)
    np.testing.assert_allclose(bh, (100.0 * p / p[0]).sum(axis=1))
    ew = EqualWeight(prices=p, cost_pct=0.0).account_values(initial_cash=1.0)
    np.testing.assert_allclose(ew, np.concatenate([[1.0], np.cumprod((p[1:] / p[:-1]).mean(axis=1))]))
    ew5 = EqualWeight(prices=p, cost_pct=0.0, rebalance_every=100).account_values(initial_cash=300.0)
    np.testing.assert_allclose(ew5, bh)  # never rebalanced = buy and hold
    with_cost = EqualWeight(prices=p, cost_pct=0.01).account_values(initial_cash=1.0)
    assert (with_cost[1:] < ew[1:]).all()
    assert with_cost[0] == pytest.approx(0.99, rel=1e-3)


def test_min_variance_prefers_the_quiet_asset():
    rng = np.random.default_rng(0)
    T = 120
    quiet = 100 * np.exp(np.cumsum(rng.normal(0, 0.002, T)))
    loud = 100 * np.exp(np.cumsum(rng.normal(0, 0.04, T)))
    mv = MinVariance(prices=np.stack([quiet, loud], 1), window=60)
    mv.reset(0)
    w = mv.target_weights(100)
    assert w.shape == (2,) and w.sum() == pytest.approx(1.0) and (w >= 0).all()
    assert w[0] > 0.9
    np.testing.assert_allclose(mv.target_weights(5), [0.5, 0.5])  # < min_history: equal weights


def test_index_baseline_is_an_account_value_path():
    idx = np.array([100.0, 110.0, 99.0, 121.0])
    ib = make_agent("index", index_prices=idx)
    np.testing.assert_allclose(ib.account_values(1000.0), [1000.0, 1100.0, 990.0, 1210.0])
    np.testing.assert_allclose(ib.account_values(1000.0, start=1), [1000.0, 900.0, 1100.0])
    with pytest.raises(AgentError, match="not tradable"):
        ib.act(np.zeros(3), info={"t": 0})
    two = np.stack([idx, idx * 2], 1)
    with pytest.raises(ConfigError, match="ticker"):
        make_agent("index", prices=two)
    pick = make_agent("index", prices=two, ticker="B", tickers=["A", "B"])
    np.testing.assert_allclose(pick.account_values(1.0), idx / 100.0)


def test_baseline_acts_in_a_share_env_and_reaches_its_weights(tmp_path):
    env = toy_env(hmax=1e6)
    bh = make_agent("buy_and_hold").learn(env)
    assert bh.config["action_scheme"] == "shares" and bh.config["hmax"] == 1e6
    obs, info = env.reset(seed=0)
    obs0, info0 = obs, info
    a0 = bh.act(obs, info=info)
    assert a0.shape == (3,) and (a0 > 0).all()
    obs, _, _, _, info = env.step(a0)
    w = info["holdings"] * env.arrays.close[info["t"]] / info["portfolio_value"]
    assert w.sum() > 0.95 and np.ptp(w) < 0.05  # about 1/3 each
    nxt = bh.act(obs, info=info)
    assert np.abs(nxt).max() < 1e-4  # holding: (almost) no trade
    with pytest.raises(AgentError, match=r"info dict with 't'"):
        bh.act(obs)
    path = bh.save(tmp_path / "bh.zip")
    again = load_agent(path, env)
    np.testing.assert_array_equal(again.act(obs0, info=info0), a0)


@pytest.mark.parametrize("scheme", ["weights", "softmax"])
def test_baselines_drive_the_portfolio_family(scheme):
    env = make_env(small_arrays(N=3, T=60), family="portfolio", action_scheme=scheme, include_cash=True)
    ew = make_agent("equal_weight").learn(env)
    mv = make_agent("min_variance", window=30, min_history=10).learn(env)
    assert ew.config["action_scheme"] == scheme
    for agent in (ew, mv):
        obs, info = env.reset(seed=0)
        done = False
        while not done:
            want = agent.target_weights(info["t"])
            obs, _, done, _, info = env.step(agent.act(obs, info=info))
            got = np.asarray(info["weights"])[:3]
            # weights after the fill drift with the bar's move: compare loosely
            np.testing.assert_allclose(got, want, atol=0.03)
        assert info["t"] == 59


def test_baseline_acts_on_a_vector_env_info():
    venv = toy_vec_env(3, hmax=1e6)
    ew = make_agent("equal_weight").learn(venv)
    obs, info = venv.reset(seed=0)
    acts = ew.act(obs, info=info)
    assert acts.shape == (3, 3) and np.allclose(acts, acts[0])
    obs, _, _, _, info = venv.step(acts)
    assert (np.asarray(info["holdings"]) > 0).all()


def test_buy_and_hold_restarts_with_each_random_start_episode():
    env = toy_env(hmax=1e6, random_start=True, episode_length=8)
    bh = make_agent("buy_and_hold").learn(env)
    starts = []
    for seed in (1, 2, 3):
        obs, info = env.reset(seed=seed)
        starts.append(info["t"])
        done = False
        while not done:
            obs, _, done, _, info = env.step(bh.act(obs, info=info))
            w = info["holdings"] * env.arrays.close[info["t"]] / info["portfolio_value"]
            assert w.sum() > 0.95  # invested from the first step of every episode
        # held, not rebalanced: the weights drifted with the prices since the episode's start
        close = env.arrays.close.astype(np.float64)
        drift = close[info["t"]] / close[starts[-1]]
        np.testing.assert_allclose(w / w.sum(), drift / drift.sum(), atol=0.01)
    assert len(set(starts)) > 1


def test_weights_to_action_weights_scheme():
    w = np.array([0.2, 0.3, 0.5])
    np.testing.assert_allclose(weights_to_action(w, scheme="weights", action_dim=3), w)
    np.testing.assert_allclose(weights_to_action(w, scheme="weights", action_dim=4), [0.2, 0.3, 0.5, 0.0])
    with pytest.raises(AgentError):
        weights_to_action(w, scheme="weights", action_dim=7)


def test_real_dow30_min_variance_is_calmer_than_equal_weight(shared_data):
    """Dow 30 adjusted closes 2018-2021: after a 252-day warm-up, the min-variance path (monthly
    rebalancing) has a lower realised volatility than 1/N, and 1/N buy-and-hold moves with ^DJI."""
    import pandas as pd

    df = pd.read_csv(shared_data / "us_equities" / "dow30_daily.csv.gz")
    df = df[(df["date"] >= "2018-01-01") & (df["date"] < "2022-01-01")]
    px = df.pivot(index="date", columns="tic", values="adjcp").dropna(axis=1)
    assert px.shape[1] >= 25
    p, start = px.to_numpy(), 252
    mv = make_agent("min_variance", prices=p, rebalance_every=21).account_values(1e6, start=start)
    ew = make_agent("equal_weight", prices=p).account_values(1e6, start=start)
    bh = make_agent("buy_and_hold", prices=p).account_values(1e6, start=start)

    def vol(v):
        return float(np.std(np.diff(np.log(v))) * np.sqrt(252))

    assert mv.shape == ew.shape == (len(px) - start,)
    assert vol(mv) < 0.9 * vol(ew)

    idx = pd.read_csv(shared_data / "us_equities" / "indices_dji_vix_daily.csv.gz")
    dji = idx[idx["tic"] == "^DJI"].set_index("date")["close"].reindex(px.index)
    assert dji.notna().all()
    ix = make_agent("index", index_prices=dji.to_numpy()).account_values(1e6, start=start)
    assert ix[0] == 1e6 and ix[-1] == pytest.approx(1e6 * dji.iloc[-1] / dji.iloc[start])
    r_ix, r_bh = np.diff(np.log(ix)), np.diff(np.log(bh))
    assert np.corrcoef(r_ix, r_bh)[0, 1] > 0.9
