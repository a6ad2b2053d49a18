"""Binance public-data import: files made here in Binance's exact format, then read back.

Oracles: the CSV text parsed by a plain-Python loop in the test, and pandas group-bys for bars.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import struct
import subprocess
import sys
import zipfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from actors.cli import import_files as cli_import
from engine import importer
from engine.errors import UploadError
from engine.funding import funding_events
from engine.importer import ImportReport, import_files
from engine.schemas import TIMEFRAME_MS, table_to_bars, table_to_ticks
from engine.store import Store
from tests.kit import random_ticks

DAY0 = 1_717_200_000_000  # 2024-06-01 00:00 UTC
AGG_HEADER = "agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker"
KLINE_HEADER = ("open_time,open,high,low,close,volume,close_time,quote_volume,count,"
                "taker_buy_volume,taker_buy_quote_volume,ignore")


def _agg_lines(n: int, *, seed: int = 0, day: int = 0, micro: bool = False,
               bool_case: str = "lower", first_id: int = 1000) -> list[str]:
    ticks = random_ticks(n, start_ms=DAY0 + day * 86_400_000, mean_gap_ms=80_000 / n * 1000,
                         first_id=first_id, seed=seed)
    ticks = ticks[ticks["ts"] < DAY0 + (day + 1) * 86_400_000]
    cases = {"lower": str.lower, "upper": str.upper, "title": str.title}
    rng = np.random.default_rng(seed)
    lines = []
    for t in ticks:
        ts = int(t["ts"]) * 1000 + int(rng.integers(0, 1000)) if micro else int(t["ts"])
        flag = cases[bool_case](str(bool(t["buyer_maker"])))
        lines.append(f"{t['agg_id']},{t['price']:.2f},{t['qty']:.3f},{t['first_id']},"
                     f"{t['last_id']},{ts},{flag}")
    return lines


def _oracle_ticks(lines: list[str]) -> pd.DataFrame:
    rows = []
    for line in lines:  # plain-Python parse of Binance's CSV
        a, p, q, f, last, t, m = line.split(",")
        ts = int(t) // 1000 if int(t) >= 10**15 else int(t)
        rows.append((ts, int(a), float(p), float(q), int(f), int(last), m.lower() == "true"))
    return pd.DataFrame(rows, columns=["ts", "agg_id", "price", "qty", "first_id", "last_id",
                                       "buyer_maker"])


def _oracle_bars(ticks: pd.DataFrame, tf: str) -> pd.DataFrame:
    frame = ticks.assign(bar=ticks["ts"] // TIMEFRAME_MS[tf] * TIMEFRAME_MS[tf],
                         pq=ticks["price"] * ticks["qty"])
    g = frame.groupby("bar", sort=True)
    return pd.DataFrame({
        "ts": g["bar"].first(), "open": g["price"].first(), "high": g["price"].max(),
        "low": g["price"].min(), "close": g["price"].last(), "volume": g["qty"].sum(),
        "quote_volume": g["pq"].sum(), "trades": g["price"].size(),
    }).reset_index(drop=True)


def _write(directory: Path, name: str, lines: list[str], *, header: str | None, zipped: bool,
           checksum: str | None = None) -> Path:
    """A public-data file as Binance publishes it: CSV (optionally zipped) + optional CHECKSUM."""
    text = "\n".join(([header] if header else []) + lines) + "\n"
    csv_name = f"{name}.csv"
    if not zipped:
        path = directory / csv_name
        path.write_text(text)
    else:
        path = directory / f"{name}.zip"
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(csv_name, text)
    if checksum is not None:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if checksum == "bad":
            digest = ("0" if digest[0] != "0" else "1") + digest[1:]
        (directory / f"{path.name}.CHECKSUM").write_text(f"{digest}  {path.name}\n")
    return path


def _store_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def _assert_bars(got: pa.Table, expected: pd.DataFrame) -> None:
    records = table_to_bars(got)
    np.testing.assert_array_equal(records["ts"], expected["ts"].to_numpy())
    for name in ("open", "high", "low", "close"):
        np.testing.assert_array_equal(records[name], expected[name].to_numpy(), err_msg=name)
    for name in ("volume", "quote_volume"):
        np.testing.assert_allclose(records[name], expected[name].to_numpy(), rtol=1e-9)
    np.testing.assert_array_equal(records["trades"], expected["trades"].to_numpy())


# ----------------------------------------------------------------------------- aggTrades


@pytest.mark.parametrize("zipped", [True, False])
@pytest.mark.parametrize("header", [True, False])
@pytest.mark.parametrize("micro, bool_case", [(False, "lower"), (True, "upper"),
                                              (False, "title")])
def test_agg_trades_round_trip(tmp_path, zipped, header, micro, bool_case):
    lines = _agg_lines(3000, micro=micro, bool_case=bool_case)
    path = _write(tmp_path, "BTCUSDT-aggTrades-2024-06-01", lines,
                  header=AGG_HEADER if header else None, zipped=zipped,
                  checksum="good" if zipped else None)
    store = Store(tmp_path / "store")
    report = import_files([path], store)
    oracle = _oracle_ticks(lines)
    bars = {tf: _oracle_bars(oracle, tf) for tf in ("1s", "1m", "5m")}
    assert report == ImportReport(files=1, ticks=len(lines),
                                  bars={tf: len(b) for tf, b in bars.items()},
                                  microseconds=micro, skipped_duplicates=0, rows=len(lines))
    got = table_to_ticks(Store(tmp_path / "store").read_ticks("BTCUSDT"))
    for name in oracle.columns:
        np.testing.assert_array_equal(got[name], oracle[name].to_numpy(), err_msg=name)
    for tf, expected in bars.items():
        _assert_bars(Store(tmp_path / "store").read_bars(tf, "BTCUSDT"), expected)
    assert ("microseconds" in "\n".join(report.lines())) == micro


def test_import_is_idempotent(tmp_path):
    day1 = _write(tmp_path, "ETHUSDT-aggTrades-2024-06-01", _agg_lines(2000, seed=1),
                  header=AGG_HEADER, zipped=True, checksum="good")
    day2 = _write(tmp_path, "ETHUSDT-aggTrades-2024-06-02", _agg_lines(2000, seed=2, day=1,
                                                                      first_id=9000),
                  header=None, zipped=True)
    store_dir = tmp_path / "store"
    first = import_files([day1, day2], Store(store_dir))
    files = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in _store_files(store_dir)}
    second = import_files([day2, day1], Store(store_dir))
    assert second.ticks == 0 and set(second.bars.values()) == {0}
    assert second.skipped_duplicates == first.ticks + sum(first.bars.values())
    assert import_files([day1, day1], Store(store_dir)).ticks == 0
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in _store_files(store_dir)} == files


def test_several_files_and_symbols_checksum_files_in_the_list_are_skipped(tmp_path):
    btc = _agg_lines(1500, seed=3)
    eth = _agg_lines(1200, seed=4)
    paths = [
        _write(tmp_path, "BTCUSDT-aggTrades-2024-06-01", btc, header=AGG_HEADER, zipped=True,
               checksum="good"),
        _write(tmp_path, "ETHUSDT-aggTrades-2024-06-01", eth, header=None, zipped=False),
    ]
    listed = [*paths, tmp_path / "BTCUSDT-aggTrades-2024-06-01.zip.CHECKSUM"]
    store = Store(tmp_path / "store")
    report = import_files(listed, store)
    assert report.files == 2 and report.ticks == len(btc) + len(eth)
    assert store.symbols() == ["BTCUSDT", "ETHUSDT"]
    assert store.symbols("5m") == ["BTCUSDT", "ETHUSDT"]
    assert store.agg_id_gaps("ETHUSDT") == []


# ----------------------------------------------------------------------------- klines


def _kline_lines(tf: str, n: int, *, seed: int = 0, micro: bool = False,
                 empty_every: int = 0) -> tuple[list[str], pd.DataFrame]:
    rng = np.random.default_rng(seed)
    step = TIMEFRAME_MS[tf]
    rows, lines = [], []
    for k in range(n):
        t = DAY0 + k * step
        o, c = 100 + rng.normal(), 100 + rng.normal()
        h, lo = max(o, c) + abs(rng.normal()), min(o, c) - abs(rng.normal())
        o, h, lo, c = (round(v, 2) for v in (o, h, lo, c))
        empty = empty_every and k % empty_every == 0
        vol = 0.0 if empty else round(rng.uniform(1, 9), 3)
        count = 0 if empty else int(rng.integers(1, 99))
        if empty:
            o = h = lo = c
        scale = 1000 if micro else 1
        lines.append(f"{t * scale},{o:.2f},{h:.2f},{lo:.2f},{c:.2f},{vol:.3f},"
                     f"{(t + step) * scale - 1},{vol * c:.5f},{count},{vol / 2:.3f},"
                     f"{vol * c / 2:.5f},0")
        if not empty:
            rows.append((t, o, h, lo, c, vol, float(f"{vol * c:.5f}"), count))
    return lines, pd.DataFrame(rows, columns=["ts", "open", "high", "low", "close", "volume",
                                              "quote_volume", "trades"])


@pytest.mark.parametrize("tf", ["1s", "1m", "5m"])
@pytest.mark.parametrize("header, zipped, micro", [(True, True, False), (False, False, True),
                                                   (False, True, False)])
def test_klines_round_trip(tmp_path, tf, header, zipped, micro):
    lines, oracle = _kline_lines(tf, 400, seed=len(tf), micro=micro, empty_every=7)
    path = _write(tmp_path, f"SOLUSDT-{tf}-2024-06-01", lines,
                  header=KLINE_HEADER if header else None, zipped=zipped, checksum="good")
    report = import_files([path], Store(tmp_path / "store"))
    assert report == ImportReport(files=1, ticks=0, bars={tf: len(oracle)}, microseconds=micro,
                                  skipped_duplicates=0, empty_klines=len(lines) - len(oracle),
                                  rows=len(lines))
    _assert_bars(Store(tmp_path / "store").read_bars(tf, "SOLUSDT"), oracle)
    again = import_files([path], Store(tmp_path / "store"))
    assert again.bars == {tf: 0} and again.skipped_duplicates == len(oracle)


@pytest.mark.parametrize("interval", ["1w", "1M", "7m", "2d"])
def test_unsupported_kline_interval_is_refused(tmp_path, interval):
    lines, _ = _kline_lines("1m", 5)
    path = _write(tmp_path, f"BTCUSDT-{interval}-2024-06-01", lines, header=None, zipped=True)
    with pytest.raises(UploadError, match=f"interval '{interval}' is not supported"):
        import_files([path], Store(tmp_path / "store"))
    assert _store_files(tmp_path / "store") == []


# ----------------------------------------------------------------------------- refusals


def _mutate(lines: list[str], row: int, col: int, value: str) -> list[str]:
    out = list(lines)
    cells = out[row].split(",")
    cells[col] = value
    out[row] = ",".join(cells)
    return out


AGG_BAD = [  # (row, column index, new value or None to drop the field, column name, message)
    (10, 1, "abc", "price", "expected a number"),
    (11, 1, "", "price", "expected a number"),
    (12, 1, "-5.0", "price", "finite number > 0"),
    (13, 2, "nan", "quantity", "finite number > 0"),
    (14, 6, "yes", "is_buyer_maker", "true or false"),
    (15, 0, "7", "agg_trade_id", "strictly increasing"),
    (16, 0, "1.5", "agg_trade_id", "expected an integer"),
    (17, 4, "1", "last_trade_id", "below first_trade_id"),
    (18, 5, "1000", "transact_time", "between 2000 and 2100"),
    (19, 5, "1717200000000000", "transact_time", "mixed time units"),
    (20, 5, "1717000000000", "transact_time", "in time order"),
    (21, None, None, "is_buyer_maker", "expected 7 comma-separated fields, found 6"),
]


@pytest.mark.parametrize("row, col, value, column, message", AGG_BAD)
@pytest.mark.parametrize("header", [True, False])
def test_malformed_agg_trades_refused_with_line_and_column(tmp_path, row, col, value, column,
                                                          message, header):
    lines = _agg_lines(200, seed=5)
    if col is None:
        lines[row] = lines[row].rsplit(",", 1)[0]
    else:
        lines = _mutate(lines, row, col, value)
    good = _write(tmp_path, "ETHUSDT-aggTrades-2024-06-01", _agg_lines(100, seed=6),
                  header=AGG_HEADER, zipped=True)
    bad = _write(tmp_path, "BTCUSDT-aggTrades-2024-06-01", lines,
                 header=AGG_HEADER if header else None, zipped=True)
    with pytest.raises(UploadError, match=message) as info:
        import_files([good, bad], Store(tmp_path / "store"))
    line = row + 1 + int(header)
    assert info.value.line == line and info.value.column == column
    assert f"{bad}: line {line}, column " in str(info.value)
    assert _store_files(tmp_path / "store") == []  # the good file was not written either


KLINE_BAD = [
    (3, 2, "90.00", "high", "below open or close"),
    (4, 3, "150.00", "low", "above open or close"),
    (5, 0, str(DAY0 + 5 * 60_000 + 1), "open_time", "boundary"),
    (6, 6, str(DAY0 + 7 * 60_000), "close_time", "open time + 1m - 1 ms"),
    (7, 8, "-1", "count", "negative trade count"),
    (8, 5, "x", "volume", "expected a number"),
]


@pytest.mark.parametrize("row, col, value, column, message", KLINE_BAD)
def test_malformed_klines_refused_with_line_and_column(tmp_path, row, col, value, column,
                                                      message):
    lines, _ = _kline_lines("1m", 20, seed=7)
    bad = _write(tmp_path, "BTCUSDT-1m-2024-06-01", _mutate(lines, row, col, value),
                 header=KLINE_HEADER, zipped=False)
    with pytest.raises(UploadError, match=re.escape(message)) as info:
        import_files([bad], Store(tmp_path / "store"))
    assert (info.value.line, info.value.column) == (row + 2, column)
    assert _store_files(tmp_path / "store") == []


def test_bad_header_is_refused_at_line_1(tmp_path):
    path = _write(tmp_path, "BTCUSDT-aggTrades-2024-06-01", _agg_lines(10),
                  header=AGG_HEADER.replace("quantity", "qty"), zipped=False)
    with pytest.raises(UploadError, match="header says 'qty'") as info:
        import_files([path], Store(tmp_path / "store"))
    assert (info.value.line, info.value.column) == (1, "quantity")


def test_checksums_verified_when_present(tmp_path):
    lines = _agg_lines(300)
    path = _write(tmp_path, "BTCUSDT-aggTrades-2024-06-01", lines, header=AGG_HEADER,
                  zipped=True, checksum="bad")
    with pytest.raises(UploadError, match="checksum mismatch"):
        import_files([path], Store(tmp_path / "store"))
    assert _store_files(tmp_path / "store") == []
    (tmp_path / f"{path.name}.CHECKSUM").write_text("not a checksum line\n")
    with pytest.raises(UploadError, match="CHECKSUM: line 1"):
        import_files([path], Store(tmp_path / "store"))
    (tmp_path / f"{path.name}.CHECKSUM").unlink()  # absent: not an error
    assert import_files([path], Store(tmp_path / "store")).ticks == len(lines)


def test_bad_containers_and_names_are_refused(tmp_path):
    store = Store(tmp_path / "store")
    lines = _agg_lines(20)
    two = tmp_path / "BTCUSDT-aggTrades-2024-06-02.zip"
    with zipfile.ZipFile(two, "w") as archive:
        archive.writestr("BTCUSDT-aggTrades-2024-06-02.csv", "\n".join(lines))
        archive.writestr("extra.csv", "x")
    wrong = tmp_path / "BTCUSDT-aggTrades-2024-06-03.zip"
    with zipfile.ZipFile(wrong, "w") as archive:
        archive.writestr("other.csv", "\n".join(lines))
    broken = tmp_path / "BTCUSDT-aggTrades-2024-06-04.zip"
    broken.write_bytes(b"PK not really a zip")
    empty = tmp_path / "BTCUSDT-aggTrades-2024-06-05.csv"
    empty.write_text("")
    cases = [
        (two, "expected one member"),
        (wrong, "expected one member 'BTCUSDT-aggTrades-2024-06-03.csv'"),
        (broken, "not a valid zip"),
        (empty, "empty file"),
        (tmp_path / "BTCUSDT-aggTrades-2024-06-09.zip", "no such file"),
        (tmp_path / "notes.csv", "not a Binance public-data file name"),
        (tmp_path / "BTCUSDT-aggTrades-2024-06-01.txt", "expected a .csv or .zip"),
    ]
    for path, message in cases:
        with pytest.raises(UploadError, match=message):
            import_files([path], store)
    with pytest.raises(UploadError, match="no public-data files"):
        import_files([], store)
    assert _store_files(tmp_path / "store") == []


# ----------------------------------------------------------------------------- CLI


def _run_verb(argv: list[str]) -> int:
    """The `pairstack import` verb through its own parser (actors.cli.main builds every verb's)."""
    parser = argparse.ArgumentParser(prog="pairstack import")
    cli_import.configure(parser)
    return cli_import.main(parser.parse_args(argv))


def test_cli_import_prints_report_and_progress(tmp_path, capsys):
    lines = _agg_lines(500, micro=True)
    path = _write(tmp_path, "BTCUSDT-aggTrades-2024-06-01", lines, header=AGG_HEADER,
                  zipped=True, checksum="good")
    checksum = tmp_path / f"{path.name}.CHECKSUM"
    assert _run_verb([str(path), str(checksum), "--store", str(tmp_path / "store")]) == 0
    captured = capsys.readouterr()
    assert f"ticks written: {len(lines)}" in captured.out and "microseconds" in captured.out
    assert "import" in captured.err and "file" in captured.err  # tqdm's bar on stderr
    assert Store(tmp_path / "store").read_ticks("BTCUSDT").num_rows == len(lines)


def test_cli_import_error_names_line_and_column(tmp_path, capsys):
    bad = _write(tmp_path, "ETHUSDT-aggTrades-2024-06-01", _mutate(_agg_lines(50), 3, 1, "zz"),
                 header=None, zipped=False)
    with pytest.raises(UploadError, match=r"line 4, column 2 \(price\)"):
        _run_verb([str(bad), "--store", str(tmp_path / "store"), "--quiet"])
    assert capsys.readouterr().err == ""
    with pytest.raises(SystemExit):
        _run_verb(["--store", str(tmp_path / "store")])  # no FILE


# ----------------------------------------------------------------------------- streaming


def test_blocks_and_flushes_give_the_whole_file_bars(tmp_path, monkeypatch):
    """Tiny blocks and flushes: bars carried across block boundaries equal the whole-file build
    (the pandas group-by) and the default import, bit for bit."""
    lines = _agg_lines(20_000, seed=11)
    path = _write(tmp_path, "BTCUSDT-aggTrades-2024-06-01", lines, header=AGG_HEADER,
                  zipped=True)
    whole = Store(tmp_path / "whole")
    import_files([path], whole)
    monkeypatch.setattr(importer, "BLOCK_BYTES", 4096)  # about 80 rows a block
    monkeypatch.setattr(importer, "FLUSH_ROWS", 1000)
    store = Store(tmp_path / "blocks")
    report = import_files([path], store)
    assert report.ticks == len(lines) and report.rows == len(lines)
    oracle = _oracle_ticks(lines)
    for tf in ("1s", "1m", "5m"):
        got = Store(tmp_path / "blocks").read_bars(tf, "BTCUSDT")
        _assert_bars(got, _oracle_bars(oracle, tf))
        assert got.equals(Store(tmp_path / "whole").read_bars(tf, "BTCUSDT"))
    assert Store(tmp_path / "blocks").read_ticks("BTCUSDT").equals(whole.read_ticks("BTCUSDT"))


def test_error_in_a_late_block_names_its_line_and_leaves_the_store_untouched(tmp_path,
                                                                            monkeypatch):
    monkeypatch.setattr(importer, "BLOCK_BYTES", 4096)
    lines = _mutate(_agg_lines(5000, seed=12), 4321, 1, "1.2.3")
    bad = _write(tmp_path, "BTCUSDT-aggTrades-2024-06-01", lines, header=AGG_HEADER, zipped=True)
    with pytest.raises(UploadError, match=r"line 4323, column 2 \(price\)"):
        import_files([bad], Store(tmp_path / "store"))
    lines = _mutate(_agg_lines(5000, seed=12), 4000, 0, "1000")  # id order across blocks
    bad = _write(tmp_path, "ETHUSDT-aggTrades-2024-06-01", lines, header=None, zipped=False)
    with pytest.raises(UploadError, match="strictly increasing") as info:
        import_files([bad], Store(tmp_path / "store"))
    assert info.value.line == 4001
    assert _store_files(tmp_path / "store") == []


@pytest.mark.parametrize("tf", ["3m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d"])
def test_klines_of_every_binance_interval(tmp_path, tf):
    lines, oracle = _kline_lines(tf, 60, seed=3, empty_every=9)
    path = _write(tmp_path, f"ETHUSDT-{tf}-2024-06", lines, header=KLINE_HEADER, zipped=True,
                  checksum="good")
    report = import_files([path], Store(tmp_path / "store"))
    assert report.bars == {tf: len(oracle)}
    _assert_bars(Store(tmp_path / "store").read_bars(tf, "ETHUSDT"), oracle)


def test_seconds_are_detected_and_converted(tmp_path):
    """Times below 1e11 cannot be ms after 1973: seconds, x 1000, said in the report."""
    ms_lines = _agg_lines(500, seed=13)
    seconds = [",".join([*c[:5], str(int(c[5]) // 1000), c[6]])
               for c in (line.split(",") for line in ms_lines)]
    path = _write(tmp_path, "BTCUSDT-aggTrades-2024-06-01", seconds, header=None, zipped=True)
    report = import_files([path], Store(tmp_path / "store"))
    assert report.seconds and not report.microseconds
    assert "seconds found and converted" in "\n".join(report.lines())
    got = table_to_ticks(Store(tmp_path / "store").read_ticks("BTCUSDT"))
    np.testing.assert_array_equal(got["ts"], _oracle_ticks(ms_lines)["ts"] // 1000 * 1000)
    assert got["ts"].min() >= DAY0  # never read as 1970
    lines, oracle = _kline_lines("1h", 30, seed=4)
    sec = [",".join([str(int(c[0]) // 1000), *c[1:6], str(int(c[6]) // 1000), *c[7:]])
           for c in (line.split(",") for line in lines)]
    kpath = _write(tmp_path, "SOLUSDT-1h-2024-06-01", sec, header=KLINE_HEADER, zipped=False)
    assert import_files([kpath], Store(tmp_path / "store")).seconds
    _assert_bars(Store(tmp_path / "store").read_bars("1h", "SOLUSDT"), oracle)
    sec = [",".join([str(int(c[0]) // 1000), *c[1:6], str(int(c[6]) // 1000 + 1), *c[7:]])
           for c in (line.split(",") for line in lines)]
    kpath = _write(tmp_path, "ETHUSDT-1h-2024-06-01", sec, header=KLINE_HEADER, zipped=False)
    with pytest.raises(UploadError, match="close time"):  # one second too late
        import_files([kpath], Store(tmp_path / "store"))


FUNDING_HEADER = "calc_time,funding_interval_hours,last_funding_rate"


@pytest.mark.parametrize("header", [True, False])
def test_funding_rate_files_become_settlements(tmp_path, header):
    times = [DAY0 + k * 8 * 3_600_000 for k in range(90)]  # a month of 8 h settlements
    rng = np.random.default_rng(5)
    rates = np.round(rng.normal(1e-4, 2e-4, len(times)), 8)
    lines = [f"{t},8,{r:.8f}" for t, r in zip(times, rates, strict=True)]
    path = _write(tmp_path, "BTCUSDT-fundingRate-2024-06", lines,
                  header=FUNDING_HEADER if header else None, zipped=True, checksum="good")
    report = import_files([path], Store(tmp_path / "store"))
    assert report.funding == len(times) and report.rows == len(times)
    stored = Store(tmp_path / "store").read_funding("BTCUSDT")
    assert stored.column("mark_price").null_count == len(times)
    events = funding_events(stored)  # what the backtest pays: at calc_time, the file's rate
    np.testing.assert_array_equal(events.ts, times)
    np.testing.assert_array_equal(events.rate, [float(f"{r:.8f}") for r in rates])
    assert not events.assumed.any()
    assert import_files([path], Store(tmp_path / "store")).funding == 0
    bad = _write(tmp_path, "ETHUSDT-fundingRate-2024-06", _mutate(lines, 7, 2, "1.5"),
                 header=FUNDING_HEADER, zipped=False)
    with pytest.raises(UploadError, match=r"line 9, column 3 \(last_funding_rate\)"):
        import_files([bad], Store(tmp_path / "store"))


# ----------------------------------------------------------------------------- hostile zips


def _zip_stream(path: Path, member: str, chunks: Iterable[bytes]) -> None:
    with (zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive,
          archive.open(member, "w", force_zip64=True) as out):
        for chunk in chunks:
            out.write(chunk)


_PEAK_SCRIPT = """
import sys
from engine.errors import UploadError
from engine.importer import import_files
from engine.store import Store

def peak_kb():  # this process's peak RSS (VmHWM; getrusage's maxrss survives exec)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])

before = peak_kb()
try:
    report = import_files([sys.argv[1]], Store(sys.argv[2], durable=False))
    outcome = f"ok {report.ticks}"
except UploadError as exc:
    outcome = f"refused {exc}"
print(before, peak_kb())
print(outcome[:300])
"""


def _peak_import(path: Path, store: Path) -> tuple[int, str]:
    """Import in a fresh process: (peak RSS growth in MB, outcome line)."""
    done = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT, str(path), str(store)],
                          capture_output=True, text=True, timeout=600, check=True)
    sizes, outcome = done.stdout.splitlines()[:2]
    before, after = (int(v) for v in sizes.split())
    return (after - before) // 1024, outcome


def test_zip_bombs_are_refused_without_expanding_them(tmp_path):
    row = b"1000,97012.40,0.013,100,105,1717200000000,true\n"
    rows = tmp_path / "BTCUSDT-aggTrades-2024-06-01.zip"
    block = row * (1 << 20 // len(row))
    _zip_stream(rows, "BTCUSDT-aggTrades-2024-06-01.csv",
                (block for _ in range(300)))  # ~300 MB of one repeated row
    assert rows.stat().st_size < 3_000_000
    grown, outcome = _peak_import(rows, tmp_path / "store")
    assert outcome.startswith("refused") and "line 2" in outcome, outcome
    assert "strictly increasing" in outcome
    assert grown < 100, f"peak RSS grew by {grown} MB"
    zeros = tmp_path / "ETHUSDT-aggTrades-2024-06-01.zip"  # no line end at all
    _zip_stream(zeros, "ETHUSDT-aggTrades-2024-06-01.csv", (b"0" * (1 << 20) for _ in range(300)))
    grown, outcome = _peak_import(zeros, tmp_path / "store")
    assert outcome.startswith("refused") and "line 1" in outcome, outcome
    assert grown < 100, f"peak RSS grew by {grown} MB"
    assert _store_files(tmp_path / "store") == []


def test_member_larger_than_declared_is_refused(tmp_path):
    """A member whose data expands beyond the size the zip declares: zipfile stops at the
    declared size and its CRC check fails; nothing is stored."""
    lines = _agg_lines(3000, seed=14)
    path = _write(tmp_path, "BTCUSDT-aggTrades-2024-06-01", lines, header=AGG_HEADER, zipped=True)
    data = bytearray(path.read_bytes())
    central = data.rfind(b"PK\x01\x02")
    declared = struct.unpack_from("<I", data, central + 24)[0]
    struct.pack_into("<I", data, central + 24, declared // 3)  # uncompressed size
    path.write_bytes(bytes(data))
    with pytest.raises(UploadError, match="zip"):
        import_files([path], Store(tmp_path / "store"))
    assert _store_files(tmp_path / "store") == []


def _big_agg_trades_csv(path: Path, n: int) -> None:
    """``n`` aggTrades rows over one day (header row), written a million rows at a time."""
    with path.open("wb") as out:
        out.write((AGG_HEADER + "\n").encode())
        for start in range(0, n, 1_000_000):
            ids = np.arange(start, min(n, start + 1_000_000), dtype=np.int64)
            table = pa.table({
                "agg_trade_id": ids, "price": 60_000 + (ids % 977) * 0.1,
                "quantity": 0.001 + (ids % 13) * 0.01, "first_trade_id": ids,
                "last_trade_id": ids, "transact_time": DAY0 + ids * 86_400_000 // n,
                "is_buyer_maker": ids % 3 == 0,
            })  # fmt: skip
            pacsv.write_csv(table, out, pacsv.WriteOptions(include_header=False))


def test_peak_memory_of_a_large_import_is_bounded(tmp_path):
    """Peak RSS of an import does not grow with the file: 1.5 M rows and 6 M rows (~330 MB
    of CSV, ~290 MB of tick records) peak within a few tens of MB of each other."""
    grown = {}
    for n in (1_500_000, 6_000_000):
        path = tmp_path / str(n) / "BTCUSDT-aggTrades-2024-06-01.csv"
        path.parent.mkdir()
        _big_agg_trades_csv(path, n)
        grown[n], outcome = _peak_import(path, tmp_path / str(n) / "store")
        assert outcome == f"ok {n}"
        path.unlink()
    assert grown[6_000_000] - grown[1_500_000] < 80, grown
    assert grown[6_000_000] < 450, grown
