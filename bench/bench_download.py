"""Download + import throughput and the import's peak memory; peer: pandas ``read_csv``.

Cases:
- download: ``engine.download`` of one symbol's aggTrades for two days from the simulator's
  public-data archive on loopback (the simulator builds the zips on request, inside the timed
  span), ticks plus 1s/1m/5m bars into a store: rows/s end to end.
- import: ``import_files`` of one downloaded daily zip (checksum, one streaming pass: parse,
  validate, ticks and 1s/1m/5m bars written to a staging store, then moved in) beside pandas
  ``read_csv`` of the same zip (parse only, nothing validated or stored). The comparison is
  the one the import is held to: the whole import at least as fast as pandas' parse alone.
  ratio = peer_s / ours_s.
- peak RSS: a large generated aggTrades CSV (20 M rows, about 1 GB; 2 M with --quick) imported
  in a fresh process (its VmHWM before and after: ``getrusage``'s ru_maxrss is inherited
  across exec on Linux, so it would report the parent's peak); pandas ``read_csv`` of the same
  file in another fresh process for comparison. Each side's one-time set-up is outside the
  timed span: pandas' import, and our imports plus the numba kernel's load (about 0.3 s, once
  per process; the zip row runs after the download has loaded it). The import streams (blocks
  of ``engine.importer.BLOCK_BYTES``, flushes every ``FLUSH_ROWS`` rows), so its peak does not
  grow with the file: a 2 GB CSV peaks at about the 1 GB figure (stated in the row).

Each import row records the 1-minute load average when it started (``load_1m``): the machine
is shared, and a figure taken under load says less.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from engine.binance import AGG_TRADES_CSV_COLUMNS
from engine.config import SimulatorConfig
from engine.download import download
from engine.importer import import_files
from engine.simulator import Simulator
from engine.store import Store

DAY_MS = 86_400_000
_PEAK = """
import sys, time
mode, path = sys.argv[1], sys.argv[2]
if mode == "ours":  # set-up outside the timed span, as pandas' import is
    from engine.aggcsv import load_kernel
    from engine.importer import import_files
    from engine.store import Store
    load_kernel()
else:
    import pandas as pd
def peak_mb():  # this process's peak RSS (VmHWM; getrusage's maxrss survives exec)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) // 1024
before = peak_mb()
started = time.perf_counter()
if mode == "ours":
    rows = import_files([path], Store(sys.argv[3], durable=False)).ticks
else:
    rows = len(pd.read_csv(path))
seconds = time.perf_counter() - started
print(rows, seconds, before, peak_mb())
"""


def _peak(mode: str, path: Path, store: Path) -> tuple[int, float, int, int]:
    """(rows, seconds, RSS MB before, peak RSS MB) of one import in a fresh process."""
    out = subprocess.run([sys.executable, "-c", _PEAK, mode, str(path), str(store)],
                         capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
    return int(out[0]), float(out[1]), int(out[2]), int(out[3])


def _big_csv(path: Path, n: int) -> None:
    """``n`` aggTrades rows of one day, Binance's header, written by blocks of 1 M rows."""
    day0 = 1_717_200_000_000
    with path.open("wb") as out:
        out.write((",".join(AGG_TRADES_CSV_COLUMNS) + "\n").encode())
        rng = np.random.default_rng(3)
        for start in range(0, n, 1_000_000):
            ids = np.arange(start, min(n, start + 1_000_000), dtype=np.int64)
            price = np.round(60_000 + np.cumsum(rng.normal(0, 0.5, ids.size)), 1)
            table = pa.table({
                "agg_trade_id": ids, "price": price,
                "quantity": np.round(rng.exponential(0.05, ids.size) + 0.001, 3),
                "first_trade_id": ids * 2, "last_trade_id": ids * 2 + 1,
                "transact_time": day0 + ids * DAY_MS // n,
                "is_buyer_maker": rng.random(ids.size) < 0.5,
            })  # fmt: skip
            pacsv.write_csv(table, out, pacsv.WriteOptions(include_header=False))


def _download_rows(work: Path) -> list[dict]:
    now = time.time_ns() // 1_000_000
    today = dt.datetime.fromtimestamp(now / 1000, dt.UTC).date()
    days = (today - dt.timedelta(days=3), today - dt.timedelta(days=2))
    with Simulator(SimulatorConfig(seed=3, rate=10.0, history_days=4.0), ("BTCUSDT",)) as sim:
        started = time.perf_counter()
        report = download(Store(work / "dl", durable=False), ["BTCUSDT"], None, *days,
                          data=("trades",), base_url=sim.url_rest, rest_url=sim.url_rest,
                          progress=False)  # fmt: skip
        seconds = time.perf_counter() - started
        rows = report.tally("BTCUSDT", "trades").rows
        one = work / f"BTCUSDT-aggTrades-{days[0].isoformat()}.zip"
        path = f"/data/futures/um/daily/aggTrades/BTCUSDT/{one.name}"
        one.write_bytes(httpx.get(sim.url_rest + path, timeout=600).content)
    load = os.getloadavg()[0]
    started = time.perf_counter()
    ours = import_files([one], Store(work / "imp", durable=False))
    ours_s = time.perf_counter() - started
    started = time.perf_counter()
    peer_rows = len(pd.read_csv(one))
    peer_s = time.perf_counter() - started
    assert peer_rows == ours.ticks
    return [
        {"case": "download 2 days of aggTrades (1 symbol, 10/s) from the simulator",
         "ours_s": seconds, "rows": rows, "rows_per_s": rows / seconds,
         "peer": None, "peer_s": None, "ratio": None},
        {"case": f"import one daily aggTrades zip ({ours.ticks} rows; parse, validate, write "
                 "ticks + 1s/1m/5m bars)", "ours_s": ours_s,
         "rows": ours.ticks, "rows_per_s": ours.ticks / ours_s,
         "peer": "pandas.read_csv (parse only)", "peer_s": peer_s, "ratio": peer_s / ours_s,
         "load_1m": load},
    ]  # fmt: skip


def run(quick: bool) -> list[dict]:
    work = Path(tempfile.mkdtemp(prefix="bench-download-"))
    try:
        rows = _download_rows(work)
        n = 2_000_000 if quick else 20_000_000
        big = work / "BTCUSDT-aggTrades-2024-06-01.csv"
        _big_csv(big, n)
        size_gb = big.stat().st_size / 2**30
        load = os.getloadavg()[0]
        got, ours_s, before, peak = _peak("ours", big, work / "big")
        assert got == n
        _, peer_s, peer_before, peer_peak = _peak("pandas", big, work / "unused")
        rows.append({
            "case": f"import {n // 1_000_000} M-row aggTrades CSV ({size_gb:.2f} GB; parse, "
                    "validate, write ticks + 1s/1m/5m bars)",
            "ours_s": ours_s, "rows": n, "rows_per_s": n / ours_s,
            "peak_rss_mb": peak, "rss_growth_mb": peak - before,
            "peak_rss_2gb_csv_mb": f"about {peak} (streaming: bounded by block and flush "
                                   "sizes, not by the file)",
            "peer": "pandas.read_csv (parse only)", "peer_s": peer_s,
            "peer_peak_rss_mb": peer_peak, "peer_rss_growth_mb": peer_peak - peer_before,
            "ratio": peer_s / ours_s, "load_1m": load,
        })  # fmt: skip
        return rows
    finally:
        shutil.rmtree(work, ignore_errors=True)
