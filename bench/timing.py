"""Wall-clock timing shared by the benchmarks: the best of a few calls (s, perf_counter)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def best_of(fn: Callable[[], T], repeat: int) -> tuple[float, T | None]:
    """Fewest seconds any of ``repeat`` calls of ``fn()`` took, and the last call's result."""
    best, out = float("inf"), None
    for _ in range(repeat):
        started = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - started)
    return best, out


def best_s(fn: Callable[[], object], repeat: int) -> float:
    """Fewest seconds any of ``repeat`` calls of ``fn()`` took."""
    return best_of(fn, repeat)[0]
