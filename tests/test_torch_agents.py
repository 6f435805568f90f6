"""The torch-native learners (``backend: torch``, ``agents/torch_rl``): interface, determinism,
space checks, the walk-forward loop, and one learning check that can fail.

Budgets are tiny (a few thousand env steps over a few sub-envs); speed is measured by
``benchmarks/perf/learner_throughput.py``, never here.
"""

from __future__ import annotations

import copy
import zipfile

import numpy as np
import pytest
import torch

from agents import AgentLoadError, load_agent, make_agent
from agents.torch_rl import TorchA2CAgent, TorchPPOAgent
from data_processors.arrays import MarketArrays
from finmeta.errors import ConfigError
from meta import make_env, make_vec_env

from test_agents import small_arrays

ALGOS = ["ppo", "a2c", "sac", "td3", "ddpg"]
_OFF = dict(num_envs=4, utd=0.25, batch_size=32, net_arch=[32, 32], episode_length=10)
TINY = {"ppo": dict(num_envs=4, n_steps=16, batch_size=32, n_epochs=2, episode_length=10),
        "a2c": dict(num_envs=4, n_steps=5, episode_length=10),
        "sac": _OFF, "td3": dict(_OFF, noise_sigma=0.1), "ddpg": dict(_OFF, noise_sigma=0.1)}
NETS = {"ppo": {"actor.pt", "critic.pt"}, "a2c": {"actor.pt", "critic.pt"}}  # off-policy: the actor only


def _env(N: int = 3, T: int = 60):
    return make_env(small_arrays(T=T, N=N), family="stock_trading")


def _trained(algo: str, seed: int = 0, steps: int = 320, env=None, **kw):
    return make_agent(algo, backend="torch", **{**TINY[algo], **kw}).learn(env or _env(), steps, seed=seed)


def _obs_batch(env, n: int = 8) -> np.ndarray:
    obs, _ = env.reset(seed=0)
    rows = [obs]
    for _ in range(n - 1):
        obs, *_ = env.step(env.action_space.sample() * 0)
        rows.append(obs)
    return np.stack(rows)


# ------------------------------------------------------------------------------------ registry


def test_backend_torch_picks_the_torch_agents_and_checks_its_keys():
    assert isinstance(make_agent("ppo", backend="torch"), TorchPPOAgent)
    assert isinstance(make_agent("a2c", backend="torch"), TorchA2CAgent)
    assert make_agent("ppo", backend="torch").name == "torch_ppo"
    for algo in ("sac", "td3", "ddpg"):
        assert make_agent(algo, backend="torch").name == f"torch_{algo}"
    ddpg = make_agent("ddpg", backend="torch").cfg  # DDPG = TD3's update, one critic, no smoothing/delay
    assert (ddpg.n_critics, ddpg.policy_delay, ddpg.target_policy_noise, ddpg.buffer_size) == (1, 1, 0.0, 50_000)
    with pytest.raises(ConfigError, match="bad hyper-parameter"):
        make_agent("ppo", backend="torch", n_stepz=5)
    with pytest.raises(ConfigError, match="the torch backend has no such agent"):
        make_agent("qlearning", backend="torch")
    with pytest.raises(ConfigError, match="backend must be"):
        make_agent("ppo", backend="jax")
    with pytest.raises(ConfigError, match="num_envs"):
        make_agent("a2c", backend="torch", num_envs=0)
    with pytest.raises(ConfigError, match="utd"):
        make_agent("sac", backend="torch", utd=0)
    # the loop's `tensorboard: true` adds tensorboard_log to every RL agent: accepted, not saved
    assert "tensorboard_log" not in make_agent("ppo", backend="torch", tensorboard_log="/tmp/tb").config


# ----------------------------------------------------------------------- learn / act / save / load


@pytest.mark.parametrize("algo", ALGOS)
def test_learn_act_save_load_round_trip(algo, tmp_path):
    env = _env()
    agent = _trained(algo, env=env)
    assert agent.trained_timesteps >= 320
    batch = _obs_batch(env)
    a = agent.act(batch)
    assert a.shape == (8, 3) and a.dtype == np.float32
    assert np.all(a >= -1) and np.all(a <= 1)
    assert agent.act(batch[0]).shape == (3,)
    path = agent.save(tmp_path / f"{algo}.zip")
    with zipfile.ZipFile(path) as zf:
        assert {"finmeta.json", *NETS.get(algo, {"actor.pt"})} <= set(zf.namelist())
    same = load_agent(path, env)
    assert type(same) is type(agent)
    assert np.array_equal(same.act(batch), a)
    assert same.config == agent.config and same.trained_timesteps == agent.trained_timesteps
    # sampled actions are seeded by torch's global generator (the loop seeds it for sampled rollouts)
    torch.manual_seed(1)
    s1 = same.act(batch, deterministic=False)
    torch.manual_seed(1)
    assert np.array_equal(s1, same.act(batch, deterministic=False))
    if algo in ("ppo", "a2c"):  # (the tiny off-policy agents' actions sit at the bounds, sampled or not)
        assert not np.array_equal(s1, a)


@pytest.mark.parametrize("algo", ALGOS)
def test_same_seed_gives_bit_identical_weights_and_actions(algo):
    env = _env()
    a, b, c = (_trained(algo, seed=s, env=env) for s in (7, 7, 8))
    for key in a.nets:
        sa, sb, sc = a.nets[key].state_dict(), b.nets[key].state_dict(), c.nets[key].state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)  # another seed, other weights
    batch = _obs_batch(env)
    assert np.array_equal(a.act(batch), b.act(batch))


