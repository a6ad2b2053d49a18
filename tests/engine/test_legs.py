"""Leg storage of a PairBook (``engine.legs.Legs``) equals per-symbol Python lists."""

from __future__ import annotations

import bisect

import numpy as np
import pytest

from engine import legs as legs_mod
from engine.legs import Legs


class ListLegs:
    """Oracle for ``Legs``: per symbol Python lists, one item at a time."""

    def __init__(self, n_sym):
        self.ts = [[] for _ in range(n_sym)]
        self.close = [[] for _ in range(n_sym)]
        self.newest = [None] * n_sym
        self.adv = [[] for _ in range(n_sym)]
        self.wall = [[] for _ in range(n_sym)]

    def add_bars(self, sym, ts, close):
        for k, t, c in zip(sym.tolist(), ts.tolist(), close.tolist(), strict=True):
            if self.newest[k] is None or t > self.newest[k]:
                self.ts[k].append(t)
                self.close[k].append(c)
                self.newest[k] = t

    def add_advances(self, sym, wm, wall):
        for k, w, a in zip(sym.tolist(), wm.tolist(), wall.tolist(), strict=True):
            if not self.adv[k] or w > self.adv[k][-1]:
                self.adv[k].append(w)
                self.wall[k].append(a)

    def trim(self, keep_from, wm_floor, kept):
        for k in range(len(self.ts)):
            d = bisect.bisect_left(self.ts[k], keep_from[k])
            del self.ts[k][:d], self.close[k][:d]
            cut = max(bisect.bisect_left(self.adv[k], wm_floor[k]), len(self.adv[k]) - kept)
            if cut > 0:
                del self.adv[k][:cut], self.wall[k][:cut]

    def final_wall(self, k, end):
        i = bisect.bisect_left(self.adv[k], end)
        return np.nan if i == len(self.adv[k]) else self.wall[k][i]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_leg_storage_equals_python_lists(monkeypatch, seed):
    monkeypatch.setattr(legs_mod, "_LEG_CAPACITY", 4)
    monkeypatch.setattr(legs_mod, "ADVANCES_KEPT", 9)
    rng = np.random.default_rng(seed)
    n_sym = 5
    legs_, ref = Legs(n_sym), ListLegs(n_sym)
    clock = np.zeros(n_sym, dtype=np.int64)
    for step in range(150):
        # a call: per symbol a few entries, each mostly new bars (sorted), sometimes repeats
        # or corrections of older bars, symbols interleaved as several feeds send them
        sym, ts = [], []
        for _ in range(rng.integers(0, 9)):
            k = int(rng.integers(n_sym))
            m = int(rng.integers(0, 6))
            start = clock[k] - 1000 * int(rng.integers(0, 4))  # may overlap what was sent
            t = start + 1000 * np.cumsum(rng.integers(1, 3, m))
            clock[k] = max(clock[k], t[-1] if m else clock[k])
            sym.extend([k] * m)
            ts.extend(t.tolist())
        sym_a, ts_a = np.array(sym, dtype=np.intp), np.array(ts, dtype=np.int64)
        close = rng.normal(size=len(sym))
        legs_.add_bars(sym_a, ts_a, close)
        ref.add_bars(sym_a, ts_a, close)
        adv_k = rng.integers(0, n_sym, 6).astype(np.intp)
        adv_wm = (clock[adv_k] + 500 * rng.integers(-4, 4, 6)).astype(np.int64)
        adv_wall = rng.normal(size=6) + step
        legs_.add_advances(adv_k, adv_wm, adv_wall)
        ref.add_advances(adv_k, adv_wm, adv_wall)
        lo, hi = sorted(int(v) for v in rng.integers(-2000, clock.max() + 2000, 2))
        in_range = [t for row in ref.ts for t in row if lo <= t <= hi]
        times = legs_.times(lo, hi)
        np.testing.assert_array_equal(times, np.unique(np.array(in_range, dtype=np.int64)))
        want = np.full((len(times), n_sym), np.nan)
        for k in range(n_sym):
            at = dict(zip(ref.ts[k], ref.close[k], strict=True))
            for j, t in enumerate(times.tolist()):
                want[j, k] = at.get(t, np.nan)
        np.testing.assert_array_equal(legs_.closes(times), want)
        end = 1000 * int(rng.integers(0, clock.max() // 1000 + 3))  # often an advance's
        np.testing.assert_array_equal(
            legs_.final_walls(end), [ref.final_wall(k, end) for k in range(n_sym)]
        )
        if step % 7 == 6:
            keep = (clock - 1000 * rng.integers(0, 12, n_sym)).astype(np.int64)  # often a bar's
            floor = (keep + 500 * rng.integers(-6, 6, n_sym)).astype(np.int64)
            legs_.trim(keep, floor)
            ref.trim(keep, floor, 9)
        for k in range(n_sym):
            ts_k, close_k = legs_.bars(k)
            np.testing.assert_array_equal(ts_k, ref.ts[k])
            np.testing.assert_array_equal(close_k, ref.close[k])
            wm_k, wall_k = legs_.advances(k)
            np.testing.assert_array_equal(wm_k, ref.adv[k])
            np.testing.assert_array_equal(wall_k, ref.wall[k])
    assert legs_.ts.shape[1] > 4  # grew
