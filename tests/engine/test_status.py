"""The status object (``pairstack status --json``): shape, JSON safety, latency summary
against pandas, ISO times."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine.status import build_status, iso_ms, latency_summary

PAIR = "ETHUSDT/BTCUSDT"

FEED = {
    "symbols": ["BTCUSDT", "ETHUSDT"],
    "connected": True,
    "ticks_per_s": 9.5,
    "ticks": 120,
    "rejected": {"bad_price": 2},
    "gaps_backfilled": 1,
    "late_ticks": 0,
    "reconnects": 0,
    "open_gaps": 0,
}



@pytest.mark.parametrize("n", [1, 7, 100, 1001])
@pytest.mark.parametrize("seed", [0, 1])
def test_latency_summary_matches_pandas(n, seed):
    import pandas as pd

    x = np.random.default_rng(seed).exponential(3.0, n)
    s = pd.Series(x)
    got = latency_summary(x)
    np.testing.assert_allclose(
        [got["p50"], got["p99"], got["max"]],
        [s.quantile(0.5), s.quantile(0.99), s.max()],
        rtol=1e-12,
    )


def test_status_object_shape_and_json():
    pairs = [
        {"pair": "SOLUSDT/BNBUSDT", "last_bar": None, "beta": np.nan, "z": np.nan, "position": 0},
        {"pair": PAIR, "last_bar": 1_767_323_045_000, "beta": 0.8, "z": -2.5, "position": 1,
         "bars": 42},
    ]
    st = build_status([FEED], pairs, np.array([1.0, 2.0, 3.0]))
    assert list(st) == ["feeds", "pairs", "latency_ms"]
    assert list(st["feeds"][0])[:8] == [
        "symbols",
        "connected",
        "ticks_per_s",
        "ticks",
        "rejected",
        "gaps_backfilled",
        "late_ticks",
        "reconnects",
    ]
    assert st["pairs"][0] == {
        "pair": PAIR,
        "last_bar": "2026-01-02T03:04:05.000Z",
        "beta": 0.8,
        "z": -2.5,
        "position": 1,
        "warm": False,
        "bars": 42,
    }
    assert st["pairs"][1]["last_bar"] is None and st["pairs"][1]["z"] is None
    assert st["latency_ms"] == {"p50": 2.0, "p99": pytest.approx(2.98), "max": 3.0}
    json.dumps(st, allow_nan=False)
    empty = build_status([], [], np.empty(0))
    assert empty["latency_ms"] == {"p50": None, "p99": None, "max": None}


@pytest.mark.parametrize(
    ("ms", "iso"),
    [(0, "1970-01-01T00:00:00.000Z"), (1_767_323_045_123, "2026-01-02T03:04:05.123Z")],
)
def test_iso_ms(ms, iso):
    assert iso_ms(ms) == iso


def test_pair_is_warm_when_both_legs_are_warm_in_some_feed():
    feeds = [
        {**FEED, "symbols": ["BTCUSDT"], "warm_symbols": {"BTCUSDT": True}},
        {**FEED, "symbols": ["ETHUSDT", "SOLUSDT"],
         "warm_symbols": {"ETHUSDT": True, "SOLUSDT": False}},
    ]  # fmt: skip
    pairs = [
        {"pair": p, "last_bar": None, "beta": np.nan, "z": np.nan, "position": 0, "bars": 3}
        for p in (PAIR, "SOLUSDT/BTCUSDT")
    ]
    st = build_status(feeds, pairs, np.empty(0))
    assert {p["pair"]: p["warm"] for p in st["pairs"]} == {PAIR: True, "SOLUSDT/BTCUSDT": False}
    assert st["feeds"][1]["warm_symbols"] == {"ETHUSDT": True, "SOLUSDT": False}
