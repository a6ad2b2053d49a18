"""The pair step: aligned closes -> price transform -> hedge -> spread -> z-score.

docs/semantics.md "Pair and backtest semantics": price = log(close) or close; the hedge known at t
(Kalman: filtered state after observing t; rolling OLS: fitted on the window ending at t;
static OLS: fitted once on the first ``ols_window`` bars, then held, NaN before);
spread_t = py_t - beta_t * px_t - alpha_t; z_t = rolling z-score of the spread over
``zscore_window`` bars (window ending at and including t; NaN while a spread in the window is NaN
or the window is not full) or, with ``zscore="innovation"`` (Kalman only), e_t / sqrt(S_t).

One numba step, ``pair_step``, is looped inside numba by ``run_pair`` (batch), called per bar
by ``PairStepper`` (live, one pair) and looped over many pairs by ``PairBank.step_many`` (live,
hundreds of pairs per call). All three give identical numbers. State is plain float64 arrays, so
steppers pickle and can live in a Ray actor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import njit

from engine.errors import ConfigError, DataError
from engine.kalman import check_kalman_params, kalman_step, new_kalman_state, state_noise
from engine.rolling import (
    new_ols_state,
    new_window_state,
    ols_fit,
    ols_full,
    ols_push,
    ols_step,
    zscore_step,
)

PRICES = ("log", "raw")
HEDGES = ("kalman", "rolling_ols", "static_ols")
ZSCORES = ("rolling", "innovation")

# codes passed to the kernels
_LOG, _RAW = 0, 1
_KALMAN, _ROLLING_OLS, _STATIC_OLS = 0, 1, 2
_ROLLING_Z, _INNOVATION_Z = 0, 1


@dataclass(frozen=True)
class PairParams:
    """How a pair is stepped (the ``analytics`` config section; defaults: docs/semantics.md)."""

    price: str = "log"
    hedge: str = "kalman"
    delta: float = 1e-5
    obs_var: float = 1e-3
    init_var: float = 1.0
    ols_window: int = 300
    zscore: str = "rolling"
    zscore_window: int = 60

    def __post_init__(self) -> None:
        for name, allowed in (("price", PRICES), ("hedge", HEDGES), ("zscore", ZSCORES)):
            value = getattr(self, name)
            if value not in allowed:
                raise ConfigError(f"analytics.{name}: expected one of {allowed}, got {value!r}")
        if self.zscore == "innovation" and self.hedge != "kalman":
            raise ConfigError(
                f"analytics.zscore: 'innovation' needs hedge 'kalman', got hedge {self.hedge!r}"
            )
        for name in ("ols_window", "zscore_window"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 2:
                raise ConfigError(f"analytics.{name}: expected an integer >= 2, got {value!r}")
        try:
            check_kalman_params(self.delta, self.obs_var, self.init_var)
        except DataError as exc:
            raise ConfigError(f"analytics.kalman: {exc}") from None

    @classmethod
    def from_config(cls, analytics: Any) -> PairParams:
        """From the ``analytics`` config object (attributes price, hedge, kalman.delta, ...)."""
        return cls(
            price=analytics.price,
            hedge=analytics.hedge,
            delta=analytics.kalman.delta,
            obs_var=analytics.kalman.obs_var,
            init_var=analytics.kalman.init_var,
            ols_window=analytics.ols_window,
            zscore=analytics.zscore,
            zscore_window=analytics.zscore_window,
        )

    def _codes(self) -> tuple[int, int, int, float, float]:
        return (
            PRICES.index(self.price),
            HEDGES.index(self.hedge),
            ZSCORES.index(self.zscore),
            state_noise(self.delta),
            float(self.obs_var),
        )


# ---------------------------------------------------------------- the step kernel


@njit(cache=True)
def _new_pair_state(
    ols_window: int, zscore_window: int, init_var: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(kalman state, OLS ring, OLS state, z ring, z state, static fit [beta, alpha, fitted])."""
    kst = new_kalman_state(init_var)
    obuf, ost = new_ols_state(ols_window)
    zbuf, zst = new_window_state(zscore_window)
    pst = np.array([np.nan, np.nan, 0.0])
    return kst, obuf, ost, zbuf, zst, pst


