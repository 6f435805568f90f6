"""A trained agent's action depends on its observation (issue 17).

Each of the five SB3 algorithms is trained at the quickstart budget (benchmarks/configs/
quickstart.yaml: the embedded synthetic market, its first walk-forward window, the loop's own
training path and seed) with the config's scaled observations. On the first 20 trade days the
feature block of day i's observation is replaced by day i + 20's (cash, holdings and returns
kept): the deterministic action must move, by more than ``TOL`` in its largest entry, on the
median of those 20 days. With raw observations (``normalize_obs: false``) all five fail it (the
policies' units saturate on the raw cash ~1e6: one action for every day; measured in
benchmarks/RESULTS.md); PPO, the cheapest, is checked to fail here so the test is not vacuous.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

pytest.importorskip("stable_baselines3")

TOL = 0.01  # of an action entry in [-1, 1] (1 share at hmax = 100)
DAYS, SHIFT = 20, 20


@pytest.fixture(scope="module")
def quickstart():
    from benchmarks.run import build_arrays, load_config

    cfg = load_config("quickstart")
    arrays, _ = build_arrays(cfg)
    return cfg, arrays


def _median_move(cfg, arrays, name: str, normalize: bool) -> float:
    from benchmarks.loop import WalkForward

    c = copy.deepcopy(cfg)
    c["env"]["normalize_obs"] = normalize
    c["cache_models"] = False
    wf = WalkForward(arrays, c, "unused")
    w = wf.windows[0]
    agent = wf._train(name, w, 0)
    env, start = wf._trade_env(w, None)
    obs, info = env.reset(seed=0, options={"start": start})
    seen = [obs]
    for _ in range(DAYS + SHIFT):
        obs, _r, term, trunc, info = env.step(agent.act(obs, deterministic=True, info=info))
        seen.append(obs)
    ob = env.kernel.obs_builder
    feats = slice(1 + 2 * ob.N, 1 + 2 * ob.N + ob.K * ob.N)  # lookback 1: [cash, close, holdings, features]
    moves = []
    for i in range(DAYS):
        o = seen[i]
        alt = o.copy()
        alt[feats] = seen[i + SHIFT][feats]
        moves.append(float(np.abs(agent.act(alt, deterministic=True) - agent.act(o, deterministic=True)).max()))
    return float(np.median(moves))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["a2c", "ppo", "ddpg", "td3", "sac"])
def test_trained_agent_reacts_to_its_features(quickstart, name):
    cfg, arrays = quickstart
    assert cfg["env"]["normalize_obs"] is True  # the shipped config scales
    move = _median_move(cfg, arrays, name, normalize=True)
    assert move > TOL, f"{name}: the action does not move when the features change (median {move:.3g})"


@pytest.mark.slow
def test_the_check_fails_on_raw_observations(quickstart):
    cfg, arrays = quickstart
    assert _median_move(cfg, arrays, "ppo", normalize=False) <= TOL
