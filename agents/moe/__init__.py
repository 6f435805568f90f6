"""FinMeta's hierarchical mixture-of-experts agent (registered as ``"moe"``); see ``docs/moe.md``.

Parts: :mod:`.encoder` (Transformer / TimesNet encoder with LoRA), :mod:`.sac` (skill-conditioned
SAC experts), :mod:`.objectives` (DIAYN discriminator, V-trace, router KL, diversity score),
:mod:`.replay` (shared replay), :mod:`.pbt` (population-based training), :mod:`.router` (router
state, masks and the router env), :mod:`.agent` (:class:`MoEAgent`).
"""

from agents.moe.agent import ABLATIONS, MOE_DEFAULTS, MoEAgent, MoECore

__all__ = ["ABLATIONS", "MOE_DEFAULTS", "MoEAgent", "MoECore"]