@njit(cache=True)
def pair_step(
    kst: np.ndarray,
    obuf: np.ndarray,
    ost: np.ndarray,
    zbuf: np.ndarray,
    zst: np.ndarray,
    pst: np.ndarray,
    close_y: float,
    close_x: float,
    price_mode: int,
    hedge: int,
    zmode: int,
    q: float,
    r: float,
) -> tuple[float, float, float, float, float, float, float, float]:
    """One bar for one pair: returns (py, px, beta, alpha, spread, z, innovation, innovation_var).

    Oracles (in the tests): pykalman for the Kalman hedge, statsmodels OLS for the OLS hedges,
    pandas rolling mean/std for the z-score, applied to the whole series at once.
    """
    if price_mode == _LOG:
        py = np.log(close_y)
        px = np.log(close_x)
    else:
        py = close_y
        px = close_x
    e = np.nan
    s = np.nan
    if hedge == _KALMAN:
        e, s = kalman_step(kst, py, px, q, r)
        beta = kst[0]
        alpha = kst[1]
    elif hedge == _ROLLING_OLS:
        beta, alpha = ols_step(obuf, ost, py, px)
    else:
        if pst[2] == 0.0:
            ols_push(obuf, ost, py, px)
            if ols_full(obuf, ost):
                pst[0], pst[1] = ols_fit(obuf, ost)
                pst[2] = 1.0
        beta = pst[0]
        alpha = pst[1]
    spread = py - beta * px - alpha
    z = e / np.sqrt(s) if zmode == _INNOVATION_Z else zscore_step(zbuf, zst, spread)
    return py, px, beta, alpha, spread, z, e, s


@njit(cache=True)
def _run_pair_kernel(
    close_y: np.ndarray,
    close_x: np.ndarray,
    ols_window: int,
    zscore_window: int,
    init_var: float,
    price_mode: int,
    hedge: int,
    zmode: int,
    q: float,
    r: float,
) -> np.ndarray:
    """Batch pair step: loops ``pair_step``; rows py, px, beta, alpha, spread, z, e, S."""
    kst, obuf, ost, zbuf, zst, pst = _new_pair_state(ols_window, zscore_window, init_var)
    out = np.empty((8, close_y.size))
    for i in range(close_y.size):
        res = pair_step(
            kst, obuf, ost, zbuf, zst, pst, close_y[i], close_x[i], price_mode, hedge, zmode, q, r
        )
        for j in range(8):
            out[j, i] = res[j]
    return out


@njit(cache=True)
def _bank_kernel(
    kst: np.ndarray,
    obuf: np.ndarray,
    ost: np.ndarray,
    zbuf: np.ndarray,
    zst: np.ndarray,
    pst: np.ndarray,
    close_y: np.ndarray,
    close_x: np.ndarray,
    mask: np.ndarray,
    price_mode: int,
    hedge: int,
    zmode: int,
    q: float,
    r: float,
) -> np.ndarray:
    """Step every pair i with mask[i] (rows of the stacked state); NaN columns for the others."""
    out = np.full((8, close_y.size), np.nan)
    for i in range(close_y.size):
        if mask[i]:
            res = pair_step(
                kst[i],
                obuf[i],
                ost[i],
                zbuf[i],
                zst[i],
                pst[i],
                close_y[i],
                close_x[i],
                price_mode,
                hedge,
                zmode,
                q,
                r,
            )
            for j in range(8):
                out[j, i] = res[j]
    return out


# ---------------------------------------------------------------- batch and incremental APIs


@dataclass(frozen=True)
class PairSeries:
    """Per-bar pair step results (py, px: transformed prices; z in spread std units).

    ``innovation``/``innovation_var`` are set for the Kalman hedge and None otherwise.
    """

    py: np.ndarray
    px: np.ndarray
    beta: np.ndarray
    alpha: np.ndarray
    spread: np.ndarray
    z: np.ndarray
    innovation: np.ndarray | None = None
    innovation_var: np.ndarray | None = None

    @classmethod
    def _from_rows(cls, rows: np.ndarray, kalman: bool) -> PairSeries:
        extra = (rows[6], rows[7]) if kalman else (None, None)
        return cls(rows[0], rows[1], rows[2], rows[3], rows[4], rows[5], *extra)


@dataclass(frozen=True)
class PairPoint:
    """One bar of one pair (floats; innovation fields NaN unless the hedge is Kalman)."""

    py: float
    px: float
    beta: float
    alpha: float
    spread: float
    z: float
    innovation: float
    innovation_var: float


