"""PairActor: hosts many pairs; steps each on aligned bars once both legs' watermarks pass.

Data in: batches from FeedActors, one call per batch, ``on_bars(packet)`` (an
``engine.packets.BarPacket``) holding entries, each
``{"symbol", "wm" (ms), "bars" (BAR_DTYPE, closed bars of the analytics timeframe),
"advances" (list of (watermark ms, wall ms when it became known))}``. Per symbol the actor keeps
the bars not yet stepped by every pair and the watermark (``Legs``: one row per symbol of 2-D
arrays, filled and searched by small numba kernels; ``PairBook.feed`` reads a packet without
unpacking it); a pair steps interval [ts, ts+tf)
once both legs' watermarks are at or past ts+tf (DESIGN.md alignment: union of intervals in
which a leg traded, from the first time both traded, last close carried forward). Each step runs
the shared ``PairStepper`` (configured hedge), a second one with the rolling OLS hedge (for
comparison), the strategy (paper position) and the alert rules, and appends to ring buffers.

Latency (DESIGN.md "CLI"): for the interval ending at e, a leg's bar became final at the wall
time of the first watermark advance >= e (the feed records it: when the frame of the later trade
was received, or when the feed's clock passed e + lateness_ms), the pair's at the later of its
legs; the sample is the wall time after the batch's steps (when a snapshot can next read the
state) minus that. Bars replayed at start-up (warm-up from the store) give no samples.
"""

from __future__ import annotations

import bisect
import dataclasses
import logging
import os
import pickle
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from numba import njit

from actors.alerts import AlertBook, AlertRule
from actors.args import as_config, lookup_actor
from actors.legs import Legs
from engine import packets
from engine.bars import NO_WATERMARK, RECENT_BARS
from engine.errors import ConfigError
from engine.pairstep import PairBank, PairParams
from engine.schemas import BAR_DTYPE, table_to_bars, timeframe_ms
from strategies import make_strategy

log = logging.getLogger(__name__)

#: latency samples older than this are dropped (ms)
LATENCY_WINDOW_MS = 60_000
#: on a restart, alerts of bars this recent (ms) are sent to the Hub again (it dedupes)
ALERT_RESEND_MS = 5 * 60_000
#: bar times stepped per block of a batch (bounds memory when a long history is replayed)
TIMES_PER_CHUNK = 2_048
#: seconds between two checkpoints of a named PairActor
CHECKPOINT_S = 60.0
#: layout version of the checkpoint files
CHECKPOINT_VERSION = 1

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


@njit(cache=True)
def _pick(col, iy, ix, next_t, limit, t, last_y, last_x, mask):
    """Pairs stepping at bar time ``t``: ``mask[i]`` when t is in [next_t[i], limit[i]], a leg
    has a bar at t (``col[leg]`` not NaN: ``last_y``/``last_x`` take it) and both legs have a
    close by now. Returns whether any pair steps. Oracle: the NumPy masks of the docstring."""
    some = False
    for i in range(mask.shape[0]):
        m = False
        if next_t[i] <= t and t <= limit[i]:
            cy, cx = col[iy[i]], col[ix[i]]
            has_y, has_x = not np.isnan(cy), not np.isnan(cx)
            if has_y:
                last_y[i] = cy
            if has_x:
                last_x[i] = cx
            m = (has_y or has_x) and not np.isnan(last_y[i]) and not np.isnan(last_x[i])
        mask[i] = m
        some |= m
    return some


#: per-pair state arrays of a PairBook saved in a checkpoint (besides steppers and rings)
_PAIR_ARRAYS = ("last_y", "last_x", "next_t", "last_ts", "beta", "z", "position")


