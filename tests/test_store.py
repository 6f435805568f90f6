"""The dataset store: round trip, manifest, atomic writes, tamper/truncation detection."""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pandas as pd
import pytest

from data_processors import store
from data_processors.store import (DatasetNotFoundError, dataset_info, dataset_path, delete_dataset, list_datasets,
                                   load_dataset, save_dataset)
from finmeta.errors import ConfigError, DatasetIntegrityError, FinMetaError


def panel(n_days: int = 30, tickers=("AAA", "BBB", "CCC"), tz=None) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    if tz:
        times = pd.date_range("2022-05-02", periods=n_days, freq="1h", tz=tz)
    else:
        times = pd.bdate_range("2021-01-04", periods=n_days)
    idx = pd.MultiIndex.from_product([times, list(tickers)], names=["time", "tic"]).to_frame(index=False)
    c = 10 + rng.random(len(idx))
    return idx.assign(open=c, high=c + 1, low=c - 1, close=c, volume=rng.integers(1, 1000, len(idx)).astype(float),
                      tradestatus=np.int8(1), macd=rng.standard_normal(len(idx)))


def test_round_trip_and_manifest(_isolated_home):
    df = panel()
    m = save_dataset("demo", df, source="synthetic", params={"seed": 0, "start": pd.Timestamp("2021-01-04")})
    back = load_dataset("demo")
    pd.testing.assert_frame_equal(back, df, check_dtype=True)
    folder = _isolated_home / "datasets" / "demo"
    assert dataset_path("demo") == folder
    on_disk = json.loads((folder / "manifest.json").read_text())
    assert on_disk == m
    for key in ("source", "params", "rows", "tickers", "start", "end", "freq", "columns", "versions", "sha256"):
        assert key in m
    assert m["rows"] == 90 and m["tickers"] == ["AAA", "BBB", "CCC"] and m["freq"] == "1d"
    assert m["start"] == "2021-01-04" and m["end"] == str(df.time.max().date())
    assert m["params"] == {"seed": 0, "start": "2021-01-04 00:00:00"}
    assert m["sha256"] == hashlib.sha256((folder / m["file"]).read_bytes()).hexdigest()
    assert {"pandas", "numpy", "pyarrow"} <= set(m["versions"])
    assert list_datasets() == ["demo"]
    info = dataset_info("demo")
    assert info["integrity"] == "ok" and info["path"] == str(folder)


def test_intraday_utc_round_trip():
    df = panel(48, tz="UTC")
    m = save_dataset("hourly", df, source="binance", params={})
    assert m["freq"] == "1h" and m["start"] == "2022-05-02T00:00:00+00:00"
    pd.testing.assert_frame_equal(load_dataset("hourly"), df)


def test_overwrite_replaces_and_removes_old_file(_isolated_home):
    save_dataset("d", panel(10), source="s", params={})
    m2 = save_dataset("d", panel(20), source="s", params={})
    files = sorted(p.name for p in (_isolated_home / "datasets" / "d").iterdir() if p.name != ".lock")
    assert files == sorted([m2["file"], "manifest.json"])
    assert len(load_dataset("d")) == 60


def test_tampered_file_is_detected(_isolated_home):
    m = save_dataset("t", panel(), source="s", params={})
    path = _isolated_home / "datasets" / "t" / m["file"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit
    path.write_bytes(bytes(data))
    with pytest.raises(DatasetIntegrityError, match=r"dataset t: .*truncated or was modified"):
        load_dataset("t")
    assert dataset_info("t")["integrity"].startswith("FAILED")


def test_truncated_file_is_detected(_isolated_home):
    m = save_dataset("t", panel(), source="s", params={})
    path = _isolated_home / "datasets" / "t" / m["file"]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(DatasetIntegrityError, match=f"{len(data) - 100} bytes"):
        load_dataset("t")
    path.unlink()
    with pytest.raises(DatasetIntegrityError, match="missing"):
        load_dataset("t")


def test_failed_write_leaves_previous_dataset_intact(_isolated_home, monkeypatch):
    save_dataset("a", panel(10), source="s", params={})
    before = load_dataset("a")
    real_replace = os.replace

    def failing_replace(src, dst):
        if str(dst).endswith("manifest.json"):
            raise OSError("disk full")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        save_dataset("a", panel(25), source="s", params={})
    monkeypatch.setattr(os, "replace", real_replace)
    pd.testing.assert_frame_equal(load_dataset("a"), before)
    assert not [p for p in (_isolated_home / "datasets" / "a").iterdir() if p.name.endswith(".tmp")]


def test_errors_are_finmeta_errors():
    with pytest.raises(DatasetNotFoundError, match="dataset 'nope' not found"):
        load_dataset("nope")
    with pytest.raises(ConfigError, match="dataset name"):
        save_dataset("../escape", panel(), source="s", params={})
    with pytest.raises(FinMetaError, match="empty"):
        save_dataset("e", panel().iloc[:0], source="s", params={})
    save_dataset("x", panel(), source="s", params={})
    delete_dataset("x")
    assert list_datasets() == []


def test_corrupt_manifest(_isolated_home):
    save_dataset("c", panel(), source="s", params={})
    (_isolated_home / "datasets" / "c" / "manifest.json").write_text("{not json")
    with pytest.raises(DatasetIntegrityError, match="not a valid manifest"):
        load_dataset("c")


def test_a_writer_committing_mid_save_cannot_leave_a_manifest_without_its_file(_isolated_home, monkeypatch):
    """Issue 19: two imports of one name at once left only manifest.json (each deleted the other's file).

    Writer B is started while writer A sits between its data write and its manifest commit. With
    the dataset lock B waits for A; without it B commits and deletes A's file, then A's manifest
    names a file that no longer exists.
    """
    import threading

    save_dataset("n", panel(5), source="s", params={})
    real = store._write_atomic
    state = {"fired": False}
    b_done = threading.Event()

    def writer_b():
        save_dataset("n", panel(12), source="s", params={"writer": "B"})
        b_done.set()

    def hooked(folder, final, data):
        if final == "manifest.json" and not state["fired"] and threading.current_thread() is threading.main_thread():
            state["fired"] = True
            t = threading.Thread(target=writer_b)
            t.start()
            state["thread"] = t
            b_done.wait(timeout=1.0)  # B finishes here without a lock; with one it waits for A
        return real(folder, final, data)

    monkeypatch.setattr(store, "_write_atomic", hooked)
    save_dataset("n", panel(20), source="s", params={"writer": "A"})
    state["thread"].join(timeout=30)
    assert b_done.is_set()
    folder = _isolated_home / "datasets" / "n"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["params"]["writer"] == "B"  # B waited for A, so B committed last
    assert sorted(p.name for p in folder.glob("data-*.parquet")) == [manifest["file"]]
    assert len(load_dataset("n")) == 12 * 3


def _save_many(home: str, k: int) -> None:
    os.environ["FINMETA_HOME"] = home
    for i in range(4):
        save_dataset("race", panel(5 + k * 4 + i), source="s", params={"writer": k, "i": i})


def test_concurrent_writer_processes_leave_one_complete_dataset(_isolated_home):
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_save_many, args=(str(_isolated_home), k)) for k in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    folder = _isolated_home / "datasets" / "race"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert [p.name for p in folder.glob("data-*.parquet")] == [manifest["file"]]
    assert len(load_dataset("race")) == manifest["rows"]
    assert store.check_dataset("race")["status"] == "ok"


