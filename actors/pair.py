"""PairActor: hosts many pairs; steps each on aligned bars once both legs' watermarks pass.

Data in: batches from FeedActors, one call per batch, ``on_bars(entries)`` where each entry is
``{"symbol", "wm" (ms), "bars" (BAR_DTYPE, closed bars of the analytics timeframe),
"advances" (list of (watermark ms, wall ms when it became known))}``. Per symbol the actor keeps
the bars not yet stepped by every pair and the watermark; a pair steps interval [ts, ts+tf)
once both legs' watermarks are at or past ts+tf (DESIGN.md alignment: union of intervals in
which a leg traded, from the first time both traded, last close carried forward). Each step runs
the shared ``PairStepper`` (configured hedge), a second one with the rolling OLS hedge (for
comparison), the strategy (paper position) and the alert rules, and appends to ring buffers.

Latency (DESIGN.md "CLI"): for the interval ending at e, a leg's bar became final at
min(e + lateness_ms, wall time of the first watermark >= e), the pair's at the later of its legs;
the sample is the wall time after the batch's steps (when a snapshot can next read the state)
minus that. Bars replayed at start-up (warm-up from the store) give no samples.
"""

from __future__ import annotations

import bisect
import dataclasses
import logging
import math
import time
from collections.abc import Iterable

import numpy as np

from actors.alerts import AlertBook, AlertRule
from engine.bars import NO_WATERMARK
from engine.errors import ConfigError
from engine.pairstep import PairParams, PairStepper
from engine.schemas import BAR_DTYPE, table_to_bars, timeframe_ms
from strategies import make_strategy

log = logging.getLogger(__name__)

#: steps kept per pair in the ring buffers
RING_STEPS = 3_600
#: latency samples older than this are dropped (ms)
LATENCY_WINDOW_MS = 60_000
#: on a restart, alerts of bars this recent (ms) are sent to the Hub again (it dedupes)
ALERT_RESEND_MS = 5 * 60_000
#: watermark advances kept per symbol at most (for pairs whose other leg never traded)
ADVANCES_KEPT = 10_000

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
    """Fixed-capacity ring buffers of the RING_FIELDS columns."""

    def __init__(self, capacity: int = RING_STEPS):
        self.capacity = capacity
        self.cols = {k: np.zeros(capacity, dtype=dt) for k, dt in RING_FIELDS.items()}
        self.count = 0

    def append(self, **values: float) -> None:
        i = self.count % self.capacity
        for k, col in self.cols.items():
            col[i] = values[k]
        self.count += 1

    def arrays(self) -> dict[str, np.ndarray]:
        """Copies of the kept steps, oldest first."""
        n = min(self.count, self.capacity)
        start = self.count % self.capacity if self.count > self.capacity else 0
        idx = (start + np.arange(n)) % self.capacity
        return {k: col[idx] for k, col in self.cols.items()}


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


class _Leg:
    """Bars of one symbol not yet stepped by every pair using it, its watermark and advances."""

    def __init__(self) -> None:
        self.ts: list[int] = []
        self.close: list[float] = []
        self.base = 0  # absolute index of ts[0]
        self.last_ts = NO_WATERMARK  # open time of the newest bar ever added
        self.wm = NO_WATERMARK  # ms; every interval ending at or before it is final
        self.adv_wm: list[int] = []  # watermark advances seen live ...
        self.adv_wall: list[float] = []  # ... and the wall time each became known (ms)

    @property
    def end(self) -> int:
        return self.base + len(self.ts)

    def add(self, bars: np.ndarray, wm: int) -> None:
        """Append the bars newer than every bar seen (repeats and corrections are dropped)."""
        fresh = bars[bars["ts"] > self.last_ts]
        if len(fresh):
            self.ts.extend(fresh["ts"].tolist())
            self.close.extend(fresh["close"].tolist())
            self.last_ts = self.ts[-1]
        self.wm = max(self.wm, int(wm))

    def final_wall(self, end_ms: int, lateness_ms: int) -> float | None:
        """Wall time (ms) at which the interval ending at ``end_ms`` became final, if seen live."""
        i = bisect.bisect_left(self.adv_wm, end_ms)
        if i == len(self.adv_wm):
            return None
        return min(float(end_ms + lateness_ms), self.adv_wall[i])

    def trim(self, keep_from: int, wm_floor: int) -> None:
        drop = keep_from - self.base
        if drop > 0:
            del self.ts[:drop], self.close[:drop]
            self.base = keep_from
        cut = max(bisect.bisect_left(self.adv_wm, wm_floor), len(self.adv_wm) - ADVANCES_KEPT)
        if cut:
            del self.adv_wm[:cut], self.adv_wall[:cut]


