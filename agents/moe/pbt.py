"""Population-based training of the experts (Jaderberg et al. 2017): exploit + explore.

Every ``pbt_every`` iterations the experts are ranked by a fitness; the bottom ``frac`` copy the
weights and hyper-parameters of a top-``frac`` expert (exploit), then each copied hyper-parameter
is multiplied by 0.8 or 1.25 at random (explore). A copied expert keeps its own skill id, so the
DIAYN reward immediately pushes it away from its source again: diversity is not collapsed.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["PBT_KEYS", "MUTATION_FACTORS", "exploit_explore"]

PBT_KEYS: tuple[str, ...] = ("lr", "beta", "ent_coef")
MUTATION_FACTORS: tuple[float, float] = (0.8, 1.25)


def exploit_explore(experts: Sequence, fitness: Sequence[float], rng: np.random.Generator,
                    frac: float = 0.25, keys: Sequence[str] = PBT_KEYS) -> list[dict]:
    """Apply one PBT step in place; returns a log ``[{"dst", "src", "hyper"}]``.

    ``experts``: objects with ``hyper`` (dict), ``skill`` and ``copy_weights_from(src)`` and
    ``make_optimizers()``. ``fitness (K,)``: higher is better. ``n = floor(frac * K)``; nothing
    happens when n = 0 (K < 4 at frac 0.25). Ties are broken by index (stable sort).
    """
    K = len(experts)
    n = int(np.floor(frac * K))
    if n == 0:
        return []
    order = np.argsort(-np.asarray(fitness, dtype=np.float64), kind="stable")
    top, bottom = order[:n], order[K - n:]
    log = []
    for dst, src in zip(bottom[::-1], top):  # worst copies best, ...
        e, s = experts[int(dst)], experts[int(src)]
        skill = e.skill
        e.copy_weights_from(s)
        e.skill = skill
        hyper = dict(s.hyper)
        for k in keys:
            if k in hyper:
                hyper[k] = float(hyper[k]) * float(rng.choice(MUTATION_FACTORS))
        e.hyper = hyper
        e.make_optimizers()
        log.append({"dst": int(dst), "src": int(src), "hyper": dict(hyper)})
    return log
