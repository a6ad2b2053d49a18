"""Full trade history of one symbol: an append-only TICK_DTYPE buffer, safe to read from
another thread, with lookups by aggregate id (ids are consecutive) and by trade time (ms)."""

from __future__ import annotations

import threading

import numpy as np

from engine.errors import DataError
from engine.schemas import TICK_DTYPE


class TickLog:
    """Append-only trades of one symbol, ids consecutive from the first trade."""

    def __init__(self) -> None:
        self._buf = np.empty(1024, dtype=TICK_DTYPE)
        self._n = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self._n

    def append(self, ticks: np.ndarray) -> None:
        """Add trades that continue the id sequence."""
        if not len(ticks):
            return
        with self._lock:
            if self._n and ticks["agg_id"][0] != self._buf["agg_id"][self._n - 1] + 1:
                raise DataError("trade ids must continue the log without a hole")
            need = self._n + len(ticks)
            if need > len(self._buf):
                grown = np.empty(max(need, 2 * len(self._buf)), dtype=TICK_DTYPE)
                grown[: self._n] = self._buf[: self._n]
                self._buf = grown
            self._buf[self._n : need] = ticks
            self._n = need

    def all(self) -> np.ndarray:
        """A copy of every trade so far."""
        with self._lock:
            return self._buf[: self._n].copy()

    def last(self) -> np.ndarray:
        """The latest trade as a 0- or 1-record array."""
        with self._lock:
            return self._buf[max(0, self._n - 1) : self._n].copy()

    def from_id(self, from_id: int, limit: int) -> np.ndarray:
        """Up to ``limit`` trades with id >= ``from_id`` (inclusive), ascending."""
        with self._lock:
            if not self._n:
                return self._buf[:0].copy()
            start = min(max(0, from_id - int(self._buf["agg_id"][0])), self._n)
            return self._buf[start : min(start + limit, self._n)].copy()

    def between(self, start_ms: int | None, end_ms: int | None, limit: int) -> np.ndarray:
        """Trades with start_ms <= T <= end_ms: the first ``limit`` when start_ms is given,
        else the last ``limit``."""
        with self._lock:
            ts = self._buf["ts"][: self._n]
            lo = 0 if start_ms is None else int(np.searchsorted(ts, start_ms, side="left"))
            hi = self._n if end_ms is None else int(np.searchsorted(ts, end_ms, side="right"))
            hi = max(lo, hi)
            if start_ms is None:
                lo = max(lo, hi - limit)
            else:
                hi = min(hi, lo + limit)
            return self._buf[lo:hi].copy()