def test_trains_on_a_given_torch_vector_env_and_on_a_numpy_one():
    arrays = small_arrays(T=60)
    venv = make_vec_env(arrays, family="stock_trading", num_envs=4, backend="torch", episode_length=10,
                        random_start=True)
    agent = make_agent("a2c", backend="torch", num_envs=4, episode_length=None).learn(venv, 200, seed=0)
    assert agent.trained_timesteps == 200
    obs, _ = venv.reset(seed=0)
    assert agent.act(obs).shape == (4, 3)  # a torch batch is accepted
    numpy_venv = make_vec_env(arrays, family="stock_trading", num_envs=2)
    assert make_agent("a2c", backend="torch", num_envs=4).learn(numpy_venv, 200, seed=0).trained_timesteps == 200


def test_load_refuses_a_file_made_for_other_spaces(tmp_path):
    path = _trained("ppo").save(tmp_path / "ppo.zip")
    with pytest.raises(AgentLoadError, match="observation space"):
        load_agent(path, _env(N=4))
    with pytest.raises(AgentLoadError, match="cannot load the torch"):
        broken = tmp_path / "broken.zip"
        with zipfile.ZipFile(path) as src, zipfile.ZipFile(broken, "w") as dst:
            dst.writestr("finmeta.json", src.read("finmeta.json"))
        load_agent(broken, _env())


# ------------------------------------------------------------------------------ walk-forward loop


def test_a_config_entry_with_backend_torch_trains_in_the_walk_forward_loop(tmp_path):
    from test_loop import CONFIG

    from benchmarks.loop import WalkForward
    from benchmarks.run import build_arrays

    cfg = copy.deepcopy(CONFIG)
    cfg["agents"] = {"ppo": {"backend": "torch", "num_envs": 4, "n_steps": 8, "batch_size": 32, "n_epochs": 1,
                             "total_timesteps": 64}}
    arrays, _ = build_arrays(copy.deepcopy(cfg))
    wf = WalkForward(arrays, cfg, tmp_path)
    chain = wf.run_chain("ppo", 0)
    lo, hi = wf.windows[0].trade[0], wf.windows[-1].trade[1]
    assert np.array_equal(chain.times, arrays.times[lo:hi]) and np.all(np.isfinite(chain.values))
    model = tmp_path / "models" / "ppo_seed0" / "window_000.zip"
    assert isinstance(load_agent(model), TorchPPOAgent)
    again = WalkForward(arrays, copy.deepcopy(cfg), tmp_path / "again").run_chain("ppo", 0)
    assert np.array_equal(again.values, chain.values)  # same seed, same table


# -------------------------------------------------------------------------------------- learning


def _drift_market(up: int = 0, T: int = 160) -> MarketArrays:
    """Two assets: column ``up`` rises 1 % a bar, the other falls 1 % a bar (features: noise)."""
    rng = np.random.default_rng(0)
    rise, fall = 50 * 1.01 ** np.arange(T), 50 * 0.99 ** np.arange(T)
    close = np.stack([rise, fall] if up == 0 else [fall, rise], axis=1).astype(np.float32)
    return MarketArrays(
        times=(np.datetime64("2020-01-01") + np.arange(T)).astype("datetime64[ns]"),
        tickers=("A", "B"), close=close, open=close.copy(), high=close * 1.001, low=close * 0.999,
        volume=np.full((T, 2), 1e6, np.float32),
        features=rng.normal(size=(T, 2, 1)).astype(np.float32), feature_names=("noise",))


@pytest.mark.parametrize("algo,steps,kw,env_kw", [
    ("ppo", 8192, dict(num_envs=16, n_steps=32, batch_size=128, n_epochs=4, learning_rate=1e-3), {}),
    ("a2c", 8192, dict(num_envs=16, n_steps=5, learning_rate=2e-3), {}),
    # the off-policy agents' ReLU networks need observations of order 1 (SB3's SAC fails this market
    # on the raw observation, whose first entry is the cash, 1e5, too); DDPG shares TD3's update
    ("sac", 4096, dict(num_envs=16, utd=0.125, batch_size=64, learning_rate=3e-3, net_arch=[32, 32]),
     dict(normalize_obs=True, reward_scaling=1e-3)),
    ("td3", 4096, dict(num_envs=16, utd=0.125, batch_size=64, learning_rate=1e-3, net_arch=[32, 32],
                       noise_sigma=0.1), dict(normalize_obs=True, reward_scaling=1e-3)),
])
def test_the_policy_learns_to_buy_the_rising_asset(algo, steps, kw, env_kw):
    """Trained on a market where one asset rises and the other falls, the policy buys the rising one
    (action near +1) much more than the falling one -- and the preference flips with the market."""
    for up in (0, 1):
        env = make_env(_drift_market(up), family="stock_trading", initial_cash=100_000, hmax=100, **env_kw)
        agent = make_agent(algo, backend="torch", episode_length=20, **kw).learn(env, steps, seed=0)
        a = agent.act(_obs_batch(env, 20)).mean(axis=0)
        assert a[up] > 0.5 and a[up] - a[1 - up] > 0.5, (up, a)
