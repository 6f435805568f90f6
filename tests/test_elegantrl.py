"""ElegantRL backend: subprocess training on our (vector) env, actors used in this process.

Tiny budgets (a few hundred steps, 16-unit nets). Each training run starts one Python subprocess
(a few seconds of imports), so the file runs three of them.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agents import AgentError, AgentLoadError, load_agent, make_agent
from agents.elegantrl_backend import ERL_DEFAULTS, elegantrl_available
from finmeta.errors import ConfigError
from meta import make_env
from test_agents import small_arrays, toy_env, toy_vec_env

_OK, _WHY = elegantrl_available()
pytestmark = pytest.mark.skipif(not _OK, reason=f"elegantrl is not importable: {_WHY}")

TINY = {"net_dims": [16, 16], "horizon_len": 16, "batch_size": 16, "learning_rate": 1e-3}


def _obs(venv) -> np.ndarray:
    obs, _ = venv.reset(seed=5)
    return np.asarray(obs)


def test_defaults_are_finrl_erl_params_and_names():
    ppo = make_agent("ppo", backend="elegantrl")
    assert type(ppo).__name__ == "ElegantRLPPOAgent" and ppo.name == "elegantrl_ppo"
    for k, v in ERL_DEFAULTS.items():
        assert ppo.config[k] == v
    assert (ppo.config["learning_rate"], ppo.config["batch_size"], ppo.config["gamma"]) == (3e-6, 2048, 0.985)
    for algo in ("a2c", "ddpg", "td3", "sac"):
        assert make_agent(f"elegantrl_{algo}").algo == algo
    with pytest.raises(ConfigError, match="backend"):
        make_agent("ppo", backend="rllib")


def test_on_policy_batch_must_fit_the_horizon():
    with pytest.raises(ConfigError, match="batch_size"):
        make_agent("elegantrl_ppo", horizon_len=8, batch_size=4096, repeat_times=1.0).learn(toy_env(), 16)


def test_ppo_on_the_vector_env_is_seeded_and_keeps_autograd_on(tmp_path):
    venv = toy_vec_env(4, normalize_obs=True)
    assert torch.is_grad_enabled()
    a = make_agent("ppo", backend="elegantrl", **TINY).learn(venv, 128, seed=3)
    assert torch.is_grad_enabled()  # ElegantRL's global switch stayed in the subprocess
    b = make_agent("ppo", backend="elegantrl", **TINY).learn(toy_vec_env(4, normalize_obs=True), 128, seed=3)
    assert a.trained_timesteps == 128  # 2 chunks of horizon_len 16 x 4 sub-envs
    obs = _obs(venv)
    act = a.act(obs)
    assert act.shape == (4, 3) and act.dtype == np.float32 and np.all(np.abs(act) <= 1)
    np.testing.assert_array_equal(act, b.act(obs))
    assert a.act(obs[0]).shape == (3,)
    # actions do depend on the observation (the actor is really used)
    assert not np.allclose(a.act(obs[0]), a.act(obs[0] + 1.0))
    assert torch.is_grad_enabled()

    path = a.save(tmp_path / "erl_ppo.zip")
    again = load_agent(path, toy_vec_env(4, normalize_obs=True))
    assert type(again) is type(a)
    np.testing.assert_array_equal(again.act(obs), act)
    with pytest.raises(AgentLoadError, match="observation space"):
        load_agent(path, toy_env(N=4, normalize_obs=True))
    assert torch.is_grad_enabled()


def test_sac_on_a_single_env_round_trips(tmp_path):
    env = toy_env(normalize_obs=True)
    sac = make_agent("sac", backend="elegantrl", buffer_size=500, warmup_steps=32, **TINY).learn(env, 96, seed=0)
    assert sac.trained_timesteps == 96  # 32 warm-up + 4 x 16
    obs, _ = env.reset(seed=0)
    a = sac.act(obs)
    assert a.shape == (3,) and np.all(np.abs(a) <= 1)
    noisy = sac.act(obs, deterministic=False)
    assert noisy.shape == (3,) and not np.array_equal(noisy, a)
    path = sac.save(tmp_path / "erl_sac.zip")
    np.testing.assert_array_equal(load_agent(path, env).act(obs), a)
    assert torch.is_grad_enabled()


def test_failures_in_the_subprocess_are_one_clear_error():
    class Unpicklable:
        def __reduce__(self):
            raise TypeError("no pickling here")

    env = toy_env()
    env.blocker = Unpicklable()
    with pytest.raises(AgentError, match="cannot be pickled"):
        make_agent("elegantrl_td3", **TINY).learn(env, 32, seed=0)


@pytest.mark.parametrize("algo", ["a2c", "ppo", "ddpg", "td3", "sac"])
def test_every_actor_class_saves_and_loads_identically(algo, tmp_path):
    """Save/load for each algorithm's actor class (ActorPPO, Actor, ActorSAC) without training:
    an actor with ElegantRL's initial weights (seeded), as a subprocess would return it."""
    from elegantrl.agents import net as erl_net

    from agents._erl_worker import ALGOS

    env = toy_env(normalize_obs=True)
    agent = make_agent(f"elegantrl_{algo}", **TINY)
    agent._set_spaces(env)
    torch.manual_seed(0)
    actor_cls = ALGOS[algo][1]
    fresh = getattr(erl_net, actor_cls)((16, 16), 13, 3).state_dict()
    agent._build_actor(actor_cls, fresh)
    obs = np.stack([env.reset(seed=s)[0] for s in range(3)]) + np.linspace(0, 1, 13, dtype=np.float32)
    path = agent.save(tmp_path / f"{algo}.zip")
    again = load_agent(path, env)
    assert type(again) is type(agent) and again._actor_class == actor_cls
    np.testing.assert_array_equal(again.act(obs), agent.act(obs))
    with pytest.raises(AgentLoadError, match="action space"):
        load_agent(path, make_env(small_arrays(), family="portfolio", action_scheme="weights",
                                  normalize_obs=True))
    assert torch.is_grad_enabled()
