"""The MoE's objectives that are not SAC: DIAYN discriminator, V-trace, router KL, diversity score.

All functions are pure (tensors/arrays in, tensors/arrays out) so the tests can check them on
hand-written numbers.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn

from agents.moe.sac import mlp

__all__ = ["Discriminator", "intrinsic_reward", "vtrace", "gaussian_kl_to_mean", "half_l1_diversity",
           "usage_entropy"]


class Discriminator(nn.Module):
    """DIAYN's q_phi(z | s'): ``(B, S)`` skill-relevant next-state features -> logits ``(B, K)``.

    The input is the agent-controlled part of the next state: the portfolio weights after the
    step (N assets + cash). Market features are exogenous (no skill can change them), so leaving
    them out is DIAYN's "x-y prior" applied to a portfolio.
    """

    def __init__(self, in_dim: int, n_skills: int, hidden: int) -> None:
        super().__init__()
        self.net = mlp(in_dim, n_skills, hidden)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return self.net(s)


def intrinsic_reward(logits: torch.Tensor, skill: int | torch.Tensor) -> torch.Tensor:
    """DIAYN: ``log q(z | s') - log p(z)`` with p uniform over K skills. ``(B, K)`` -> ``(B,)``.

    Positive when q puts more than 1/K on the skill, negative when less; 0 for K = 1.
    """
    K = logits.shape[-1]
    logq = torch.log_softmax(logits, -1)
    if isinstance(skill, int):
        lq = logq[:, skill]
    else:
        lq = logq.gather(-1, skill.long().view(-1, 1)).squeeze(-1)
    return lq + math.log(K)


def vtrace(values: torch.Tensor, bootstrap: torch.Tensor, rewards: torch.Tensor, discounts: torch.Tensor,
           log_rhos: torch.Tensor, rho_bar: float = 1.0, c_bar: float = 1.0) -> torch.Tensor:
    """V-trace targets (Espeholt et al. 2018, eq. 1) for sequences of length n.

    Args (B sequences, n steps): ``values (B, n)`` V(x_s); ``bootstrap (B,)`` V(x_{s+n});
    ``rewards (B, n)``; ``discounts (B, n)`` = gamma * (1 - done_t); ``log_rhos (B, n)`` =
    log pi(a_t|x_t) - log mu(a_t|x_t).

    ``rho_t = min(rho_bar, pi/mu)``, ``c_t = min(c_bar, pi/mu)``,
    ``delta_t = rho_t (r_t + gamma_t V(x_{t+1}) - V(x_t))`` and, backwards,
    ``v_s - V(x_s) = delta_s + gamma_s c_s (v_{s+1} - V(x_{s+1}))``. Returns ``v_s (B, n)``.
    """
    rhos = torch.exp(log_rhos)
    rho = rhos.clamp(max=rho_bar)
    c = rhos.clamp(max=c_bar)
    next_values = torch.cat([values[:, 1:], bootstrap[:, None]], 1)
    deltas = rho * (rewards + discounts * next_values - values)
    acc = torch.zeros_like(bootstrap)
    out = []
    for t in range(values.shape[1] - 1, -1, -1):
        acc = deltas[:, t] + discounts[:, t] * c[:, t] * acc
        out.append(acc)
    return values + torch.stack(out[::-1], 1)


def gaussian_kl_to_mean(mu: torch.Tensor, log_std: torch.Tensor, chosen: int) -> torch.Tensor:
    """KL(N_chosen || N_bar) on the *pre-squash* diagonal Gaussians, per state.

    ``mu, log_std (K, B, A)`` of the K experts at B states. ``N_bar`` is the moment-matched
    Gaussian of the equal-weight mixture: mean ``m = mean_k mu_k``, variance
    ``mean_k (sigma_k^2 + mu_k^2) - m^2``. Returns ``(B,)`` (summed over action dims).
    """
    var = (2 * log_std).exp()
    m = mu.mean(0)
    v = (var + mu ** 2).mean(0) - m ** 2
    v = v.clamp_min(1e-8)
    vc, mc = var[chosen], mu[chosen]
    return 0.5 * (torch.log(v / vc) + (vc + (mc - m) ** 2) / v - 1.0).sum(-1)


def half_l1_diversity(weights: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean pairwise half-L1 distance between K experts' weight paths.

    ``weights (K, T, W)`` (W = assets + cash, rows on the simplex) -> (score, ``(K, K)`` matrix).
    ``0.5 * sum_w |x_i - x_j|`` is 0 for identical and 1 for disjoint portfolios; the score is its
    mean over the T steps and the K(K-1)/2 pairs (0 when K = 1).
    """
    w = np.asarray(weights, dtype=np.float64)
    K = w.shape[0]
    d = 0.5 * np.abs(w[:, None] - w[None, :]).sum(-1).mean(-1)  # (K, K)
    if K < 2:
        return 0.0, d
    iu = np.triu_indices(K, 1)
    return float(d[iu].mean()), d


def usage_entropy(counts: np.ndarray) -> float:
    """Shannon entropy (nats) of the router's expert-usage frequencies ``(K,)``."""
    c = np.asarray(counts, dtype=np.float64)
    if c.sum() <= 0:
        return 0.0
    p = c[c > 0] / c.sum()
    return float(-(p * np.log(p)).sum())