def _closes(close_y: Any, close_x: Any, price: str) -> tuple[np.ndarray, np.ndarray]:
    cy = np.ascontiguousarray(close_y, dtype=np.float64)
    cx = np.ascontiguousarray(close_x, dtype=np.float64)
    if cy.ndim != 1 or cx.ndim != 1:
        raise DataError(f"closes must be 1-D, got shapes {cy.shape} and {cx.shape}")
    if cy.size != cx.size:
        raise DataError(
            f"close_y and close_x must have the same length, got {cy.size} and {cx.size}"
        )
    for name, arr in (("close_y", cy), ("close_x", cx)):
        bad = ~np.isfinite(arr) if price == "raw" else ~(np.isfinite(arr) & (arr > 0))
        if bad.any():
            need = "finite" if price == "raw" else "finite and > 0 (price: log)"
            raise DataError(
                f"{name} must be {need}; index {int(np.argmax(bad))} is {arr[np.argmax(bad)]}"
            )
    return cy, cx


def run_pair(close_y: Any, close_x: Any, params: PairParams) -> PairSeries:
    """Step a pair over aligned closes (batch). Windows longer than the data just give NaN."""
    cy, cx = _closes(close_y, close_x, params.price)
    rows = _run_pair_kernel(
        cy, cx, params.ols_window, params.zscore_window, params.init_var, *params._codes()
    )
    return PairSeries._from_rows(rows, params.hedge == "kalman")


class PairStepper:
    """Incremental pair step: ``step(close_y, close_x)`` per bar equals ``run_pair`` exactly."""

    def __init__(self, params: PairParams):
        self.params = params
        self._codes = params._codes()
        self.reset()

    def reset(self) -> None:
        """Forget every bar seen."""
        p = self.params
        self.state = _new_pair_state(p.ols_window, p.zscore_window, p.init_var)

    def step(self, close_y: float, close_x: float) -> PairPoint:
        """One aligned bar (raw closes); returns the pair's values at that bar."""
        cy, cx = _closes([close_y], [close_x], self.params.price)
        return PairPoint(*pair_step(*self.state, cy[0], cx[0], *self._codes))


@dataclass(frozen=True)
class PairPoints:
    """One step of many pairs: arrays indexed by pair (NaN for pairs not stepped)."""

    py: np.ndarray
    px: np.ndarray
    beta: np.ndarray
    alpha: np.ndarray
    spread: np.ndarray
    z: np.ndarray
    innovation: np.ndarray
    innovation_var: np.ndarray


class PairBank:
    """Many pairs with the same params, stepped together: one Python call, one numba loop.

    Pair i's numbers equal a ``PairStepper`` fed the same closes; state is stacked arrays.
    """

    def __init__(self, params: PairParams, n_pairs: int):
        if isinstance(n_pairs, bool) or not isinstance(n_pairs, (int, np.integer)) or n_pairs < 1:
            raise DataError(f"n_pairs must be a positive integer, got {n_pairs!r}")
        self.params = params
        self.n_pairs = int(n_pairs)
        self._codes = params._codes()
        one = _new_pair_state(params.ols_window, params.zscore_window, params.init_var)
        self.state = tuple(np.ascontiguousarray(np.stack([a] * self.n_pairs)) for a in one)

    def reset(self, index: int | None = None) -> None:
        """Forget every bar seen by pair ``index`` (all pairs when None)."""
        p = self.params
        one = _new_pair_state(p.ols_window, p.zscore_window, p.init_var)
        rows = slice(None) if index is None else index
        for stacked, fresh in zip(self.state, one, strict=True):
            stacked[rows] = fresh

    def step_many(self, close_y: Any, close_x: Any, mask: Any = None) -> PairPoints:
        """Step every pair i with ``mask[i]`` (all when None) on its aligned closes."""
        cy = np.ascontiguousarray(close_y, dtype=np.float64)
        cx = np.ascontiguousarray(close_x, dtype=np.float64)
        m = np.ones(self.n_pairs, dtype=bool) if mask is None else np.asarray(mask)
        if cy.shape != (self.n_pairs,) or cx.shape != (self.n_pairs,) or m.shape != cy.shape:
            raise DataError(
                f"close_y, close_x and mask must have shape ({self.n_pairs},), got "
                f"{cy.shape}, {cx.shape} and {m.shape}"
            )
        if m.dtype != np.bool_:
            raise DataError(f"mask must be boolean, got dtype {m.dtype}")
        _closes(cy[m], cx[m], self.params.price)
        rows = _bank_kernel(*self.state, cy, cx, m, *self._codes)
        return PairPoints(*rows)
