"""Action diagnostics of a walked chain: does the agent react to the market?

Computed from the chained actions a run stores (``actions/<agent>_seed<k>.csv``, row i = the action
taken after observing trade bar i, NaN on the chain's last bar) and the trade windows' lengths:

* ``action_repeat``: share of trade days whose action equals the previous day's (every entry
  within ``tol`` = 1e-6), over all consecutive pairs of days of the chain;
* ``action_change``: mean over the same pairs of the mean absolute change of the action entries,
  ``mean_t mean_i |a[t, i] - a[t-1, i]|`` (the env's action: share requests in [-1, 1] for the
  share families, target weights / scores for the portfolio family);
* ``static_windows``: number of trade windows in which the action never changes (a window's
  actions are the ones its agent chose: its first row is the previous window's last bar);
* ``saturation`` (learned agents only; NaN for rule baselines): share of action entries on the
  trade days at the action space's bound, i.e. within 1 % of the half-width from ``low`` or
  ``high``. For SB3's squashed policies (DDPG, TD3, SAC) that is a pre-tanh output beyond
  ``atanh(0.99) = 2.65``; for A2C / PPO (Gaussian means clipped to the Box) a mean at or beyond
  0.99 of the bound. NaN when the action space is unbounded.

See ``docs/benchmarks.md``, "Action diagnostics".
"""

from __future__ import annotations

import numpy as np

#: the diagnostic columns, in table order
DIAGNOSTICS: tuple[str, ...] = ("action_repeat", "action_change", "saturation", "static_windows")
REPEAT_TOL = 1e-6
SATURATION_MARGIN = 0.01  # of the half-width of the action space


def window_segments(lengths: list[int], total: int) -> list[tuple[int, int]]:
    """Row ranges ``[a, b)`` of the chained actions chosen by each window's agent.

    ``lengths``: trade bars per window (the chain has ``sum(lengths) == total`` rows). Window k > 0
    trades from the previous window's last bar, whose row holds window k's first action.
    """
    starts = np.concatenate([[0], np.cumsum(lengths)]).astype(int)
    segs = []
    for k in range(len(lengths)):
        a = max(int(starts[k]) - 1, 0)
        b = int(starts[k + 1]) - 1 if k + 1 < len(lengths) else total
        segs.append((a, b))
    return segs


def action_diagnostics(actions: np.ndarray, lengths: list[int] | None = None, *, low=None, high=None,
                       learned: bool = True) -> dict[str, float]:
    """The diagnostics (module doc) of one chain's ``actions`` (L, A).

    Args:
        actions: (L, A) chained actions; rows with a NaN (the last bar) are ignored.
        lengths: trade bars per window (default: one window).
        low, high: the action space's bounds (scalars or (A,)); None: no saturation figure.
        learned: False for rule baselines (no saturation figure).
    """
    a = np.asarray(actions, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    L = a.shape[0]
    lengths = [L] if lengths is None else [int(n) for n in lengths]
    ok = ~np.isnan(a).any(axis=1)
    out: dict[str, float] = {k: float("nan") for k in DIAGNOSTICS}
    valid = a[ok]
    if len(valid) >= 2:
        d = np.abs(np.diff(valid, axis=0))
        out["action_repeat"] = float((d.max(axis=1) <= REPEAT_TOL).mean()) if d.shape[1] else 1.0
        out["action_change"] = float(d.mean()) if d.shape[1] else 0.0
    static = 0
    for lo, hi in window_segments(lengths, L):
        seg = a[lo:hi][ok[lo:hi]]
        if len(seg) >= 2 and np.abs(seg - seg[0]).max() <= REPEAT_TOL:
            static += 1
    out["static_windows"] = float(static)
    if learned and low is not None and high is not None and len(valid):
        lo_b = np.broadcast_to(np.asarray(low, dtype=np.float64), valid.shape[1:])
        hi_b = np.broadcast_to(np.asarray(high, dtype=np.float64), valid.shape[1:])
        if np.isfinite(lo_b).all() and np.isfinite(hi_b).all():
            margin = SATURATION_MARGIN * (hi_b - lo_b) / 2.0
            at = (valid <= lo_b + margin) | (valid >= hi_b - margin)
            out["saturation"] = float(at.mean())
    return out