class _Pair:
    """State of one pair: steppers, strategy, cursor into both legs, ring buffers."""

    def __init__(self, name: str, params: PairParams, ols_params: PairParams | None, strategy):
        self.name = name
        self.y, self.x = parse_pair(name)
        self.stepper = PairStepper(params)
        self.ols = PairStepper(ols_params) if ols_params is not None else None
        self.strategy = strategy
        self.iy = 0  # absolute index of the next unstepped bar of each leg
        self.ix = 0
        self.last_y = math.nan
        self.last_x = math.nan
        self.last_ts: int | None = None
        self.point = None
        self.position = 0
        self.ring = Ring()


class PairBook:
    """Many pairs stepped live on batches of closed bars and watermarks (no Ray, no I/O)."""

    def __init__(self, config: object, pairs: list[str]):
        analytics = config.analytics
        self.tf = analytics.timeframe
        self.tf_ms = timeframe_ms(self.tf)
        self.lateness_ms = int(config.feed.lateness_ms)
        params = PairParams.from_config(analytics)
        ols_params = None
        if params.hedge != "rolling_ols" or params.zscore != "rolling":
            ols_params = dataclasses.replace(params, hedge="rolling_ols", zscore="rolling")
        self.pairs: dict[str, _Pair] = {}
        self.legs: dict[str, _Leg] = {}
        for name in pairs:
            if name in self.pairs:
                raise ConfigError(f"pair {name!r} listed twice")
            p = _Pair(name, params, ols_params, make_strategy(config.strategy))
            self.pairs[name] = p
            self.legs.setdefault(p.y, _Leg())
            self.legs.setdefault(p.x, _Leg())
        self.alerts = AlertBook()
        self.latency = LatencyWindow()

    @property
    def symbols(self) -> list[str]:
        return sorted(self.legs)

    def feed(self, entries: Iterable[dict], *, live: bool = True) -> tuple[list[dict], list[int]]:
        """Take one batch of bars and watermarks, step every pair that can step.

        Returns the alert events fired and the final times (wall ms) of the intervals stepped
        live, for the caller to turn into latency samples once the state is readable.
        """
        for e in entries:
            leg = self.legs.get(e["symbol"])
            if leg is None:
                continue
            bars = e["bars"]
            if bars.dtype != BAR_DTYPE:
                raise ConfigError(f"bars of {e['symbol']}: expected BAR_DTYPE, got {bars.dtype}")
            leg.add(bars, e["wm"])
            if live:
                for wm, wall in e["advances"]:
                    if not leg.adv_wm or wm > leg.adv_wm[-1]:
                        leg.adv_wm.append(int(wm))
                        leg.adv_wall.append(float(wall))
        events: list[dict] = []
        finals: list[float] = []
        for p in self.pairs.values():
            self._advance(p, events, finals if live else None)
        self._trim()
        return events, finals

    def _advance(self, p: _Pair, events: list[dict], finals: list[float] | None) -> None:
        ly, lx = self.legs[p.y], self.legs[p.x]
        limit = min(ly.wm, lx.wm) - self.tf_ms  # bars with ts <= limit are final for both
        while True:
            ty = ly.ts[p.iy - ly.base] if p.iy < ly.end else None
            tx = lx.ts[p.ix - lx.base] if p.ix < lx.end else None
            ty = ty if ty is not None and ty <= limit else None
            tx = tx if tx is not None and tx <= limit else None
            if ty is None and tx is None:
                return
            t = min(v for v in (ty, tx) if v is not None)
            if ty == t:
                p.last_y = ly.close[p.iy - ly.base]
                p.iy += 1
            if tx == t:
                p.last_x = lx.close[p.ix - lx.base]
                p.ix += 1
            if math.isnan(p.last_y) or math.isnan(p.last_x):
                continue
            self._step(p, t, events)
            if finals is not None:
                end = t + self.tf_ms
                fy = ly.final_wall(end, self.lateness_ms)
                fx = lx.final_wall(end, self.lateness_ms)
                if fy is not None and fx is not None:
                    finals.append(max(fy, fx))

    def _step(self, p: _Pair, t: int, events: list[dict]) -> None:
        pt = p.stepper.step(p.last_y, p.last_x)
        beta_ols = p.ols.step(p.last_y, p.last_x).beta if p.ols is not None else pt.beta
        p.position = int(p.strategy.step(pt.z))
        p.point = pt
        p.last_ts = t
        p.ring.append(
            ts=t,
            close_y=p.last_y,
            close_x=p.last_x,
            beta=pt.beta,
            beta_ols=beta_ols,
            spread=pt.spread,
            z=pt.z,
            position=p.position,
        )
        events.extend(ev.to_dict() for ev in self.alerts.check(p.name, t, pt.z))

    def _trim(self) -> None:
        keep: dict[str, int] = {}
        floor: dict[str, int] = {}
        for p in self.pairs.values():
            done = p.last_ts + self.tf_ms if p.last_ts is not None else -1
            for sym, i in ((p.y, p.iy), (p.x, p.ix)):
                keep[sym] = min(keep.get(sym, i), i)
                floor[sym] = min(floor.get(sym, done), done)
        for sym, leg in self.legs.items():
            # unstepped intervals end after ``floor``: older watermark advances are not needed
            leg.trim(keep[sym], floor[sym])

    def snapshot(self, pair: str) -> dict[str, np.ndarray]:
        if pair not in self.pairs:
            raise KeyError(f"unknown pair {pair!r}: this actor hosts {sorted(self.pairs)}")
        return self.pairs[pair].ring.arrays()

    def rows(self) -> list[dict]:
        """Per pair: ``pair``, ``last_bar`` (ms or None), ``beta``, ``z``, ``position``."""
        return [
            {
                "pair": p.name,
                "last_bar": p.last_ts,
                "beta": p.point.beta if p.point is not None else math.nan,
                "z": p.point.z if p.point is not None else math.nan,
                "position": p.position,
            }
            for p in self.pairs.values()
        ]


