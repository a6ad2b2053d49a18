"""PairBook: many pairs stepped live on batches of closed bars and watermarks (no Ray, no I/O).

Data in: ``feed(packet)`` with an ``engine.packets.BarPacket`` (or its entries, each
``{"symbol", "wm" (ms), "bars" (BAR_DTYPE, closed bars of the analytics timeframe),
"advances" (list of (watermark ms, wall ms when it became known))}``). Per symbol the book keeps
the bars not yet stepped by every pair and the watermark (``engine.legs.Legs``); a pair steps
interval [ts, ts+tf) once both legs' watermarks are at or past ts+tf, on the alignment rule of
``engine.align`` (streaming form, ``LiveAlign``). Each step runs the shared ``PairBank``
(configured hedge), a second one with the rolling OLS hedge (for comparison), the strategy
(paper position, the object the caller built) and the alert rules, and appends to ring buffers.

Latency (docs/semantics.md "CLI"): for the interval ending at e, a leg's bar became final at the
wall time of the first watermark advance >= e (the feed records it: when the frame of the later
trade was received, or when the feed's clock passed e + lateness_ms), the pair's at the later of
its legs; ``feed`` returns those final times for the caller to turn into samples once the state
is readable. Bars fed with ``live=False`` (warm-up from the store) give none.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Iterable
from typing import Protocol

import numpy as np

from engine import packets
from engine.alerts import AlertBook
from engine.align import LiveAlign, max_carry_ms
from engine.bars import NO_WATERMARK, RECENT_BARS
from engine.config import AnalyticsConfig
from engine.errors import ConfigError
from engine.legs import Legs
from engine.pairstep import PairBank, PairParams
from engine.schemas import BAR_DTYPE, timeframe_ms

#: latency samples older than this are dropped (ms)
LATENCY_WINDOW_MS = 60_000
#: bar times stepped per block of a batch (bounds memory when a long history is replayed)
TIMES_PER_CHUNK = 2_048

RING_FIELDS: dict[str, np.dtype] = {
    "ts": np.dtype(np.int64),
    "close_y": np.dtype(np.float64),
    "close_x": np.dtype(np.float64),
    "beta": np.dtype(np.float64),
    "beta_ols": np.dtype(np.float64),
    "spread": np.dtype(np.float64),
    "z": np.dtype(np.float64),
    "position": np.dtype(np.int8),
}


def _append_bank(bank: PairBank, more: PairBank) -> None:
    """Append the pair rows of ``more`` (same params) to ``bank``'s stacked state."""
    bank.state = tuple(
        np.ascontiguousarray(np.concatenate([a, b]))
        for a, b in zip(bank.state, more.state, strict=True)
    )
    bank.n_pairs += more.n_pairs


def parse_pair(name: str) -> tuple[str, str]:
    """``"ETHUSDT/BTCUSDT"`` -> ``("ETHUSDT", "BTCUSDT")`` (y, x)."""
    parts = name.split("/")
    if len(parts) != 2 or not all(parts) or parts[0] == parts[1]:
        raise ConfigError(f"pair {name!r}: expected 'Y/X' with two different symbols")
    return parts[0], parts[1]


class Ring:
    """Fixed-capacity ring buffers of the RING_FIELDS columns for ``rows`` pairs (2-D: one row
    per pair, ``capacity`` steps each)."""

    def __init__(self, capacity: int = RECENT_BARS, rows: int = 1):
        self.capacity = capacity
        self.cols = {k: np.zeros((rows, capacity), dtype=dt) for k, dt in RING_FIELDS.items()}
        self.count = np.zeros(rows, dtype=np.int64)

    def append(self, rows: np.ndarray | None = None, **values: object) -> None:
        """One step for each row in ``rows`` (all when None); values are scalars or arrays
        indexed like ``rows``."""
        idx = np.arange(len(self.count)) if rows is None else rows
        flat = idx * self.capacity + self.count[idx] % self.capacity  # into the raveled rows
        for k, col in self.cols.items():
            col.reshape(-1)[flat] = values[k]  # a view: the columns are C-contiguous
        self.count[idx] += 1

    def arrays(self, row: int = 0) -> dict[str, np.ndarray]:
        """Copies of the kept steps of one row, oldest first."""
        count = int(self.count[row])
        n = min(count, self.capacity)
        start = count % self.capacity if count > self.capacity else 0
        idx = (start + np.arange(n)) % self.capacity
        return {k: col[row, idx] for k, col in self.cols.items()}


