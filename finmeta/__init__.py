"""FinMeta: an open benchmark suite for data-driven financial reinforcement learning.

The suite has three layers, each a top-level package:

* :mod:`data_processors` -- downloads, imports, cleans, features and stores market data and hands
  the env layer float32 arrays shaped (time, asset, feature) (:class:`data_processors.MarketArrays`).
* :mod:`meta` -- one vectorized market kernel and the env families configured on it.
* :mod:`agents` -- Stable-Baselines3 / ElegantRL agents, classic baselines and our MoE agent.

:mod:`benchmarks` runs the train-validate-test-trade loop. This package holds only what all layers
share: errors, paths and the ``finmeta`` command line.
"""

__version__ = "0.1.0"
