"""Files cut short or damaged, and bars dated in the future, are refused with one line naming the file.

Issue 19: a Yahoo CSV with 3 bytes cut off imported with exit 0 and a last volume of 343,103
instead of 34,310,300; a truncated ``.csv.gz`` printed only ``aborted``.
"""

from __future__ import annotations

import gzip

import pandas as pd
import pytest

from data_processors.sources.base import read_vendor_file
from data_processors.store import list_datasets
from finmeta.cli import main
from finmeta.errors import DataValidationError

US = "us_equities/dow30_daily.csv.gz"
CRYPTO = "crypto/binance_spot_btc_eth_daily_2017-08-17_2020-12-29.csv.gz"
CN = "china_a_shares/sse50_baostock_daily_unadjusted_2017-01-03_2023-02-13.csv.gz"


def _head(shared_data, rel: str, n: int = 200) -> bytes:
    with gzip.open(shared_data / rel, "rb") as fh:
        lines = fh.read().splitlines(keepends=True)
    return b"".join(lines[:n])


@pytest.mark.parametrize("rel, fmt", [(US, "yahoo"), (CRYPTO, "binance"), (CN, "baostock")])
def test_a_plain_csv_cut_short_is_refused(shared_data, tmp_path, rel, fmt):
    data = _head(shared_data, rel)
    whole = tmp_path / "whole.csv"
    whole.write_bytes(data)
    full = read_vendor_file(whole, fmt)  # the complete slice imports
    assert len(full) > 100
    cut = tmp_path / "cut.csv"
    cut.write_bytes(data[:-3])  # 3 bytes off: the last value is wrong, not missing
    with pytest.raises(DataValidationError, match=r"cut\.csv: the last line .* has no final newline: the file looks cut short"):
        read_vendor_file(cut, fmt)
    midline = tmp_path / "midline.csv"
    last_start = data.rstrip(b"\n").rfind(b"\n") + 1
    midline.write_bytes(data[: last_start + 12] + b"\n")  # cut mid-line, and a newline added
    with pytest.raises(DataValidationError, match=r"midline\.csv: the last line .* field\(s\), the header has"):
        read_vendor_file(midline, fmt)


def test_a_truncated_gzip_is_a_one_line_error_naming_the_file(shared_data, tmp_path, capsys):
    raw = (shared_data / US).read_bytes()
    bad = tmp_path / "dow_cut.csv.gz"
    bad.write_bytes(raw[: len(raw) // 2])
    assert main(["data", "import", str(bad), "--format", "yahoo", "--name", "dow"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(bad) in err and "truncated" in err, err
    damaged = bytearray(raw[:4000])
    damaged[100:200] = b"\x00" * 100
    bad2 = tmp_path / "dow_damaged.csv.gz"
    bad2.write_bytes(bytes(damaged))
    assert main(["data", "import", str(bad2), "--format", "yahoo", "--name", "dow"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(bad2) in err, err
    assert list_datasets() == []


def test_a_file_without_its_final_newline_can_be_fixed_by_adding_one(tmp_path):
    f = tmp_path / "c.csv"
    f.write_text("time,tic,open,high,low,close,volume\n2020-01-02,AAA,10,11,9,10.5,100")
    with pytest.raises(DataValidationError, match="no final newline"):
        read_vendor_file(f, "canonical")
    f.write_text("time,tic,open,high,low,close,volume\n2020-01-02,AAA,10,11,9,10.5,100\n\n")
    assert float(read_vendor_file(f, "canonical")["volume"].iloc[0]) == 100.0


@pytest.mark.parametrize("day, needle", [
    ("2100-01-04", r"1 bar\(s\) dated after \d{4}-\d\d-\d\d .*row 2 \(AAA 2100-01-04\); a bar cannot come from the future"),
    ("2300-01-02", r"1 bar\(s\) dated outside 1677-09-22 \.\. 2262-04-11: row 2 \(AAA 2300-01-02\)"),
    ("1500-01-02", r"1 bar\(s\) dated outside 1677-09-22 \.\. 2262-04-11: row 2 \(AAA 1500-01-02\)"),
])
@pytest.mark.parametrize("fmt, header", [("canonical", "time,tic,open,high,low,close,volume"),
                                         ("yahoo", "date,tic,open,high,low,close,volume")])
def test_bars_from_the_future_or_beyond_the_clock_are_refused(tmp_path, capsys, day, needle, fmt, header):
    f = tmp_path / "dates.csv"
    f.write_text(f"{header}\n2020-01-02,AAA,10,11,9,10.5,100\n2020-01-03,AAA,10,11,9,10.5,100\n"
                 f"{day},AAA,10,11,9,10.5,100\n")
    with pytest.raises(DataValidationError, match=needle):
        read_vendor_file(f, fmt)
    assert main(["data", "import", str(f), "--format", fmt, "--name", "d"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(f) in err
    assert list_datasets() == []


def test_an_intraday_bar_opening_after_now_is_refused(tmp_path, monkeypatch):
    from data_processors.sources import _common

    f = tmp_path / "m.csv"
    f.write_text("time,tic,open,high,low,close,volume\n2024-03-04 14:30:00+00:00,AAA,10,11,9,10.5,100\n"
                 "2024-03-04 14:31:00+00:00,AAA,10,11,9,10.5,100\n2024-03-04 14:32:00+00:00,AAA,10,11,9,10.5,100\n")
    assert len(read_vendor_file(f, "canonical")) == 3
    monkeypatch.setattr(_common, "now_utc", lambda: pd.Timestamp("2024-03-04 14:20:00", tz="UTC"))
    with pytest.raises(DataValidationError, match=r"3 bar\(s\) dated opening after now .*row 0 \(AAA 2024-03-04T14:30:00"):
        read_vendor_file(f, "canonical")


def test_an_epoch_stamp_beyond_the_clock_names_its_row(tmp_path):
    f = tmp_path / "b.csv"
    f.write_text("unix,date,symbol,open,high,low,close,Volume BTC,Volume USDT\n"
                 "1577923200000,2020-01-02,BTC/USDT,10,11,9,10.5,100,1000\n"
                 "10413792000000,2300-01-02,BTC/USDT,10,11,9,10.5,100,1000\n")
    with pytest.raises(DataValidationError, match=r"b\.csv: row 1: epoch stamp 10413792000000 is outside"):
        read_vendor_file(f, "binance")
