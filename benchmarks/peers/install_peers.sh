#!/usr/bin/env bash
# Install the FinRL peers used by tests/test_finrl_parity.py and benchmarks/perf/env_throughput.py.
#
# --no-deps on purpose: finrl 0.3.7 pins old versions of alpaca-trade-api, wrds, ray, gym, ... that
# conflict with FinMeta's stack (numpy 2, pandas 3, gymnasium 1.x). FinMeta never imports the
# `finrl` package: benchmarks/peers/finrl_envs.py loads the two env files
# (finrl/meta/env_stock_trading/env_stocktrading.py and env_stocktrading_np.py) by file path;
# their own imports (numpy, pandas, gymnasium, matplotlib) are FinMeta dependencies already, and
# stable_baselines3 is stubbed if absent. elegantrl is installed the same way for the agent layer.
#
# Usage: bash benchmarks/peers/install_peers.sh   (CI runs it before pytest)
set -euo pipefail
PYTHON="${PYTHON:-python}"
"$PYTHON" -m pip install --no-deps "finrl==0.3.7" "elegantrl==0.3.6"
"$PYTHON" - <<'PY'
from benchmarks.peers.finrl_envs import finrl_numpy_env_class, finrl_pandas_env_class
print("finrl peers ok:", finrl_pandas_env_class().__module__, finrl_numpy_env_class().__module__)
PY
