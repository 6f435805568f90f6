"""Tests of the hierarchical mixture-of-experts agent (agents/moe). CPU, tiny sizes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import agents.moe  # noqa: F401  (registers "moe")
from agents import AgentLoadError, load_agent, make_agent
from agents.moe.encoder import TemporalEncoder, fft_periods
from agents.moe.objectives import gaussian_kl_to_mean, half_l1_diversity, intrinsic_reward, usage_entropy, vtrace
from agents.moe.pbt import MUTATION_FACTORS, exploit_explore
from agents.moe.replay import SharedReplay
from agents.moe.router import RouterState, segment_benchmark
from agents.moe.sac import SACExpert
from finmeta.errors import ConfigError

# tiny but real: 4 synthetic assets, two features, portfolio family
TINY = dict(lookback=5, d_model=16, feat_dim=16, hidden=32, learning_starts=100, batch_size=32, n_threads=1)


def _market():
    from data_processors.arrays import to_arrays
    from data_processors.sources import get_source

    df = get_source("synthetic").download(4, "2015-01-01", "2017-01-01", seed=0).sort_values(["tic", "time"])
    g = df.groupby("tic")["close"]
    df["ret1"] = g.pct_change(1).fillna(0.0)
    df["mom10"] = g.pct_change(10).fillna(0.0)
    return to_arrays(df.sort_values(["time", "tic"]).reset_index(drop=True))


@pytest.fixture(scope="module")
def market():
    arr = _market()
    cut = int(arr.num_times * 0.7)
    return arr.slice(0, cut), arr.slice(cut, arr.num_times)


def _env(arr, **kw):
    from meta import make_env

    return make_env(arr, family="portfolio", **kw)


@pytest.fixture(scope="module")
def trained(market):
    """The full agent (beta > 0) and its no-diversity ablation, same seed and budget."""
    train, test = market
    out = {}
    for beta in (0.5, 0.0):
        ag = make_agent("moe", beta=beta, **TINY)
        ag.learn(_env(train), total_timesteps=400, seed=0)
        out[beta] = (ag, ag.diversity_report(_env(test)))
    return out


# ----------------------------------------------------------------------------------- encoder / LoRA
@pytest.mark.parametrize("kind", ["transformer", "timesnet"])
def test_encoder_output_shapes(kind):
    enc = TemporalEncoder(obs_dim=7, lookback=12, d_model=16, out_dim=8, n_layers=2, kind=kind, top_k=2)
    y = enc(torch.randn(3, 12, 7))
    assert y.shape == (3, 8)
    assert torch.all(y.abs() <= 1.0)  # tanh head
    with pytest.raises(ConfigError):
        enc(torch.randn(3, 11, 7))


def test_fft_periods_finds_the_planted_period():
    t = torch.arange(24, dtype=torch.float32)
    x = torch.sin(2 * math.pi * t / 6)[None, :, None].repeat(2, 1, 3)  # period 6 -> frequency 4
    periods, w = fft_periods(x, 1)
    assert periods == [6] and w.shape == (2, 1)


@pytest.mark.parametrize("kind,D,d,H,r,n", [("transformer", 7, 16, 8, 4, 2), ("timesnet", 5, 12, 6, 2, 1)])
def test_lora_trainable_parameter_count(kind, D, d, H, r, n):
    enc = TemporalEncoder(obs_dim=D, lookback=6, d_model=d, out_dim=H, n_layers=n, kind=kind, lora_rank=r)
    # embed (D->d) + head (d->H) + per layer: transformer q,k,v,o (d->d) x4, fc1 (d->2d), fc2 (2d->d)
    #                                         timesnet: proj (d->d)
    per_layer = (4 * 2 * d + 3 * d + 3 * d) if kind == "transformer" else 2 * d
    expected = r * (D + d) + r * (d + H) + n * r * per_layer
    enc.set_retrain_mode("lora")
    trainable = sum(p.numel() for p in enc.parameters() if p.requires_grad)
    assert trainable == expected == enc.lora_parameter_count()
    enc.set_retrain_mode("full")
    assert sum(p.numel() for p in enc.parameters() if p.requires_grad) == sum(p.numel() for p in enc.parameters())


def test_lora_mode_only_moves_adapters():
    torch.manual_seed(0)
    enc = TemporalEncoder(obs_dim=4, lookback=5, d_model=8, out_dim=4, n_layers=1)
    enc.set_retrain_mode("lora")
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    opt = torch.optim.SGD(enc.trainable_parameters(), lr=0.5)
    for _ in range(3):
        opt.zero_grad()
        enc(torch.randn(6, 5, 4)).pow(2).sum().backward()
        opt.step()
    after = enc.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.endswith(("lora_A", "lora_B")) for k in changed)


# ------------------------------------------------------------------------------------- objectives
def test_discriminator_reward_sign():
    K = 4
    confident = torch.tensor([[0.0, 0.0, 5.0, 0.0]])  # q(z=2|s') ~ 0.98
    assert intrinsic_reward(confident, 2).item() > 0          # correct skill: positive
    assert intrinsic_reward(confident, 0).item() < 0          # wrong skill: negative
    uniform = torch.zeros(1, K)
    assert intrinsic_reward(uniform, 1).item() == pytest.approx(0.0, abs=1e-6)  # q = p -> 0
    q = torch.softmax(confident, -1)[0, 2].item()
    assert intrinsic_reward(confident, 2).item() == pytest.approx(math.log(q) - math.log(1 / K), rel=1e-5)
    assert intrinsic_reward(torch.zeros(1, 1), 0).item() == pytest.approx(0.0)  # K = 1


def test_vtrace_hand_computed():
    # V = [1, 2, 3], V(x_3) = 4, r = 1, gamma_t = 0.5, pi/mu = [2, 0.5, 1]
    # rho = c = [1, 0.5, 1] (truncated at 1)
    # delta_0 = 1.0*(1 + 0.5*2 - 1) = 1.0 ; delta_1 = 0.5*(1 + 0.5*3 - 2) = 0.25 ; delta_2 = 1*(1 + 0.5*4 - 3) = 0
    # v_2 = 3 + 0 = 3 ; v_1 = 2 + 0.25 + 0.5*0.5*0 = 2.25 ; v_0 = 1 + 1.0 + 0.5*1*0.25 = 2.125
    v = vtrace(torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([4.0]), torch.ones(1, 3), torch.full((1, 3), 0.5),
               torch.log(torch.tensor([[2.0, 0.5, 1.0]])))
    assert v[0].tolist() == pytest.approx([2.125, 2.25, 3.0])
    # on-policy (rho = 1) it is the n-step return: v_0 = 1 + 0.5 + 0.25 + 0.125*4 = 2.25
    v = vtrace(torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([4.0]), torch.ones(1, 3), torch.full((1, 3), 0.5),
               torch.zeros(1, 3))
    assert v[0, 0].item() == pytest.approx(2.25)
    # an episode end at t=1 (gamma_1 = 0) cuts everything after it: v_0 = 1 + (1 + 0.5*(2-... ))
    # delta_0 = 1 + 0.5*2 - 1 = 1 ; delta_1 = 1 + 0 - 2 = -1 ; v_1 = 2 - 1 = 1 ; v_0 = 1 + 1 + 0.5*(-1) = 1.5
    v = vtrace(torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([4.0]), torch.ones(1, 3),
               torch.tensor([[0.5, 0.0, 0.5]]), torch.zeros(1, 3))
    assert v[0, :2].tolist() == pytest.approx([1.5, 1.0])


def test_kl_to_mean_zero_for_identical_experts():
    mu = torch.randn(1, 5, 3).repeat(3, 1, 1)
    ls = torch.randn(1, 5, 3).repeat(3, 1, 1) * 0.1
    assert torch.allclose(gaussian_kl_to_mean(mu, ls, 1), torch.zeros(5), atol=1e-5)
    mu2 = mu.clone()
    mu2[0] += 2.0
    kl = gaussian_kl_to_mean(mu2, ls, 0)
    assert torch.all(kl > 0) and torch.all(kl > gaussian_kl_to_mean(mu2, ls, 1))


def test_half_l1_diversity_bounds():
    a = np.tile([1.0, 0.0, 0.0], (4, 1))
    b = np.tile([0.0, 0.5, 0.5], (4, 1))
    assert half_l1_diversity(np.stack([a, a]))[0] == 0.0
    assert half_l1_diversity(np.stack([a, b]))[0] == pytest.approx(1.0)
    assert half_l1_diversity(np.stack([a, b, a]))[0] == pytest.approx(2 / 3)
    assert usage_entropy(np.array([5, 5])) == pytest.approx(math.log(2))
    assert usage_entropy(np.array([7, 0])) == 0.0


def test_segment_benchmark_equal_weight_buy_and_hold():
    close = np.array([[10.0, 20.0], [11.0, 20.0], [12.0, 30.0]])
    assert segment_benchmark(close, 0, 2) == pytest.approx(math.log((1.2 + 1.5) / 2))


def test_replay_windows_pad_with_episode_start():
    rb = SharedReplay(capacity=10, obs_dim=1, act_dim=1, skill_dim=2, lookback=3)
    for t in range(4):  # episode 0: obs 0..3 ; episode 1 starts at step 4 with obs 10
        rb.add([t], [t + 1], [0], [0], 0, 0, t == 3, 0, [0, 1], 0)
    rb.add([10], [11], [0], [0], 0, 0, False, 0, [0, 1], 4)
    win, nxt = rb.windows(np.array([1, 4]))
    assert win[:, :, 0].tolist() == [[0, 0, 1], [10, 10, 10]]
    assert nxt[:, :, 0].tolist() == [[0, 1, 2], [10, 10, 11]]


# ------------------------------------------------------------------------------------------- PBT
def test_pbt_bottom_copies_top_and_mutates():
    torch.manual_seed(0)
    K = 8
    hyper = {"lr": 1e-3, "beta": 0.5, "ent_coef": 0.1}
    experts = [SACExpert(k, K, 4, 2, 8, {**hyper, "lr": 1e-3 * (k + 1)}) for k in range(K)]
    fitness = np.array([5.0, 1.0, 7.0, 0.0, 3.0, 6.0, -1.0, 2.0])  # top: 2, 5 ; bottom: 6, 3
    src_actor = {k: {n: p.clone() for n, p in experts[k].actor.state_dict().items()} for k in (2, 5)}
    log = exploit_explore(experts, fitness, np.random.default_rng(0), frac=0.25)
    assert {(e["dst"], e["src"]) for e in log} == {(6, 2), (3, 5)}
    for dst, src in ((6, 2), (3, 5)):
        e = experts[dst]
        assert e.skill == dst  # keeps its own skill id
        for n, p in e.actor.state_dict().items():
            assert torch.equal(p, src_actor[src][n])
        src_h = {**hyper, "lr": 1e-3 * (src + 1)}
        for key in ("lr", "beta", "ent_coef"):
            ratio = e.hyper[key] / src_h[key]
            assert any(ratio == pytest.approx(f) for f in MUTATION_FACTORS)
        assert e.opt_actor.param_groups[0]["lr"] == pytest.approx(e.hyper["lr"])
    # the others are untouched
    assert experts[0].hyper["lr"] == pytest.approx(1e-3) and experts[0].skill == 0
    assert exploit_explore(experts[:3], fitness[:3], np.random.default_rng(0)) == []  # floor(0.75) = 0


# ---------------------------------------------------------------------------------------- router
def _state(K=3):
    cfg = {"segment": 2, "max_consecutive": 2, "cooldown": 1, "fail_sharpe": -1.0, "fail_min_steps": 5,
           "sharpe_window": 20}
    st = RouterState(K, 3, cfg)
    st.start_episode(np.zeros(4))
    return st


def test_router_masks_cooldown_and_failing():
    st = _state()
    st.choose(0)
    assert st.masks().tolist() == [True, True, True]
    st.choose(0)  # second consecutive segment -> cools down for the next decision
    assert st.masks().tolist() == [False, True, True]
    st.choose(1)
    assert st.masks().tolist() == [True, True, True]
    for r in (-0.01, -0.02, -0.015, -0.01, -0.03, 0.001):
        st.record_return(2, r)  # losing expert -> failing
    assert st.masks().tolist() == [True, True, False]
    for r in (-0.01, -0.02, -0.015, -0.01, -0.03, 0.001):
        st.record_return(0, r)
        st.record_return(1, r)
    assert st.masks().tolist() == [True, True, True]  # never an empty mask


def test_masked_experts_never_chosen(trained):
    ag, _ = trained[0.5]
    st = _state(K=ag.core.K)
    st.window = np.zeros((ag.core.lookback, ag.core.obs_dim), np.float32)
    rng = np.random.default_rng(1)
    for _ in range(40):
        st.window = rng.normal(size=st.window.shape).astype(np.float32)
        st.cool_left = np.zeros(st.K, np.int64)
        masked = rng.choice(st.K, size=st.K - 1, replace=False)
        st.cool_left[masked] = 1
        allowed = int(np.setdiff1d(np.arange(st.K), masked)[0])
        assert ag._route(st, deterministic=False) == allowed  # PPO router with masks
    for router in ("random", "sharpe"):
        rule = make_agent("moe", router=router, n_experts=ag.core.K, **TINY)
        picks = set()
        for _ in range(30):
            st.cool_left = np.array([1, 0, 0, 1][: st.K] + [0] * max(0, st.K - 4))
            picks.add(rule._rule_choice(st, rng))
        assert picks <= set(np.flatnonzero(st.cool_left == 0).tolist())


# ----------------------------------------------------------------------------------------- agent
def test_config_errors():
    with pytest.raises(ConfigError):
        make_agent("moe", no_such_key=1)
    with pytest.raises(ConfigError):
        make_agent("moe", router="oracle")
    with pytest.raises(ConfigError):
        make_agent("moe", encoder="lstm", **TINY).learn(_env(_market().slice(0, 60)), 20)


def test_save_load_round_trip_acts_identically(trained, market, tmp_path):
    ag, _ = trained[0.5]
    _, test = market
    path = ag.save(tmp_path / "moe.zip")
    same = load_agent(path, _env(test))
    env_a, env_b = _env(test), _env(test)
    (oa, ia), (ob, ib) = env_a.reset(seed=3), env_b.reset(seed=3)
    ag.reset_state()
    for _ in range(30):
        a, b = ag.act(oa, info=ia), same.act(ob, info=ib)
        np.testing.assert_array_equal(a, b)
        oa, *_, ia = env_a.step(a)
        ob, *_, ib = env_b.step(b)
    batch = np.stack([oa, oa])
    same.reset_state()
    assert same.act(batch).shape == (2, env_a.action_space.shape[0])
    other = _env(_market().slice(0, 100), lookback=2)  # other observation layout
    if other.observation_space.shape != env_a.observation_space.shape:
        with pytest.raises(AgentLoadError):
            load_agent(path, other)


def test_diversity_reward_beats_no_diversity_ablation(trained):
    full, rep = trained[0.5]
    _, abl = trained[0.0]
    print(f"\nmoe diversity (beta=0.5): {rep['diversity']:.4f}  ablation (beta=0): {abl['diversity']:.4f}; "
          f"router usage {rep['router_usage']} entropy {rep['router_entropy']:.3f}")
    assert 0.0 <= abl["diversity"] < rep["diversity"] <= 1.0
    assert sum(rep["router_usage"]) == rep["n_steps"]
    assert 0.0 <= rep["router_entropy"] <= math.log(full.core.K) + 1e-9
    assert rep["pbt_events"] > 0  # PBT ran (pbt_every=20 iterations of M=5 steps)


@pytest.mark.parametrize("overrides", [dict(n_experts=1), dict(router="sharpe"), dict(router="random", freeze="alternate",
                                                                                       freeze_period=4)])
def test_ablations_train_and_act(market, overrides):
    train, test = market
    ag = make_agent("moe", **{**TINY, "learning_starts": 40, **overrides}).learn(_env(train.slice(0, 80)), 120, seed=1)
    rep = ag.diversity_report(_env(test.slice(0, 30)))
    if ag.core.K == 1:
        assert rep["diversity"] == 0.0 and rep["router_entropy"] == 0.0
    assert np.isfinite(rep["diversity"])


def test_lora_retrain_keeps_base_weights(trained, market, tmp_path):
    ag, _ = trained[0.5]
    train, _ = market
    path = ag.save(tmp_path / "base.zip")
    warm = make_agent("moe", beta=0.5, init_from=str(path), retrain_mode="lora", **{**TINY, "learning_starts": 40})
    warm.learn(_env(train.slice(0, 80)), 100, seed=2)
    before, after = ag.core.encoder.state_dict(), warm.core.encoder.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.endswith(("lora_A", "lora_B")) for k in changed)


def test_same_seed_same_weights(market):
    train, _ = market
    kw = {**TINY, "learning_starts": 40}
    a = make_agent("moe", **kw).learn(_env(train.slice(0, 80)), 100, seed=4)
    b = make_agent("moe", **kw).learn(_env(train.slice(0, 80)), 100, seed=4)
    sa, sb = a.core.state_dict(), b.core.state_dict()
    for k, v in sa["encoder"].items():
        assert torch.equal(v, sb["encoder"][k])
    for ea, eb in zip(sa["experts"], sb["experts"]):
        assert ea["hyper"] == eb["hyper"]
        for k, v in ea["state"].items():
            assert torch.equal(v, eb["state"][k])


def test_alternate_freezing_schedule(market):
    train, _ = market
    ag = make_agent("moe", freeze="alternate", freeze_period=3, **TINY)
    assert [ag._router_frozen(i) for i in range(7)] == [True, True, True, False, False, False, True]
    assert [ag._experts_frozen(i) for i in range(7)] == [False, False, False, True, True, True, False]
    # the whole run inside the first phase: PPO's optimiser runs with learning rate 0
    ag = make_agent("moe", freeze="alternate", freeze_period=10_000, router_every=4, router_warmup=0.0,
                    **{**TINY, "learning_starts": 40})
    ag.learn(_env(train.slice(0, 80)), 60, seed=0)
    assert ag.router_model.policy.optimizer.param_groups[0]["lr"] == 0.0