class LatencyWindow:
    """Latency samples (ms) with the wall time they were taken; keeps the last 60 s."""

    def __init__(self, window_ms: float = LATENCY_WINDOW_MS):
        self.window_ms = window_ms
        self._at: list[float] = []
        self._lat: list[float] = []

    def add(self, at_ms: float, latencies_ms: Iterable[float]) -> None:
        for lat in latencies_ms:
            self._at.append(at_ms)
            self._lat.append(lat)

    def samples(self, now_ms: float, since_ms: float | None = None) -> np.ndarray:
        """Samples of the last 60 s (only those taken after ``since_ms`` when given)."""
        cut = bisect.bisect_left(self._at, now_ms - self.window_ms)
        del self._at[:cut], self._lat[:cut]
        start = 0 if since_ms is None else bisect.bisect_right(self._at, since_ms)
        return np.asarray(self._lat[start:], dtype=np.float64)


#: per-pair state arrays of a PairBook saved in a checkpoint (besides steppers and rings)
_PAIR_ARRAYS = ("next_t", "last_ts", "beta", "z", "position")
#: per-pair arrays of ``LiveAlign`` kept in checkpoints and appended by ``add_pairs``
_ALIGN_ARRAYS = ("last_y", "last_x", "last_ty", "last_tx")


class Strategy(Protocol):
    """What a PairBook needs of a strategy (``strategies.make_strategy`` builds one)."""

    def new_states(self, n: int) -> np.ndarray: ...

    def step_many(
        self, states: np.ndarray, z: np.ndarray, spread: np.ndarray, mask: np.ndarray
    ) -> np.ndarray: ...


