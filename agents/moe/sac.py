"""Skill-conditioned SAC experts, written by hand (CleanRL style) so that the pieces the MoE needs
-- the pre-squash Gaussian, log-probs of *stored* actions, a per-expert value head trained with
V-trace, whole-expert copies for PBT -- are a few lines each.

Shapes: ``feat (B, H)`` encoded state, ``z (B, K)`` one-hot skill, action ``(B, A)`` in [-1, 1].
The policy is ``u ~ N(mu(s, z), diag(sigma(s, z)^2))``, ``a = tanh(u)``;
``log pi(a|s) = log N(u; mu, sigma) - sum log(1 - tanh(u)^2)``.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn as nn

__all__ = ["mlp", "SkillActor", "SkillQ", "SACExpert", "gaussian_logp"]

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


def mlp(inp: int, out: int, hidden: int, layers: int = 2) -> nn.Sequential:
    mods: list[nn.Module] = []
    d = inp
    for _ in range(layers):
        mods += [nn.Linear(d, hidden), nn.ReLU()]
        d = hidden
    mods.append(nn.Linear(d, out))
    return nn.Sequential(*mods)


def gaussian_logp(u: torch.Tensor, mu: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """Diagonal Gaussian log density summed over the last axis. ``(B, A)`` -> ``(B,)``."""
    return (-0.5 * ((u - mu) / log_std.exp()) ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


class SkillActor(nn.Module):
    """pi(a | s, z): ``(B, H + K)`` -> mean and log-std of the pre-squash Gaussian ``(B, A)`` each."""

    def __init__(self, feat_dim: int, n_skills: int, act_dim: int, hidden: int) -> None:
        super().__init__()
        self.net = mlp(feat_dim + n_skills, 2 * act_dim, hidden)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, log_std = self.net(x).chunk(2, -1)
        return mu, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)

    def sample(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(action ``(B, A)``, log pi(a|s) ``(B,)``, pre-squash u ``(B, A)``), reparameterised."""
        mu, log_std = self(x)
        u = mu + log_std.exp() * torch.randn_like(mu)
        a = torch.tanh(u)
        logp = gaussian_logp(u, mu, log_std) - torch.log(1 - a.pow(2) + 1e-6).sum(-1)
        return a, logp, u


class SkillQ(nn.Module):
    """Q(s, z, a): ``(B, H + K + A)`` -> ``(B,)``."""

    def __init__(self, feat_dim: int, n_skills: int, act_dim: int, hidden: int) -> None:
        super().__init__()
        self.net = mlp(feat_dim + n_skills + act_dim, 1, hidden)

    def forward(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([x, a], -1)).squeeze(-1)


class SACExpert(nn.Module):
    """One expert: actor, twin critics + targets, and a value head V_k(s) for the router.

    ``hyper`` holds the PBT-tuned hyper-parameters: ``lr``, ``beta`` (DIAYN weight) and
    ``ent_coef`` (SAC's alpha, fixed per expert, tuned by PBT instead of by a target entropy).
    ``skill`` is the expert's skill id; PBT never changes it.
    """

    def __init__(self, skill: int, n_skills: int, feat_dim: int, act_dim: int, hidden: int, hyper: dict) -> None:
        super().__init__()
        self.skill, self.n_skills = int(skill), int(n_skills)
        self.actor = SkillActor(feat_dim, n_skills, act_dim, hidden)
        self.q1, self.q2 = SkillQ(feat_dim, n_skills, act_dim, hidden), SkillQ(feat_dim, n_skills, act_dim, hidden)
        self.q1_t, self.q2_t = copy.deepcopy(self.q1), copy.deepcopy(self.q2)
        for p in list(self.q1_t.parameters()) + list(self.q2_t.parameters()):
            p.requires_grad_(False)
        self.value = mlp(feat_dim + n_skills, 1, hidden)
        self.hyper = dict(hyper)
        self.make_optimizers()

    def make_optimizers(self) -> None:
        lr = float(self.hyper["lr"])
        self.opt_actor = torch.optim.Adam(self.actor.parameters(), lr=lr)
        self.opt_q = torch.optim.Adam(list(self.q1.parameters()) + list(self.q2.parameters()), lr=lr)
        self.opt_v = torch.optim.Adam(self.value.parameters(), lr=lr)

    def z(self, batch: int) -> torch.Tensor:
        """One-hot skill ``(batch, K)``."""
        z = torch.zeros(batch, self.n_skills)
        z[:, self.skill] = 1.0
        return z

    def with_skill(self, feat: torch.Tensor) -> torch.Tensor:
        return torch.cat([feat, self.z(feat.shape[0])], -1)

    def dist(self, feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pre-squash Gaussian (mu, log_std) ``(B, A)`` each."""
        return self.actor(self.with_skill(feat))

    @torch.no_grad()
    def act(self, feat: torch.Tensor, deterministic: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(action, pre-squash u, log N(u; mu, sigma)) -- the stored behaviour log-prob is the
        pre-squash Gaussian's; the tanh correction is the same for every expert on the same u and
        cancels in importance ratios."""
        mu, log_std = self.dist(feat)
        u = mu if deterministic else mu + log_std.exp() * torch.randn_like(mu)
        return torch.tanh(u), u, gaussian_logp(u, mu, log_std)

    def v(self, feat: torch.Tensor) -> torch.Tensor:
        return self.value(self.with_skill(feat)).squeeze(-1)

    @torch.no_grad()
    def soft_update(self, tau: float) -> None:
        for net, tgt in ((self.q1, self.q1_t), (self.q2, self.q2_t)):
            for p, pt in zip(net.parameters(), tgt.parameters()):
                pt.mul_(1 - tau).add_(p, alpha=tau)

    def copy_weights_from(self, other: "SACExpert") -> None:
        """PBT exploit: take ``other``'s networks (not its skill id); fresh optimisers."""
        for name in ("actor", "q1", "q2", "q1_t", "q2_t", "value"):
            getattr(self, name).load_state_dict(getattr(other, name).state_dict())