def test_a_manifest_naming_a_file_outside_the_folder_is_refused(_isolated_home, tmp_path):
    m = save_dataset("o", panel(), source="s", params={})
    outside = tmp_path / "elsewhere.parquet"
    outside.write_bytes((_isolated_home / "datasets" / "o" / m["file"]).read_bytes())
    for bad in (str(outside), "../o/" + m["file"], "manifest.json"):
        path = _isolated_home / "datasets" / "o" / "manifest.json"
        path.write_text(json.dumps({**m, "file": bad}))
        with pytest.raises(DatasetIntegrityError, match="not a data-<hash>.parquet file inside the dataset folder"):
            load_dataset("o")


def test_check_verifies_artefacts_and_removes_only_orphans(_isolated_home):
    m = save_dataset("k", panel(), source="s", params={})
    folder = _isolated_home / "datasets" / "k"
    (folder / "data-0123456789abcdef.parquet").write_bytes(b"left by a killed writer")
    (folder / ".manifest.json.x1y2.tmp").write_bytes(b"{")
    r = store.check_dataset("k", remove_orphans=False)
    assert r["status"] == "ok" and sorted(r["orphans"]) == [".manifest.json.x1y2.tmp", "data-0123456789abcdef.parquet"]
    assert (folder / "data-0123456789abcdef.parquet").exists()
    r = store.check_dataset("k")
    assert r["removed"] and not (folder / "data-0123456789abcdef.parquet").exists()
    assert sorted(p.name for p in folder.iterdir() if p.name != ".lock") == sorted([m["file"], "manifest.json"])
    # a manifest whose row count disagrees with its (hash-consistent) file
    (folder / "manifest.json").write_text(json.dumps({**m, "rows": m["rows"] + 1}))
    r = store.check_dataset("k")
    assert r["status"] == "FAILED" and any("rows, the manifest says" in p for p in r["problems"])
    # a first import killed before its commit: a folder with a data file and no manifest
    ghost = _isolated_home / "datasets" / "ghost"
    ghost.mkdir()
    (ghost / "data-fedcba9876543210.parquet").write_bytes(b"x")
    r = store.check_dataset("ghost")
    assert r["status"] == "FAILED" and r["removed"] and not ghost.exists()


def test_shared_json_and_version_helpers():
    """One JSON sanitiser and one version collector serve the store, run and model manifests."""
    import dataclasses
    import datetime as dt
    import json
    from pathlib import Path

    from finmeta.jsonutil import json_default, json_default_repr, to_jsonable
    from finmeta.versions import library_versions

    @dataclasses.dataclass
    class D:
        a: int = 1

    x = {1: np.int64(3), "s": {"b", "a"}, "t": (np.float32(0.5), np.bool_(True)), "p": Path("/x"),
         "ts": pd.Timestamp("2020-01-02"), "arr": np.arange(2), "d": D(), "f": pd.Series([1, 2])}
    out = to_jsonable(x)
    assert out == {"1": 3, "s": ["a", "b"], "t": [0.5, True], "p": "/x", "ts": "2020-01-02 00:00:00",
                   "arr": [0, 1], "d": {"a": 1}, "f": {"0": 1, "1": 2}}
    json.dumps(out)  # plain JSON now
    assert json.loads(json.dumps({"a": np.arange(3), "d": dt.date(2020, 1, 2)}, default=json_default)) == \
        {"a": [0, 1, 2], "d": "2020-01-02"}
    with pytest.raises(TypeError, match="not JSON serialisable: object"):
        json.dumps({"o": object()}, default=json_default)
    assert json.dumps({"o": D}, default=json_default_repr).startswith('{"o": "<class')
    v = library_versions(["numpy", "no-such-distribution-xyz"])
    assert v["numpy"] == np.__version__ and v["no-such-distribution-xyz"] is None
    assert library_versions(["no-such-distribution-xyz"], missing="skip") == {}