class PairActor:
    """Ray actor body: a PairBook warmed up from the store, alerts sent to the Hub.

    ``feed_names``/``hub_name`` are named actors in ``namespace``, looked up (when Ray runs)
    at (re)start: the warm-up reads stored bars, then each feed's recent in-memory bars so a
    restarted actor misses nothing the store had not flushed yet.
    """

    def __init__(
        self,
        config: object,
        pairs: list[str],
        *,
        feed_names: Iterable[str] = (),
        hub_name: str | None = None,
        namespace: str | None = None,
    ):
        self.book = PairBook(config, pairs)
        self._hub = None
        self._warm_up(config, list(feed_names), hub_name, namespace)

    def _warm_up(
        self, config: object, feed_names: list[str], hub_name: str | None, ns: str | None
    ) -> None:
        from engine.store import Store

        store = Store(config.store.path)
        entries = []
        for sym in self.book.symbols:
            bars = table_to_bars(store.read_bars(self.book.tf, sym))
            wm = int(bars["ts"][-1]) + self.book.tf_ms if len(bars) else NO_WATERMARK
            entries.append({"symbol": sym, "wm": wm, "bars": bars, "advances": []})
        rules: list[AlertRule] = []
        if feed_names or hub_name:
            import ray

            if ray.is_initialized():
                refs = []
                for name in feed_names:
                    handle = _lookup(ray, name, ns)
                    if handle is not None:
                        refs.append(handle.recent_for.remote(self.book.symbols, self.book.tf))
                for chunk in ray.get(refs):
                    entries.extend(chunk)
                self._hub = _lookup(ray, hub_name, ns) if hub_name else None
                if self._hub is not None:
                    rules = ray.get(self._hub.rules.remote())
        # replay with the rules in force, so their armed state is what it would have been;
        # recent events go to the Hub again (it keeps each (rule, ts) once): one fired just
        # before a crash may not have reached it
        self.book.alerts.set_rules(rules)
        events, _ = self.book.feed(entries, live=False)
        now = time.time() * 1000.0
        self._send_alerts([e for e in events if e["ts"] >= now - ALERT_RESEND_MS], now)
        log.info("pair actor warmed up: %d pairs", len(self.book.pairs))

    def on_bars(self, entries: list[dict]) -> None:
        """One batch from a FeedActor (see the module docstring)."""
        events, finals = self.book.feed(entries)
        now = time.time() * 1000.0
        self.book.latency.add(now, (now - f for f in finals))
        self._send_alerts(events, now)

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


def _lookup(ray: object, name: str, namespace: str | None) -> object | None:
    try:
        return ray.get_actor(name, namespace=namespace)
    except ValueError:
        return None
