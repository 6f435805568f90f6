"""Temporal encoders with LoRA adapters: a small Transformer or a TimesNet-style block.

Input: a window of normalised flat observations ``(B, L, D)``; output: an encoded state ``(B, H)``.
Every ``nn.Linear`` of the encoder (input embedding, attention q/k/v/o projections, MLP, output
head) is a :class:`LoRALinear`: ``y = W x + b + (alpha / r) * B (A x)`` with ``A (r, in)``,
``B (out, r)``; ``B`` starts at zero so a fresh adapter is the identity on the base layer.

``retrain_mode``:
  * ``"full"`` -- every encoder parameter trains (base weights, LoRA, convolutions, norms);
  * ``"lora"`` -- only the LoRA ``A``/``B`` matrices train; base weights, biases, convolutions,
    norms and the positional embedding are frozen. The number of trainable parameters is then
    exactly ``sum over LoRA layers of r * (in_features + out_features)``
    (:meth:`TemporalEncoder.lora_parameter_count`).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from finmeta.errors import ConfigError

__all__ = ["LoRALinear", "TransformerBlock", "TimesBlock", "TemporalEncoder", "fft_periods"]


class LoRALinear(nn.Module):
    """``nn.Linear`` plus a low-rank adapter. x ``(..., in)`` -> ``(..., out)``."""

    def __init__(self, in_features: int, out_features: int, r: int = 4, alpha: float = 8.0) -> None:
        super().__init__()
        if r < 1:
            raise ConfigError(f"lora_rank must be >= 1, got {r}")
        self.in_features, self.out_features, self.r = int(in_features), int(out_features), int(r)
        self.base = nn.Linear(in_features, out_features)
        self.lora_A = nn.Parameter(torch.randn(r, in_features) / math.sqrt(in_features))
        self.lora_B = nn.Parameter(torch.zeros(out_features, r))
        self.scale = float(alpha) / float(r)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.lora_A.t() @ self.lora_B.t()) * self.scale


class TransformerBlock(nn.Module):
    """Pre-norm self-attention block with LoRA on q, k, v, o and the two MLP layers. ``(B, L, d)``."""

    def __init__(self, d_model: int, n_heads: int, r: int, alpha: float) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ConfigError(f"d_model={d_model} must be divisible by n_heads={n_heads}")
        self.h = n_heads
        self.ln1, self.ln2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.q, self.k, self.v, self.o = (LoRALinear(d_model, d_model, r, alpha) for _ in range(4))
        self.fc1 = LoRALinear(d_model, 2 * d_model, r, alpha)
        self.fc2 = LoRALinear(2 * d_model, d_model, r, alpha)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, L, d = x.shape
        y = self.ln1(x)

        def heads(t: torch.Tensor) -> torch.Tensor:  # (B, L, d) -> (B, h, L, d/h)
            return t.view(B, L, self.h, d // self.h).transpose(1, 2)

        att = F.scaled_dot_product_attention(heads(self.q(y)), heads(self.k(y)), heads(self.v(y)))
        x = x + self.o(att.transpose(1, 2).reshape(B, L, d))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


def fft_periods(x: torch.Tensor, k: int) -> tuple[list[int], torch.Tensor]:
    """TimesNet's period selection. x ``(B, L, d)`` -> (k periods, weights ``(B, k)``).

    The amplitude spectrum averaged over batch and channels picks the top-k frequencies f
    (f >= 1); period = ceil(L / f). Weights are each sample's amplitude at those frequencies.
    """
    L = x.shape[1]
    amp = torch.fft.rfft(x, dim=1).abs()  # (B, L//2+1, d)
    freq = amp.mean(0).mean(-1)
    freq[0] = 0.0
    k = max(1, min(int(k), freq.numel() - 1))
    top = torch.topk(freq, k).indices.tolist()
    periods = [max(1, math.ceil(L / max(1, f))) for f in top]
    return periods, amp.mean(-1)[:, top]


class TimesBlock(nn.Module):
    """TimesNet-style block: fold the series by FFT-selected periods into 2-D, convolve, unfold.

    For each of the top-k periods p the sequence ``(B, L, d)`` is zero-padded to a multiple of p,
    reshaped to ``(B, d, L/p, p)`` (rows = cycles, columns = phase), passed through two 3x3
    convolutions, reshaped back and cropped; the k results are summed with softmax weights of
    their FFT amplitudes; residual connection. LoRA sits on the block's output projection.
    """

    def __init__(self, d_model: int, top_k: int, r: int, alpha: float) -> None:
        super().__init__()
        self.k = top_k
        self.conv = nn.Sequential(
            nn.Conv2d(d_model, d_model, 3, padding=1), nn.GELU(), nn.Conv2d(d_model, d_model, 3, padding=1)
        )
        self.proj = LoRALinear(d_model, d_model, r, alpha)
        self.ln = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, L, d = x.shape
        periods, w = fft_periods(x, self.k)
        outs = []
        for p in periods:
            n = math.ceil(L / p) * p
            y = F.pad(x, (0, 0, 0, n - L)) if n > L else x
            y = y.reshape(B, n // p, p, d).permute(0, 3, 1, 2)  # (B, d, cycles, p)
            y = self.conv(y).permute(0, 2, 3, 1).reshape(B, n, d)[:, :L]
            outs.append(y)
        res = (torch.stack(outs, -1) * torch.softmax(w, -1)[:, None, None, :]).sum(-1)
        return self.ln(x + self.proj(res))


class TemporalEncoder(nn.Module):
    """Window ``(B, L, D)`` -> encoded state ``(B, H)``.

    Embedding ``LoRALinear(D, d_model)`` + learned positions, ``n_layers`` blocks (Transformer or
    TimesNet), the last time step's vector, ``LoRALinear(d_model, H)`` and ``tanh``.
    """

    def __init__(self, obs_dim: int, lookback: int, d_model: int = 32, out_dim: int = 32, n_layers: int = 1,
                 kind: str = "transformer", n_heads: int = 2, top_k: int = 2, lora_rank: int = 4,
                 lora_alpha: float = 8.0) -> None:
        super().__init__()
        if kind not in ("transformer", "timesnet"):
            raise ConfigError(f"encoder must be 'transformer' or 'timesnet', got {kind!r}")
        self.obs_dim, self.lookback, self.out_dim, self.kind = int(obs_dim), int(lookback), int(out_dim), kind
        self.embed = LoRALinear(obs_dim, d_model, lora_rank, lora_alpha)
        self.pos = nn.Parameter(torch.zeros(1, lookback, d_model))
        if kind == "transformer":
            self.blocks = nn.ModuleList(TransformerBlock(d_model, n_heads, lora_rank, lora_alpha)
                                        for _ in range(n_layers))
        else:
            self.blocks = nn.ModuleList(TimesBlock(d_model, top_k, lora_rank, lora_alpha) for _ in range(n_layers))
        self.head = LoRALinear(d_model, out_dim, lora_rank, lora_alpha)
        self.mode = "full"

    def forward(self, window: torch.Tensor) -> torch.Tensor:
        if window.ndim != 3 or window.shape[1:] != (self.lookback, self.obs_dim):
            raise ConfigError(f"encoder expects (B, {self.lookback}, {self.obs_dim}), got {tuple(window.shape)}")
        x = self.embed(window) + self.pos
        for blk in self.blocks:
            x = blk(x)
        return torch.tanh(self.head(x[:, -1]))

    def lora_layers(self) -> list[LoRALinear]:
        return [m for m in self.modules() if isinstance(m, LoRALinear)]

    def lora_parameter_count(self) -> int:
        """``sum_l r_l * (in_l + out_l)`` over the LoRA layers (trainable count in ``"lora"`` mode)."""
        return sum(m.r * (m.in_features + m.out_features) for m in self.lora_layers())

    def set_retrain_mode(self, mode: str) -> None:
        """``"full"``: everything trains; ``"lora"``: only LoRA A/B train (base frozen)."""
        if mode not in ("full", "lora"):
            raise ConfigError(f"retrain_mode must be 'full' or 'lora', got {mode!r}")
        self.mode = mode
        for name, p in self.named_parameters():
            p.requires_grad_(mode == "full" or name.endswith("lora_A") or name.endswith("lora_B"))

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]