class PairBook:
    """Many pairs stepped live on batches of closed bars and watermarks (no Ray, no I/O).

    Every pair's state is a row of stacked arrays: one ``PairBank`` step (and one strategy
    ``step_many``) advances all the pairs that have a bar at a given time together. A pair
    consumes the intervals [next_t, limit], limit = min(both legs' watermarks) - tf: bars
    arriving later for an interval it has passed are never stepped (the interval was final).
    """

    def __init__(self, analytics: AnalyticsConfig, strategy: Strategy, pairs: list[str]):
        """``analytics``: how pairs step (the config section); ``strategy``: built by the caller
        (``strategies.make_strategy(config.strategy)``); ``pairs``: "Y/X" names."""
        self.analytics = analytics
        self.tf = analytics.timeframe
        self.tf_ms = timeframe_ms(self.tf)
        if len(set(pairs)) != len(pairs):
            twice = next(p for p in pairs if pairs.count(p) > 1)
            raise ConfigError(f"pair {twice!r} listed twice")
        legs = [parse_pair(name) for name in pairs]
        self.names = list(pairs)
        self.index = {name: i for i, name in enumerate(self.names)}
        self.symbols = sorted({s for leg in legs for s in leg})
        sym_index = {s: k for k, s in enumerate(self.symbols)}
        self.iy = np.array([sym_index[y] for y, _ in legs], dtype=np.intp)
        self.ix = np.array([sym_index[x] for _, x in legs], dtype=np.intp)
        self.carry_ms = max_carry_ms(analytics.max_carry, self.tf)
        # last close of each leg, carried forward up to analytics.max_carry bars
        self.align = LiveAlign(self.iy, self.ix, self.carry_ms)
        self._sym_index = sym_index
        self.legs = Legs(len(self.symbols))
        self.wm = np.full(len(self.symbols), NO_WATERMARK, dtype=np.int64)
        n = len(self.names)
        params = PairParams.from_config(analytics)
        self.bank = PairBank(params, n)
        self.ols = None
        if params.hedge != "rolling_ols" or params.zscore != "rolling":
            ols_params = dataclasses.replace(params, hedge="rolling_ols", zscore="rolling")
            self.ols = PairBank(ols_params, n)
        self.strategy = strategy
        self.strategy_state = self.strategy.new_states(n)
        self.next_t = np.full(n, NO_WATERMARK, dtype=np.int64)  # first interval not consumed
        self.last_ts = np.full(n, NO_WATERMARK, dtype=np.int64)  # last step (NO_WATERMARK: none)
        self.beta = np.full(n, np.nan)
        self.z = np.full(n, np.nan)
        self.position = np.zeros(n, dtype=np.int8)
        self.ring = Ring(RECENT_BARS, n)
        self.alerts = AlertBook()
        self._ruled: tuple[object, np.ndarray] | None = None  # (rules seen, rows with rules)
        self.latency = LatencyWindow()

    @property
    def pairs(self) -> list[str]:
        return self.names

    def feed(
        self, entries: Iterable[dict] | packets.BarPacket, *, live: bool = True
    ) -> tuple[list[dict], list[float]]:
        """Take one batch of bars and watermarks, step every pair that can step.

        ``entries``: a ``BarPacket`` or its entries (``packets.unpack``). Returns the alert
        events fired and the final times (wall ms) of the intervals stepped live, for the
        caller to turn into latency samples once the state is readable.
        """
        if not isinstance(entries, packets.BarPacket):
            entries = list(entries)
            for e in entries:
                if e["bars"].dtype != BAR_DTYPE:
                    raise ConfigError(
                        f"bars of {e['symbol']}: expected BAR_DTYPE, got {e['bars'].dtype}"
                    )
            entries = packets.pack(entries)
        self._take_packet(entries, live)
        events: list[dict] = []
        finals: list[float] = []
        wm = np.minimum(self.wm[self.iy], self.wm[self.ix])
        known = wm != NO_WATERMARK
        limit = np.where(known, wm - self.tf_ms, NO_WATERMARK)
        can = (self.next_t <= limit) & known
        if can.any():
            self._advance(self.next_t[can].min(), limit[can].max(), limit, events,
                          finals if live else None)  # fmt: skip
            self.next_t[can] = limit[can] + 1
            self._trim()
        return events, finals

    def add_pairs(
        self, pairs: list[str], history: Iterable[dict] | packets.BarPacket = ()
    ) -> list[str]:
        """Host ``pairs`` ("Y/X", legs among this book's ``symbols``: its feeds send only those)
        from now on; returns those added (pairs already hosted are skipped).

        Each new pair is warmed up on ``history`` (entries or a packet, ``live=False``: the
        store's bars and the feeds' recent ones, reaching at least this book's watermarks)
        through the same step, in a book of its own, whose rows are then appended to this
        book's stacked arrays: from the first bar after the warm-up, the pair steps exactly as
        in a book built with it from the start. Bars of ``history`` this book has not stepped
        yet still come in by ``feed``; a new pair skips the intervals it consumed in warm-up.
        """
        new = list(dict.fromkeys(p for p in pairs if p not in self.index))
        for name in new:
            missing = [s for s in parse_pair(name) if s not in self._sym_index]
            if missing:
                raise ConfigError(
                    f"pair {name!r}: {', '.join(missing)} not among this book's symbols "
                    f"{self.symbols}; add the pair where both legs are fed, or restart with it"
                )
        if not new:
            return []
        sub = PairBook(self.analytics, self.strategy, new)
        sub.feed(history, live=False)
        k = np.array([self._sym_index[s] for s in sub.symbols], dtype=np.intp)
        self.iy = np.concatenate([self.iy, k[sub.iy]])
        self.ix = np.concatenate([self.ix, k[sub.ix]])
        align = LiveAlign(self.iy, self.ix, self.carry_ms)
        for key in _ALIGN_ARRAYS:
            setattr(align, key, np.concatenate([getattr(self.align, key), getattr(sub.align, key)]))
        self.align = align
        _append_bank(self.bank, sub.bank)
        if self.ols is not None:
            _append_bank(self.ols, sub.ols)
        self.strategy_state = np.concatenate([self.strategy_state, sub.strategy_state])
        for key in _PAIR_ARRAYS:
            setattr(self, key, np.concatenate([getattr(self, key), getattr(sub, key)]))
        self.ring.cols = {
            key: np.ascontiguousarray(np.concatenate([col, sub.ring.cols[key]]))
            for key, col in self.ring.cols.items()
        }
        self.ring.count = np.concatenate([self.ring.count, sub.ring.count])
        self.names.extend(new)
        self.index = {name: i for i, name in enumerate(self.names)}
        self._ruled = None
        return new

    def _take_packet(self, packet: packets.BarPacket, live: bool) -> None:
        """A packet's bars, watermarks and (live) advances into the legs, in arrival order
        (symbols unknown here are skipped)."""
        if packet.bars.dtype != BAR_DTYPE:
            raise ConfigError(f"packet bars: expected BAR_DTYPE, got {packet.bars.dtype}")
        k = np.array([self._sym_index.get(s, -1) for s in packet.symbols], dtype=np.intp)
        ok = k >= 0
        if len(packet.bars):
            bar_k = np.repeat(k, np.diff(packet.bar_ends, prepend=0))
            sel = bar_k >= 0
            self.legs.add_bars(
                bar_k[sel],
                packet.bars["ts"][sel].astype(np.int64, copy=False),
                packet.bars["close"][sel].astype(np.float64, copy=False),
            )
        np.maximum.at(self.wm, k[ok], packet.wm[ok])
        if live and len(packet.adv_wm):
            adv_k = np.repeat(k, np.diff(packet.adv_ends, prepend=0))
            sel = adv_k >= 0
            self.legs.add_advances(adv_k[sel], packet.adv_wm[sel], packet.adv_wall[sel])

    def _advance(
        self, lo: int, hi: int, limit: np.ndarray, events: list[dict], finals: list[float] | None
    ) -> None:
        """Step every pair over the bar times in [lo, hi] within its [next_t, limit]."""
        times = self.legs.times(lo, hi)
        for c0 in range(0, len(times), TIMES_PER_CHUNK):
            chunk = times[c0 : c0 + TIMES_PER_CHUNK]
            closes = self.legs.closes(chunk)
            for j, t in enumerate(chunk.tolist()):
                if self.align.step(t, closes[j], self.next_t, limit):
                    self._step(t, self.align.mask, events, finals)

    def _step(self, t: int, mask: np.ndarray, events: list[dict], finals: list[float] | None):
        """One bar time for the pairs in ``mask``: steppers, strategy, rings, alerts."""
        cy, cx = self.align.last_y, self.align.last_x
        pt = self.bank.step_many(cy, cx, mask)
        beta_ols = pt.beta if self.ols is None else self.ols.step_many(cy, cx, mask).beta
        pos = self.strategy.step_many(self.strategy_state, pt.z, pt.spread, mask)
        rows = np.flatnonzero(mask)
        np.copyto(self.position, pos, where=mask)
        np.copyto(self.beta, pt.beta, where=mask)
        np.copyto(self.z, pt.z, where=mask)
        self.last_ts[rows] = t
        self.ring.append(
            rows,
            ts=t,
            close_y=cy[rows],
            close_x=cx[rows],
            beta=pt.beta[rows],
            beta_ols=beta_ols[rows],
            spread=pt.spread[rows],
            z=pt.z[rows],
            position=pos[rows],
        )
        ruled = self._with_rules()
        if len(ruled):
            for i in ruled[mask[ruled]].tolist():
                events.extend(ev.to_dict() for ev in self.alerts.check(self.names[i], t, pt.z[i]))
        if finals is not None:
            fw = self.legs.final_walls(t + self.tf_ms)
            # NaN (not seen live) on either leg gives no sample
            lat = np.maximum(fw[self.iy[rows]], fw[self.ix[rows]])
            finals.extend(lat[~np.isnan(lat)].tolist())

    def _with_rules(self) -> np.ndarray:
        """Indices of the pairs some alert rule watches (recomputed when rules change)."""
        if self._ruled is None or self._ruled[0] is not self.alerts.rules:
            watched = {r.pair for r in self.alerts.rules.values()}
            rows = np.array([i for i, name in enumerate(self.names) if name in watched],
                            dtype=np.intp)  # fmt: skip
            self._ruled = (self.alerts.rules, rows)
        return self._ruled[1]

    def _keep_from(self) -> np.ndarray:
        """Per symbol, the open time (ms) of the oldest interval some pair using it has not
        consumed (NO_WATERMARK: from the start)."""
        keep = np.full(len(self.symbols), np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(keep, self.iy, self.next_t)
        np.minimum.at(keep, self.ix, self.next_t)
        return keep

    def _trim(self) -> None:
        if not self.legs.needs_trim():
            return
        keep = self._keep_from()
        # unstepped intervals start at or after ``keep``: older advances are not needed
        self.legs.trim(keep, np.where(keep > NO_WATERMARK, keep + self.tf_ms, 0))

    def snapshot(self, pair: str) -> dict[str, np.ndarray]:
        if pair not in self.index:
            raise KeyError(f"unknown pair {pair!r}: this actor hosts {sorted(self.names)}")
        return self.ring.arrays(self.index[pair])

    def rows(self) -> list[dict]:
        """Per pair: ``pair``, ``last_bar`` (ms or None), ``beta``, ``z``, ``position``,
        ``bars`` (bars stepped)."""
        return [
            {
                "pair": name,
                "last_bar": None if self.last_ts[i] == NO_WATERMARK else int(self.last_ts[i]),
                "beta": float(self.beta[i]),
                "z": float(self.z[i]),
                "position": int(self.position[i]),
                "bars": int(self.ring.count[i]),
            }
            for i, name in enumerate(self.names)
        ]

    # -- checkpoints --------------------------------------------------------------------------
    def _state(self) -> dict[str, np.ndarray]:
        """Every pair's state by checkpoint key: views of the live arrays (plain NumPy)."""
        out = {f"bank.{i}": a for i, a in enumerate(self.bank.state)}
        if self.ols is not None:
            out.update({f"ols.{i}": a for i, a in enumerate(self.ols.state)})
        out["strategy"] = self.strategy_state
        out.update({f"align.{k}": getattr(self.align, k) for k in _ALIGN_ARRAYS})
        out.update({f"pair.{k}": getattr(self, k) for k in _PAIR_ARRAYS})
        out.update({f"ring.{k}": v for k, v in self.ring.cols.items()})
        out["ring.count"] = self.ring.count
        return out

    def checkpoint(self) -> dict[str, np.ndarray]:
        """A copy of every pair's state as plain arrays (numbers and unicode, no objects), for
        ``restore`` and ``engine.checkpoint.write_checkpoint``."""
        out = {k: a.copy() for k, a in self._state().items()}
        out["names"] = np.array(self.names, dtype=str)
        keys = list(self.alerts.armed)
        out["armed.keys"] = np.array(keys, dtype=str)
        out["armed.values"] = np.array([self.alerts.armed[k] for k in keys], dtype=bool)
        return out

    def restore(self, state: dict[str, np.ndarray]) -> None:
        """Take a ``checkpoint`` of a book with the same pairs and config: every pair's state is
        as it was; the legs start empty, so bars from ``resume_from`` on must be fed again.
        Everything is checked before anything is changed (ConfigError: nothing restored)."""
        names = state.get("names")
        if names is None or names.tolist() != self.names:
            raise ConfigError("checkpoint of other pairs: cannot restore it here")
        keys, armed = state.get("armed.keys"), state.get("armed.values")
        if keys is None or armed is None or keys.shape != armed.shape or keys.ndim != 1:
            raise ConfigError(
                "checkpoint armed.keys/armed.values: expected two 1-D arrays of one length"
            )
        mine = self._state()
        for k, a in mine.items():
            b = state.get(k)
            if b is None or b.shape != a.shape or b.dtype != a.dtype:
                found = "nothing" if b is None else f"{b.dtype}{b.shape}"
                raise ConfigError(
                    f"checkpoint {k}: expected {a.dtype}{a.shape}, found {found}: cannot restore"
                )
        for k, a in mine.items():
            a[...] = state[k]
        saved = dict(zip(keys.tolist(), armed.astype(bool).tolist(), strict=True))
        self.alerts.armed = {k: saved.get(k, True) for k in self.alerts.rules}

    def resume_from(self) -> dict[str, int]:
        """Per symbol, the open time (ms) of the oldest interval some pair has not consumed
        (NO_WATERMARK: from the start)."""
        return dict(zip(self.symbols, self._keep_from().tolist(), strict=True))
