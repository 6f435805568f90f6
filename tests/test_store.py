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
    files = sorted(p.name for p in (_isolated_home / "datasets" / "d").iterdir())
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

    monkeypatch.setattr(store.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        save_dataset("a", panel(25), source="s", params={})
    monkeypatch.setattr(store.os, "replace", real_replace)
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
