"""engine.stats beside the usual pandas / statsmodels / NumPy recipes for the same figures.

Cases: ``ols_hedge`` vs statsmodels ``OLS``, ``half_life`` vs statsmodels ``OLS`` of the AR(1)
regression, ``hurst`` vs the common ``np.std`` + ``np.polyfit`` recipe, ``log_return_corr`` vs
pandas ``DataFrame.corr()`` of log returns, ``screen_pairs`` vs a loop of statsmodels
``coint`` (both orders) + OLS + pandas correlation, and one ``coint`` of 8,640 bars (30 days of
5m bars) vs statsmodels ``coint`` (numba kernels of ``engine.unitroot`` vs statsmodels' OLS per
candidate lag). A last row gives the pairs per second of ``engine.unitroot.coint_pairs`` over
100 symbols x 8,640 bars, both orders, on one core (no peer). Run with OPENBLAS_NUM_THREADS=1
(``make bench`` exports it) so statsmodels' BLAS uses one thread too; each row records it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from itertools import combinations

import numpy as np
import pandas as pd
import statsmodels.api as sm
from statsmodels.tsa import stattools

from bench.timing import best_s
from engine import stats, unitroot


def _prices(n: int, k: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    common = np.cumsum(rng.normal(0.0, 1e-3, n))
    return {
        f"S{i}USDT": 100.0 * np.exp(common + np.cumsum(rng.normal(0.0, 1e-3, n))) for i in range(k)
    }


def _peer_half_life(s: np.ndarray) -> float:
    b = sm.OLS(np.diff(s), sm.add_constant(s[:-1])).fit().params[1]
    return -np.log(2.0) / np.log1p(b) if -1.0 < b < 0.0 else np.inf


def _peer_hurst(s: np.ndarray, max_lag: int) -> float:
    lags = range(2, max_lag + 1)
    tau = [np.std(s[lag:] - s[:-lag]) for lag in lags]
    return float(np.polyfit(np.log(list(lags)), np.log(tau), 1)[0])


def _peer_screen(closes: dict[str, np.ndarray]) -> list[tuple]:
    frame = np.log(pd.DataFrame(closes))
    corr = frame.diff().corr()
    rows = []
    for a, b in combinations(frame.columns, 2):
        fwd, bwd = stattools.coint(frame[a], frame[b]), stattools.coint(frame[b], frame[a])
        y, x = (a, b) if fwd.pvalue <= bwd.pvalue else (b, a)
        fit = sm.OLS(frame[y], sm.add_constant(frame[x])).fit()
        rows.append(
            (
                y,
                x,
                corr.loc[y, x],
                min(fwd.pvalue, bwd.pvalue),
                _peer_half_life(
                    (frame[y] - fit.params.iloc[1] * frame[x] - fit.params.iloc[0]).to_numpy()
                ),
            )
        )
    return sorted(rows, key=lambda r: r[3])


def run(quick: bool) -> list[dict]:
    """One row per case: our time, the peer's, ratio = peer_s / ours_s."""
    n = 20_000 if quick else 1_000_000
    repeat = 3 if quick else 5
    closes = _prices(n, 2)
    y, x = (np.log(v) for v in closes.values())
    spread = y - x
    wide = _prices(n // 10, 20 if quick else 50)
    screen = _prices(2_000 if quick else 5_000, 4 if quick else 6)
    month_y, month_x = (np.log(v) for v in _prices(8_640, 2, seed=1).values())
    cases: list[tuple[str, Callable[[], object], str, Callable[[], object], int]] = [
        (
            "ols_hedge",
            lambda: stats.ols_hedge(y, x),
            "statsmodels OLS",
            lambda: sm.OLS(y, sm.add_constant(x)).fit().params,
            n,
        ),
        (
            "half_life",
            lambda: stats.half_life(spread),
            "statsmodels OLS",
            lambda: _peer_half_life(spread),
            n,
        ),
        (
            "hurst(max_lag=50)",
            lambda: stats.hurst(spread, 50),
            "np.std + polyfit",
            lambda: _peer_hurst(spread, 50),
            n,
        ),
        (
            "log_return_corr",
            lambda: stats.log_return_corr(wide),
            "pandas corr",
            lambda: np.log(pd.DataFrame(wide)).diff().corr(),
            n // 10,
        ),
        (
            "screen_pairs",
            lambda: stats.screen_pairs(screen),
            "statsmodels coint loop",
            lambda: _peer_screen(screen),
            len(next(iter(screen.values()))),
        ),
        (
            "coint (30 days of 5m bars)",
            lambda: stats.coint(month_y, month_x),
            "statsmodels coint",
            lambda: stattools.coint(month_y, month_x),
            month_y.size,
        ),
    ]
    threads = os.environ.get("OPENBLAS_NUM_THREADS", "unset")
    rows = []
    for case, ours, peer, theirs, size in cases:
        ours()  # warm caches before timing either side
        theirs()
        ours_s = best_s(ours, 50 if case.startswith("coint") else repeat)
        peer_s = best_s(theirs, 1 if case == "screen_pairs" else repeat)
        rows.append(
            {
                "case": case,
                "n": size,
                "ours_s": ours_s,
                "peer": peer,
                "peer_s": peer_s,
                "ratio": peer_s / ours_s,
                "blas_threads": threads,
            }
        )
    rows.append(_screen_rate(20 if quick else 100, 8_640))
    return rows


def _screen_rate(k: int, n: int) -> dict:
    """Pairs per second of ``unitroot.coint_pairs`` over k symbols x n bars, both orders."""
    cols = np.log(np.array(list(_prices(n, k, seed=2).values())))
    upper = np.argwhere(np.triu(np.ones((k, k), dtype=bool), k=1))
    both = np.concatenate([upper, upper[:, ::-1]])
    unitroot.coint_pairs(cols, both[:2])  # compile / load the kernels first
    ours_s = best_s(lambda: unitroot.coint_pairs(cols, both), 1)
    return {
        "case": f"coint_pairs {k} symbols x {n} bars, both orders (one core)",
        "n": n,
        "pairs": int(upper.shape[0]),
        "tests": int(both.shape[0]),
        "ours_s": ours_s,
        "pairs_per_s": upper.shape[0] / ours_s,
        "tests_per_s": both.shape[0] / ours_s,
    }
