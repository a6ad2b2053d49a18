"""``make demo``'s config run twice on one store (``pairstack run``, console script, fresh shell).

The simulator's market is a function of (seed, wall time), so the second run's simulator
continues the first one's aggregate-trade ids; the engine refills the trades made between the
runs over REST. The store then holds every id of each symbol once, without holes, and the pairs
step on in the second run.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import yaml
from cli_env import pairstack, scrubbed_env

from engine.checkpoint import checkpoint_path, config_fingerprint, read_checkpoint
from engine.config import load_config

ROOT = Path(__file__).resolve().parents[2]
DURATION_S = "20"
STEPPING = re.compile(r"pairs (\d+)/(\d+) stepping")


def _run(config: Path, cwd: Path) -> str:
    """One ``pairstack run --duration 20``; its log (it must stop cleanly)."""
    proc = subprocess.run(
        pairstack("run", "--config", str(config), "--duration", DURATION_S),
        capture_output=True, text=True, timeout=420, cwd=cwd, env=scrubbed_env(cwd / "home"),
    )  # fmt: skip
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log
    assert "stopped cleanly" in log, log
    return log


def _ticks(store: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """symbol -> (agg ids as stored, trade times in ms), from the store's tick files."""
    table = ds.dataset(store / "ticks", partitioning="hive").to_table(
        columns=["symbol", "agg_id", "ts"]
    )
    symbols = np.asarray(table["symbol"].to_pylist())
    ids = table["agg_id"].to_numpy()
    ts = table["ts"].cast("int64").to_numpy()
    return {str(s): (ids[symbols == s], ts[symbols == s]) for s in np.unique(symbols)}


def test_demo_config_runs_twice_on_one_store(tmp_path):
    demo = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    store = tmp_path / "store"
    demo["store"]["path"] = str(store)
    config = tmp_path / "demo.yaml"
    config.write_text(yaml.safe_dump(demo, sort_keys=False))
    cfg = load_config(config)

    _run(config, tmp_path)
    first = _ticks(store)
    assert set(first) == set(cfg.symbols)
    last_id = {s: int(ids.max()) for s, (ids, _) in first.items()}
    last_ms = max(int(ts.max()) for _, ts in first.values())
    between_ms = int(time.time() * 1000)  # the first run is over: its trades end before this

    log = _run(config, tmp_path)
    second = _ticks(store)
    for symbol, (ids, ts) in second.items():
        order = np.sort(ids)
        assert np.unique(ids).size == ids.size, f"{symbol}: a trade stored twice"
        assert (np.diff(order) == 1).all(), (
            f"{symbol}: ids not contiguous across the runs, holes after "
            f"{order[:-1][np.diff(order) != 1][:5]}"
        )
        newer = ids > last_id[symbol]
        assert newer.sum() > 0, f"{symbol}: the second run stored no new trade"
        assert ts[newer].max() > between_ms  # traded during the second run, not just refilled

    # pairs stepped in the second run: said in its status lines, and its checkpoint's last
    # step is on a bar after every trade of the first run
    stepping = [(int(n), int(of)) for n, of in STEPPING.findall(log)]
    assert stepping and all(of == len(cfg.pairs) for _, of in stepping), log
    assert max(n for n, _ in stepping) == len(cfg.pairs), log
    fingerprint = config_fingerprint(cfg.analytics, cfg.strategy, list(cfg.pair_names))
    folder = checkpoint_path(str(store), "any").parent  # the engine checkpoints at its stop
    states = [read_checkpoint(path, fingerprint) for path in folder.glob("*.npz")]
    states = [s for s in states if s is not None]
    assert states, "no pair checkpoint"
    stepped = {
        str(name): int(ts)
        for state in states
        for name, ts in zip(state["names"], state["pair.last_ts"], strict=True)
    }
    assert set(stepped) == set(cfg.pair_names)
    assert all(ts > last_ms for ts in stepped.values()), (stepped, last_ms)
