"""``pairstack download`` as a user runs it: the console script from a fresh shell (PATH and
HOME only) against the simulator on loopback; killed mid-run and resumed, it ends with the
store of a clean run."""

from __future__ import annotations

import datetime as dt
import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from engine.config import SimulatorConfig
from engine.download import MANIFEST
from engine.simulator import Simulator
from engine.store import Store
from tests.cli_env import pairstack, scrubbed_env

SYMBOLS = ("BTCUSDT", "ETHUSDT")


@pytest.fixture(scope="module")
def sim():
    with Simulator(SimulatorConfig(seed=5, rate=0.2, history_days=12.0), SYMBOLS) as s:
        yield s


def _args(sim, store: Path, *extra: str) -> list[str]:
    yesterday = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    first = yesterday - dt.timedelta(days=7)
    return pairstack("download", "--store", str(store), "--symbols", *SYMBOLS,
                     "--start", first.isoformat(), "--end", yesterday.isoformat(),
                     "--base-url", sim.url_rest, "--rest-url", sim.url_rest, *extra)


def _contents(store: Path) -> dict[str, object]:
    st = Store(store)
    out: dict[str, object] = {}
    for sym in SYMBOLS:
        for tf in ("1m", "5m"):
            out[f"{tf}/{sym}"] = st.read_bars(tf, sym)
        out[f"funding/{sym}"] = st.read_funding(sym)
    return out


def test_help_documents_every_option():
    done = subprocess.run(pairstack("download", "--help"), capture_output=True, text=True,
                          env=scrubbed_env(), timeout=60, check=True)  # fmt: skip
    for option in ("--store", "--symbols", "--top", "--days", "--start", "--end", "--data",
                   "--timeframes", "--base-url", "--rest-url", "--jobs"):
        assert option in done.stdout, option
    assert "https://data.binance.vision" in done.stdout
    assert "https://fapi.binance.com" in done.stdout


@pytest.mark.parametrize("extra, message", [
    (["--symbols", "BTCUSDT", "--start", "2024-13-01"], "expected a UTC date"),
    (["--top", "0"], "whole number >= 1"),
    (["--symbols", "BTCUSDT", "--data", "ticks"], "klines, funding, trades"),
    (["--symbols", "BTCUSDT", "--timeframes", "1s"], "1m, 3m, 5m"),
    (["--symbols", "BTC-USDT"], "uppercase alphanumeric"),
    ([], "one of the arguments --symbols --top is required"),
    (["--symbols", "BTCUSDT", "--end", "2024-06-01"], "--end needs --start"),
    (["--symbols", "BTCUSDT", "--days", "3", "--start", "2024-06-01"], "not allowed with"),
    (["--symbols", "BTCUSDT", "--jobs", "-2"], "whole number >= 1"),
    (["--symbols", "BTCUSDT", "--start", "2024-06-02", "--end", "2024-06-01"], "is after end"),
])  # fmt: skip
def test_bad_input_exits_2_with_a_clear_message(tmp_path, extra, message):
    done = subprocess.run(
        pairstack("download", "--store", str(tmp_path / "store"), "--base-url",
                  "http://127.0.0.1:9", "--rest-url", "http://127.0.0.1:9", *extra),
        capture_output=True, text=True, env=scrubbed_env(), timeout=60)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert not (tmp_path / "store" / "bars").exists()


def test_killed_mid_run_then_resumed_equals_a_clean_run(sim, tmp_path):
    clean = subprocess.run(_args(sim, tmp_path / "clean"), capture_output=True, text=True,
                           env=scrubbed_env(), timeout=600)  # fmt: skip
    assert clean.returncode == 0, clean.stderr
    header = clean.stdout.splitlines()[0].split()
    assert header == ["symbol", "data", "fetched", "stored", "skipped", "failed", "rows"]
    assert "BTCUSDT  klines" in clean.stdout
    assert clean.stderr == ""  # no progress bar when stderr is not a terminal

    store = tmp_path / "resumed"
    proc = subprocess.Popen(_args(sim, store, "--jobs", "1"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=scrubbed_env())  # fmt: skip
    manifest = store / MANIFEST
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if manifest.exists() and len(json.loads(manifest.read_text())["files"]) >= 3:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the download ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    recorded = len(json.loads(manifest.read_text())["files"])
    assert 3 <= recorded < 32  # 8 days x 2 timeframes x 2 symbols of klines

    resumed = subprocess.run(_args(sim, store), capture_output=True, text=True,
                             env=scrubbed_env(), timeout=600)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    stored = sum(int(line.split()[3]) for line in resumed.stdout.splitlines()[1:]
                 if line.startswith(SYMBOLS))  # fmt: skip
    assert stored == recorded  # what the killed run recorded is not fetched again
    got, expected = _contents(store), _contents(tmp_path / "clean")
    for key, table in expected.items():
        assert table.num_rows > 0, key
        assert got[key].equals(table), key
    assert not any((store / "downloads" / "tmp").glob("*"))