class PairBook:
    """Many pairs stepped live on batches of closed bars and watermarks (no Ray, no I/O).

    Every pair's state is a row of stacked arrays: one ``PairBank`` step (and one strategy
    ``step_many``) advances all the pairs that have a bar at a given time together. A pair
    consumes the intervals [next_t, limit], limit = min(both legs' watermarks) - tf: bars
    arriving later for an interval it has passed are never stepped (the interval was final).
    """

    def __init__(self, config: object, pairs: list[str]):
        analytics = config.analytics
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
        self.strategy = make_strategy(config.strategy)
        self.strategy_state = self.strategy.new_states(n)
        self.last_y = np.full(n, np.nan)  # last close of each leg (carried forward)
        self.last_x = np.full(n, np.nan)
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
        mask = np.zeros(len(self.names), dtype=bool)
        for c0 in range(0, len(times), TIMES_PER_CHUNK):
            chunk = times[c0 : c0 + TIMES_PER_CHUNK]
            closes = self.legs.closes(chunk)
            for j, t in enumerate(chunk.tolist()):
                if _pick(closes[j], self.iy, self.ix, self.next_t, limit, t, self.last_y,
                         self.last_x, mask):  # fmt: skip
                    self._step(t, mask, events, finals)

    def _step(self, t: int, mask: np.ndarray, events: list[dict], finals: list[float] | None):
        """One bar time for the pairs in ``mask``: steppers, strategy, rings, alerts."""
        pt = self.bank.step_many(self.last_y, self.last_x, mask)
        beta_ols = pt.beta if self.ols is None else self.ols.step_many(
            self.last_y, self.last_x, mask).beta  # fmt: skip
        pos = self.strategy.step_many(self.strategy_state, pt.z, pt.spread, mask)
        rows = np.flatnonzero(mask)
        np.copyto(self.position, pos, where=mask)
        np.copyto(self.beta, pt.beta, where=mask)
        np.copyto(self.z, pt.z, where=mask)
        self.last_ts[rows] = t
        self.ring.append(
            rows,
            ts=t,
            close_y=self.last_y[rows],
            close_x=self.last_x[rows],
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
        """Per pair: ``pair``, ``last_bar`` (ms or None), ``beta``, ``z``, ``position``."""
        return [
            {
                "pair": name,
                "last_bar": None if self.last_ts[i] == NO_WATERMARK else int(self.last_ts[i]),
                "beta": float(self.beta[i]),
                "z": float(self.z[i]),
                "position": int(self.position[i]),
            }
            for i, name in enumerate(self.names)
        ]

    # -- checkpoints --------------------------------------------------------------------------
    def checkpoint(self) -> dict:
        """A copy of every pair's state (plain NumPy arrays and builtins) for ``restore``."""
        return {
            "names": list(self.names),
            "bank": [a.copy() for a in self.bank.state],
            "ols": None if self.ols is None else [a.copy() for a in self.ols.state],
            "strategy": self.strategy_state.copy(),
            "pairs": {k: getattr(self, k).copy() for k in _PAIR_ARRAYS},
            "ring": {k: v.copy() for k, v in self.ring.cols.items()},
            "ring_count": self.ring.count.copy(),
            "armed": dict(self.alerts.armed),
        }

    def restore(self, state: dict) -> None:
        """Take a ``checkpoint`` of a book with the same pairs and config: every pair's state is
        as it was; the legs start empty, so bars from ``resume_from`` on must be fed again."""
        if state["names"] != self.names:
            raise ConfigError("checkpoint of other pairs: cannot restore it here")
        stacks = [(self.bank.state, state["bank"])]
        if self.ols is not None:
            stacks.append((self.ols.state, state["ols"]))
        for mine, saved in stacks:
            for a, b in zip(mine, saved, strict=True):
                a[...] = b
        self.strategy_state[...] = state["strategy"]
        for k in _PAIR_ARRAYS:
            getattr(self, k)[...] = state["pairs"][k]
        for k, col in self.ring.cols.items():
            col[...] = state["ring"][k]
        self.ring.count[...] = state["ring_count"]
        self.alerts.armed = {k: state["armed"].get(k, True) for k in self.alerts.rules}

    def resume_from(self) -> dict[str, int]:
        """Per symbol, the open time (ms) of the oldest interval some pair has not consumed
        (NO_WATERMARK: from the start)."""
        return dict(zip(self.symbols, self._keep_from().tolist(), strict=True))


def config_fingerprint(config: object, pairs: list[str]) -> str:
    """What a checkpoint's state depends on: analytics, strategy, the pairs (JSON text)."""
    import msgspec

    return msgspec.json.encode(
        {"analytics": config.analytics, "strategy": config.strategy, "pairs": list(pairs)}
    ).decode()


def checkpoint_path(store_path: str, name: str) -> Path:
    """``<store>/state/pairs/<name>.pkl``: where the PairActor ``name`` keeps its checkpoint."""
    return Path(store_path) / "state" / "pairs" / f"{name}.pkl"


def write_checkpoint(path: Path, fingerprint: str, state: dict) -> None:
    """Atomic write (temporary file, fsync, rename) of a book's checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        pickle.dump({"version": CHECKPOINT_VERSION, "fingerprint": fingerprint, "state": state},
                    f, protocol=pickle.HIGHEST_PROTOCOL)  # fmt: skip
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_checkpoint(path: Path, fingerprint: str) -> dict | None:
    """The state saved at ``path`` if it was taken under the same config, else None (logged)."""
    try:
        with open(path, "rb") as f:
            saved = pickle.load(f)
    except FileNotFoundError:
        return None
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ValueError) as exc:
        log.warning("checkpoint %s unreadable (%s): full replay", path, exc)
        return None
    if not isinstance(saved, dict) or saved.get("version") != CHECKPOINT_VERSION:
        log.warning("checkpoint %s has another format: full replay", path)
        return None
    if saved.get("fingerprint") != fingerprint:
        log.info("checkpoint %s was taken under another config: full replay", path)
        return None
    return saved["state"]


class PairActor:
    """Ray actor body: a PairBook warmed up from the store, alerts sent to the Hub.

    ``config`` may be the Config or its ``to_dict()`` (what the engine passes, so a restart
    never depends on objects of the driver). ``feed_names``/``hub_name`` are named actors in
    ``namespace``, looked up (when Ray runs) at (re)start: the warm-up restores the checkpoint
    ``<store>/state/pairs/<name>.pkl`` when there is one taken under the same analytics,
    strategy and pairs, replays the stored bars after it (all of them without one), then each
    feed's recent in-memory bars so a restarted actor misses nothing the store had not flushed
    yet. With a ``name``, a checkpoint is taken every ``checkpoint_s`` seconds (written by a
    background thread) and on ``stop``.
    """

    def __init__(
        self,
        config: object,
        pairs: list[str],
        *,
        name: str | None = None,
        feed_names: Iterable[str] = (),
        hub_name: str | None = None,
        namespace: str | None = None,
        checkpoint_s: float = CHECKPOINT_S,
    ):
        config = as_config(config)
        self.book = PairBook(config, pairs)
        self._hub = None
        self._fingerprint = config_fingerprint(config, pairs)
        self._ckpt = checkpoint_path(config.store.path, name) if name else None
        self._ckpt_every_s = float(checkpoint_s)
        self._ckpt_thread: threading.Thread | None = None
        self.restored = False
        self._warm_up(config, list(feed_names), hub_name, namespace)
        self._ckpt_at = time.monotonic()

    def _warm_up(
        self, config: object, feed_names: list[str], hub_name: str | None, ns: str | None
    ) -> None:
        from engine.store import Store

        rules: list[AlertRule] = []
        hub = None
        feeds = []
        if feed_names or hub_name:
            import ray

            if ray.is_initialized():
                feeds = [h for h in (lookup_actor(n, ns) for n in feed_names) if h is not None]
                hub = lookup_actor(hub_name, ns) if hub_name else None
                if hub is not None:
                    rules = ray.get(hub.rules.remote())
        # replay with the rules in force, so their armed state is what it would have been;
        # recent events go to the Hub again (it keeps each (rule, ts) once): one fired just
        # before a crash may not have reached it
        self.book.alerts.set_rules(rules)
        state = read_checkpoint(self._ckpt, self._fingerprint) if self._ckpt else None
        if state is not None:
            self.book.restore(state)
            self.restored = True
        store = Store(config.store.path)
        entries = []
        for sym, start in self.book.resume_from().items():
            bars = table_to_bars(
                store.read_bars(self.book.tf, sym, start=None if start == NO_WATERMARK else start)
            )
            wm = int(bars["ts"][-1]) + self.book.tf_ms if len(bars) else NO_WATERMARK
            entries.append({"symbol": sym, "wm": wm, "bars": bars, "advances": []})
        if feeds:
            import ray

            refs = [f.recent_for.remote(self.book.symbols, self.book.tf) for f in feeds]
            for chunk in ray.get(refs):
                entries.extend(chunk)
        self._hub = hub
        events, _ = self.book.feed(entries, live=False)
        now = time.time() * 1000.0
        self._send_alerts([e for e in events if e["ts"] >= now - ALERT_RESEND_MS], now)
        log.info(
            "pair actor warmed up: %d pairs (%s)",
            len(self.book.names),
            "from a checkpoint" if self.restored else "full replay",
        )

    def checkpoint(self, wait: bool = True) -> bool:
        """Save every pair's state now (copied here, written by a background thread; with
        ``wait``, return once it is on disk). False when this actor has no name or a previous
        write is still running."""
        if self._ckpt is None or (self._ckpt_thread is not None and self._ckpt_thread.is_alive()):
            return False
        state = self.book.checkpoint()
        self._ckpt_at = time.monotonic()
        self._ckpt_thread = threading.Thread(
            target=write_checkpoint, args=(self._ckpt, self._fingerprint, state), daemon=True
        )
        self._ckpt_thread.start()
        if wait:
            self._ckpt_thread.join()
        return True

    def on_bars(self, packet: packets.BarPacket) -> None:
        """One batch from a FeedActor (see the module docstring)."""
        events, finals = self.book.feed(packet)
        now = time.time() * 1000.0
        self.book.latency.add(now, (now - f for f in finals))
        self._send_alerts(events, now)
        if self._ckpt is not None and time.monotonic() - self._ckpt_at >= self._ckpt_every_s:
            self.checkpoint(wait=False)

    def _send_alerts(self, events: list[dict], now: float) -> None:
        if events and self._hub is not None:
            for ev in events:
                ev["fired_at"] = int(now)
            self._hub.record_alerts.remote(events)

    def set_rules(self, rules: list[AlertRule]) -> None:
        self.book.alerts.set_rules(rules)

    def snapshot(self, pair: str) -> dict[str, np.ndarray]:
        """Ring buffers of one pair: ts (ms), close_y, close_x, beta, beta_ols, spread, z,
        position; oldest first."""
        return self.book.snapshot(pair)

    def status(self, since_ms: float | None = None) -> dict:
        """``{"pairs": rows, "latency_ms": samples of the last 60 s}`` (after ``since_ms``)."""
        return {
            "pairs": self.book.rows(),
            "latency_ms": self.book.latency.samples(time.time() * 1000.0, since_ms),
        }

    def ping(self) -> bool:
        return True
