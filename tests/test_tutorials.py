"""The tutorials (``tutorials/*.ipynb``) run top to bottom with small budgets.

Each notebook is executed in a fresh ``python3`` kernel (nbclient) with ``FINMETA_SMALL=1`` and the
test's isolated ``FINMETA_HOME``; ``FINMETA_DATA_DIR`` is passed through as set, so the notebooks
run on the shared data when it is there and on the synthetic market otherwise. A hidden first cell
installs the same no-network guard as ``tests/conftest.py`` inside the kernel (TCP connections to
anything but this machine are refused). Besides "no cell raised", every notebook must print the
facts it demonstrates (``EXPECTED``), so a notebook whose checks silently stop working fails here.

The committed notebooks must carry no outputs (``test_committed_without_outputs``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parent.parent
TUTORIALS = ROOT / "tutorials"
NOTEBOOKS = sorted(TUTORIALS.glob("*.ipynb"))

#: seconds a single cell may run (small budgets need a few; Ray's start-up is the slowest)
CELL_TIMEOUT = 240

#: strings each notebook's outputs must contain (what the notebook demonstrates)
EXPECTED: dict[str, list[str]] = {
    "01_data_layer": ["same seed, same frame: True", "forward-filled 5 bars (not tradable)",
                      "forward-filled bars marked: 5", "days above the 99th percentile:",
                      "integrity': 'ok'", "NaN in features: False", "DataValidationError:"],
    "02_env_layer": ["ConfigError:", "ashare", "first sell filled at", "max abs difference:"],
    "03_agents": ["reloaded acts identically: True", "AgentLoadError:", "table.md", "tearsheets/sac.html"],
    "04_icaif2020_small": ["walked 2 chains", "ensemble (this run)", "stop active on",
                           "equity and drawdown plotted beside the paper:"],
    "05_moe_agent": ["trained 200 steps", "router usage", "equal_weight", "router usage shares:", "tickers"],
    "06_distributed_ray": ["identical to Ray: True", "SMALL mode: the A2C chains are SKIPPED"],
    "07_paper_trading": ["exit code 0", "same actions as the backtest: True", "max relative value difference:",
                         "positions:", "P&L", "same positions and cash as the uninterrupted replay: True",
                         "client order ids submitted twice: 0", "refused [max_order_notional]"],
}

#: the SMALL switch every notebook's first code cell must define
SMALL_SWITCH = 'SMALL = os.environ.get("FINMETA_SMALL", "1") == "1"'

_GUARD = r'''
import ipaddress as _ip, socket as _so
def _finmeta_local_addrs():
    out = {"127.0.0.1", "::1"}
    try:
        import psutil
        for addrs in psutil.net_if_addrs().values():
            out.update(a.address.split("%")[0] for a in addrs if a.family in (_so.AF_INET, _so.AF_INET6))
    except Exception:
        pass
    return out
_FINMETA_LOCAL = _finmeta_local_addrs()
_finmeta_connect = _so.socket.connect
_finmeta_connect_ex = _so.socket.connect_ex
def _finmeta_ok(sock, address):
    if isinstance(address, (str, bytes)) or sock.type != _so.SOCK_STREAM:
        return True   # AF_UNIX, or UDP (connect() sends nothing; libraries use it to find their own IP)
    host = address[0].decode() if isinstance(address[0], bytes) else address[0]
    if host in ("localhost", "") or host in _FINMETA_LOCAL:
        return True
    try:
        return _ip.ip_address(host).is_loopback
    except ValueError:
        return False
def _finmeta_guard(self, address):
    if not _finmeta_ok(self, address):
        raise OSError(f"tutorial tests must not touch the network (tried {address!r})")
    return _finmeta_connect(self, address)
def _finmeta_guard_ex(self, address):
    if not _finmeta_ok(self, address):
        raise OSError(f"tutorial tests must not touch the network (tried {address!r})")
    return _finmeta_connect_ex(self, address)
_so.socket.connect = _finmeta_guard
_so.socket.connect_ex = _finmeta_guard_ex
'''


def _id(p: Path) -> str:
    return p.stem


def _text_outputs(nb) -> str:
    parts = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                parts.append(out.text)
            elif out.output_type in ("execute_result", "display_data"):
                parts.append(str(out.get("data", {}).get("text/plain", "")))
    return "\n".join(parts)


def test_tutorials_exist():
    names = {p.stem for p in NOTEBOOKS}
    assert {"01_data_layer", "02_env_layer", "03_agents", "04_icaif2020_small"} <= names, names
    assert names <= set(EXPECTED), f"add the new notebook(s) {names - set(EXPECTED)} to EXPECTED"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_id)
def test_committed_without_outputs(path: Path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, f"{path.name}: no code cells"
    assert SMALL_SWITCH in code[0].source, f"{path.name}: the first code cell must define the SMALL switch"
    for i, cell in enumerate(code):
        assert not cell.get("outputs"), f"{path.name}: code cell {i} has outputs; clear them before committing"
        assert cell.get("execution_count") is None, f"{path.name}: code cell {i} has an execution count"
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3", f"{path.name}: kernel must be python3"


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=_id)
def test_notebook_runs(path: Path, monkeypatch, tmp_path):
    import tempfile

    before = {p.name for p in Path(tempfile.gettempdir()).glob("finmeta_*")}
    monkeypatch.setenv("FINMETA_SMALL", "1")
    monkeypatch.setenv("FINMETA_TUTORIAL_RUNS", str(tmp_path / "runs"))  # run folders: nothing left behind
    monkeypatch.setenv("PYTHONWARNINGS", "ignore::DeprecationWarning")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(path, as_version=4)
    nb.cells.insert(0, nbformat.v4.new_code_cell(_GUARD))
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                                     resources={"metadata": {"path": str(TUTORIALS)}})
    client.execute()  # raises CellExecutionError naming the cell on any error
    text = _text_outputs(nb)
    assert "tutorial tests must not touch the network" not in text
    for needle in EXPECTED.get(path.stem, []):
        assert needle in text, f"{path.name}: expected output {needle!r} not found"
    if path.stem == "02_env_layer":
        # the A-share family must refuse the order on the sealed limit-up bar; stock_trading fills it
        ashare = next(line for line in text.splitlines() if line.startswith("ashare "))
        stock = next(line for line in text.splitlines() if line.startswith("stock_trading "))
        assert " 0." in ashare.split("trades")[1], ashare
        assert " 0." not in stock.split("trades")[1].split("costs")[0], stock
        # numpy and torch backends: the same trajectory
        diff = next(line for line in text.splitlines() if line.startswith("max abs difference:"))
        assert float(diff.split(":")[1]) <= 1e-3, diff
    if path.stem == "06_distributed_ray":
        assert "identical to Ray: False" not in text
    # run folders go to FINMETA_TUTORIAL_RUNS: no finmeta_tutorial_* / finmeta_icaif_* left in the temp dir
    assert {p.name for p in Path(tempfile.gettempdir()).glob("finmeta_*")} <= before
