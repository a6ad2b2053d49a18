"""The strategy interface: a target position decided at each bar's close.

A strategy is pure (no Ray, no I/O). Its whole state is one small float64 array, and one numba
step kernel moves it forward by a bar; ``step`` (live, one bar) and ``run`` (batch, many bars)
both call that kernel, so stepping bar by bar gives exactly the batch positions, and running
chunks one after the other gives exactly one run over the whole series. ``step_many`` (live,
many pairs per call) loops the same kernel over the rows of a stacked state.

Positions: +1 long spread (buy y, sell beta x), -1 short spread, 0 flat.
"""

from __future__ import annotations

import abc
import math
from typing import Any, ClassVar

import numpy as np

from engine.config import StrategyConfig
from engine.errors import DataError


def _as_series(name: str, values: Any, n: int | None = None) -> np.ndarray:
    arr = np.ascontiguousarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise DataError(f"{name} must be a 1-D array, got shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise DataError(f"{name} has {arr.shape[0]} values but z has {n}: lengths must match")
    return arr


class Strategy(abc.ABC):
    """Target position (-1/0/+1) from the z-score (and, for some strategies, the spread).

    Built from a StrategyConfig (engine.config), which has already checked the thresholds.
    Subclasses set ``name`` and ``_initial_state`` (the kernel state of a fresh strategy, first
    entry the position) and implement ``_step`` and ``_run`` by calling their numba kernels;
    they get ``step``/``run``/``reset``/``position`` from here.
    """

    name: ClassVar[str]
    _initial_state: ClassVar[tuple[float, ...]]

    def __init__(self, config: StrategyConfig) -> None:
        self.config = config
        self._state = np.array(self._initial_state, dtype=np.float64)

    def reset(self) -> None:
        """Forget everything: flat, nothing blocked, no history."""
        self._state[:] = self._initial_state

    @property
    def position(self) -> int:
        """The current target position (-1, 0 or +1)."""
        return int(self._state[0])

    def step(self, z: float, spread: float = math.nan) -> int:
        """Advance one bar with its z-score (and spread); returns the target position."""
        return int(self._step(self._state, float(z), float(spread)))

    def run(self, z: np.ndarray, spread: np.ndarray | None = None) -> np.ndarray:
        """Advance over many bars; returns the int8 target position after each bar.

        Continues from the current state and leaves the state after the last bar, exactly as
        calling ``step`` on each bar would.
        """
        z_arr = _as_series("z", z)
        if spread is None:
            spread_arr = np.full(z_arr.shape[0], np.nan)
        else:
            spread_arr = _as_series("spread", spread, z_arr.shape[0])
        out = np.empty(z_arr.shape[0], dtype=np.int8)
        self._run(self._state, z_arr, spread_arr, out)
        return out

    def new_states(self, n: int) -> np.ndarray:
        """Fresh states of ``n`` pairs, one row each (float64, shape (n, state size))."""
        return np.tile(np.asarray(self._initial_state, dtype=np.float64), (n, 1))

    def step_many(
        self, states: np.ndarray, z: np.ndarray, spread: np.ndarray, mask: np.ndarray
    ) -> np.ndarray:
        """Advance row i of ``states`` by one bar (``z[i]``, ``spread[i]``) where ``mask[i]``;
        returns every row's int8 target position (unmasked rows: unchanged).

        Row i moves exactly as a strategy whose ``step`` got the same bars.
        """
        n = states.shape[0] if isinstance(states, np.ndarray) and states.ndim == 2 else -1
        if (
            n < 0
            or states.dtype != np.float64
            or not states.flags.c_contiguous
            or states.shape[1] != len(self._initial_state)
        ):
            raise DataError(
                f"states must be a C-contiguous float64 array of shape (n, "
                f"{len(self._initial_state)}) from new_states"
            )
        z_arr = _as_series("z", z, n)
        spread_arr = _as_series("spread", spread, n)
        m = np.asarray(mask)
        if m.shape != (n,) or m.dtype != np.bool_:
            raise DataError(f"mask must be a boolean array of shape ({n},)")
        out = np.empty(n, dtype=np.int8)
        self._step_many(states, z_arr, spread_arr, m, out)
        return out

    @abc.abstractmethod
    def _step_many(
        self,
        states: np.ndarray,
        z: np.ndarray,
        spread: np.ndarray,
        mask: np.ndarray,
        out: np.ndarray,
    ) -> None: ...

    @abc.abstractmethod
    def _step(self, state: np.ndarray, z: float, spread: float) -> int: ...

    @abc.abstractmethod
    def _run(
        self, state: np.ndarray, z: np.ndarray, spread: np.ndarray, out: np.ndarray
    ) -> None: ...

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"
