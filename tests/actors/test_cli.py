"""``pairstack run`` / ``pairstack status``: refusals before Ray starts, a real run stopped by
SIGTERM with the store flushed, status from a fresh shell (Ray token auth) and after the engine
was killed, and status text formatting. Subprocesses run with only PATH and HOME set."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from cli_env import pairstack, scrubbed_env

from actors.cli.main import main
from actors.cli.run import one_line
from actors.cli.status import format_status

GOOD = """\
feed: {source: simulator, lateness_ms: 500}
symbols: [ETHUSDT, BTCUSDT]
timeframes: [1s]
pairs:
  - {y: ETHUSDT, x: BTCUSDT}
analytics: {ols_window: 10, zscore_window: 8}
store: {path: STORE}
"""


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        (None, ["config file not found"]),
        ("feed: {source: simulator\nsymbols: [", ["YAML syntax error", "line"]),
        (GOOD.replace("source: simulator", "source: kraken"), ["feed.source"]),
        (GOOD.replace("lateness_ms: 500", "lateness_ms: -1"), ["feed.lateness_ms"]),
        (GOOD.replace("lateness_ms: 500", "latenes_ms: 500"), ["latenes_ms"]),
        (GOOD.replace("x: BTCUSDT", "x: XRPUSDT"), ["pairs[0].x", "XRPUSDT"]),
        (GOOD.replace("timeframes: [1s]", "timeframes: [2s]"), ["timeframes"]),
        (GOOD.replace("symbols: [ETHUSDT, BTCUSDT]\n", ""), ["symbols"]),
        (GOOD.replace("zscore_window: 8", "zscore_window: 1"), ["analytics.zscore_window"]),
    ],
)
def test_run_refuses_a_bad_config_before_ray_starts(tmp_path, capsys, text, needles):
    path = tmp_path / "bad.yaml"
    if text is not None:
        path.write_text(text.replace("STORE", str(tmp_path / "store")))
    assert main(["run", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err
    for needle in needles:
        assert needle in err
    assert not (tmp_path / "store").exists()


@pytest.mark.parametrize("duration", ["0", "-3"])
def test_run_refuses_a_bad_duration(tmp_path, capsys, duration):
    path = tmp_path / "good.yaml"
    path.write_text(GOOD.replace("STORE", str(tmp_path / "store")))
    assert main(["run", "--config", str(path), "--duration", duration]) == 2
    assert "--duration" in capsys.readouterr().err


def test_bad_config_exits_2_from_the_console_command(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(GOOD.replace("x: BTCUSDT", "x: XRPUSDT"))
    proc = subprocess.run(
        pairstack("run", "--config", str(path)),
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
        env=scrubbed_env(tmp_path / "home"),
    )  # fmt: skip
    assert proc.returncode == 2
    assert f"{path}: pairs[0].x" in proc.stderr


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ("zscore_window: 8", "zscore_window: 99999999999999999999999999999",
         "analytics.zscore_window: expected int <= 1000000"),
        ("zscore_window: 8", "zscore_window: 1099511627776",
         "analytics.zscore_window: expected int <= 1000000"),
        ("ols_window: 10", "ols_window: 9223372036854775807",
         "analytics.ols_window: expected int <= 1000000"),
        ("store: {path: STORE}", "strategy: {name: os.system}\nstore: {path: STORE}",
         "strategy.name: expected a strategy name (a lowercase identifier such as zscore"),
        ("store: {path: STORE}", "strategy: {name: 'nosuch.module:X'}\nstore: {path: STORE}",
         "strategy.name: cannot import module 'nosuch.module' for nosuch.module:X"),
        ("store: {path: STORE}", "store: {path: FILE}", "store.path: expected a directory"),
    ],
)  # fmt: skip
def test_a_config_that_cannot_run_exits_2_before_ray_starts(tmp_path, old, new, key):
    path = tmp_path / "bad.yaml"
    a_file = tmp_path / "data.txt"
    a_file.write_text("not a store")
    text = GOOD.replace(old, new).replace("STORE", str(tmp_path / "store"))
    path.write_text(text.replace("FILE", str(a_file)))
    home = tmp_path / "home"
    proc = subprocess.run(
        pairstack("run", "--config", str(path), "--duration", "5"),
        capture_output=True, text=True, timeout=60, cwd=tmp_path, env=scrubbed_env(home),
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(f"pairstack run: error: {path}: {key}"), proc.stderr
    assert "Traceback" not in proc.stderr
    # Ray never started: it would have made its token under HOME and logged its start
    assert not (home / ".ray").exists()
    assert "Ray" not in proc.stdout + proc.stderr.replace("pairstack run: error:", "")
    assert not (tmp_path / "store").exists()


@pytest.mark.ray
def test_status_without_that_engine_exits_2(ray_cluster, tmp_path):
    proc = subprocess.run(
        pairstack("status", "--address", ray_cluster.get_runtime_context().gcs_address,
                  "--hub", "no-such-hub"),
        capture_output=True, text=True, timeout=120, cwd=tmp_path, env=scrubbed_env(),
    )  # fmt: skip
    assert proc.returncode == 2
    assert "runs no pairstack engine" in proc.stderr and "no-such-hub" in proc.stderr


@pytest.mark.ray
def test_run_joins_a_cluster_by_address_from_a_fresh_shell(ray_cluster, tmp_path):
    """`ray.address` given: the run joins the (token-authenticated) session cluster with no Ray
    variables set, runs its engine there and stops it cleanly."""
    address = ray_cluster.get_runtime_context().gcs_address
    path = tmp_path / "join.yaml"
    store = tmp_path / "store"
    path.write_text(GOOD.replace("STORE", str(store)) + f"ray: {{address: '{address}'}}\n")
    proc = subprocess.run(
        pairstack("run", "--config", str(path), "--duration", "8"),
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env=scrubbed_env(),
    )  # fmt: skip
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log
    assert f"engine running on Ray at {address}" in log and "stopped cleanly" in log
    assert "InvalidAuthToken" not in log and "Unauthenticated" not in log
    assert not (store / "engine.json").exists()


def _start_run(tmp_path: Path) -> tuple[subprocess.Popen, Path, Path, dict, list[str]]:
    """`pairstack run` of GOOD from a fresh shell, read until its pair steps; (process, config,
    store, env, log lines so far)."""
    path = tmp_path / "demo.yaml"
    store = tmp_path / "store"
    path.write_text(GOOD.replace("STORE", str(store)))
    env = scrubbed_env(tmp_path / "home")
    proc = subprocess.Popen(
        pairstack("run", "--config", str(path), "--duration", "300"),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path, env=env,
    )  # fmt: skip
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "pairstack.run" in line and "pairs 1/1 stepping" in line:
            return proc, path, store, env, lines
    proc.wait(timeout=60)
    raise AssertionError("pairstack run ended before its pair stepped:\n" + "".join(lines))


def test_run_stops_cleanly_on_sigterm_with_the_store_flushed(tmp_path):
    proc, path, store, env, lines = _start_run(tmp_path)
    try:
        # from another fresh shell: status finds the engine from its config (the record in
        # the store) and from the user's last recorded engine, under Ray's token auth
        status = subprocess.run(
            pairstack("status", "--json", "--config", str(path)),
            capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env,
        )  # fmt: skip
        plain = subprocess.run(
            pairstack("status"), capture_output=True, text=True, timeout=120, cwd=tmp_path,
            env=env,
        )  # fmt: skip
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    log = "".join(lines) + rest
    assert proc.returncode == 0, log
    assert "signal SIGTERM: stopping" in log and "stopped cleanly" in log
    assert status.returncode == 0, status.stderr
    assert "InvalidAuthToken" not in status.stderr
    assert [p["pair"] for p in json.loads(status.stdout)["pairs"]] == ["ETHUSDT/BTCUSDT"]
    assert plain.returncode == 0, plain.stderr
    assert "pair ETHUSDT/BTCUSDT" in plain.stdout
    # a stopped engine leaves no record; its pair actor left a checkpoint
    assert not (store / "engine.json").exists()
    assert not (tmp_path / "home" / ".cache" / "pairstack" / "engine.json").exists()
    assert list((store / "state" / "pairs").glob("*.npz"))
    for kind in (
        "ticks/symbol=ETHUSDT",
        "ticks/symbol=BTCUSDT",
        "bars/timeframe=1s/symbol=ETHUSDT",
    ):
        assert list((store / kind).rglob("*.parquet")), kind


def test_status_after_the_engine_was_killed_says_not_running_and_forgets_it(tmp_path):
    proc, path, store, env, _ = _start_run(tmp_path)
    try:
        record = json.loads((store / "engine.json").read_text())
        assert record["auth_mode"] == "token"
        proc.kill()  # SIGKILL: no chance to clear its record
        proc.wait(timeout=60)
        assert (store / "engine.json").exists()
        started = time.monotonic()
        status = subprocess.run(
            pairstack("status", "--config", str(path)),
            capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env,
        )  # fmt: skip
        took = time.monotonic() - started
    finally:
        proc.kill()
    assert status.returncode == 2, status.stderr
    assert "no running engine" in status.stderr and "removed its stale record" in status.stderr
    assert f"pid {record['pid']}" in status.stderr
    assert took < 5.0, took
    assert not (store / "engine.json").exists()
    assert not (tmp_path / "home" / ".cache" / "pairstack" / "engine.json").exists()


def test_status_with_a_config_of_no_running_engine_exits_2(tmp_path, capsys):
    path = tmp_path / "demo.yaml"
    path.write_text(GOOD.replace("STORE", str(tmp_path / "store")))
    assert main(["status", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "no running engine recorded" in err and str(tmp_path / "store") in err


def test_text_formats():
    status = {
        "feeds": [
            {"symbols": ["A", "B"], "connected": True, "ticks_per_s": 2.5, "ticks": 10,
             "rejected": {"bad_price": 1}, "gaps_backfilled": 0, "late_ticks": 0, "reconnects": 1}
        ],
        "pairs": [
            {"pair": "A/B", "last_bar": "2026-01-01T00:00:00.000Z", "beta": 1.25, "z": -2.0,
             "position": 1},
            {"pair": "B/A", "last_bar": None, "beta": None, "z": None, "position": 0},
        ],
        "latency_ms": {"p50": 1.0, "p99": 2.0, "max": 3.0},
    }  # fmt: skip
    text = format_status(status)
    assert "feed 0 [up] 2 symbols  2.5 ticks/s  ticks 10  rejected 1" in text
    assert "beta 1.2500  z -2.000  position +1" in text and "z nan" in text
    assert text.endswith("latency ms: p50 1.00  p99 2.00  max 3.00")
    assert one_line(status) == (
        "feeds 1/1 up, 2.5 ticks/s, 10 ticks; pairs 1/2 stepping, 1 open;"
        " latency p50 1.0 p99 2.0 ms"
    )


def test_text_format_names_a_feed_behind_the_store_and_stale_pairs():
    feed = {"symbols": ["A", "B"], "connected": True, "ticks_per_s": 0.0, "ticks": 0,
            "rejected": {"duplicate": 40}, "gaps_backfilled": 0, "late_ticks": 0,
            "reconnects": 0, "healthy": False, "starved": True,
            "ids_behind": {"A": {"stream": 120, "store": 1_000_000}}}  # fmt: skip
    status = {
        "feeds": [feed],
        "pairs": [
            {"pair": "A/B", "last_bar": "2026-01-01T00:00:00.000Z", "beta": 1.0, "z": 0.5,
             "position": 0, "stale": True}
        ],
        "latency_ms": {"p50": None, "p99": None, "max": None},
    }
    text = format_status(status)
    assert "feed 0 [UNHEALTHY: starved]" in text
    assert "ids went backwards on A: the stream is at id 120, the store holds up to 1000000" in text
    assert text.splitlines()[2].endswith("position +0  STALE")
