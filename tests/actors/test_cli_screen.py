"""``pairstack screen`` as users run it (subprocess, PATH and HOME only) and its Ray fan-out:
the rows equal engine.screen's, the config it writes starts ``pairstack run``."""

from __future__ import annotations

import subprocess
from pathlib import Path

import cli_env
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from actors.screen import RAY_MIN_PAIRS, ScreenRunner, run_on_ray, screen_recent
from engine import screen
from engine.config import load_config
from engine.store import Store
from tests.engine.test_screen import generated_bars

ROOT = Path(__file__).resolve().parents[2]

BASE = """\
feed: {source: simulator, lateness_ms: 500}
symbols: [ETHUSDT, BTCUSDT]
pairs: [{y: ETHUSDT, x: BTCUSDT}]
analytics: {ols_window: 10, zscore_window: 8}
store: {path: STORE}
"""


def pairstack(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """The console script from a fresh shell (PATH and HOME only)."""
    return subprocess.run(
        cli_env.pairstack(*args), capture_output=True, text=True, timeout=timeout, cwd=ROOT,
        env=cli_env.scrubbed_env(),
    )  # fmt: skip


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli_screen") / "store"
    st = Store(path, durable=False)
    for sym, b in generated_bars().items():
        st.write_bars("5m", sym, b)
    st.flush()
    return path


def expected_table(store: Path, **kw) -> pd.DataFrame:
    return screen.screen_bars(screen.load_bars(store, "5m"), "5m", **kw).table.to_pandas()


def test_cli_writes_rows_and_a_config_that_run_starts(store, tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text(BASE.replace("STORE", str(tmp_path / "run-store")))
    rows, config_out = tmp_path / "rows.parquet", tmp_path / "pairs.yaml"
    proc = pairstack(
        "screen", "--store", str(store), "--min-quote-volume", "10000", "--out", str(rows),
        "--config-out", str(config_out), "--config-top", "2", "--config", str(base),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    want = expected_table(store, min_quote_volume=10_000.0)
    pd.testing.assert_frame_equal(pq.read_table(rows).to_pandas(), want)
    out = proc.stdout
    assert "5 symbols, 10 pairs" in out and "in this process" in out
    assert "left out (3):" in out and "THINUSDT: median daily quote volume" in out
    assert "LATEUSDT: first bar" in out and "SHORTUSDT:" in out
    best = out.splitlines()[2].split()
    assert best[:2] == [want["y"][0], want["x"][0]]
    assert len(list((store / "screens").glob("*.parquet"))) >= 1

    config = load_config(config_out)
    assert [(p.y, p.x) for p in config.pairs] == list(
        zip(want["y"][:2], want["x"][:2], strict=True)
    )
    assert config.feed.source == "simulator" and config.analytics.timeframe == "5m"
    run = pairstack("run", "--config", str(config_out), "--duration", "5", timeout=240)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "stopped cleanly" in run.stdout + run.stderr


def test_cli_csv_and_top(store, tmp_path):
    rows = tmp_path / "rows.csv"
    proc = pairstack("screen", "--store", str(store), "--top", "3", "--out", str(rows))
    assert proc.returncode == 0, proc.stderr
    got = pd.read_csv(rows)
    want = expected_table(store, top=3)
    pd.testing.assert_frame_equal(got, want, check_exact=False, rtol=1e-12)
    assert "3 symbols, 3 pairs" in proc.stdout and "rank 4 by median daily quote volume" in (
        proc.stdout
    )


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--out", "rows.txt"], "--out rows.txt: expected a file ending in .parquet or .csv"),
        (["--top", "1"], "--top 1: expected at least 2 symbols"),
        (["--actors", "-1"], "--actors -1"),
        (["--symbols", "AAAUSDT", "SHORTUSDT"], "a screen needs at least 2 symbols, 1 kept"),
        (["--symbols", "bad-name"], "bad-name"),
        (["--start", "2027-01-01"], "no 5m bars in the window"),
    ],
)
def test_cli_bad_input_exits_2(store, args, needle):
    proc = pairstack("screen", "--store", str(store), *args, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert needle in proc.stderr


def test_cli_missing_store_exits_2(tmp_path):
    proc = pairstack("screen", "--store", str(tmp_path / "nowhere"), timeout=120)
    assert proc.returncode == 2 and "no such directory" in proc.stderr


def test_cli_on_ray_actors_gives_the_same_rows(store, tmp_path):
    rows = tmp_path / "rows.parquet"
    proc = pairstack("screen", "--store", str(store), "--actors", "2", "--out", str(rows))
    assert proc.returncode == 0, proc.stderr
    assert "on 2 Ray actors" in proc.stdout
    pd.testing.assert_frame_equal(pq.read_table(rows).to_pandas(), expected_table(store))


def test_runner_decides_ray_by_pairs_and_actors():
    assert not ScreenRunner(None).uses_ray(RAY_MIN_PAIRS - 1)
    assert ScreenRunner(None).uses_ray(RAY_MIN_PAIRS)
    assert ScreenRunner(1).uses_ray(1) and not ScreenRunner(0).uses_ray(10**6)


@pytest.mark.ray
def test_pool_equals_in_process(ray_cluster):
    rng = np.random.default_rng(9)
    k, n = 12, 400
    values = np.exp(4 + np.cumsum(rng.normal(0, 1e-3, (n, k)), axis=0))
    closes = screen.Closes(np.arange(n), tuple(f"S{i}USDT" for i in range(k)), values)
    data = screen.ScreenData.from_series(screen.screen_series(closes))
    pairs = screen.pair_index(k)
    chunks = [pairs[lo:hi] for lo, hi in screen.plan_chunks(len(pairs), 2)]
    got = run_on_ray(data, chunks, 2, max_in_flight=1)
    want = list(screen.run_in_process(data, chunks))
    assert len(got) == len(want) == len(chunks)
    for g, w in zip(got, want, strict=True):
        for a, b in zip(g, w, strict=True):
            np.testing.assert_array_equal(a, b)


def test_dashboard_screen_reads_the_store_behind_its_bars(store):
    """actors.screen.screen_recent over the last 200 bars held in memory equals the CLI's screen
    of the store: the stored bars before them are read back."""
    stored = screen.load_bars(store, "5m")
    memory = {s: b[-200:] for s, b in stored.items() if s in ("AAAUSDT", "BBBUSDT", "CCCUSDT")}
    outcome = screen_recent(memory, "log", "5m", store=store)
    want = screen.screen_bars({s: stored[s] for s in memory}, "5m").table.to_pandas()
    assert outcome.table["pair"].tolist() == [
        f"{y}/{x}" for y, x in zip(want["y"], want["x"], strict=True)
    ]
    np.testing.assert_array_equal(outcome.table["eg_pvalue"], want["pvalue"])
    assert (outcome.table["bars"] > 1_000).all() and outcome.excluded == {}
    only_memory = screen_recent(memory, "log", "5m", store=None, min_bars=30)
    assert (only_memory.table["bars"] < 250).all()  # the union of 3 x 200 bar times


HOLE = 10  # bars one symbol misses: past a configured max_carry of 2, within auto (30 of 1m)


@pytest.fixture(scope="module")
def hole_store(tmp_path_factory):
    from history_kit import write_history

    path = tmp_path_factory.mktemp("cli_screen_hole") / "store"
    write_history(path, days=1, seed=5, hole=HOLE)
    return path


def test_cli_screen_honours_the_configs_max_carry(hole_store, tmp_path):
    """``pairstack screen --config`` aligns with the config's analytics.max_carry: the saved
    screen's params and the printed line report the bars dropped; without --config, auto."""
    from history_kit import dropped_by

    args = ("screen", "--store", str(hole_store), "--timeframe", "1m", "--actors", "0")
    free = pairstack(*args)
    assert free.returncode == 0, free.stderr
    free_params = screen.latest_screen(hole_store)[1]
    assert free_params["max_carry"] == "auto" and free_params["dropped_bars"] == 0
    config = tmp_path / "config.yaml"
    config.write_text(BASE.replace("STORE", str(tmp_path / "s")).replace(
        "zscore_window: 8}", "zscore_window: 8, max_carry: 2}"))  # fmt: skip
    proc = pairstack(*args, "--config", str(config))
    assert proc.returncode == 0, proc.stderr
    params = screen.latest_screen(hole_store)[1]
    assert params["max_carry"] == 2
    assert params["dropped_bars"] == dropped_by(HOLE, 2) > 0
    assert params["bars"] == free_params["bars"] - dropped_by(HOLE, 2)
    assert f"{dropped_by(HOLE, 2)} dropped (max_carry 2)" in proc.stdout


@pytest.mark.ray
def test_dashboard_screen_job_honours_max_carry(ray_cluster, hole_store):
    """The dashboard's screen (a ScreenJob actor, as the bridge starts it) aligns with the
    max_carry it is handed (the served config's)."""
    import ray
    from history_kit import dropped_by

    from actors.screen import ScreenJob

    bars = screen.load_bars(hole_store, "1m")
    actor = ray.remote(ScreenJob).options(max_concurrency=2).remote()
    try:
        two = ray.get(actor.run.remote(bars, "log", "1m", store=None, max_carry=2))
        auto = ray.get(actor.run.remote(bars, "log", "1m", store=None))
    finally:
        ray.kill(actor)
    assert two.params["dropped_bars"] == dropped_by(HOLE, 2) > 0
    assert auto.params["dropped_bars"] == 0
    assert (auto.table["bars"] - two.table["bars"]).tolist() == [dropped_by(HOLE, 2)]
